/**
 * Time comes into the presence model from outside, so idle, offline delay, typing expiry and
 * status expiry are tested by advancing a fake clock in milliseconds instead of sleeping.
 */
export interface TimerHandle {
  /** Opaque; only `Clock.clearTimer` looks inside. */
  readonly __timer: unknown;
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  setTimer(delayMs: number, callback: () => void): TimerHandle;
  clearTimer(handle: TimerHandle | undefined): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(delayMs, callback) {
    const timer = setTimeout(callback, Math.max(0, delayMs));
    // Presence timers must never keep a process alive on their own.
    timer.unref?.();
    return { __timer: timer };
  },
  clearTimer(handle) {
    if (handle) clearTimeout(handle.__timer as NodeJS.Timeout);
  },
};

interface ManualTimer {
  id: number;
  dueAt: number;
  callback: () => void;
}

/**
 * A clock that moves only when told to. `advance` runs every timer that falls due, in due order,
 * including timers that those callbacks schedule inside the advanced window.
 */
export class ManualClock implements Clock {
  private current: number;
  private nextId = 1;
  private readonly timers = new Map<number, ManualTimer>();

  constructor(startAt = Date.UTC(2026, 0, 1)) {
    this.current = startAt;
  }

  now(): number {
    return this.current;
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const timer: ManualTimer = { id: this.nextId++, dueAt: this.current + Math.max(0, delayMs), callback };
    this.timers.set(timer.id, timer);
    return { __timer: timer.id };
  }

  clearTimer(handle: TimerHandle | undefined): void {
    if (handle) this.timers.delete(handle.__timer as number);
  }

  /** When the next pending timer is due, if any (tests step from one to the next). */
  get nextDueAt(): number | undefined {
    let next: number | undefined;
    for (const timer of this.timers.values()) if (next === undefined || timer.dueAt < next) next = timer.dueAt;
    return next;
  }

  /** Number of timers still pending: a leak detector for tests. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const timer of this.timers.values()) {
        if (timer.dueAt <= target && (!next || timer.dueAt < next.dueAt || (timer.dueAt === next.dueAt && timer.id < next.id))) {
          next = timer;
        }
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.current = Math.max(this.current, next.dueAt);
      next.callback();
    }
    this.current = target;
  }
}

/**
 * A clock shifted by an offset that may change (measured against the shared service), so every
 * node of a cluster stamps times on one clock. Timers are relative and stay on the base clock.
 */
export function offsetClock(base: Clock, offsetMs: () => number): Clock {
  return {
    now: () => base.now() + offsetMs(),
    setTimer: (delayMs, callback) => base.setTimer(delayMs, callback),
    clearTimer: (handle) => base.clearTimer(handle),
  };
}
