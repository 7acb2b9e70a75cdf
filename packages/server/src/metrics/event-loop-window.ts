/**
 * Event-loop lag over the last seconds, for the operations dashboard. Apart from the Prometheus
 * gauges: those come from a histogram reset at each scrape, so a second reader resetting it too
 * would leave both with fragments. And its own samples rather than a `monitorEventLoopDelay`
 * histogram per window: a 99th percentile needs a few hundred samples (a one-second window holds
 * 50, whose p99 is their maximum), and those histograms cannot be merged across windows.
 */
import { performance } from 'node:perf_hooks';

export interface EventLoopLagReading {
  /** How long the figures cover: the window, or less while sampling has not run that long. */
  windowSeconds: number;
  p99Ms: number;
  maxMs: number;
}

export interface EventLoopWindowOptions {
  /** How often the loop is sampled. @default 20 */
  periodMs?: number;
  /** How far back a reading reaches. @default 10000 */
  windowMs?: number;
  /** Sampling stops when nobody has read for this long, and starts again at the next read. @default 60000 */
  idleMs?: number;
}

/**
 * A timer notes, every period, how much later than due it ran; a reading is the p99 and the
 * maximum of the notes of the window. Sampling starts with the first read, not at construction,
 * and stops when nobody reads: a node nobody watches spends nothing on it.
 */
export class EventLoopWindow {
  private readonly periodMs: number;
  private readonly windowMs: number;
  private readonly idleMs: number;
  private timer?: NodeJS.Timeout;
  private startedAt = 0;
  private lastTickAt = 0;
  private lastReadAt = 0;
  /** Times and lags of the samples, oldest first; `head` is the first one still in the window. */
  private at: number[] = [];
  private lag: number[] = [];
  private head = 0;
  private closed = false;

  constructor(options: EventLoopWindowOptions = {}) {
    this.periodMs = options.periodMs ?? 20;
    this.windowMs = options.windowMs ?? 10_000;
    this.idleMs = options.idleMs ?? 60_000;
  }

  /** The lag over the window; `null` while nothing has been sampled (the first read starts sampling). */
  read(): EventLoopLagReading | null {
    if (this.closed) return null;
    const now = performance.now();
    this.lastReadAt = now;
    if (!this.timer) {
      this.start(now);
      return null;
    }
    this.drop(now);
    const lags = this.lag.slice(this.head);
    if (lags.length === 0) return null;
    lags.sort((a, b) => a - b);
    return {
      windowSeconds: round(Math.min(this.windowMs, now - this.startedAt) / 1000),
      p99Ms: round(lags[Math.ceil(lags.length * 0.99) - 1]),
      maxMs: round(lags[lags.length - 1]),
    };
  }

  /** Stops sampling for good; safe to call more than once. */
  close(): void {
    this.closed = true;
    this.stop();
  }

  private start(now: number): void {
    this.startedAt = now;
    this.lastTickAt = now;
    this.timer = setInterval(() => this.tick(), this.periodMs);
    this.timer.unref();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.at = [];
    this.lag = [];
    this.head = 0;
  }

  private tick(): void {
    const now = performance.now();
    if (now - this.lastReadAt > this.idleMs) {
      this.stop();
      return;
    }
    this.at.push(now);
    this.lag.push(Math.max(0, now - this.lastTickAt - this.periodMs));
    this.lastTickAt = now;
    this.drop(now);
  }

  private drop(now: number): void {
    while (this.head < this.at.length && this.at[this.head] < now - this.windowMs) this.head++;
    // Compacted now and then rather than shifted per sample.
    if (this.head > 1000) {
      this.at = this.at.slice(this.head);
      this.lag = this.lag.slice(this.head);
      this.head = 0;
    }
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
