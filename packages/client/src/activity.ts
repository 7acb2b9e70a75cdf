import type { Clock } from './clock.js';

type Listener = (event: unknown) => void;
type ListenerOptions = boolean | { capture?: boolean; passive?: boolean };

/** Something that emits user-input events: in a browser, `window`. */
export interface ActivityTarget {
  addEventListener(type: string, listener: Listener, options?: ListenerOptions): void;
  removeEventListener(type: string, listener: Listener, options?: ListenerOptions): void;
}

/** Something that knows whether the page is visible: in a browser, `document`. */
export interface VisibilitySource extends ActivityTarget {
  readonly visibilityState: string;
}

export interface ActivityOptions {
  /** Where user input is observed. @default globalThis (the window) */
  target?: ActivityTarget;
  /** Where `visibilitychange` comes from. @default globalThis.document */
  visibility?: VisibilitySource;
  /**
   * `activity` is sent at most this often while the user keeps interacting (it only needs to
   * reach the server well within its idle timeout). Capped at a third of `welcome.timeouts.idleMs`.
   * @default 30000
   */
  throttleMs?: number;
}

/** User input that counts as activity. Pointer moves are frequent, but handled in a comparison. */
export const ACTIVITY_EVENTS = ['pointerdown', 'pointermove', 'keydown', 'touchstart', 'wheel', 'scroll'] as const;
const LISTENER_OPTIONS = { capture: true, passive: true } as const;

export interface ActivityMonitorDeps {
  clock: Clock;
  target?: ActivityTarget;
  visibility?: VisibilitySource;
  /** Current throttle (depends on the server's idle timeout, known after `welcome`). */
  throttleMs(): number;
  report(signal: 'activity' | 'idle'): void;
}

/**
 * Watches the page for signs of a present user and tells the server, sparingly: `activity` at
 * most once per throttle interval while input continues (at once when coming back from idle),
 * `idle` as soon as the page is hidden.
 */
export class ActivityMonitor {
  private listening = false;
  private lastReportAt = Number.NEGATIVE_INFINITY;
  private reportedIdle = false;

  constructor(private readonly deps: ActivityMonitorDeps) {}

  get hidden(): boolean {
    return this.deps.visibility?.visibilityState === 'hidden';
  }

  start(): void {
    if (this.listening) return;
    this.listening = true;
    const { target, visibility } = this.deps;
    if (target) for (const type of ACTIVITY_EVENTS) target.addEventListener(type, this.onInput, LISTENER_OPTIONS);
    visibility?.addEventListener('visibilitychange', this.onVisibilityChange);
  }

  stop(): void {
    if (!this.listening) return;
    this.listening = false;
    const { target, visibility } = this.deps;
    if (target) for (const type of ACTIVITY_EVENTS) target.removeEventListener(type, this.onInput, LISTENER_OPTIONS);
    visibility?.removeEventListener('visibilitychange', this.onVisibilityChange);
  }

  /**
   * A connection was welcomed; connecting counts as activity on the server. Returns the signal
   * the new session needs to match the page (`idle` while hidden), if any.
   */
  connected(): 'idle' | undefined {
    this.lastReportAt = this.deps.clock.now();
    this.reportedIdle = this.hidden;
    return this.reportedIdle ? 'idle' : undefined;
  }

  private readonly onInput = (): void => {
    const now = this.deps.clock.now();
    if (!this.reportedIdle && now - this.lastReportAt < this.deps.throttleMs()) return;
    this.send('activity', now);
  };

  private readonly onVisibilityChange = (): void => {
    const now = this.deps.clock.now();
    if (this.hidden) this.send('idle', now);
    else this.send('activity', now);
  };

  private send(signal: 'activity' | 'idle', now: number): void {
    this.lastReportAt = now;
    this.reportedIdle = signal === 'idle';
    this.deps.report(signal);
  }
}
