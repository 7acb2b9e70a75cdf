import type { Announcer } from './announcer.js';
import type { Clock } from './clock.js';
import type { Channel, UserState } from './state.js';

/**
 * Who is typing where. Typing starts or refreshes with each `typing:true` and ends on
 * `typing:false`, on leaving, with the last live socket, or when the timeout runs out without a
 * refresh. Only the transitions are events; each node runs its own expiry.
 */
export class TypingTracker {
  constructor(
    private readonly clock: Clock,
    private readonly timeoutMs: number,
    private readonly announcer: Announcer,
  ) {}

  isTyping(channel: Channel, userId: string): boolean {
    return channel.typing.has(userId);
  }

  /** Starts or refreshes a user's typing; only the start is announced. */
  start(channel: Channel, user: UserState): void {
    const userId = user.record.userId;
    const existing = channel.typing.get(userId);
    this.clock.clearTimer(existing);
    channel.typing.set(
      userId,
      this.clock.setTimer(this.timeoutMs, () => this.stop(channel, user)),
    );
    if (!existing) this.announcer.typing(channel, userId, true);
  }

  stop(channel: Channel, user: UserState): void {
    const userId = user.record.userId;
    const timer = channel.typing.get(userId);
    if (!timer) return;
    this.clock.clearTimer(timer);
    channel.typing.delete(userId);
    this.announcer.typing(channel, userId, false);
  }

  /** Drops every timer of a channel nobody is in any more (no events: there is nobody to tell). */
  forget(channel: Channel): void {
    for (const timer of channel.typing.values()) this.clock.clearTimer(timer);
    channel.typing.clear();
  }
}
