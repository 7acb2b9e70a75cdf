/**
 * A small Prometheus registry (text exposition format 0.0.4) and the server's metric set.
 *
 * Written by hand instead of pulling in prom-client: the server needs a dozen metrics, and a
 * registry this size is easier to audit for the one property that matters most here — no label
 * ever carries a user id or a channel name (cardinality, and an invisible user must not show up
 * anywhere, metrics included).
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { CLIENT_MESSAGE_TYPES, ERROR_CODES, type ErrorCode } from '@presence/protocol';
import type { PresenceStats } from './presence/service.js';

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Label values of one series; every declared label must be present, no other may be. */
export type LabelValues<L extends string> = { [K in L]: string | number };

export interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

export interface GaugeOptions<L extends string> extends MetricOptions<L> {
  /**
   * Evaluated at scrape time instead of storing a value. A value that is not finite or a throw
   * leaves the gauge without a sample for that scrape, rather than failing the whole scrape.
   */
  collect?: () => number;
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  /** Upper bounds, in increasing order; `+Inf` is implied. */
  buckets: readonly number[];
}

interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  lines(): string[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Label value escaping per the exposition format: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escaping: backslash and line feed (quotes are literal there). */
function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function checkLabelNames(metric: string, labelNames: readonly string[]): void {
  for (const label of labelNames) {
    if (!LABEL_NAME.test(label) || label.startsWith('__')) {
      throw new Error(`metric ${metric}: invalid label name ${JSON.stringify(label)}`);
    }
    // `le` is how histogram buckets are told apart; a user label with that name would collide.
    if (label === 'le') throw new Error(`metric ${metric}: label name "le" is reserved`);
  }
  if (new Set(labelNames).size !== labelNames.length) {
    throw new Error(`metric ${metric}: duplicate label name`);
  }
}

/**
 * Series of one metric keyed by their rendered label set, so rendering is a lookup and two calls
 * with the same labels in a different key order land on the same series.
 */
class SeriesMap<V> {
  private readonly series = new Map<string, V>();

  constructor(
    private readonly metric: string,
    private readonly labelNames: readonly string[],
  ) {}

  key(labels: Record<string, string | number> | undefined): string {
    const given = labels ?? {};
    const givenNames = Object.keys(given);
    if (givenNames.length !== this.labelNames.length || !this.labelNames.every((n) => Object.hasOwn(given, n))) {
      // Fail loudly: a silently accepted extra label is how a user id ends up in a metric.
      throw new Error(
        `metric ${this.metric}: labels must be exactly [${this.labelNames.join(', ')}], got [${givenNames.join(', ')}]`,
      );
    }
    return this.labelNames.map((name) => `${name}="${escapeLabelValue(String(given[name]))}"`).join(',');
  }

  get(key: string): V | undefined {
    return this.series.get(key);
  }

  set(key: string, value: V): void {
    this.series.set(key, value);
  }

  entries(): IterableIterator<[string, V]> {
    return this.series.entries();
  }
}

function sample(name: string, labelKey: string, value: number): string {
  return labelKey === '' ? `${name} ${formatValue(value)}` : `${name}{${labelKey}} ${formatValue(value)}`;
}

export class Counter<L extends string = never> implements Metric {
  readonly type = 'counter';
  readonly name: string;
  readonly help: string;
  private readonly values: SeriesMap<number>;

  constructor(options: MetricOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.values = new SeriesMap(options.name, options.labelNames ?? []);
    // An unlabelled counter is exported as 0 from the start, so rate() sees its first increment.
    if ((options.labelNames?.length ?? 0) === 0) this.values.set('', 0);
  }

  /** Adds `value` (default 1) to the series with these labels; counters never go down. */
  inc(...args: [L] extends [never] ? [value?: number] : [labels: LabelValues<L>, value?: number]): void {
    const [labels, value] = (typeof args[0] === 'object' ? args : [undefined, args[0]]) as [
      LabelValues<L> | undefined,
      number | undefined,
    ];
    const amount = value ?? 1;
    if (!(amount >= 0)) throw new Error(`counter ${this.name}: cannot add ${amount}`);
    const key = this.values.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + amount);
  }

  /** Current value of one series (0 when it was never incremented); for tests and diagnostics. */
  get(...args: [L] extends [never] ? [] : [labels: LabelValues<L>]): number {
    return this.values.get(this.values.key(args[0])) ?? 0;
  }

  lines(): string[] {
    return [...this.values.entries()].map(([key, value]) => sample(this.name, key, value));
  }
}

