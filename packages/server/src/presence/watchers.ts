import type { Session, UserState } from './state.js';

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

  /** The sessions watching this user, if any. */
  watchersOf(userId: string): ReadonlySet<Session> | undefined {
    return this.byWatchedUser.get(userId);
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
