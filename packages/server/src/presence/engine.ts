import { randomUUID } from 'node:crypto';
import type {
  ClientMessage,
  Member,
  Meta,
  SelfPresence,
  StatusCommand,
  UserPresence,
  WelcomeMessage,
} from '@presence/protocol';
import type { ServerConfig } from '../config/config.js';
import type { Broker, BrokerListener, NodeOp, SessionSnapshot } from '../broker/broker.js';
import { PresenceError } from '../errors.js';
import type { Identity } from '../auth/identity.js';
import { channelAllowed } from '../auth/access.js';
import { EMPTY_META, MemoryUserStore, emptyUserRecord, type SaveKind, type UserRecord, type UserStore } from '../store/user-store.js';
import type { Clock } from './clock.js';
import { Fanout, type BroadcastExclusions } from './fanout.js';
import type { Channel, ChannelMember, EngineObserver, Session, SessionSink, UserState } from './state.js';
import { NO_WATCHES, WatcherIndex } from './watchers.js';
import type { ChannelPage, PresenceQueries, PresenceStats, UserPatch, ViewerId } from './service.js';
import {
  hiddenView,
  isVisible,
  mayView,
  memberView,
  publicView,
  sameVisiblePresence,
  selfView,
  type PresenceFacts,
} from './user-presence.js';
import {
  assertChannelName,
  assertMessage,
  assertMetaPatch,
  assertMetaWithinLimits,
  assertUserId,
  mergeMeta,
  parseExpiry,
  toIso,
} from './validation.js';

export type { SessionSink, EngineObserver } from './state.js';

/** What `connect` hands the transport: the session and the socket's sink, bound together. */
export interface Attachment {
  readonly session: Session;
  readonly sink: SessionSink;
  readonly resumed: boolean;
}

export interface ConnectRequest {
  identity: Identity;
  /** A previous session id to resume, when the client sends one. */
  sessionId?: string;
  device?: string;
  /**
   * The manual status the client last had confirmed (`?status=&state=&message=&expiresAt=`).
   * Applied only when this server has no record of the user (it restarted and forgot), before
   * anyone is told the user is here, so an invisible user never flashes online.
   */
  restore?: Pick<StatusCommand, 'status' | 'state' | 'message' | 'expiresAt'>;
}

export interface EngineOptions {
  config: ServerConfig;
  clock: Clock;
  store?: UserStore;
  observer?: EngineObserver;
  newSessionId?: () => string;
  /** Set in a cluster: local changes are published, and other nodes' are applied. */
  broker?: Broker;
}

/** What an `ack` carries; a promise when the command first had to load user records. */
export type AckData = Record<string, unknown> | undefined;

const SESSION_ID = /^[A-Za-z0-9_-]{8,64}$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,32}$/;
/** setTimeout cannot wait longer than this; longer expiries re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The presence model of one node: sessions merged into users, channels with user-level
 * membership, typing, watches, privacy and every timeout. It knows nothing of sockets or HTTP:
 * it reads time from the injected clock and writes frames to sinks.
 */
export class PresenceEngine implements PresenceQueries, BrokerListener {
  private readonly config: ServerConfig;
  private readonly clock: Clock;
  private readonly store: UserStore;
  private readonly newSessionId: () => string;
  private readonly users = new Map<string, UserState>();
  private readonly sessions = new Map<string, Session>();
  private readonly channels = new Map<string, Channel>();
  /** Watched user id → sessions watching them. */
  private readonly watchers: WatcherIndex;
  private readonly fanout: Fanout;
  private attachedCount = 0;
  /** The limits part of `welcome`, built once: config does not change while running. */
  private welcomeLimits?: WelcomeMessage['limits'];
  private visibleUserCount = 0;
  private readonly broker?: Broker;
  /** Local sessions whose new state is published at the end of this turn (one op per session). */
  private readonly changedSessions = new Set<Session>();
  /** Local sessions just taken over from another node: their next op says so. */
  private readonly claimedSessions = new Set<Session>();
  private publishQueued = false;

  constructor(options: EngineOptions) {
    this.config = options.config;
    this.clock = options.clock;
    this.store = options.store ?? new MemoryUserStore();
    this.newSessionId = options.newSessionId ?? randomUUID;
    this.fanout = new Fanout(options.observer);
    this.watchers = new WatcherIndex(this.fanout);
    this.broker = options.broker;
  }