export class Gauge<L extends string = never> implements Metric {
  readonly type = 'gauge';
  readonly name: string;
  readonly help: string;
  private readonly values: SeriesMap<number>;
  private readonly collectFn: (() => number) | undefined;

  constructor(options: GaugeOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.values = new SeriesMap(options.name, options.labelNames ?? []);
    this.collectFn = options.collect;
    if (this.collectFn && (options.labelNames?.length ?? 0) > 0) {
      throw new Error(`gauge ${this.name}: a collected gauge cannot have labels`);
    }
  }

  set(...args: [L] extends [never] ? [value: number] : [labels: LabelValues<L>, value: number]): void {
    const [labels, value] = (args.length === 2 ? args : [undefined, args[0]]) as [LabelValues<L> | undefined, number];
    this.values.set(this.values.key(labels), value);
  }

  inc(...args: [L] extends [never] ? [value?: number] : [labels: LabelValues<L>, value?: number]): void {
    const [labels, value] = (typeof args[0] === 'object' ? args : [undefined, args[0]]) as [
      LabelValues<L> | undefined,
      number | undefined,
    ];
    const key = this.values.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + (value ?? 1));
  }

  dec(...args: [L] extends [never] ? [value?: number] : [labels: LabelValues<L>, value?: number]): void {
    const [labels, value] = (typeof args[0] === 'object' ? args : [undefined, args[0]]) as [
      LabelValues<L> | undefined,
      number | undefined,
    ];
    const key = this.values.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) - (value ?? 1));
  }

  /** The stored value, or the collected one for a collected gauge (undefined when it fails). */
  get(...args: [L] extends [never] ? [] : [labels: LabelValues<L>]): number | undefined {
    if (this.collectFn) return this.collected();
    return this.values.get(this.values.key(args[0]));
  }

  private collected(): number | undefined {
    try {
      const value = this.collectFn!();
      return Number.isFinite(value) ? value : undefined;
    } catch {
      return undefined;
    }
  }

  lines(): string[] {
    if (this.collectFn) {
      const value = this.collected();
      return value === undefined ? [] : [sample(this.name, '', value)];
    }
    return [...this.values.entries()].map(([key, value]) => sample(this.name, key, value));
  }
}

