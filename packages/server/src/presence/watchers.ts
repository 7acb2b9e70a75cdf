import type { UserPresence } from '@presence/protocol';
import type { Fanout } from './fanout.js';
import type { Session, UserState } from './state.js';
import { hiddenView, mayView } from './user-presence.js';

/**
 * The watch list of every session that watches nobody (most of them): one shared empty set instead
 * of one per session. It is never added to: a session gets its own set with its first watch.
 */
export const NO_WATCHES: Set<string> = new Set();

/**
 * Who watches whom: the reverse index from a watched user id to the sessions watching it, so a
 * presence change reaches a contact list without the watcher sharing a channel with the user.
 */
export class WatcherIndex {
  private readonly byWatchedUser = new Map<string, Set<Session>>();

  constructor(private readonly fanout: Fanout) {}

  add(session: Session, userId: string): void {
    if (session.watching.has(userId)) return;
    if (session.watching === NO_WATCHES) session.watching = new Set();
    session.watching.add(userId);
    let sessions = this.byWatchedUser.get(userId);
    if (!sessions) this.byWatchedUser.set(userId, (sessions = new Set()));
    sessions.add(session);
  }

  remove(session: Session, userId: string): void {
    if (!session.watching.delete(userId)) return;
    const sessions = this.byWatchedUser.get(userId);
    if (!sessions) return;
    sessions.delete(session);
    if (sessions.size === 0) this.byWatchedUser.delete(userId);
  }

  removeSession(session: Session): void {
    for (const userId of [...session.watching]) this.remove(session, userId);
  }

  /**
   * Tells the user's watchers about a change, each as privacy allows: those who may see the user
   * get the new view; those who may not get the hidden view, and only when they just lost sight
   * of the user (the hidden view itself never changes).
   */
  notify(user: UserState, view: UserPresence, changed: boolean, privacyChanged: boolean): void {
    const sessions = this.byWatchedUser.get(user.record.userId);
    if (!sessions || (!changed && !privacyChanged)) return;
    const allowed: Session[] = [];
    const refused: Session[] = [];
    for (const session of sessions) {
      (mayView(user.record, session.user.record.userId) ? allowed : refused).push(session);
    }
    if (allowed.length > 0) {
      this.fanout.toSessions(allowed, JSON.stringify({ type: 'user.update', user: view }), 'user.update');
    }
    if (privacyChanged && refused.length > 0) {
      this.fanout.toSessions(refused, JSON.stringify({ type: 'user.update', user: hiddenView(user.record.userId) }), 'user.update');
    }
  }

  isWatched(userId: string): boolean {
    return this.byWatchedUser.has(userId);
  }

  /** Number of distinct users watched by anyone. */
  get size(): number {
    return this.byWatchedUser.size;
  }

  clear(): void {
    this.byWatchedUser.clear();
  }
}
