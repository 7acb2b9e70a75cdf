import { Timer, type Clock } from './clock.js';

export interface TypingOptions {
  /**
   * How long typing may pause before `typing:false` is sent.
   * @default a third of the server's typing timeout (1 s for the default 3 s)
   */
  typingPauseMs?: number;
  /**
   * While typing goes on, `typing:true` is sent again at most this often, so the server's timeout
   * never runs out in the middle of a sentence. Clamped so that a refresh plus a pause stays
   * within five sixths of the server's timeout.
   * @default half the server's typing timeout
   */
  typingRefreshMs?: number;
}

export interface TypingIndicatorDeps extends TypingOptions {
  clock: Clock;
  /** The server's typing timeout (`welcome.timeouts.typingMs`). */
  serverTimeoutMs(): number;
  /** Whether a signal can be sent now (joined and connected). */
  canSend(): boolean;
  send(typing: boolean): void;
}

/**
 * Turns a stream of input events into few typing signals: `true` on the first input, again only
 * to refresh the server's timeout while typing goes on, and `false` after a pause, on send or on
 * blur (`stop`). Only transitions reach other users; refreshes are silent on the server.
 */
export class TypingIndicator {
  private typing = false;
  private lastSentAt = 0;
  private readonly pauseTimer: Timer;

  constructor(private readonly deps: TypingIndicatorDeps) {
    this.pauseTimer = new Timer(deps.clock, () => this.stop());
  }

  /** Whether this client currently tells the server it is typing. */
  get isTyping(): boolean {
    return this.typing;
  }

  /** Call on every input event (keystroke, change) of the message field. */
  input(): void {
    if (!this.deps.canSend()) return;
    const now = this.deps.clock.now();
    if (!this.typing || now - this.lastSentAt >= this.refreshMs()) {
      this.typing = true;
      this.lastSentAt = now;
      this.deps.send(true);
    }
    this.pauseTimer.arm(this.pauseMs());
  }

  /** Call when the message is sent and when the field loses focus. */
  stop(): void {
    this.pauseTimer.cancel();
    if (!this.typing) return;
    this.typing = false;
    if (this.deps.canSend()) this.deps.send(false);
  }

  /** The connection or the channel is gone: the server has ended typing by itself. */
  reset(): void {
    this.pauseTimer.cancel();
    this.typing = false;
  }

  private pauseMs(): number {
    return this.deps.typingPauseMs ?? this.deps.serverTimeoutMs() / 3;
  }

  private refreshMs(): number {
    const timeout = this.deps.serverTimeoutMs();
    const wanted = this.deps.typingRefreshMs ?? timeout / 2;
    return Math.min(wanted, Math.max(timeout / 10, (timeout * 5) / 6 - this.pauseMs()));
  }
}
