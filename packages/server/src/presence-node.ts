import type { SelfPresence, UserChannel, UserPresence } from '@presence/protocol';
import type { Identity } from './auth/identity.js';
import { SessionTokens } from './auth/session-tokens.js';
import type { ServerConfig } from './config/config.js';
import type { Clock } from './presence/clock.js';
import { PresenceEngine, type AckData, type Attachment, type ConnectRequest } from './presence/engine.js';
import type { PresenceEventListener } from './presence/events.js';
import type { ChannelPage, OnlineUsersPage, PresenceQueries, PresenceStats, UserPatch, ViewerId } from './presence/service.js';
import { Replica } from './presence/replica.js';
import type { Cluster, ClusterListener, NodeCounts, NodeOp, OwnedSession, SessionSnapshot } from './presence/replication.js';
import type { SessionSink } from './presence/state.js';
import { ProtocolV1Fanout, type FanoutObserver } from './protocol-v1/fanout.js';
import { PusherProtocol } from './protocol-pusher/pusher-protocol.js';
import type { Logger } from './log.js';
import { HeartbeatSessions, type Heartbeat, type HeartbeatAnswer } from './protocol-v1/heartbeat.js';
import type { UserStore, UserRecord } from './store/user-store.js';
import type { ClientMessage } from '@presence/protocol';

export interface PresenceNodeOptions {
  config: ServerConfig;
  clock: Clock;
  store?: UserStore;
  /** Counts the v1 frames sent (metrics). */
  observer?: FanoutObserver;
  newSessionId?: () => string;
  /** Set in a cluster: local changes are published, and other nodes' are applied. */
  cluster?: Cluster;
  log?: Logger;
}

/**
 * One node's presence, assembled: the engine (local state machine), the replica of other nodes'
 * sessions (in a cluster), the read side, and protocol v1 as the first listener of the presence
 * events. The transport, the HTTP API and the cluster link talk to this; nothing below imports it.
 */
export class PresenceNode implements PresenceQueries, ClusterListener {
  readonly engine: PresenceEngine;
  readonly replica: Replica;
  readonly fanout: ProtocolV1Fanout;
  /** Signs and checks session tokens (the unload beacon's capability). */
  readonly sessionTokens: SessionTokens;
  /** Sessions kept by HTTP heartbeats instead of a socket. */
  readonly heartbeats: HeartbeatSessions;
  /** The Pusher Channels protocol, the second listener, when `config.pusher` is set. */
  readonly pusher: PusherProtocol | undefined;
  private readonly cluster: Cluster | undefined;

  constructor(options: PresenceNodeOptions) {
    this.cluster = options.cluster;
    this.sessionTokens = new SessionTokens(options.config.auth, options.config.offlineDelayMs);
    this.engine = new PresenceEngine({
      config: options.config,
      clock: options.clock,
      store: options.store,
      newSessionId: options.newSessionId,
      sessionTokens: this.sessionTokens,
    });
    this.fanout = new ProtocolV1Fanout({
      state: this.engine.state,
      watchers: this.engine.watchers,
      clock: options.clock,
      largeRooms: options.config.largeRooms,
      observer: options.observer,
    });
    this.engine.output = this.fanout;
    this.engine.announcer.subscribe(this.fanout.onEvent);
    if (options.config.pusher) {
      // Pusher clients need a channel's whole member list: no subscription to one in occupancy mode.
      this.pusher = new PusherProtocol(this.engine, options.config.pusher, options.log, (channel) => this.fanout.inOccupancyMode(channel));
      this.engine.output = this.pusher.outputBeside(this.fanout);
      this.engine.announcer.subscribe(this.pusher.onEvent);
    }
    this.replica = new Replica(this.engine, options.cluster);
    this.heartbeats = new HeartbeatSessions(this.engine, this.sessionTokens);
  }

  /** Adds a listener of the presence events (after protocol v1, in the order added). */
  subscribe(listener: PresenceEventListener): () => void {
    return this.engine.announcer.subscribe(listener);
  }

  // Sessions and commands (the transport)

  connect(request: ConnectRequest, sink: SessionSink): Attachment {
    return this.engine.connect(request, sink);
  }

  disconnect(attachment: Attachment): void {
    this.engine.disconnect(attachment);
  }

  handle(attachment: Attachment, command: ClientMessage): AckData | Promise<AckData> {
    return this.engine.handle(attachment, command);
  }

  logout(userId: string): void {
    this.engine.logout(userId);
  }

  /**
   * The unload beacon (`POST /realtime/disconnect`): the session the token names ends after the
   * unload grace unless it is resumed. A session owned by another node is handed to it. Throws
   * UNAUTHORIZED or TOKEN_EXPIRED for a token this cluster did not issue or that expired; returns
   * whether the session was found (an ended one is not an error: the beacon has nothing to do).
   */
  unload(sessionToken: string): boolean {
    const claims = this.sessionTokens.verify(sessionToken, this.engine.clock.now());
    const session = this.engine.state.sessions.get(claims.sessionId);
    if (!session || session.user.record.userId !== claims.userId) {
      // Another node may own it without this one following its user: the owner does, and decides.
      if (!session) this.replica.publish({ op: 'unload', sessionId: claims.sessionId, userId: claims.userId });
      return false;
    }
    if (session.remote) this.replica.publish({ op: 'unload', sessionId: session.id, userId: session.user.record.userId });
    else this.engine.unload(session);
    return true;
  }

