/**
 * What the server adds on top of prom-client: counters cheap enough for the per-message path,
 * gauges read at scrape time that can never fail a scrape, and the process-wide standard metrics.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus text exposition format 0.0.4, as prom-client renders it. */
export const EXPOSITION_CONTENT_TYPE: string = Registry.PROMETHEUS_CONTENT_TYPE;

export interface LabelCountsOptions {
  name: string;
  help: string;
  /** The one label, e.g. `type`. */
  label: string;
  /** Every value the label may take; anything else is counted under `fallback`. */
  values: readonly string[];
  fallback: string;
}

/**
 * A counter with one label whose values are a fixed set, for the hot path. A prom-client
 * `inc({ type }, n)` builds a label hash and validates the labels on every call; this keeps one
 * plain number per label value, found with a single Map lookup, and hands the totals to a
 * prom-client counter when it is scraped (its `collect`). A value outside the set is counted under
 * the fallback, so a client-supplied string can never become a label value.
 */
export class LabelCounts {
  /** The prom-client counter that renders these counts. */
  readonly counter: Counter;
  private readonly slots = new Map<string, { n: number }>();
  private readonly fallback: { n: number };

  constructor(registry: Registry, options: LabelCountsOptions) {
    for (const value of options.values) this.slots.set(value, { n: 0 });
    this.fallback = this.slots.get(options.fallback) ?? { n: 0 };
    this.slots.set(options.fallback, this.fallback);
    const { slots } = this;
    const { label } = options;
    this.counter = new Counter({
      name: options.name,
      help: options.help,
      labelNames: [label],
      registers: [registry],
      collect() {
        // Counts only grow, so replacing the series with them keeps counter semantics. Values not
        // seen yet have no sample, as with any labelled prom-client counter.
        this.reset();
        for (const [value, slot] of slots) if (slot.n > 0) this.inc({ [label]: value }, slot.n);
      },
    });
  }

  /** Adds `amount` (default 1) to the series of `value`; a value outside the set counts as the fallback. */
  add(value: unknown, amount = 1): void {
    // Also refuses NaN: a counter never goes down and never stops being a number.
    if (!(amount > 0)) return;
    (this.slots.get(value as string) ?? this.fallback).n += amount;
  }

  /** The count of one label value (0 when never counted). */
  get(value: string): number {
    return this.slots.get(value)?.n ?? 0;
  }

  /** The label values counted so far with their counts (values never counted are left out). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [value, slot] of this.slots) if (slot.n > 0) out[value] = slot.n;
    return out;
  }

  /** Sum over every label value; the admin stats derive event rates from it. */
  total(): number {
    let sum = 0;
    for (const slot of this.slots.values()) sum += slot.n;
    return sum;
  }
}

export interface PlainHistogramOptions {
  name: string;
  help: string;
  /** Upper bounds, increasing; `+Inf` is implied. */
  buckets: readonly number[];
}

/** How prom-client keeps an unlabelled histogram's series (non-cumulative counts keyed by bound). */
interface PromHistogramSeries {
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/**
 * An unlabelled histogram for the hot path. prom-client's `observe` costs about 300 ns (it builds
 * and validates a label set and keys the bucket by its bound as a string on every call); this one
 * counts into a plain array (about 10 ns) and loads the counts into a prom-client histogram when it
 * is scraped, which renders it as usual. prom-client has no public call that loads bucket counts,
 * so this writes its series record; should a prom-client version keep it differently, the
 * constructor notices and every observation goes through prom-client's own `observe` instead.
 */
export class PlainHistogram {
  /** The prom-client histogram that renders these counts. */
  readonly histogram: Histogram;
  private readonly bounds: number[];
  /** Per bucket, not cumulative; the last slot counts values above every bound. */
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  private readonly direct: boolean;

  constructor(registry: Registry, options: PlainHistogramOptions) {
    this.bounds = [...options.buckets];
    this.counts = new Array<number>(this.bounds.length + 1).fill(0);
    const load = (target: Histogram) => this.load(target);
    this.histogram = new Histogram({
      name: options.name,
      help: options.help,
      buckets: this.bounds,
      registers: [registry],
      collect() {
        load(this);
      },
    });
    this.direct = PlainHistogram.series(this.histogram) === undefined;
  }

  /** Observes one value; a value that is not finite is ignored (it would poison `_sum`). */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    if (this.direct) {
      this.histogram.observe(value);
      return;
    }
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }

  private load(target: Histogram): void {
    if (this.direct) return;
    const series = PlainHistogram.series(target);
    if (!series) return;
    for (let i = 0; i < this.bounds.length; i++) series.bucketValues[this.bounds[i]] = this.counts[i];
    series.sum = this.sum;
    series.count = this.count;
  }

  private static series(histogram: Histogram): PromHistogramSeries | undefined {
    const series = (histogram as unknown as { hashMap?: Record<string, Partial<PromHistogramSeries>> }).hashMap?.[''];
    if (!series || typeof series.bucketValues !== 'object' || typeof series.sum !== 'number' || typeof series.count !== 'number') {
      return undefined;
    }
    return series as PromHistogramSeries;
  }
}

/**
 * A gauge read at scrape time. A `read` that throws or returns a value that is not finite leaves
 * the gauge without a sample for that scrape (its `# HELP` and `# TYPE` lines stay), rather than
 * failing the whole scrape, as a throwing prom-client `collect` would.
 */
export function scrapedGauge(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      let value: number;
      try {
        value = read();
      } catch {
        value = NaN;
      }
      if (Number.isFinite(value)) this.set(value);
      else this.remove();
    },
  });
}

/**
 * Calls `read` at most once per scrape, so that several gauges describe the same instant and an
 * expensive read (every connection's buffer, the model's counts) is done once. prom-client calls
 * every metric's `collect` in one synchronous pass over the registry, so "once per scrape" is
 * "once until the current task ends"; a throwing `read` is retried by the next caller.
 */
export function oncePerScrape<T>(read: () => T): () => T {
  let value: T;
  let fresh = false;
  return () => {
    if (!fresh) {
      value = read();
      fresh = true;
      queueMicrotask(() => {
        fresh = false;
      });
    }
    return value;
  };
}

let processRegistry: Registry | undefined;

/**
 * The standard `process_*` and `nodejs_*` metrics (CPU, memory, heap, GC, event-loop lag, open
 * files, handles), collected once per process: a process running several servers (tests, an
 * embedding application) is still one process, and the collectors keep timers and observers for
 * the life of the process.
 */
export function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    // prom-client samples the event loop every 10 ms by default: 100 wake-ups a second, more than
    // everything else an idle node does. 20 ms is the resolution of presence_event_loop_lag too.
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: 20 });
  }
  return processRegistry;
}
