import type { UserChannel, UserPresence } from '@presence/protocol';
import type { ServerConfig } from '../config/config.js';
import { PresenceError } from '../errors.js';
import type { UserStore } from '../store/user-store.js';
import type { ChannelPage, OnlineUsersPage, PresenceStats, ViewerId } from './service.js';
import type { PresenceState } from './state.js';
import { hiddenView, mayView, memberView, publicView, shownJoinedAt } from './user-presence.js';
import { assertChannelName, assertUserId, toIso } from './validation.js';

/** Live counters the engine keeps as it goes, so reading them costs nothing. */
export interface PresenceCounters {
  /** Sessions with a socket on this node. */
  readonly attached: number;
  /** Users others can see, cluster-wide as this node knows them. */
  readonly visibleUsers: number;
}

/**
 * The read side of the model: what the HTTP API, the admin dashboard and leak checks ask. It
 * only reads the state; every answer is what was last announced, so it agrees with the events.
 */
export class PresenceReader {
  constructor(
    private readonly state: PresenceState,
    private readonly store: UserStore,
    private readonly config: ServerConfig,
    private readonly counters: PresenceCounters,
  ) {}

  /** Presence of any user id (known or not) as `viewer` may see it. */
  viewOf(userId: string, viewer: string | undefined): UserPresence {
    const user = this.state.users.get(userId);
    const record = user?.record ?? this.store.get(userId);
    if (!record) return hiddenView(userId);
    if (!mayView(record, viewer)) return hiddenView(userId);
    // What was last announced, so snapshots and the events that led to them always agree.
    if (user) return user.published;
    return publicView({ record, sessionCount: 0, anyActive: false, devices: [] }, this.config.states);
  }

