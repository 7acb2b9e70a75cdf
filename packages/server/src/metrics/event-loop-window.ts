/**
 * Event-loop delay for the operations dashboard, apart from the Prometheus gauges: those reset their
 * histogram at each scrape, so a second reader resetting it too would leave both with fragments.
 */
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';

export interface EventLoopLagReading {
  /** How long the figures cover. */
  windowSeconds: number;
  p99Ms: number;
  maxMs: number;
}

export interface EventLoopWindowOptions {
  /** Sampling resolution of the monitor. @default 20 */
  resolutionMs?: number;
  /** A window is closed by the first read at least this old, so several dashboards share it. @default 1000 */
  minWindowMs?: number;
  now?: () => number;
}

/**
 * Started by its first read, not at construction: a node nobody watches samples nothing for it.
 * Each read reports the window so far; a read at least `minWindowMs` into it also starts the next.
 */
export class EventLoopWindow {
  private loop?: IntervalHistogram;
  private startedAt = 0;
  private last: EventLoopLagReading | null = null;
  private closed = false;
  private readonly now: () => number;
  private readonly resolutionMs: number;

  constructor(private readonly options: EventLoopWindowOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.resolutionMs = options.resolutionMs ?? 20;
  }

  /** The delay since the current window started; `null` on the first read, before any sample. */
  read(): EventLoopLagReading | null {
    if (this.closed) return this.last;
    const now = this.now();
    if (!this.loop) {
      this.loop = monitorEventLoopDelay({ resolution: this.resolutionMs });
      this.loop.enable();
      this.startedAt = now;
      return null;
    }
    const elapsedMs = now - this.startedAt;
    // No sample yet (a read within one resolution tick of the window's start): the last figures stand.
    if (this.loop.count > 0) {
      // The monitor records each whole interval between its timer's runs: the lag is what
      // exceeds the resolution (an idle loop reads 0, not 20 ms).
      const late = (ns: number) => round(Math.max(0, ns / 1e6 - this.resolutionMs));
      this.last = { windowSeconds: round(elapsedMs / 1000), p99Ms: late(this.loop.percentile(99)), maxMs: late(this.loop.max) };
    }
    if (elapsedMs >= (this.options.minWindowMs ?? 1000) && this.loop.count > 0) {
      this.loop.reset();
      this.startedAt = now;
    }
    return this.last;
  }

  /** Stops the monitor; safe to call more than once. */
  close(): void {
    this.closed = true;
    this.loop?.disable();
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