interface HistogramSeries {
  /** Per-bucket (non-cumulative) counts; the last slot is the `+Inf` overflow. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> implements Metric {
  readonly type = 'histogram';
  readonly name: string;
  readonly help: string;
  readonly buckets: readonly number[];
  private readonly series: SeriesMap<HistogramSeries>;

  constructor(options: HistogramOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    const buckets = options.buckets.filter((b) => b !== Infinity);
    if (buckets.length === 0) throw new Error(`histogram ${this.name}: needs at least one bucket`);
    for (let i = 0; i < buckets.length; i++) {
      if (!Number.isFinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
        throw new Error(`histogram ${this.name}: buckets must be finite and strictly increasing`);
      }
    }
    this.buckets = buckets;
    this.series = new SeriesMap(options.name, options.labelNames ?? []);
    if ((options.labelNames?.length ?? 0) === 0) this.series.set('', this.emptySeries());
  }

  private emptySeries(): HistogramSeries {
    return { counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  observe(...args: [L] extends [never] ? [value: number] : [labels: LabelValues<L>, value: number]): void {
    const [labels, value] = (args.length === 2 ? args : [undefined, args[0]]) as [LabelValues<L> | undefined, number];
    // A NaN would poison `_sum` for the life of the process.
    if (Number.isNaN(value)) return;
    const key = this.series.key(labels);
    let series = this.series.get(key);
    if (!series) {
      series = this.emptySeries();
      this.series.set(key, series);
    }
    let index = this.buckets.findIndex((bound) => value <= bound);
    if (index === -1) index = this.buckets.length;
    series.counts[index]++;
    series.sum += value;
    series.count++;
  }

  /** Starts a timer; calling the returned function observes the elapsed seconds and returns them. */
  startTimer(...args: [L] extends [never] ? [] : [labels: LabelValues<L>]): () => number {
    const start = process.hrtime.bigint();
    return () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      (this.observe as (...a: unknown[]) => void)(...(args.length ? [args[0], seconds] : [seconds]));
      return seconds;
    };
  }

  /** Count and sum of one series; for tests and diagnostics. */
  get(...args: [L] extends [never] ? [] : [labels: LabelValues<L>]): { count: number; sum: number } {
    const series = this.series.get(this.series.key(args[0]));
    return { count: series?.count ?? 0, sum: series?.sum ?? 0 };
  }

  lines(): string[] {
    const out: string[] = [];
    for (const [key, series] of this.series.entries()) {
      const prefix = key === '' ? '' : `${key},`;
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += series.counts[i];
        out.push(`${this.name}_bucket{${prefix}le="${formatValue(bound)}"} ${cumulative}`);
      });
      out.push(`${this.name}_bucket{${prefix}le="+Inf"} ${series.count}`);
      out.push(sample(`${this.name}_sum`, key, series.sum));
      out.push(sample(`${this.name}_count`, key, series.count));
    }
    return out;
  }
}

export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();
  private readonly beforeCollect: Array<() => void> = [];

  counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
    return this.register(new Counter<L>(options), options.labelNames);
  }

  gauge<L extends string = never>(options: GaugeOptions<L>): Gauge<L> {
    return this.register(new Gauge<L>(options), options.labelNames);
  }

  histogram<L extends string = never>(options: HistogramOptions<L>): Histogram<L> {
    return this.register(new Histogram<L>(options), options.labelNames);
  }

  /**
   * Runs before every render, in registration order: lets several collected gauges share one
   * snapshot per scrape instead of each recomputing it.
   */
  onCollect(hook: () => void): void {
    this.beforeCollect.push(hook);
  }

  /** Looks a metric up by name (e.g. to reuse one created elsewhere). */
  get(name: string): Metric | undefined {
    return this.metrics.get(name);
  }

  render(): string {
    for (const hook of this.beforeCollect) {
      try {
        hook();
      } catch {
        // A failing snapshot makes its gauges skip their samples; the rest of the scrape stands.
      }
    }
    const out: string[] = [];
    for (const metric of this.metrics.values()) {
      out.push(`# HELP ${metric.name} ${escapeHelp(metric.help)}`);
      out.push(`# TYPE ${metric.name} ${metric.type}`);
      out.push(...metric.lines());
    }
    return out.length === 0 ? '' : `${out.join('\n')}\n`;
  }

  private register<M extends Metric>(metric: M, labelNames: readonly string[] | undefined): M {
    if (!METRIC_NAME.test(metric.name)) throw new Error(`invalid metric name ${JSON.stringify(metric.name)}`);
    checkLabelNames(metric.name, labelNames ?? []);
    if (this.metrics.has(metric.name)) throw new Error(`metric ${metric.name} is already registered`);
    this.metrics.set(metric.name, metric);
    return metric;
  }
}

/** 0.1 ms … 1 s: fan-out is in-process queueing, so most samples should sit in the low buckets. */
export const FANOUT_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

