/**
 * Load shedding at the door. A node whose event loop stalls, or whose clients cannot take what it
 * sends, serves everyone worse with each connection it adds. While either is past its limit, new
 * connections are refused with a retryable code, so they come back later or land on another node,
 * and the clients already here keep being served.
 */
import { performance } from 'node:perf_hooks';

export type OverloadReason = 'event_loop_lag' | 'outbound_buffer';

/** Bytes accepted for sending but not yet handed to the kernel. */
export interface OutboundBuffer {
  /** Over every connection of the node. */
  totalBytes: number;
  /** Of the connection with the most. */
  maxBytes: number;
}

export interface Overload {
  reason: OverloadReason;
  /** For people: what was measured against which limit. */
  message: string;
}

export interface OverloadGuardOptions {
  /** 0 turns the lag check off. */
  maxEventLoopLagMs: number;
  /** 0 turns the outbound check off. */
  maxTotalOutboundBytes: number;
  /** Reads the outbound buffers of every connection (a full scan, so it runs on a timer, not per upgrade). */
  outbound: () => OutboundBuffer;
  /**
   * True while there is nothing to guard (no connection open). The sampler then stops until the
   * next upgrade: a node without clients (a standby, or one whose clients all moved away) would
   * otherwise wake 50 times a second for nothing, the largest part of its upkeep.
   */
  idle?: () => boolean;
}

/**
 * The lag sampler's period. A timer that fires this often notices a stall of any length within one
 * period, and costs 50 callbacks a second.
 */
const LAG_SAMPLE_MS = 20;
/** The outbound scan visits every connection: four times a second is cheap even at 100,000. */
const OUTBOUND_SCAN_MS = 250;
/**
 * A stall keeps the node refusing for this long after it. The connections that queued up behind it
 * would otherwise all be let in at once, the moment the loop is free again.
 */
export const LAG_HOLD_MS = 1000;

export class OverloadGuard {
  private timer?: NodeJS.Timeout;
  /** False when both checks are off: then no sampler ever runs. */
  private readonly enabled: boolean;
  private closed = false;
  private readonly periodMs: number;
  private lastTickAt = performance.now();
  /** Ticks between two outbound scans, and ticks left until the next. */
  private readonly scanEvery: number;
  private ticksToScan = 0;
  /** The worst lag over the limit seen lately, and until when it keeps the node refusing. */
  private stall = { ms: 0, until: 0 };
  private outboundTotal = 0;

  constructor(private readonly options: OverloadGuardOptions) {
    const { maxEventLoopLagMs, maxTotalOutboundBytes } = options;
    this.periodMs = maxEventLoopLagMs > 0 ? LAG_SAMPLE_MS : OUTBOUND_SCAN_MS;
    this.scanEvery = Math.max(1, Math.round(OUTBOUND_SCAN_MS / this.periodMs));
    this.enabled = maxEventLoopLagMs > 0 || maxTotalOutboundBytes > 0;
    this.wake();
  }

  /** Starts the sampler if it stopped for idleness; from now on lag is measured afresh. */
  private wake(): void {
    if (!this.enabled || this.closed || this.timer) return;
    this.lastTickAt = performance.now();
    this.ticksToScan = 0;
    this.timer = setInterval(() => this.tick(), this.periodMs);
    this.timer.unref();
  }

  /** Why a new connection must be refused right now, if it must. Constant time: runs on every upgrade. */
  check(): Overload | undefined {
    const { maxEventLoopLagMs, maxTotalOutboundBytes } = this.options;
    // A stopped sampler knows nothing of the time since it stopped: none of it counts as lag.
    this.wake();
    if (maxEventLoopLagMs > 0) {
      const now = performance.now();
      // The sampler has not run for longer than its period: the loop is coming out of a stall
      // right now, and this upgrade most likely waited behind it (timers may not have run yet).
      this.noteLag(now - this.lastTickAt - this.periodMs, now);
      if (now < this.stall.until) {
        return {
          reason: 'event_loop_lag',
          message: `overloaded: event-loop lag of ${Math.round(this.stall.ms)} ms, past the limit of ${maxEventLoopLagMs} ms`,
        };
      }
    }
    if (maxTotalOutboundBytes > 0 && this.outboundTotal > maxTotalOutboundBytes) {
      return {
        reason: 'outbound_buffer',
        message: `overloaded: ${this.outboundTotal} bytes wait to be sent, past the limit of ${maxTotalOutboundBytes}`,
      };
    }
    return undefined;
  }

  /** Whether the sampler runs now (it stops while `idle`). */
  get sampling(): boolean {
    return this.timer !== undefined;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    if (this.options.idle?.() && performance.now() >= this.stall.until) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.outboundTotal = 0;
      return;
    }
    const now = performance.now();
    this.noteLag(now - this.lastTickAt - this.periodMs, now);
    this.lastTickAt = now;
    if (this.options.maxTotalOutboundBytes > 0 && --this.ticksToScan <= 0) {
      this.ticksToScan = this.scanEvery;
      this.outboundTotal = this.options.outbound().totalBytes;
    }
  }

  private noteLag(lagMs: number, now: number): void {
    const limit = this.options.maxEventLoopLagMs;
    if (limit <= 0 || lagMs <= limit) return;
    this.stall = { ms: now < this.stall.until ? Math.max(this.stall.ms, lagMs) : lagMs, until: now + LAG_HOLD_MS };
  }
}
