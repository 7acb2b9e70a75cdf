/**
 * Time and timers, injected so tests can run the client on a manual clock and count what it has
 * scheduled. Every timer of the client goes through one of these.
 */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as number),
};

/** A single re-armable timer: arming again replaces the previous deadline. */
export class Timer {
  private handle: unknown = undefined;
  private armed = false;

  constructor(
    private readonly clock: Clock,
    private readonly callback: () => void,
  ) {}

  get isArmed(): boolean {
    return this.armed;
  }

  arm(ms: number): void {
    this.cancel();
    this.armed = true;
    this.handle = this.clock.setTimeout(() => {
      this.armed = false;
      this.handle = undefined;
      this.callback();
    }, Math.max(0, ms));
  }

  cancel(): void {
    if (!this.armed) return;
    this.clock.clearTimeout(this.handle);
    this.armed = false;
    this.handle = undefined;
  }
}