const KNOWN_COMMAND_TYPES: ReadonlySet<string> = new Set(CLIENT_MESSAGE_TYPES);
const KNOWN_ERROR_CODES: ReadonlySet<string> = new Set(ERROR_CODES);
const OUTBOUND_TYPES: ReadonlySet<string> = new Set([
  'welcome',
  'presence.sync',
  'presence.join',
  'presence.leave',
  'presence.update',
  'typing',
  'user.sync',
  'user.update',
  'ack',
  'error',
  'pong',
]);

/**
 * Standard close codes (1000–1015) and the server's own 4xxx codes. A client may close with any
 * code in 3000–4999, so everything else is folded into `other` to keep the series bounded.
 */
function closeCodeLabel(code: number): string {
  if (Number.isInteger(code) && ((code >= 1000 && code <= 1015) || [4000, 4001, 4002, 4003, 4008, 4009, 4029].includes(code))) {
    return String(code);
  }
  return 'other';
}

export interface PresenceMetrics {
  registry: MetricsRegistry;
  connections: Gauge;
  sessions: Gauge;
  onlineUsers: Gauge;
  channels: Gauge;
  /** Inbound commands by type; unknown types are counted as `unknown`. */
  eventsIn: Counter<'type'>;
  /** Outbound messages by type, one per receiving connection. */
  eventsOut: Counter<'type'>;
  errors: Counter<'code'>;
  connectionsOpened: Counter;
  connectionsClosed: Counter<'code'>;
  /** Seconds from receiving a command until all resulting frames were queued to every receiver. */
  fanoutLatency: Histogram;
  /** HTTP responses by route template (never the raw path) and status. */
  httpRequests: Counter<'route' | 'status'>;
  residentMemory: Gauge;
  /** Mean event loop delay since the previous scrape. */
  eventLoopLag: Gauge;
  /** p99 and max event loop delay since the previous scrape. */
  eventLoopLagP99: Gauge;
  eventLoopLagMax: Gauge;

  /** Counts one inbound command; `type` is client-supplied, so it is bounded to protocol types. */
  commandReceived(type: unknown): void;
  /** Counts `receivers` copies of one outbound message type. */
  messageSent(type: string, receivers?: number): void;
  errorSent(code: ErrorCode | string): void;
  connectionOpened(): void;
  connectionClosed(code: number): void;
  /** Observes a fan-out duration in seconds. */
  observeFanout(seconds: number): void;
  /** Stops the event loop monitor; safe to call more than once. */
  close(): void;
}

export interface PresenceMetricsOptions {
  /** Sampling resolution of the event loop monitor. @default 20 */
  eventLoopResolutionMs?: number;
}

