/**
 * The hand-written Prometheus registry the server used before prom-client (frozen copy). Kept
 * only as the baseline of the metrics micro-benchmark (bench/metrics.ts), which times the hot-path
 * counters of both in one run. Not used by the server.
 */
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

  /** Sum over every series (all label values); the admin stats derive event rates from it. */
  total(): number {
    let sum = 0;
    for (const [, value] of this.values.entries()) sum += value;
    return sum;
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