  /** A fresh session token for a live session (the transport renews WebSocket sessions' with it). */
  renewSessionToken(attachment: Attachment): { token: string; expiresAt: number } | undefined {
    const { session } = attachment;
    if (session.sink !== attachment.sink || this.engine.state.sessions.get(session.id) !== session) return undefined;
    return this.engine.sessionToken(session);
  }

  /** One heartbeat of an HTTP session (`POST /realtime/heartbeat`); throws PresenceError. */
  heartbeat(identity: Identity, heartbeat: Heartbeat): HeartbeatAnswer {
    return this.heartbeats.beat(identity, heartbeat);
  }

  // Queries and updates (the HTTP API)

  loadUsers(userIds: string[]): Promise<void> | undefined {
    return this.engine.loadUsers(userIds);
  }

  prepareConnect(userId: string, sessionId?: string): Promise<void> | undefined {
    return this.engine.prepareConnect(userId, sessionId);
  }

  loadChannel(name: string): Promise<void> | undefined {
    return this.replica.prepareChannel(name);
  }

  async loadUserChannels(userId: string): Promise<void> {
    await this.engine.loadUsers([userId]);
    const user = this.engine.state.users.get(userId);
    if (!user) return;
    const names = new Set<string>();
    for (const session of user.sessions.values()) for (const name of session.remote?.channels ?? []) names.add(name);
    await Promise.all([...names].map((name) => this.replica.prepareChannel(name)));
  }

  updateUser(userId: string, patch: UserPatch): SelfPresence {
    return this.engine.updateUser(userId, patch);
  }

  channelPresence(channel: string, page: { limit: number; cursor?: string }): ChannelPage {
    return this.engine.reader.channelPresence(channel, page);
  }

  userPresence(userId: string, viewer: ViewerId): UserPresence {
    return this.engine.reader.userPresence(userId, viewer);
  }

  queryUsers(userIds: string[], viewer: ViewerId): UserPresence[] {
    return this.engine.reader.queryUsers(userIds, viewer);
  }

  userChannels(userId: string): UserChannel[] {
    return this.engine.reader.userChannels(userId);
  }

  /**
   * The online list. On one node, from memory. In a cluster, a node holds only the users its
   * clients can see, so the list comes from the shared state: the union of every node's online
   * list gives the ids and the count, and the users of the page asked for are read (followed for
   * a moment) to build their views.
   */
  onlineUsers(page: { limit: number; cursor?: string }): OnlineUsersPage | Promise<OnlineUsersPage> {
    if (!this.cluster) return this.engine.reader.onlineUsers(page);
    return this.clusterOnlineUsers(this.cluster, page);
  }

  private async clusterOnlineUsers(cluster: Cluster, page: { limit: number; cursor?: string }): Promise<OnlineUsersPage> {
    const ids = await cluster.readOnline();
    const after = page.cursor === undefined ? ids : ids.filter((id) => id > page.cursor!);
    const pageIds = after.slice(0, page.limit);
    await this.engine.loadUsers(pageIds);
    const users = pageIds.flatMap((id) => {
      const user = this.engine.state.users.get(id);
      return user?.announcedVisible ? [user.published] : [];
    });
    const result: OnlineUsersPage = { count: ids.length, users };
    if (after.length > pageIds.length) result.nextCursor = pageIds[pageIds.length - 1];
    return result;
  }

  /** How many users are online: on one node, from memory; in a cluster, from the shared state. */
  async onlineCount(): Promise<number> {
    return this.cluster ? (await this.cluster.readOnline()).length : this.engine.reader.stats().onlineUsers;
  }

  stats(): PresenceStats {
    return this.engine.reader.stats();
  }

  inspect(): ReturnType<PresenceEngine['reader']['inspect']> {
    return this.engine.reader.inspect(this.engine.watchers.size);
  }

  adminView(limit: number): ReturnType<PresenceEngine['reader']['adminView']> {
    return this.engine.reader.adminView(limit);
  }

  hasSession(sessionId: string): boolean {
    return this.engine.reader.hasSession(sessionId);
  }

  connectedUserIds(): string[] {
    return this.engine.reader.connectedUserIds();
  }

  // Other nodes (the cluster link)

  applyOps(nodeId: string, ops: NodeOp[]): void | Promise<void> {
    return this.replica.applyOps(nodeId, ops);
  }

  applyUser(userId: string, sessions: OwnedSession[]): void | Promise<void> {
    return this.replica.applyUser(userId, sessions);
  }

  nodeDown(nodeId: string): void {
    this.replica.nodeDown(nodeId);
  }

  userOrphaned(nodeId: string, userId: string): void {
    this.replica.userOrphaned(nodeId, userId);
  }

  needsUser(userId: string): boolean {
    return this.replica.needsUser(userId);
  }

  needsChannel(name: string): boolean {
    return this.replica.needsChannel(name);
  }

  dropUnfollowed(): void {
    this.replica.dropUnfollowed();
  }

  applyRecord(record: UserRecord, cause?: string): void | Promise<void> {
    return this.replica.applyRecord(record, cause);
  }

  localStats(): NodeCounts {
    return this.replica.localStats();
  }

  localSnapshot(): SessionSnapshot[] {
    return this.replica.localSnapshot();
  }

  /** Ends every session at once (shutdown): no events, timers cleared. */
  dispose(): void {
    this.pusher?.dispose();
    this.heartbeats.dispose();
    this.replica.clear();
    this.engine.dispose();
  }
}