export function createPresenceMetrics(
  registry: MetricsRegistry,
  stats: () => PresenceStats,
  options: PresenceMetricsOptions = {},
): PresenceMetrics {
  // One stats() call per scrape, shared by the four gauges, so they describe the same instant.
  let snapshot: PresenceStats | undefined;
  registry.onCollect(() => {
    snapshot = undefined;
    snapshot = stats();
  });
  const fromSnapshot = (field: keyof PresenceStats) => () => snapshot?.[field] ?? NaN;

  const connections = registry.gauge({
    name: 'presence_connections',
    help: 'Authenticated WebSocket connections on this node (sessions with a live socket).',
    collect: fromSnapshot('connections'),
  });
  const sessions = registry.gauge({
    name: 'presence_sessions',
    help: 'Sessions on this node, including those inside their offline delay.',
    collect: fromSnapshot('sessions'),
  });
  const onlineUsers = registry.gauge({
    name: 'presence_online_users',
    help: 'Users seen as present by others (invisible users are not counted).',
    collect: fromSnapshot('onlineUsers'),
  });
  const channels = registry.gauge({
    name: 'presence_channels',
    help: 'Channels with at least one visible member.',
    collect: fromSnapshot('channels'),
  });

  const eventsIn = registry.counter({
    name: 'presence_events_in_total',
    help: 'Inbound WebSocket commands by type.',
    labelNames: ['type'],
  });
  const eventsOut = registry.counter({
    name: 'presence_events_out_total',
    help: 'Outbound WebSocket messages by type, counted once per receiving connection.',
    labelNames: ['type'],
  });
  const errors = registry.counter({
    name: 'presence_errors_total',
    help: 'Errors answered to clients, by error code.',
    labelNames: ['code'],
  });
  const connectionsOpened = registry.counter({
    name: 'presence_connections_opened_total',
    help: 'WebSocket connections accepted.',
  });
  const connectionsClosed = registry.counter({
    name: 'presence_connections_closed_total',
    help: 'WebSocket connections closed, by close code.',
    labelNames: ['code'],
  });
  const fanoutLatency = registry.histogram({
    name: 'presence_fanout_latency_seconds',
    help: 'Time from receiving a command until all resulting frames were queued to every receiver.',
    buckets: FANOUT_BUCKETS,
  });
  const httpRequests = registry.counter({
    name: 'presence_http_requests_total',
    help: 'HTTP API responses by route template and status.',
    labelNames: ['route', 'status'],
  });

  const residentMemory = registry.gauge({
    name: 'presence_process_resident_memory_bytes',
    help: 'Resident set size of the server process.',
    collect: () => process.memoryUsage.rss(),
  });

  const loop: IntervalHistogram = monitorEventLoopDelay({ resolution: options.eventLoopResolutionMs ?? 20 });
  loop.enable();
  let closed = false;
  // The histogram is reset after each scrape (as prom-client does), so each value describes the
  // interval since the previous scrape instead of an average over the whole uptime. With no
  // sample in the interval (two scrapes within one resolution tick) the previous value stands.
  let lag = { mean: 0, p99: 0, max: 0 };
  registry.onCollect(() => {
    if (closed) return;
    if (loop.count > 0) {
      lag = { mean: loop.mean / 1e9, p99: loop.percentile(99) / 1e9, max: loop.max / 1e9 };
    }
    loop.reset();
  });
  const eventLoopLag = registry.gauge({
    name: 'presence_event_loop_lag_seconds',
    help: 'Mean event loop delay since the previous scrape.',
    collect: () => lag.mean,
  });
  const eventLoopLagP99 = registry.gauge({
    name: 'presence_event_loop_lag_p99_seconds',
    help: '99th percentile of the event loop delay since the previous scrape.',
    collect: () => lag.p99,
  });
  const eventLoopLagMax = registry.gauge({
    name: 'presence_event_loop_lag_max_seconds',
    help: 'Maximum event loop delay since the previous scrape.',
    collect: () => lag.max,
  });

  return {
    registry,
    connections,
    sessions,
    onlineUsers,
    channels,
    eventsIn,
    eventsOut,
    errors,
    connectionsOpened,
    connectionsClosed,
    fanoutLatency,
    httpRequests,
    residentMemory,
    eventLoopLag,
    eventLoopLagP99,
    eventLoopLagMax,
    commandReceived(type) {
      eventsIn.inc({ type: typeof type === 'string' && KNOWN_COMMAND_TYPES.has(type) ? type : 'unknown' });
    },
    messageSent(type, receivers = 1) {
      if (receivers <= 0) return;
      eventsOut.inc({ type: OUTBOUND_TYPES.has(type) ? type : 'other' }, receivers);
    },
    errorSent(code) {
      errors.inc({ code: KNOWN_ERROR_CODES.has(code) ? code : 'INTERNAL' });
    },
    connectionOpened() {
      connectionsOpened.inc();
    },
    connectionClosed(code) {
      connectionsClosed.inc({ code: closeCodeLabel(code) });
    },
    observeFanout(seconds) {
      fanoutLatency.observe(seconds);
    },
    close() {
      if (closed) return;
      closed = true;
      loop.disable();
    },
  };
}
