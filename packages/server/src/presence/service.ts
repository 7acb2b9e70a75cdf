import type { Member, SelfPresence, StatusCounts, UpdatePresenceRequest, UserChannel, UserPresence } from '@presence/protocol';

/** Who a presence view is computed for: privacy (`visibility`, contacts) depends on it. */
export type ViewerId = { trusted: true } | { trusted: false; userId: string };

/**
 * A change to one user's presence: the body of `POST /realtime/presence/update` without `userId`
 * (its schema shares the status fields with the `status` command). `status: "offline"` ends every
 * session of the user at once.
 */
export type UserPatch = Omit<UpdatePresenceRequest, 'userId'>;

export interface ChannelPage {
  channel: string;
  /** Visible members in the whole channel (not only this page). */
  count: number;
  /** The same by status. */
  statuses: StatusCounts;
  members: Member[];
  /** Pass as `cursor` to get the next page; absent on the last page. */
  nextCursor?: string;
}

export interface OnlineUsersPage {
  /** Users others see as present in the whole list (not only this page). */
  count: number;
  users: UserPresence[];
  /** Pass as `cursor` to get the next page; absent on the last page. */
  nextCursor?: string;
}

export interface PresenceStats {
  connections: number;
  /** Sessions, including those inside their offline delay. */
  sessions: number;
  /** Users seen as present by others (invisible users are not counted). */
  onlineUsers: number;
  /** Channels with at least one visible member. */
  channels: number;
}

/** What the HTTP API needs from the presence model; the transport and tests use the same engine. */
export interface PresenceQueries {
  /** Brings records of users this node has not seen into memory (from a shared store). */
  loadUsers(userIds: string[]): Promise<void> | undefined;
  /** Before a session connects or resumes: its user, and the channels a session moving here takes along. */
  prepareConnect(userId: string, sessionId?: string): Promise<void> | undefined;
  /** Brings a channel's members on every node into memory (a no-op on one node, or when a session here is in it). */
  loadChannel(name: string): Promise<void> | undefined;
  /** Brings a user and every channel any of their sessions is in into memory. */
  loadUserChannels(userId: string): Promise<void> | undefined;
  channelPresence(channel: string, page: { limit: number; cursor?: string }): ChannelPage;
  userPresence(userId: string, viewer: ViewerId): UserPresence;
  queryUsers(userIds: string[], viewer: ViewerId): UserPresence[];
  /** The channels a user is a visible member of, by name; empty when offline or invisible. */
  userChannels(userId: string): UserChannel[];
  /**
   * Everyone others see as present (the trusted view), one page at a time, by user id; in a
   * cluster, read from the shared state (every node's online list).
   */
  onlineUsers(page: { limit: number; cursor?: string }): OnlineUsersPage | Promise<OnlineUsersPage>;
  /** Applies the patch as if the user sent it; works for offline users too. Throws PresenceError. */
  updateUser(userId: string, patch: UserPatch): SelfPresence;
  stats(): PresenceStats;
}
