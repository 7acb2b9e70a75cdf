import type { AckMessage, UserPresence, UserSyncMessage, UserUpdateMessage } from '@presence/protocol';
import { Timer, type Clock } from './clock.js';
import type { Command, Delivery } from './commands.js';
import { Emitter } from './emitter.js';
import { samePresence } from './member-diff.js';

export interface WatchListEvents {
  /** A watched user's presence changed (not fired for the first value of a user). */
  update(user: UserPresence, previous: UserPresence): void;
  /** Presence of watched users arrived in bulk (answer to watch, or after a reconnect). */
  sync(users: ReadonlyMap<string, UserPresence>): void;
  /** The map of watched users changed. */
  change(): void;
}

export interface WatchListHost {
  readonly clock: Clock;
  submit(command: Command, delivery: Delivery): Promise<AckMessage>;
  sendNow(command: Command): Promise<AckMessage>;
}

/**
 * Users this session watches outside any channel (a contact list), with their latest presence.
 * `users` is replaced on every change so it can serve as a snapshot.
 */
export class WatchList extends Emitter<WatchListEvents> {
  private userMap: ReadonlyMap<string, UserPresence> = new Map();
  /** What the application asked for, answered or not. */
  private readonly wanted = new Set<string>();
  /** What the server confirmed: restored after a reconnect. */
  private readonly confirmed = new Set<string>();
  /** Users a restarted server reports offline while their clients are still reconnecting: the offline view waits. */
  private deferredOffline = new Map<string, UserPresence>();
  private pendingGraceMs = 0;
  private readonly graceTimer: Timer;

  constructor(private readonly host: WatchListHost) {
    super();
    this.graceTimer = new Timer(host.clock, () => this.graceOver());
  }

  get users(): ReadonlyMap<string, UserPresence> {
    return this.userMap;
  }

  get watching(): ReadonlySet<string> {
    return this.wanted;
  }

  async watch(userIds: readonly string[]): Promise<UserPresence[]> {
    const ids = [...new Set(userIds)];
    for (const id of ids) this.wanted.add(id);
    await this.host.submit({ type: 'watch', users: ids }, 'durable');
    // The server sends `user.sync` before the ack, so the answer is already here.
    for (const id of ids) if (this.wanted.has(id)) this.confirmed.add(id);
    return ids.map((id) => this.userMap.get(id)).filter((user): user is UserPresence => user !== undefined);
  }

  async unwatch(userIds: readonly string[]): Promise<void> {
    const ids = [...new Set(userIds)];
    let changed = false;
    const next = new Map(this.userMap);
    for (const id of ids) {
      this.wanted.delete(id);
      this.confirmed.delete(id);
      changed = next.delete(id) || changed;
    }
    if (changed) {
      this.userMap = next;
      this.emit('change');
    }
    await this.host.submit({ type: 'unwatch', users: ids }, 'durable');
  }

  /**
   * A new connection: watch again whatever the server confirmed before (restart-proof). When the
   * server did not resume the session, it may have restarted, and users it reports offline in its
   * first answer get the offline delay to come back before the application hears of it.
   */
  restore(resumed: boolean, offlineDelayMs: number): void {
    const ids = [...this.confirmed].filter((id) => this.wanted.has(id));
    this.pendingGraceMs = resumed || ids.length === 0 ? 0 : offlineDelayMs;
    if (ids.length === 0) return;
    this.host.sendNow({ type: 'watch', users: ids }).catch(() => {
      // Lost with the connection (the next one tries again) or over a limit (nothing to do).
    });
  }

  /** Stops the timer (the client is closing); the list stays. */
  dispose(): void {
    this.graceTimer.cancel();
    this.deferredOffline = new Map();
  }

  /** Logout: nothing is watched any more. */
  clear(): void {
    this.dispose();
    this.wanted.clear();
    this.confirmed.clear();
    if (this.userMap.size === 0) return;
    this.userMap = new Map();
    this.emit('change');
  }

  applySync(message: UserSyncMessage): void {
    const graceMs = this.pendingGraceMs;
    this.pendingGraceMs = 0;
    const next = new Map(this.userMap);
    const updates: [UserPresence, UserPresence][] = [];
    for (const user of message.users) {
      if (!this.wanted.has(user.userId)) continue;
      const previous = next.get(user.userId);
      if (graceMs > 0 && previous && previous.status !== 'offline' && user.status === 'offline') {
        this.deferredOffline.set(user.userId, user);
        this.graceTimer.arm(graceMs);
        continue;
      }
      this.deferredOffline.delete(user.userId);
      next.set(user.userId, user);
      if (previous && !samePresence(previous, user)) updates.push([user, previous]);
    }
    this.userMap = next;
    for (const [user, previous] of updates) this.emit('update', user, previous);
    this.emit('sync', next);
    this.emit('change');
  }

  applyUpdate(message: UserUpdateMessage): void {
    const { user } = message;
    if (!this.wanted.has(user.userId)) return;
    const previous = this.userMap.get(user.userId);
    const returned = this.deferredOffline.delete(user.userId);
    const next = new Map(this.userMap);
    next.set(user.userId, user);
    this.userMap = next;
    if (previous && !(returned && samePresence(previous, user))) this.emit('update', user, previous);
    this.emit('change');
  }

  private graceOver(): void {
    const offline = [...this.deferredOffline.values()];
    this.deferredOffline = new Map();
    for (const user of offline) this.applyUpdate({ type: 'user.update', user });
  }
}