  /**
   * One page of a channel's visible members, by user id, starting after `cursor`. Only the page is
   * sorted and built (a bounded insertion), so a page of a room of 10,000 costs one pass over its
   * members; the counts come from the channel's running tally.
   */
  channelPresence(name: string, page: { limit: number; cursor?: string }): ChannelPage {
    assertChannelName(name, this.config.limits);
    const channel = this.state.channels.get(name);
    if (!channel) return { channel: name, count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] };
    const { cursor, limit } = page;
    const ids: string[] = [];
    let after = 0;
    for (const [id, member] of channel.members) {
      if (!member.user.announcedVisible) continue;
      if (cursor !== undefined && id <= cursor) continue;
      after += 1;
      insertBounded(ids, id, limit);
    }
    const members = ids.map((id) => {
      const member = channel.members.get(id)!;
      return memberView(member.user.published, member.channelMeta, shownJoinedAt(member));
    });
    const { online, away, busy } = channel.counts;
    const result: ChannelPage = { channel: name, count: online + away + busy, statuses: { online, away, busy }, members };
    if (after > ids.length) result.nextCursor = ids[ids.length - 1];
    return result;
  }

  userPresence(userId: string, viewer: ViewerId): UserPresence {
    assertUserId(userId, this.config.limits);
    return this.viewOf(userId, viewer.trusted ? undefined : viewer.userId);
  }

  queryUsers(userIds: string[], viewer: ViewerId): UserPresence[] {
    const max = this.config.limits.maxQueryUsers;
    if (userIds.length > max) throw new PresenceError('TOO_MANY_USERS', `at most ${max} user ids per query`);
    for (const id of userIds) assertUserId(id, this.config.limits);
    return userIds.map((id) => this.viewOf(id, viewer.trusted ? undefined : viewer.userId));
  }

  /**
   * The channels where the user is a member others can see, by name. An invisible or offline user
   * is in none, exactly as if they had no session.
   */
  userChannels(userId: string): UserChannel[] {
    assertUserId(userId, this.config.limits);
    const user = this.state.users.get(userId);
    if (!user || !user.announcedVisible) return [];
    const out: UserChannel[] = [];
    for (const name of user.channels) {
      const member = this.state.channels.get(name)?.members.get(userId);
      if (member) out.push({ channel: name, joinedAt: toIso(shownJoinedAt(member)), channelMeta: member.channelMeta });
    }
    return out.sort((a, b) => (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0));
  }

  /**
   * One page of the users others see as present, by user id, in the view last announced. Keyed
   * like the channel pages: the page starts after `cursor`. Only the page is sorted (a bounded
   * insertion), so a page costs one pass over the users, not a sort of all of them.
   */
  onlineUsers(page: { limit: number; cursor?: string }): OnlineUsersPage {
    const { cursor, limit } = page;
    let count = 0;
    let after = 0;
    const ids: string[] = [];
    for (const [id, user] of this.state.users) {
      if (!user.announcedVisible) continue;
      count += 1;
      if (cursor !== undefined && id <= cursor) continue;
      after += 1;
      insertBounded(ids, id, limit);
    }
    const result: OnlineUsersPage = { count, users: ids.map((id) => this.state.users.get(id)!.published) };
    if (after > ids.length) result.nextCursor = ids[ids.length - 1];
    return result;
  }

  stats(): PresenceStats {
    let channels = 0;
    for (const channel of this.state.channels.values()) {
      for (const member of channel.members.values()) {
        if (member.user.announcedVisible) {
          channels += 1;
          break;
        }
      }
    }
    let sessions = 0;
    for (const session of this.state.sessions.values()) if (!session.remote) sessions += 1;
    return { connections: this.counters.attached, sessions, onlineUsers: this.counters.visibleUsers, channels };
  }

  /**
   * Whether anyone but `userId` is a visible member of the channel now: read while a join or a
   * leave of `userId` is being announced, false means the channel just got its first visible
   * member or lost its last. Stops at the first one found.
   */
  hasOtherVisibleMember(name: string, userId: string): boolean {
    const channel = this.state.channels.get(name);
    if (!channel) return false;
    for (const [memberId, member] of channel.members) {
      if (memberId !== userId && member.user.announcedVisible) return true;
    }
    return false;
  }

  /** Sizes of the live state, for leak checks in tests and soak runs. */
  inspect(watchedUsers: number): { users: number; sessions: number; remoteSessions: number; channels: number; watchedUsers: number; typing: number } {
    let typing = 0;
    for (const channel of this.state.channels.values()) typing += channel.typing.size;
    let remoteSessions = 0;
    for (const session of this.state.sessions.values()) if (session.remote) remoteSessions += 1;
    return {
      users: this.state.users.size,
      sessions: this.state.sessions.size - remoteSessions,
      remoteSessions,
      channels: this.state.channels.size,
      watchedUsers,
      typing,
    };
  }

  /**
   * Read-only figures for the admin dashboard: the `limit` channels with the most visible members
   * (invisible users count nowhere), and sessions, attached sessions and visible users per node as
   * this node's replica sees them (this node's own sessions under `null`).
   */
  adminView(limit: number): {
    topChannels: { channel: string; members: number }[];
    nodes: Map<string | null, { sessions: number; connections: number; users: number }>;
  } {
    const counted: { channel: string; members: number }[] = [];
    for (const channel of this.state.channels.values()) {
      let members = 0;
      for (const member of channel.members.values()) if (member.user.announcedVisible) members += 1;
      if (members > 0) counted.push({ channel: channel.name, members });
    }
    counted.sort((a, b) => b.members - a.members || (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0));
    const nodes = new Map<string | null, { sessions: number; connections: number; users: number }>();
    const usersSeen = new Map<string | null, Set<string>>();
    for (const session of this.state.sessions.values()) {
      const node = session.remote ? session.remote.node : null;
      let row = nodes.get(node);
      if (!row) {
        row = { sessions: 0, connections: 0, users: 0 };
        nodes.set(node, row);
        usersSeen.set(node, new Set());
      }
      row.sessions += 1;
      if (session.remote ? session.remote.attached : session.sink !== null) row.connections += 1;
      const seen = usersSeen.get(node)!;
      const userId = session.user.record.userId;
      if (session.user.announcedVisible && !seen.has(userId)) {
        seen.add(userId);
        row.users += 1;
      }
    }
    return { topChannels: counted.slice(0, Math.max(0, limit)), nodes };
  }

  /** Whether a session with this id is live or inside its offline delay (here or on another node). */
  hasSession(sessionId: string): boolean {
    return this.state.sessions.has(sessionId);
  }

  /** Users with a socket open on this node now: a durable store keeps their `lastSeen` close to a crash. */
  connectedUserIds(): string[] {
    const ids: string[] = [];
    for (const [id, user] of this.state.users) {
      for (const session of user.sessions.values()) {
        if (session.sink) {
          ids.push(id);
          break;
        }
      }
    }
    return ids;
  }
}

/** Inserts `id` into the sorted `ids`, keeping only the `limit` smallest. */
function insertBounded(ids: string[], id: string, limit: number): void {
  if (ids.length === limit && id >= ids[limit - 1]) return;
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  ids.splice(lo, 0, id);
  if (ids.length > limit) ids.pop();
}