  /**
   * Brings user records this node has not seen into memory (a no-op on the memory store).
   * Call before `connect`, and before queries or updates about other users.
   */
  loadUsers(userIds: string[]): Promise<void> | undefined {
    const missing = userIds.filter((id) => !this.users.has(id));
    return missing.length > 0 ? this.store.load(missing) : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Sessions
  // -------------------------------------------------------------------------------------------

  /**
   * Opens a session (or resumes one inside its offline delay) and sends `welcome`, then the
   * state a resumed session missed. Throws TOO_MANY_SESSIONS.
   */
  connect(request: ConnectRequest, sink: SessionSink): Attachment {
    const now = this.clock.now();
    // No stored record: this server never saw the user (or restarted and lost it). A user only
    // watched so far has no record either.
    const forgotten = this.store.get(request.identity.userId) === undefined;
    const user = this.userState(request.identity.userId);
    this.applyIdentity(user, request.identity);
    if (forgotten && request.restore) this.restoreStatus(user, request.restore);
    const device = request.device && DEVICE.test(request.device) ? request.device : 'unknown';

    const wanted = request.sessionId && SESSION_ID.test(request.sessionId) ? request.sessionId : undefined;
    const existing = wanted ? this.sessions.get(wanted) : undefined;
    let session: Session;
    let resumed = false;
    if (existing && existing.user === user) {
      session = existing;
      resumed = true;
      if (session.remote) {
        // The session lived on another node (which died, or which the client left): it moves here,
        // channels and all, and the other nodes only see its owner change.
        session.remote = undefined;
        session.moves += 1;
        if (!session.idle) session.lastActivityAt = now;
        this.claimedSessions.add(session);
      }
      this.clock.clearTimer(session.offlineTimer);
      session.offlineTimer = undefined;
      if (session.sink) {
        // Another socket still holds this session (its close was not noticed yet): the newest wins.
        const previous = session.sink;
        session.sink = null;
        this.attachedCount -= 1;
        previous.close(4000, 'SESSION_REPLACED');
      }
      session.device = device;
      this.armIdleTimer(session);
    } else {
      this.makeRoomForSession(user);
      // Never the id the client asked for: an id it proposes may still name a session of this or
      // another user in a dead node's stored state or in another node's view, and two sessions
      // under one id would overwrite each other in replication. Ids are only ever minted here.
      const id = this.newSessionId();
      // Every field in the literal, unset ones too: fields added later would go to a separate
      // property store, one more allocation per session.
      session = {
        id,
        user,
        device,
        sink: null,
        lastActivityAt: now,
        reportedIdle: false,
        idle: false,
        idleTimer: undefined,
        offlineTimer: undefined,
        channels: new Set(),
        watching: NO_WATCHES,
        allowlist: undefined,
        moves: 0,
        remote: undefined,
      };
      this.sessions.set(id, session);
      user.sessions.set(id, session);
      this.touchActivity(user, now);
      this.armIdleTimer(session);
    }
    session.allowlist = request.identity.channels;
    session.sink = sink;
    this.attachedCount += 1;
    this.sessionChanged(session);

    this.fanout.toSession(session, this.welcome(session, resumed));
    if (resumed) {
      // The new token may allow fewer channels than the one the session was opened with.
      for (const name of [...session.channels]) {
        const channel = this.channels.get(name);
        if (channel && !channelAllowed(session.allowlist, name)) this.removeFromChannel(channel, session);
      }
    }
    // A resumed socket gets its channels' state first: the change this connect announces (a new
    // device, say) must reach it as the event after that sync, not before it.
    if (resumed) this.resendState(session);
    this.announce(user);
    return { session, sink, resumed };
  }

  private restoreStatus(user: UserState, restore: NonNullable<ConnectRequest['restore']>): void {
    if (restore.status === undefined && restore.state === undefined && restore.message === undefined) return;
    try {
      this.applyStatus(user, restore, false);
    } catch {
      // A stale or invalid hint (an expired expiry, a state no longer configured) is dropped: the
      // client re-sends its status after `welcome` anyway, and gets a proper error then.
    }
  }

  /** The socket closed without `logout`: the session lingers for the offline delay. */
  disconnect(attachment: Attachment): void {
    const { session } = attachment;
    if (session.sink !== attachment.sink || !this.sessions.has(session.id)) return;
    session.sink = null;
    this.attachedCount -= 1;
    this.sessionChanged(session);
    const now = this.clock.now();
    const user = session.user;
    if (user.announcedVisible) {
      user.record.lastSeenAt = now;
      // Published before the session's own change, so other nodes' leave carries this lastSeen.
      this.save(user, 'presence');
    }
    // Typing belongs to a live keyboard; it ends with the socket, not after the offline delay.
    for (const name of session.channels) {
      const channel = this.channels.get(name);
      if (channel && !this.hasAttachedSessionIn(channel, user)) this.stopTyping(channel, user);
    }
    if (this.config.offlineDelayMs <= 0) {
      this.expireSession(session);
      this.releaseIfUnused(user);
    } else {
      // The idle clock stops with the socket: a reconnect inside the window must change nothing,
      // and a user who is gone is not idling either.
      this.clock.clearTimer(session.idleTimer);
      session.idleTimer = undefined;
      session.offlineTimer = this.clock.setTimer(this.config.offlineDelayMs, () => {
        this.expireSession(session);
        this.releaseIfUnused(user);
      });
    }
  }

  /** Ends every session of the user now, without the offline delay (logout, or the HTTP API). */
  logout(userId: string): void {
    // Other nodes end their sessions of this user too, even ones this node has not heard of yet.
    this.publish({ op: 'logout', userId });
    const user = this.users.get(userId);
    if (!user) return;
    this.endAllSessions(user);
    this.releaseIfUnused(user);
  }

  private endAllSessions(user: UserState): void {
    if (user.sessions.size === 0) return;
    const now = this.clock.now();
    if (user.announcedVisible) {
      user.record.lastSeenAt = now;
      this.save(user, 'presence');
    }
    for (const session of [...user.sessions.values()]) {
      if (session.sink) {
        const sink = session.sink;
        session.sink = null;
        this.attachedCount -= 1;
        sink.close(1000, 'LOGGED_OUT');
      }
      this.expireSession(session, false);
    }
    // One announcement for the whole logout: others see a leave, not a devices update first.
    this.announce(user);
  }

  private makeRoomForSession(user: UserState): void {
    const max = this.config.limits.maxSessionsPerUser;
    // The limit is per node: sessions on other nodes count there.
    const local = () => [...user.sessions.values()].filter((s) => !s.remote);
    if (local().length < max) return;
    // Lingering sessions are only kept for a reconnect; a new tab is better evidence of the user.
    for (const session of local().filter((s) => !s.sink)) {
      if (local().length < max) break;
      // No announcement yet: the new session joins at once, and connect announces the net change.
      this.expireSession(session, false);
    }
    if (local().length >= max) {
      throw new PresenceError('TOO_MANY_SESSIONS', `at most ${max} sessions per user on one node`);
    }
  }

  private expireSession(session: Session, announce = true): void {
    if (!this.sessions.has(session.id)) return;
    const user = session.user;
    this.clock.clearTimer(session.offlineTimer);
    this.clock.clearTimer(session.idleTimer);
    session.offlineTimer = session.idleTimer = undefined;
    this.sessions.delete(session.id);
    user.sessions.delete(session.id);
    this.changedSessions.delete(session);
    this.claimedSessions.delete(session);
    if (!session.remote) this.publish({ op: 'end', sessionId: session.id });
    for (const name of [...session.channels]) {
      const channel = this.channels.get(name);
      if (channel) this.removeFromChannel(channel, session);
    }
    this.unwatchAll(session);
    if (announce) this.announce(user);
  }

  private welcome(session: Session, resumed: boolean): WelcomeMessage {
    const { config } = this;
    const { limits } = config;
    return {
      type: 'welcome',
      userId: session.user.record.userId,
      sessionId: session.id,
      resumed,
      serverTime: toIso(this.clock.now()),
      timeouts: {
        heartbeatMs: config.heartbeatIntervalMs,
        idleMs: config.idleTimeoutMs,
        offlineDelayMs: config.offlineDelayMs,
        typingMs: config.typingTimeoutMs,
      },
      limits: this.welcomeLimits ??= {
        maxFrameBytes: limits.maxFrameBytes,
        maxMetaBytes: limits.maxMetaBytes,
        maxMetaDepth: limits.maxMetaDepth,
        maxMetaKeys: limits.maxMetaKeys,
        maxMessageLength: limits.maxMessageLength,
        maxChannelNameLength: limits.maxChannelNameLength,
        maxChannelsPerSession: limits.maxChannelsPerSession,
        maxSessionsPerUser: limits.maxSessionsPerUser,
        maxWatchedUsers: limits.maxWatchedUsers,
        rateLimitPerSecond: limits.rateLimitPerSecond,
        rateLimitBurst: limits.rateLimitBurst,
        maxOutboundBufferBytes: limits.maxOutboundBufferBytes,
      },
      states: { ...config.states },
      self: selfView(this.facts(session.user), config.states),
    };
  }

  /** A resumed session missed events while away: give it full state again. */
  private resendState(session: Session): void {
    for (const name of session.channels) {
      const channel = this.channels.get(name);
      if (channel) this.sendSync(session, channel);
    }
    if (session.watching.size > 0) {
      const viewer = session.user.record.userId;
      this.fanout.toSession(session, { type: 'user.sync', users: [...session.watching].map((id) => this.viewOf(id, viewer)) });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Commands
  // -------------------------------------------------------------------------------------------

  /**
   * Runs one command of a live session. Returns data for the `ack` (or undefined for none), or
   * throws PresenceError, which the transport turns into an `error` frame.
   */
  handle(attachment: Attachment, command: ClientMessage): AckData | Promise<AckData> {
    const { session } = attachment;
    if (session.sink !== attachment.sink) return undefined; // a replaced socket's late frame
    const user = session.user;
    switch (command.type) {
      case 'join':
        return this.join(session, command.channel, command.meta);
      case 'leave': {
        const channel = this.joinedChannel(session, command.channel);
        this.removeFromChannel(channel, session);
        return {};
      }
      // The ack's `self` is built only when an ack was asked for (a ref): most updates send none.
      case 'status':
        this.applyStatus(user, command);
        return command.ref === undefined ? undefined : { self: selfView(this.facts(user), this.config.states) };
      case 'meta':
        this.applyMeta(user, assertMetaPatch(command.meta));
        return command.ref === undefined ? undefined : { self: selfView(this.facts(user), this.config.states) };
      case 'channel.meta':
        return this.setChannelMeta(session, command.channel, assertMetaPatch(command.meta));
      case 'activity':
        this.activity(session);
        return {};
      case 'idle':
        session.reportedIdle = true;
        this.refreshIdle(session);
        return {};
      case 'typing':
        this.typing(session, command.channel, command.typing);
        return {};
      case 'watch': {
        const loading = Array.isArray(command.users) ? this.loadUsers(command.users.filter((id) => typeof id === 'string')) : undefined;
        if (!loading) return this.watch(session, command.users);
        // Records of users this node has not seen come from the shared store first.
        return loading.then(() => (this.sessions.get(session.id) === session ? this.watch(session, command.users) : undefined));
      }
      case 'unwatch':
        this.unwatch(session, command.users);
        return { watching: session.watching.size };
      case 'ping':
        this.fanout.toSession(session, { type: 'pong', ...(command.ref !== undefined ? { ref: command.ref } : {}), serverTime: toIso(this.clock.now()) });
        return undefined;
      case 'logout':
        if (command.ref !== undefined) this.fanout.toSession(session, { type: 'ack', ref: command.ref });
        this.logout(user.record.userId);
        return undefined;
    }
  }

  private join(session: Session, name: string, meta: Meta | undefined): Record<string, unknown> {
    const { limits } = this.config;
    assertChannelName(name, limits);
    if (!channelAllowed(session.allowlist, name)) {
      throw new PresenceError('CHANNEL_FORBIDDEN', `the token does not allow channel "${name}"`);
    }
    const patch = meta === undefined ? undefined : assertMetaPatch(meta);
    const user = session.user;
    let channel = this.channels.get(name);
    let member = channel?.members.get(user.record.userId);
    if (!session.channels.has(name) && session.channels.size >= limits.maxChannelsPerSession) {
      throw new PresenceError('TOO_MANY_CHANNELS', `at most ${limits.maxChannelsPerSession} channels per session`);
    }
    // Validate before touching any state, so a refused join leaves nothing behind.
    const channelMeta = patch ? mergeMeta(member?.channelMeta ?? EMPTY_META, patch, limits) : member?.channelMeta ?? EMPTY_META;
    this.sendSync(session, this.addToChannel(session, name, channelMeta));
    return {};
  }

  /**
   * Puts a session (local or replicated) in a channel. The user joins when it is their first
   * session there; a changed channel meta is an update. The session itself gets no event: a local
   * joiner is sent `presence.sync` instead, and a replicated session has no socket here.
   */
  private addToChannel(session: Session, name: string, channelMeta: Meta, joinedAt = this.clock.now()): Channel {
    const user = session.user;
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { name, seq: 0, members: new Map(), typing: new Map() };
      this.channels.set(name, channel);
    }
    let member = channel.members.get(user.record.userId);
    // A session joining again is in the channel already: it gets the update like everyone else,
    // so its seq runs on without a gap up to the sync that follows.
    const alreadyIn = session.channels.has(name);
    session.channels.add(name);
    let metaChanged = false;
    if (!member) {
      member = { user, joinedAt, channelMeta, sessions: new Set([session]), rendered: undefined };
      channel.members.set(user.record.userId, member);
      user.channels.add(name);
      if (user.announcedVisible) {
        this.memberEvent('presence.join', channel, member, { exceptSession: session });
      }
    } else {
      member.sessions.add(session);
      if (member.channelMeta !== channelMeta && !sameJson(member.channelMeta, channelMeta)) {
        member.channelMeta = channelMeta;
        metaChanged = true;
        if (user.announcedVisible) {
          this.memberEvent('presence.update', channel, member, alreadyIn ? {} : { exceptSession: session });
        }
      }
    }
    // The member's other local sessions carry its channel meta: they are published again only
    // when it changed. Re-publishing them for every op applied here made two nodes with sessions
    // of one user in one channel answer each other's ops forever.
    if (metaChanged) this.memberChanged(member);
    else this.sessionChanged(session);
    return channel;
  }

  private joinedChannel(session: Session, name: unknown): Channel {
    assertChannelName(name, this.config.limits);
    const channel = this.channels.get(name as string);
    if (!channel || !session.channels.has(name as string)) {
      throw new PresenceError('NOT_IN_CHANNEL', `the session has not joined "${name as string}"`);
    }
    return channel;
  }

  /** Takes a session out of a channel; the user leaves when it was their last session there. */
  private removeFromChannel(channel: Channel, session: Session): void {
    const user = session.user;
    const userId = user.record.userId;
    const member = channel.members.get(userId);
    session.channels.delete(channel.name);
    this.sessionChanged(session);
    if (!member) return;
    member.sessions.delete(session);
    if (member.sessions.size > 0) {
      if (!this.hasAttachedSessionIn(channel, user)) this.stopTyping(channel, user);
      return;
    }
    this.stopTyping(channel, user);
    channel.members.delete(userId);
    user.channels.delete(channel.name);
    if (user.announcedVisible) {
      // A user still connected elsewhere was seen just now; one who timed out, at their disconnect.
      const stillLive = hasLiveSession(user);
      const lastSeen = stillLive ? toIso(this.clock.now()) : toIso(user.record.lastSeenAt);
      this.fanout.toChannel(channel, { type: 'presence.leave', channel: channel.name, userId, lastSeen, seq: ++channel.seq });
    }
    if (channel.members.size === 0) {
      for (const timer of channel.typing.values()) this.clock.clearTimer(timer);
      this.channels.delete(channel.name);
    }
  }

  private setChannelMeta(session: Session, name: string, patch: Meta): Record<string, unknown> {
    const channel = this.joinedChannel(session, name);
    const member = channel.members.get(session.user.record.userId)!;
    const next = mergeMeta(member.channelMeta, patch, this.config.limits);
    if (!sameJson(member.channelMeta, next)) {
      member.channelMeta = next;
      this.memberChanged(member);
      if (session.user.announcedVisible) {
        this.memberEvent('presence.update', channel, member);
      }
    }
    return { channelMeta: member.channelMeta };
  }

  private activity(session: Session): void {
    const now = this.clock.now();
    session.lastActivityAt = now;
    session.reportedIdle = false;
    this.touchActivity(session.user, now);
    if (session.idle) this.refreshIdle(session);
    else this.armIdleTimer(session);
  }

  /** Activity moves `lastSeen`/`lastActive`, but never while invisible: those stay frozen. */
  private touchActivity(user: UserState, now: number): void {
    if (user.record.manual.status === 'invisible') return;
    user.record.lastActiveAt = now;
    user.record.lastSeenAt = now;
    this.save(user, 'activity');
  }

  private armIdleTimer(session: Session): void {
    if (session.idleTimer || session.idle) return;
    const due = session.lastActivityAt + this.config.idleTimeoutMs - this.clock.now();
    // One timer per session, re-armed lazily: activity only moves a timestamp, never a timer.
    session.idleTimer = this.clock.setTimer(due, () => {
      session.idleTimer = undefined;
      this.refreshIdle(session);
    });
  }

  private refreshIdle(session: Session): void {
    const timedOut = this.clock.now() - session.lastActivityAt >= this.config.idleTimeoutMs;
    const idle = session.reportedIdle || timedOut;
    const changed = idle !== session.idle;
    // Set before arming: armIdleTimer skips an idle session, and one coming back from idle must
    // get its timer again, or it never goes idle a second time.
    session.idle = idle;
    if (!idle) this.armIdleTimer(session);
    if (!changed) return;
    this.sessionChanged(session);
    this.announce(session.user);
  }

  private typing(session: Session, name: string, typing: boolean): void {
    const channel = this.joinedChannel(session, name);
    const user = session.user;
    if (!typing) {
      if (channel.typing.has(user.record.userId)) this.publish({ op: 'typing', channel: name, userId: user.record.userId, typing: false });
      this.stopTyping(channel, user);
      return;
    }
    this.activity(session);
    // Invisible users type in silence: nothing is stored, so nothing can leak later.
    if (!user.announcedVisible) return;
    this.startTyping(channel, user);
    this.publish({ op: 'typing', channel: name, userId: user.record.userId, typing: true });
  }

  /** Starts or refreshes a user's typing; only the start is broadcast. */
  private startTyping(channel: Channel, user: UserState): void {
    const userId = user.record.userId;
    const existing = channel.typing.get(userId);
    this.clock.clearTimer(existing);
    channel.typing.set(
      userId,
      this.clock.setTimer(this.config.typingTimeoutMs, () => this.stopTyping(channel, user)),
    );
    if (!existing) this.fanout.toChannel(channel, { type: 'typing', channel: channel.name, userId, typing: true }, { exceptUserId: userId });
  }

  private stopTyping(channel: Channel, user: UserState): void {
    const userId = user.record.userId;
    const timer = channel.typing.get(userId);
    if (!timer) return;
    this.clock.clearTimer(timer);
    channel.typing.delete(userId);
    this.fanout.toChannel(channel, { type: 'typing', channel: channel.name, userId, typing: false }, { exceptUserId: userId });
  }

  private hasAttachedSessionIn(channel: Channel, user: UserState): boolean {
    const member = channel.members.get(user.record.userId);
    if (!member) return false;
    for (const s of member.sessions) if (isAttached(s)) return true;
    return false;
  }

  private watch(session: Session, ids: string[]): Record<string, unknown> {
    const { limits } = this.config;
    const unique = [...new Set(ids)];
    for (const id of unique) assertUserId(id, limits);
    const added = unique.filter((id) => !session.watching.has(id));
    if (session.watching.size + added.length > limits.maxWatchedUsers) {
      throw new PresenceError('TOO_MANY_WATCHES', `at most ${limits.maxWatchedUsers} watched users per session`);
    }
    for (const id of added) {
      this.watchers.add(session, id);
      // Held in memory while watched, so a change arriving from another node can be compared
      // with what the watchers were told.
      this.userState(id);
    }
    const viewer = session.user.record.userId;
    this.fanout.toSession(session, { type: 'user.sync', users: unique.map((id) => this.viewOf(id, viewer)) });
    return { watching: session.watching.size };
  }

  private unwatch(session: Session, userIds: Iterable<string>): void {
    for (const id of [...userIds]) {
      this.watchers.remove(session, id);
      // A user kept in memory only because they were watched can go now.
      const watched = this.users.get(id);
      if (watched && watched !== session.user) this.releaseIfUnused(watched);
    }
  }

  private unwatchAll(session: Session): void {
    this.unwatch(session, session.watching);
  }

  // -------------------------------------------------------------------------------------------
  // User state shared by WebSocket commands and the HTTP API
  // -------------------------------------------------------------------------------------------

  /** Applies a status patch; announces it unless the caller has more to change (then returns whether privacy changed). */
  private applyStatus(
    user: UserState,
    command: Pick<StatusCommand, 'status' | 'state' | 'message' | 'expiresAt' | 'visibility'>,
    announce = true,
  ): boolean {
    const now = this.clock.now();
    const manual = { ...user.record.manual };
    // Check everything first: a refused command changes nothing.
    const checked = this.checkStatus(command, now);
    const message = checked.message === undefined ? manual.message : checked.message;
    const expiresAt = checked.expiresAt;

    if (command.status === 'online') {
      manual.status = null;
      manual.state = null;
    } else if (command.status) {
      manual.status = command.status;
    }
    if (command.state !== undefined) {
      manual.state = command.state;
      // A new state replaces away/busy (the state carries its own base), but never breaks invisibility.
      if (command.state !== null && command.status === undefined && manual.status !== 'invisible') manual.status = null;
    }
    manual.message = message;
    // Every command that sets the manual presence sets its expiry anew; one that only changes
    // visibility leaves the running expiry alone.
    const setsManual = command.status !== undefined || command.state !== undefined || command.message !== undefined || command.expiresAt !== undefined;
    if (setsManual) manual.expiresAt = manual.status || manual.state || manual.message ? expiresAt : null;

    const wasInvisible = user.record.manual.status === 'invisible';
    const becomesInvisible = manual.status === 'invisible';
    if (!wasInvisible && becomesInvisible && user.sessions.size > 0) {
      // lastSeen freezes at the moment of going invisible, exactly as it would at a disconnect.
      user.record.lastSeenAt = now;
    }
    user.record.manual = manual;
    const visibilityChanged = command.visibility !== undefined && command.visibility !== user.record.visibility;
    if (command.visibility !== undefined) user.record.visibility = command.visibility;
    this.scheduleExpiry(user);
    this.save(user);
    // After the save: an activity save is written quietly (other nodes are not told), and made
    // first it would carry the status change with it, so a user back from invisible stayed
    // offline on every other node.
    if (wasInvisible && !becomesInvisible && user.sessions.size > 0) this.touchActivity(user, now);
    if (announce) this.announce(user, visibilityChanged);
    return visibilityChanged;
  }

  /** Validates the status fields of a command or patch; returns the parsed message and expiry. */
  private checkStatus(
    command: Pick<StatusCommand, 'state' | 'message' | 'expiresAt'>,
    now: number,
  ): { message: string | null | undefined; expiresAt: number | null } {
    if (command.state !== undefined && command.state !== null && !Object.hasOwn(this.config.states, command.state)) {
      throw new PresenceError('UNKNOWN_STATE', `state "${String(command.state).slice(0, 64)}" is not configured`);
    }
    const message = command.message === undefined ? undefined : assertMessage(command.message, this.config.limits);
    return { message, expiresAt: parseExpiry(command.expiresAt, now) };
  }

  private applyMeta(user: UserState, patch: Meta, announce = true): void {
    const next = mergeMeta(user.record.meta, patch, this.config.limits);
    if (sameJson(next, user.record.meta)) return;
    user.record.meta = next;
    this.save(user);
    if (announce) this.announce(user);
  }

  private scheduleExpiry(user: UserState, lastInLine = false): void {
    this.clock.clearTimer(user.expiryTimer);
    user.expiryTimer = undefined;
    const at = user.record.manual.expiresAt;
    if (at === null) return;
    const delay = at - this.clock.now();
    user.expiryTimer = this.clock.setTimer(lastInLine ? 0 : Math.min(delay, MAX_TIMER_MS), () => {
      user.expiryTimer = undefined;
      if (user.record.manual.expiresAt !== at) return;
      if (this.clock.now() < at || !lastInLine) {
        // Due now: cleared after everything else due at this instant, so an offline delay that
        // ends at the same moment ends first (else the user would flash into sight and out).
        this.scheduleExpiry(user, this.clock.now() >= at);
        return;
      }
      const wasInvisible = user.record.manual.status === 'invisible';
      user.record.manual = { status: null, state: null, message: null, expiresAt: null };
      this.save(user, 'expiry');
      // After the save, as in applyStatus: a quiet activity save must not carry the cleared status.
      if (wasInvisible && user.sessions.size > 0) this.touchActivity(user, this.clock.now());
      this.announce(user);
      this.releaseIfUnused(user);
    });
  }

  private applyIdentity(user: UserState, identity: Identity): void {
    let changed = false;
    if (Object.keys(identity.meta).length > 0) {
      // Token claims (name, avatar) are the issuer's word and win over stored values.
      const next = mergeMeta(user.record.meta, identity.meta, this.config.limits);
      if (!sameJson(next, user.record.meta)) {
        user.record.meta = next;
        changed = true;
      }
    }
    if (identity.contacts) {
      user.record.contacts = [...identity.contacts];
      changed = true;
    }
    if (identity.visibility && identity.visibility !== user.record.visibility) {
      user.record.visibility = identity.visibility;
      changed = true;
    }
    if (changed) this.save(user);
  }

  // -------------------------------------------------------------------------------------------
  // Announcing changes
  // -------------------------------------------------------------------------------------------

  /**
   * Compares the user's presence with what others were last told and sends the difference:
   * join/leave in every channel when visibility flips, update otherwise, and user.update to watchers.
   */
  private announce(user: UserState, privacyChanged = false): void {
    const facts = this.facts(user);
    const visible = isVisible(facts);
    const view = publicView(facts, this.config.states);
    const wasVisible = user.announcedVisible;
    const changed = !sameVisiblePresence(view, user.published) || visible !== wasVisible;
    if (!changed) {
      // Keep the announced view as it was (timestamps included): snapshots must match the events.
      if (privacyChanged) this.watchers.notify(user, user.published, false, true);
      return;
    }
    user.published = view;
    user.announcedVisible = visible;
    if (visible !== wasVisible) this.visibleUserCount += visible ? 1 : -1;

    const userId = user.record.userId;
    for (const name of user.channels) {
      const channel = this.channels.get(name);
      if (!channel) continue;
      const member = channel.members.get(userId)!;
      if (visible && !wasVisible) {
        this.memberEvent('presence.join', channel, member);
      } else if (!visible && wasVisible) {
        this.stopTyping(channel, user);
        this.fanout.toChannel(channel, { type: 'presence.leave', channel: name, userId, lastSeen: view.lastSeen, seq: ++channel.seq });
      } else if (visible && changed) {
        this.memberEvent('presence.update', channel, member);
      }
    }
    this.watchers.notify(user, view, true, privacyChanged);
  }

  /** `presence.sync`, assembled from each member's cached JSON (the same shape JSON.stringify gives). */
  private sendSync(session: Session, channel: Channel): void {
    const parts: string[] = [];
    for (const member of channel.members.values()) {
      if (member.user.announcedVisible) parts.push(this.memberJson(member));
    }
    const json = `{"type":"presence.sync","channel":${JSON.stringify(channel.name)},"members":[${parts.join(',')}],"seq":${channel.seq}}`;
    this.fanout.toSessions([session], json, 'presence.sync');
  }

  /**
   * `presence.join` / `presence.update` with the member's cached JSON spliced in: the same bytes
   * `JSON.stringify` gives for the message, without building or serializing the member again.
   */
  private memberEvent(type: 'presence.join' | 'presence.update', channel: Channel, member: ChannelMember, exclusions?: BroadcastExclusions): void {
    const json = `{"type":"${type}","channel":${JSON.stringify(channel.name)},"member":${this.memberJson(member)},"seq":${++channel.seq}}`;
    this.fanout.toChannelJson(channel, type, json, exclusions);
  }

  /**
   * The member as JSON, cached while the user's announced view and the channel meta stay the same
   * objects. Only the string is kept (not the view it came from): it is all a sync or an event
   * needs, and a view with its date strings would double what every membership holds.
   */
  private memberJson(member: ChannelMember): string {
    const { rendered } = member;
    if (rendered && rendered.published === member.user.published && rendered.channelMeta === member.channelMeta) return rendered.json;
    const json = flat(JSON.stringify(memberView(member.user.published, member.channelMeta, member.joinedAt)));
    member.rendered = { published: member.user.published, channelMeta: member.channelMeta, json };
    return json;
  }

  private visibleMembers(channel: Channel): Member[] {
    const members: Member[] = [];
    for (const member of channel.members.values()) {
      if (member.user.announcedVisible) members.push(memberView(member.user.published, member.channelMeta, member.joinedAt));
    }
    return members;
  }

  // -------------------------------------------------------------------------------------------
  // Helpers
  // -------------------------------------------------------------------------------------------

  private userState(userId: string): UserState {
    let user = this.users.get(userId);
    if (user) return user;
    const record = this.store.get(userId) ?? emptyUserRecord(userId);
    user = {
      record,
      sessions: new Map(),
      channels: new Set(),
      expiryTimer: undefined,
      published: hiddenView(userId),
      announcedVisible: false,
    };
    user.published = publicView(this.facts(user), this.config.states);
    this.users.set(userId, user);
    this.scheduleExpiry(user);
    return user;
  }

  /**
   * Forgets the live state of a user nobody needs in memory any more: no session, no pending
   * expiry. Their record stays in the store, and views of them are computed from it.
   */
  private releaseIfUnused(user: UserState): void {
    // A watched user stays, so changes arriving from other nodes can be compared and announced.
    if (user.sessions.size > 0 || user.expiryTimer || this.watchers.isWatched(user.record.userId)) return;
    if (this.users.get(user.record.userId) === user) this.users.delete(user.record.userId);
  }

  private facts(user: UserState): PresenceFacts {
    let anyActive = false;
    const devices = new Set<string>();
    for (const session of user.sessions.values()) {
      if (!session.idle) anyActive = true;
      devices.add(session.device);
    }
    return { record: user.record, sessionCount: user.sessions.size, anyActive, devices: [...devices].sort() };
  }

  private save(user: UserState, kind: SaveKind = 'presence'): void {
    this.store.save(user.record, kind);
  }

  /** Presence of any user id (known or not) as `viewer` may see it. */
  private viewOf(userId: string, viewer: string | undefined): UserPresence {
    const user = this.users.get(userId);
    const record = user?.record ?? this.store.get(userId);
    if (!record) return hiddenView(userId);
    if (!mayView(record, viewer)) return hiddenView(userId);
    // What was last announced, so snapshots and the events that led to them always agree.
    if (user) return user.published;
    return publicView({ record, sessionCount: 0, anyActive: false, devices: [] }, this.config.states);
  }

  // -------------------------------------------------------------------------------------------
  // Queries (HTTP API)
  // -------------------------------------------------------------------------------------------

  channelPresence(name: string, page: { limit: number; cursor?: string }): ChannelPage {
    assertChannelName(name, this.config.limits);
    const channel = this.channels.get(name);
    if (!channel) return { channel: name, count: 0, members: [] };
    const all = this.visibleMembers(channel).sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
    const start = page.cursor === undefined ? 0 : all.findIndex((m) => m.userId > page.cursor!);
    const from = start < 0 ? all.length : start;
    const members = all.slice(from, from + page.limit);
    const result: ChannelPage = { channel: name, count: all.length, members };
    if (from + page.limit < all.length) result.nextCursor = members[members.length - 1].userId;
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

  updateUser(userId: string, patch: UserPatch): SelfPresence {
    assertUserId(userId, this.config.limits);
    const meta = patch.meta === undefined ? undefined : assertMetaPatch(patch.meta);
    if (meta) assertMetaWithinLimits(meta, this.config.limits);
    for (const id of patch.contacts ?? []) assertUserId(id, this.config.limits);
    const status = patch.status === 'offline' ? undefined : patch.status;
    const touchesStatus =
      status !== undefined || patch.state !== undefined || patch.message !== undefined || patch.expiresAt !== undefined || patch.visibility !== undefined;
    // Check the whole patch before changing anything, so a refused request changes nothing.
    if (touchesStatus) this.checkStatus(patch, this.clock.now());
    const user = this.userState(userId);
    if (meta) mergeMeta(user.record.meta, meta, this.config.limits);
    // Released below, not here: the rest of the patch still applies to this object.
    if (patch.status === 'offline') {
      this.publish({ op: 'logout', userId });
      this.endAllSessions(user);
    }
    // Status, meta and contacts change together and are announced once, as one update.
    let privacyChanged = false;
    if (touchesStatus) {
      privacyChanged = this.applyStatus(
        user,
        { status, state: patch.state, message: patch.message, expiresAt: patch.expiresAt, visibility: patch.visibility },
        false,
      );
    }
    if (meta) this.applyMeta(user, meta, false);
    if (patch.contacts) {
      user.record.contacts = [...new Set(patch.contacts)];
      this.save(user);
      privacyChanged = true;
    }
    this.announce(user, privacyChanged);
    const self = selfView(this.facts(user), this.config.states);
    this.releaseIfUnused(user);
    return self;
  }

  stats(): PresenceStats {
    let channels = 0;
    for (const channel of this.channels.values()) {
      for (const member of channel.members.values()) {
        if (member.user.announcedVisible) {
          channels += 1;
          break;
        }
      }
    }
    let sessions = 0;
    for (const session of this.sessions.values()) if (!session.remote) sessions += 1;
    return { connections: this.attachedCount, sessions, onlineUsers: this.visibleUserCount, channels };
  }

  /** Sizes of the live state, for leak checks in tests and soak runs. */
  inspect(): { users: number; sessions: number; remoteSessions: number; channels: number; watchedUsers: number; typing: number } {
    let typing = 0;
    for (const channel of this.channels.values()) typing += channel.typing.size;
    let remoteSessions = 0;
    for (const session of this.sessions.values()) if (session.remote) remoteSessions += 1;
    return {
      users: this.users.size,
      sessions: this.sessions.size - remoteSessions,
      remoteSessions,
      channels: this.channels.size,
      watchedUsers: this.watchers.size,
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
    for (const channel of this.channels.values()) {
      let members = 0;
      for (const member of channel.members.values()) if (member.user.announcedVisible) members += 1;
      if (members > 0) counted.push({ channel: channel.name, members });
    }
    counted.sort((a, b) => b.members - a.members || (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0));
    const nodes = new Map<string | null, { sessions: number; connections: number; users: number }>();
    const usersSeen = new Map<string | null, Set<string>>();
    for (const session of this.sessions.values()) {
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
    return this.sessions.has(sessionId);
  }

  /** Users with a socket open on this node now: a durable store keeps their `lastSeen` close to a crash. */
  connectedUserIds(): string[] {
    const ids: string[] = [];
    for (const [id, user] of this.users) {
      for (const session of user.sessions.values()) {
        if (session.sink) {
          ids.push(id);
          break;
        }
      }
    }
    return ids;
  }

  /** Ends every session at once (shutdown): no events, timers cleared. */
  dispose(): void {
    for (const session of this.sessions.values()) {
      this.clock.clearTimer(session.idleTimer);
      this.clock.clearTimer(session.offlineTimer);
    }
    for (const user of this.users.values()) this.clock.clearTimer(user.expiryTimer);
    for (const channel of this.channels.values()) for (const timer of channel.typing.values()) this.clock.clearTimer(timer);
    this.sessions.clear();
    this.channels.clear();
    this.watchers.clear();
    this.users.clear();
    this.changedSessions.clear();
    this.claimedSessions.clear();
    this.attachedCount = 0;
    this.visibleUserCount = 0;
  }

  // -------------------------------------------------------------------------------------------
  // Cluster: publishing this node's sessions, applying the other nodes'
  // -------------------------------------------------------------------------------------------

  /** A local session changed: its new state is published once, at the end of this turn. */
  private sessionChanged(session: Session): void {
    if (!this.broker || session.remote) return;
    this.changedSessions.add(session);
    if (this.publishQueued) return;
    this.publishQueued = true;
    queueMicrotask(() => this.publishChangedSessions());
  }

  /** A member's channel meta or sessions changed: every local session in it carries the member. */
  private memberChanged(member: ChannelMember): void {
    for (const session of member.sessions) this.sessionChanged(session);
  }

  private publishChangedSessions(): void {
    this.publishQueued = false;
    if (!this.broker) return;
    for (const session of this.changedSessions) {
      if (this.sessions.get(session.id) !== session || session.remote) continue;
      const claim = this.claimedSessions.delete(session);
      this.broker.publish({ op: 'session', session: this.snapshotOf(session), ...(claim ? { claim } : {}) });
    }
    this.changedSessions.clear();
  }

  /** Publishes an op after the session changes it may depend on (a typing op needs the join first). */
  private publish(op: NodeOp): void {
    if (!this.broker) return;
    this.publishChangedSessions();
    this.broker.publish(op);
  }

  private snapshotOf(session: Session): SessionSnapshot {
    const userId = session.user.record.userId;
    const channels: SessionSnapshot['channels'] = {};
    for (const name of session.channels) {
      const member = this.channels.get(name)?.members.get(userId);
      // Defined, not assigned: assigning to a channel named `__proto__` would set the prototype,
      // and the channel would silently drop out of every replica.
      if (member) Object.defineProperty(channels, name, { value: { meta: member.channelMeta, joinedAt: member.joinedAt }, enumerable: true, writable: true, configurable: true });
    }
    const snapshot: SessionSnapshot = { id: session.id, userId, device: session.device, idle: session.idle, attached: session.sink !== null, channels };
    if (session.moves > 0) snapshot.moves = session.moves;
    return snapshot;
  }

  /** This node's sessions, for the broker to write whole (at start, and after Redis lost them). */
  localSnapshot(): SessionSnapshot[] {
    const snapshots: SessionSnapshot[] = [];
    for (const session of this.sessions.values()) if (!session.remote) snapshots.push(this.snapshotOf(session));
    return snapshots;
  }

  applyOps(nodeId: string, ops: NodeOp[]): void | Promise<void> {
    const unseen = ops.flatMap((op) => (op.op === 'session' && !this.users.has(op.session.userId) ? [op.session.userId] : []));
    const loading = unseen.length > 0 ? this.store.load(unseen) : undefined;
    if (loading) return loading.then(() => this.applyOpsNow(nodeId, ops));
    this.applyOpsNow(nodeId, ops);
  }

  private applyOpsNow(nodeId: string, ops: NodeOp[]): void {
    for (const op of ops) {
      switch (op.op) {
        case 'session':
          this.applySession(nodeId, op.session, op.claim === true);
          break;
        case 'end': {
          const session = this.sessions.get(op.sessionId);
          // Only the owner ends a session; a late op from a node it moved away from is stale.
          if (!session || session.remote?.node !== nodeId) break;
          const user = session.user;
          this.expireSession(session);
          this.releaseIfUnused(user);
          break;
        }
        case 'typing': {
          const channel = this.channels.get(op.channel);
          const user = this.users.get(op.userId);
          if (!channel || !user || !channel.members.has(op.userId)) break;
          if (!op.typing) this.stopTyping(channel, user);
          else if (user.announcedVisible) this.startTyping(channel, user);
          break;
        }
        case 'logout': {
          const user = this.users.get(op.userId);
          if (!user) break;
          this.endAllSessions(user);
          this.releaseIfUnused(user);
          break;
        }
      }
    }
  }

  applySnapshot(nodeId: string, snapshots: SessionSnapshot[]): void | Promise<void> {
    const unseen = snapshots.flatMap((snapshot) => (this.users.has(snapshot.userId) ? [] : [snapshot.userId]));
    const loading = unseen.length > 0 ? this.store.load([...new Set(unseen)]) : undefined;
    if (loading) return loading.then(() => this.applySnapshotNow(nodeId, snapshots));
    this.applySnapshotNow(nodeId, snapshots);
  }

  private applySnapshotNow(nodeId: string, snapshots: SessionSnapshot[]): void {
    const listed = new Set(snapshots.map((snapshot) => snapshot.id));
    for (const session of [...this.sessions.values()]) {
      if (session.remote?.node !== nodeId || listed.has(session.id)) continue;
      const user = session.user;
      this.expireSession(session);
      this.releaseIfUnused(user);
    }
    for (const snapshot of snapshots) this.applySession(nodeId, snapshot, false);
  }

  /** Brings the replica of one session in line with what its owner says about it. */
  private applySession(nodeId: string, snapshot: SessionSnapshot, claim: boolean): void {
    let session = this.sessions.get(snapshot.id);
    if (session) {
      if (session.user.record.userId !== snapshot.userId) return;
      const moves = snapshot.moves ?? 0;
      // Written before a move this node knows of: a late op, or a crashed owner's stored state.
      if (moves < session.moves) return;
      // Written after a move this node has not seen yet (it read the new owner's whole state).
      const movedSince = moves > session.moves;
      if (!session.remote) {
        // Ours, unless another node took it over (the client resumed there).
        if (!claim && !movedSince) return;
        this.handOver(session, nodeId);
      } else if (session.remote.node !== nodeId && !claim && !movedSince && this.broker?.nodes().includes(session.remote.node)) {
        // A late op from a node the session has since moved away from. Unless the owner on record
        // is gone: then this is news of a move whose claim this node missed (it read the new
        // owner's whole state instead, after a gap or a Redis restart), and it wins.
        return;
      }
      session.moves = moves;
      session.remote!.node = nodeId;
      // An orphan (its node died) that was resumed or re-registered is no longer on its way out.
      this.clock.clearTimer(session.offlineTimer);
      session.offlineTimer = undefined;
    } else {
      const user = this.userState(snapshot.userId);
      session = {
        id: snapshot.id,
        user,
        device: snapshot.device,
        sink: null,
        lastActivityAt: this.clock.now(),
        reportedIdle: false,
        idle: snapshot.idle,
        idleTimer: undefined,
        offlineTimer: undefined,
        channels: new Set(),
        watching: NO_WATCHES,
        allowlist: undefined,
        moves: snapshot.moves ?? 0,
        remote: { node: nodeId, attached: snapshot.attached },
      };
      this.sessions.set(session.id, session);
      user.sessions.set(session.id, session);
    }
    const user = session.user;
    session.device = snapshot.device;
    session.idle = snapshot.idle;
    session.remote!.attached = snapshot.attached;
    for (const name of [...session.channels]) {
      if (Object.hasOwn(snapshot.channels, name)) continue;
      const channel = this.channels.get(name);
      if (channel) this.removeFromChannel(channel, session);
      else session.channels.delete(name);
    }
    for (const [name, entry] of Object.entries(snapshot.channels)) this.addToChannel(session, name, entry.meta, entry.joinedAt);
    if (!snapshot.attached) {
      for (const name of session.channels) {
        const channel = this.channels.get(name);
        if (channel && !this.hasAttachedSessionIn(channel, user)) this.stopTyping(channel, user);
      }
    }
    this.announce(user);
  }

  /** Another node resumed one of our sessions: our socket for it (if any) is the stale one. */
  private handOver(session: Session, nodeId: string): void {
    this.changedSessions.delete(session);
    this.claimedSessions.delete(session);
    this.clock.clearTimer(session.idleTimer);
    this.clock.clearTimer(session.offlineTimer);
    session.idleTimer = session.offlineTimer = undefined;
    this.unwatchAll(session);
    // Drops it from this node's stored state; others ignore an `end` from a non-owner.
    this.publish({ op: 'end', sessionId: session.id });
    session.remote = { node: nodeId, attached: true };
    if (session.sink) {
      const sink = session.sink;
      session.sink = null;
      this.attachedCount -= 1;
      sink.close(4000, 'SESSION_REPLACED');
    }
  }

  /**
   * A node lost its lease (crash, partition, shutdown): its sessions stay for the offline delay,
   * as if their sockets had just closed, so clients that resume elsewhere cause no leave.
   */
  nodeDown(nodeId: string): void {
    for (const session of [...this.sessions.values()]) {
      if (session.remote?.node !== nodeId || session.offlineTimer) continue;
      const user = session.user;
      session.remote.attached = false;
      for (const name of session.channels) {
        const channel = this.channels.get(name);
        if (channel && !this.hasAttachedSessionIn(channel, user)) this.stopTyping(channel, user);
      }
      const expire = () => {
        this.expireSession(session);
        this.releaseIfUnused(user);
      };
      if (this.config.offlineDelayMs <= 0) expire();
      else session.offlineTimer = this.clock.setTimer(this.config.offlineDelayMs, expire);
    }
  }

  /**
   * A user record as the shared store now holds it. Writes arrive in the order they happened,
   * so the newest wins, except `lastSeen`/`lastActive`, which only move forward (this node may
   * hold newer activity than it has written yet).
   */
  applyRecord(record: UserRecord): void {
    const user = this.users.get(record.userId);
    if (!user) return;
    const before = user.record;
    const merged: UserRecord = {
      ...record,
      lastSeenAt: latest(before.lastSeenAt, record.lastSeenAt),
      lastActiveAt: latest(before.lastActiveAt, record.lastActiveAt),
      // The same meta keeps its object: a change is detected by identity, and a record written
      // elsewhere for another field (a lastSeen) must not look like a meta change to others.
      meta: sameJson(before.meta, record.meta) ? before.meta : record.meta,
    };
    // A status whose time ran out while no node could write its clearing (the shared service was
    // away; each node cleared it by itself meanwhile) is over here too, not shown again first.
    if (merged.manual.expiresAt !== null && merged.manual.expiresAt <= this.clock.now()) {
      merged.manual = { status: null, state: null, message: null, expiresAt: null };
    }
    if (sameJson(merged, before)) return;
    const privacyChanged = before.visibility !== merged.visibility || !sameJson(before.contacts, merged.contacts);
    user.record = merged;
    if (before.manual.expiresAt !== merged.manual.expiresAt) this.scheduleExpiry(user);
    this.announce(user, privacyChanged);
    this.releaseIfUnused(user);
  }
}

/**
 * The same string, stored flat. V8 builds a long JSON.stringify result as a tree of pieces; this
 * one is kept for as long as the membership lasts, and the tree costs about 100 bytes more than
 * one flat string. Converting it to a number makes V8 flatten it in place (the result is unused).
 */
function flat(text: string): string {
  Number(text);
  return text;
}

function isAttached(session: Session): boolean {
  return session.sink !== null || session.remote?.attached === true;
}

/** A socket of the user's is open (here or on another node); lingering sessions do not count. */
function hasLiveSession(user: UserState): boolean {
  for (const session of user.sessions.values()) if (isAttached(session)) return true;
  return false;
}

function latest(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
