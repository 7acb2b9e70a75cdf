import type { ActivityTarget, VisibilitySource } from './activity.js';

/** Where the events come from that end a reconnect wait early. */
export interface ReconnectTriggerOptions {
  /** Where `online` (the network is back) is observed. @default globalThis (the window) */
  online?: ActivityTarget;
  /** Where `visibilitychange` is observed; becoming visible ends the wait. @default globalThis.document */
  visibility?: VisibilitySource;
}

/**
 * A reconnect that waits out its backoff need not wait once the network is back (`online`) or
 * the user looks at the page again (`visibilitychange` to visible): browsers throttle timers in
 * hidden tabs, and the backoff may have grown to 30 s while the laptop was asleep.
 */
export class ReconnectTriggers {
  private listening = false;

  constructor(
    private readonly sources: ReconnectTriggerOptions,
    private readonly retryNow: () => void,
  ) {}

  start(): void {
    if (this.listening) return;
    this.listening = true;
    this.sources.online?.addEventListener('online', this.onOnline);
    this.sources.visibility?.addEventListener('visibilitychange', this.onVisibilityChange);
  }

  stop(): void {
    if (!this.listening) return;
    this.listening = false;
    this.sources.online?.removeEventListener('online', this.onOnline);
    this.sources.visibility?.removeEventListener('visibilitychange', this.onVisibilityChange);
  }

  private readonly onOnline = (): void => this.retryNow();

  private readonly onVisibilityChange = (): void => {
    if (this.sources.visibility?.visibilityState === 'visible') this.retryNow();
  };
}
