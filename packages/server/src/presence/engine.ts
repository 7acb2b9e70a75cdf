import { randomUUID } from 'node:crypto';
import type { ClientMessage, Meta, SelfPresence, StatusCommand, WelcomeMessage } from '@presence/protocol';
import type { ServerConfig } from '../config/config.js';
import { PresenceError } from '../errors.js';
import type { Identity } from '../auth/identity.js';
import { channelAllowed } from '../auth/access.js';
import { EMPTY_META, MemoryUserStore, emptyUserRecord, type SaveKind, type UserStore } from '../store/user-store.js';
import { Announcer } from './announcer.js';
import type { Clock } from './clock.js';
import { ChangeCauses } from './events.js';
import { PresenceReader } from './queries.js';
import type { UserPatch } from './service.js';
import type { Channel, ChannelMember, PresenceState, Session, SessionOutput, SessionSink, UserState } from './state.js';
import { TypingTracker } from './typing.js';
import { UserUpdates } from './user-updates.js';
import { welcomeLimits, welcomeMessage } from './welcome.js';
import { factsOf, hiddenView, publicView, selfView } from './user-presence.js';
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
import { NO_WATCHES, WatcherIndex } from './watchers.js';

export type { SessionSink } from './state.js';

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

/** Issues a session's token (`welcome.sessionToken`); see auth/session-tokens.ts. */
export interface SessionTokenIssuer {
  issue(sessionId: string, userId: string, now: number): { token: string; expiresAt: number };
}

export interface EngineOptions {
  config: ServerConfig;
  clock: Clock;
  store?: UserStore;
  newSessionId?: () => string;
  /** Without it, `welcome` carries no `sessionToken`. */
  sessionTokens?: SessionTokenIssuer;
}

/**
 * What the engine tells the replication of this node's sessions to other nodes (see `replica.ts`,
 * which implements it in a cluster). Without a cluster, nothing is told.
 */
export interface SessionReplication {
  /** A local session changed: its new state is published once, at the end of this turn. */
  sessionChanged(session: Session): void;
  /** A member's channel meta changed: every local session in it carries the member. */
  memberChanged(member: ChannelMember): void;
  /** A local session was just taken over from another node: its next op says so. */
  sessionClaimed(session: Session): void;
  /** A session ended here (a replica's end is not published: only its owner ends it). */
  sessionEnded(session: Session): void;
  /** Publishes an op that is not a session's state (typing, logout). */
  publish(
    op: { op: 'typing'; channel: string; userId: string; typing: boolean } | { op: 'logout'; userId: string } | { op: 'unload'; sessionId: string; userId: string },
  ): void;
  /**
   * Before a session here joins a channel: resolves once the channel's members on other nodes are
   * known here. Undefined when they are already (or there are no other nodes).
   */
  prepareChannel(name: string): Promise<void> | undefined;
}

const NO_REPLICATION: SessionReplication = {
  sessionChanged() {},
  memberChanged() {},
  sessionClaimed() {},
  sessionEnded() {},
  publish() {},
  prepareChannel: () => undefined,
};

const NO_OUTPUT: SessionOutput = {
  send() {},
  sync() {},
};

/** What an `ack` carries; a promise when the command first had to load user records. */
export type AckData = Record<string, unknown> | undefined;

/** Members in a `members` page when the command names no `limit`. */
const DEFAULT_MEMBERS_PAGE = 100;
const SESSION_ID = /^[A-Za-z0-9_-]{8,64}$/;
const DEVICE = /^[A-Za-z0-9_.-]{1,32}$/;
/** setTimeout cannot wait longer than this; longer expiries re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The presence model of one node, as a state machine: sessions merged into users, channels with
 * user-level membership, typing, watches, privacy and every timeout. It knows nothing of sockets,
 * HTTP, wire formats or other nodes: it reads time from the injected clock, announces what others
 * may see as presence events (`announcer`), answers a session through `output`, and tells
 * `replication` what other nodes must learn.
 *
 * Members marked "for the replica" are the engine's own operations, used by `Replica` to apply
 * other nodes' sessions with the same rules as local ones.
 */
export class PresenceEngine {
  readonly config: ServerConfig;
  /** The injected clock; every timer it sets runs as a change of this node. */
  readonly clock: Clock;
  readonly store: UserStore;
  private readonly newSessionId: () => string;
  private readonly sessionTokens: SessionTokenIssuer | undefined;
  readonly state: PresenceState = { users: new Map(), sessions: new Map(), channels: new Map() };
  private readonly users = this.state.users;
  private readonly sessions = this.state.sessions;
  private readonly channels = this.state.channels;
  /** Watched user id → sessions watching them. */
  readonly watchers = new WatcherIndex();
  readonly causes = new ChangeCauses(randomUUID().slice(0, 8));
  readonly announcer: Announcer;
  readonly typingTracker: TypingTracker;
  readonly reader: PresenceReader;
  /** Status, state, message, expiry, meta and privacy: what a user sets (`user-updates.ts`). */
  readonly updates: UserUpdates = new UserUpdates(this);
  /** Where direct answers to a session go (the wire protocol sets it). */
  output: SessionOutput = NO_OUTPUT;
  /** Set by the replica in a cluster. */
  replication: SessionReplication = NO_REPLICATION;
  private attachedCount = 0;
  /** The limits part of `welcome`, built once: config does not change while running. */
  private welcomeLimits?: WelcomeMessage['limits'];

  constructor(options: EngineOptions) {
    this.config = options.config;
    this.clock = causedClock(options.clock, this.causes);
    this.store = options.store ?? new MemoryUserStore();
    this.newSessionId = options.newSessionId ?? randomUUID;
    this.sessionTokens = options.sessionTokens;
    this.announcer = new Announcer(this.state, this.config.states, this.causes, (channel, user) => this.typingTracker.stop(channel, user));
    this.typingTracker = new TypingTracker(this.clock, this.config.typingTimeoutMs, this.announcer);
    const engine = this;
    this.reader = new PresenceReader(this.state, this.store, this.config, {
      get attached() {
        return engine.attachedCount;
      },
      get visibleUsers() {
        return engine.announcer.visibleUserCount;
      },
    });
  }

  /**
   * Brings user records this node has not seen into memory (a no-op on the memory store).
   * Call before `connect`, and before queries or updates about other users.
   */
  loadUsers(userIds: string[]): Promise<void> | undefined {
    const missing = userIds.filter((id) => !this.users.has(id));
    return missing.length > 0 ? this.store.load(missing) : undefined;
  }

  /**
   * Everything `connect` needs in memory: the user's record and sessions, and, when the client
   * resumes a session another node holds, the channels it takes along (their members on other
   * nodes, so its sync lists them). Call before `connect`.
   */
  prepareConnect(userId: string, sessionId?: string): Promise<void> | undefined {
    const channelsOfMovedSession = (): Promise<void> | undefined => {
      const session = sessionId === undefined ? undefined : this.sessions.get(sessionId);
      if (!session?.remote?.channels || session.user.record.userId !== userId) return undefined;
      const waits = session.remote.channels.filter((name) => !this.channels.has(name)).flatMap((name) => this.replication.prepareChannel(name) ?? []);
      return waits.length > 0 ? Promise.all(waits).then(() => undefined) : undefined;
    };
    const loading = this.loadUsers([userId]);
    return loading ? loading.then(channelsOfMovedSession) : channelsOfMovedSession();
  }

  // -------------------------------------------------------------------------------------------
  // Sessions
  // -------------------------------------------------------------------------------------------

  /**
   * Opens a session (or resumes one inside its offline delay) and sends `welcome`, then the
   * state a resumed session missed. Throws TOO_MANY_SESSIONS.
   */
  connect(request: ConnectRequest, sink: SessionSink): Attachment {
    return this.causes.local(() => this.connectNow(request, sink));
  }

  private connectNow(request: ConnectRequest, sink: SessionSink): Attachment {
    const now = this.clock.now();
    // No stored record: this server never saw the user (or restarted and lost it). A user only
    // watched so far has no record either.
    const forgotten = this.store.get(request.identity.userId) === undefined;
    const user = this.userState(request.identity.userId);
    this.updates.applyIdentity(user, request.identity);
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
        this.replication.sessionClaimed(session);
      }
      this.clock.clearTimer(session.offlineTimer);
      session.offlineTimer = undefined;
      // A reload or a page of the same app came back inside the unload grace: nothing ends.
      this.cancelUnload(session);
      // Another socket still holds this session (its close was not noticed yet): the newest wins.
      this.closeSocket(session, 4000, 'SESSION_REPLACED');
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
        unloading: undefined,
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
    this.replication.sessionChanged(session);

    this.output.send(session, this.welcome(session, resumed));
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
    this.announcer.announce(user);
    return { session, sink, resumed };
  }

  private restoreStatus(user: UserState, restore: NonNullable<ConnectRequest['restore']>): void {
    if (restore.status === undefined && restore.state === undefined && restore.message === undefined) return;
    try {
      this.updates.applyStatus(user, restore, false);
    } catch {
      // A stale or invalid hint (an expired expiry, a state no longer configured) is dropped: the
      // client re-sends its status after `welcome` anyway, and gets a proper error then.
    }
  }

  /** The socket closed without `logout`: the session lingers for the offline delay. */
  disconnect(attachment: Attachment): void {
    this.causes.local(() => this.disconnectNow(attachment));
  }

  /**
   * Ends an attached session at once, without the offline delay and without closing its socket:
   * a Pusher connection whose user left their last presence channel, or whose first join was
   * refused, is no session of that user any more (the connection itself stays open).
   */
  endSession(attachment: Attachment): void {
    this.causes.local(() => this.disconnectNow(attachment, true));
  }

  private disconnectNow(attachment: Attachment, endNow = false): void {
    const { session } = attachment;
    if (session.sink !== attachment.sink || !this.sessions.has(session.id)) return;
    session.sink = null;
    this.attachedCount -= 1;
    this.replication.sessionChanged(session);
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
      if (channel && !this.hasAttachedSessionIn(channel, user)) this.typingTracker.stop(channel, user);
    }
    // After an unload beacon whose grace ran out while the socket was still open, the page is gone
    // for good: no offline delay.
    if (endNow || this.config.offlineDelayMs <= 0 || session.unloading === true) {
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

  /**
   * The unload beacon: the session's page is going away (a tab closed, or a reload or navigation
   * that will resume it). After `unloadGraceMs` without a resume, that one session ends, without
   * the offline delay; the user's other sessions are untouched. A resume inside the grace cancels
   * it with no event. A session whose socket is still open when the grace runs out ends when it
   * closes. For the replica too (a beacon that reached another node).
   */
  unload(session: Session): void {
    this.causes.local(() => this.unloadNow(session));
  }

  private unloadNow(session: Session): void {
    if (this.sessions.get(session.id) !== session || session.remote || session.unloading !== undefined) return;
    // An HTTP session notices no closed socket: its sink lets go now, and the offline delay would start.
    session.sink?.unloaded?.();
    const end = () => {
      session.unloading = undefined;
      if (this.sessions.get(session.id) !== session || session.remote) return;
      if (session.sink !== null) {
        session.unloading = true;
        return;
      }
      this.expireSession(session);
      this.releaseIfUnused(session.user);
    };
    if (this.config.unloadGraceMs <= 0) end();
    else session.unloading = this.clock.setTimer(this.config.unloadGraceMs, end);
  }

  /** Forgets a pending unload (a resume, a move to another node, the session's end). For the replica too. */
  cancelUnload(session: Session): void {
    if (session.unloading !== undefined && session.unloading !== true) this.clock.clearTimer(session.unloading);
    session.unloading = undefined;
  }

  /** Ends every session of the user now, without the offline delay (logout, or the HTTP API). */
  logout(userId: string): void {
    this.causes.local(() => this.logoutNow(userId));
  }

  private logoutNow(userId: string): void {
    // Other nodes end their sessions of this user too, even ones this node has not heard of yet.
    this.replication.publish({ op: 'logout', userId });
    const user = this.users.get(userId);
    if (!user) return;
    this.endAllSessions(user);
    this.releaseIfUnused(user);
  }

  /** For the replica too: a logout made on another node. */
  endAllSessions(user: UserState): void {
    if (user.sessions.size === 0) return;
    const now = this.clock.now();
    if (user.announcedVisible) {
      user.record.lastSeenAt = now;
      this.save(user, 'presence');
    }
    for (const session of [...user.sessions.values()]) {
      this.closeSocket(session, 1000, 'LOGGED_OUT');
      session.loggedOut = true;
      this.expireSession(session, false);
    }
    // One announcement for the whole logout: others see a leave, not a devices update first.
    this.announcer.announce(user);
  }

  /** Closes the session's socket, if it has one; the session itself stays. For the replica too. */
  closeSocket(session: Session, code: number, reason: string): void {
    const sink = session.sink;
    if (!sink) return;
    session.sink = null;
    this.attachedCount -= 1;
    sink.close(code, reason);
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

  /** Ends a session (offline delay over, or its owner ended it). For the replica too. */
  expireSession(session: Session, announce = true): void {
    if (!this.sessions.has(session.id)) return;
    const user = session.user;
    this.clock.clearTimer(session.offlineTimer);
    this.clock.clearTimer(session.idleTimer);
    session.offlineTimer = session.idleTimer = undefined;
    this.cancelUnload(session);
    this.sessions.delete(session.id);
    user.sessions.delete(session.id);
    this.replication.sessionEnded(session);
    for (const name of [...session.channels]) {
      const channel = this.channels.get(name);
      if (channel) this.removeFromChannel(channel, session);
    }
    this.unwatchAll(session);
    if (announce) this.announcer.announce(user);
  }

  private welcome(session: Session, resumed: boolean): WelcomeMessage {
    this.welcomeLimits ??= welcomeLimits(this.config);
    const welcome = welcomeMessage(session, resumed, this.config, this.welcomeLimits, this.clock.now());
    const token = this.sessionToken(session);
    if (token) welcome.sessionToken = token.token;
    return welcome;
  }

  /** A fresh token for the session (the unload beacon's capability), if tokens are configured. */
  sessionToken(session: Session): { token: string; expiresAt: number } | undefined {
    return this.sessionTokens?.issue(session.id, session.user.record.userId, this.clock.now());
  }

  /** A resumed session missed events while away: give it full state again. */
  private resendState(session: Session): void {
    for (const name of session.channels) {
      const channel = this.channels.get(name);
      if (channel) this.output.sync(session, channel);
    }
    if (session.watching.size > 0) {
      const viewer = session.user.record.userId;
      this.output.send(session, { type: 'user.sync', users: [...session.watching].map((id) => this.reader.viewOf(id, viewer)) });
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
    // A session's commands run in the order they came: after one that had to wait (a join whose
    // channel's members were being loaded), the next ones wait for it.
    const waiting = this.pendingCommands.get(session);
    if (waiting) return this.chain(session, waiting.then(() => this.causes.local(() => this.handleNow(attachment, command))));
    const result = this.causes.local(() => this.handleNow(attachment, command));
    return result instanceof Promise ? this.chain(session, result) : result;
  }

  /** Commands of a session still waiting for an earlier one to finish. */
  private readonly pendingCommands = new Map<Session, Promise<unknown>>();

  private chain(session: Session, result: Promise<AckData>): Promise<AckData> {
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.pendingCommands.set(session, settled);
    void settled.then(() => {
      if (this.pendingCommands.get(session) === settled) this.pendingCommands.delete(session);
    });
    return result;
  }

  private handleNow(attachment: Attachment, command: ClientMessage): AckData | Promise<AckData> {
    const { session } = attachment;
    if (session.sink !== attachment.sink) return undefined; // a replaced socket's late frame
    const user = session.user;
    switch (command.type) {
      case 'join': {
        const loading = this.channels.has(command.channel) ? undefined : this.replication.prepareChannel(command.channel);
        if (!loading) return this.join(session, command.channel, command.meta);
        // The channel's members on other nodes come first, so the joiner's sync lists them.
        return loading.then(() => (this.sessions.get(session.id) === session && session.sink === attachment.sink ? this.causes.local(() => this.join(session, command.channel, command.meta)) : undefined));
      }
      case 'leave': {
        const channel = this.joinedChannel(session, command.channel);
        this.removeFromChannel(channel, session);
        return {};
      }
      // The ack's `self` is built only when an ack was asked for (a ref): most updates send none.
      case 'status':
        this.updates.applyStatus(user, command);
        return command.ref === undefined ? undefined : { self: selfView(factsOf(user), this.config.states) };
      case 'meta':
        this.updates.applyMeta(user, assertMetaPatch(command.meta));
        return command.ref === undefined ? undefined : { self: selfView(factsOf(user), this.config.states) };
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
        return loading.then(() => (this.sessions.get(session.id) === session ? this.causes.local(() => this.watch(session, command.users)) : undefined));
      }
      case 'unwatch':
        this.unwatch(session, command.users);
        return { watching: session.watching.size };
      case 'ping':
        this.output.send(session, { type: 'pong', ...(command.ref !== undefined ? { ref: command.ref } : {}), serverTime: toIso(this.clock.now()) });
        return undefined;
      case 'members': {
        // The answer is the page itself (with the ref), as `pong` answers `ping`.
        const channel = this.joinedChannel(session, command.channel);
        const limit = Math.min(command.limit ?? DEFAULT_MEMBERS_PAGE, this.config.limits.maxPageSize);
        const page = this.reader.channelPresence(channel.name, command.cursor === undefined ? { limit } : { limit, cursor: command.cursor });
        this.output.send(session, { type: 'presence.page', ...(command.ref !== undefined ? { ref: command.ref } : {}), ...page });
        return undefined;
      }
      case 'logout':
        if (command.ref !== undefined) this.output.send(session, { type: 'ack', ref: command.ref });
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
    const current = member?.metaVersion ?? 0;
    // A join of a member already here without meta, or with the meta it has, changes nothing. A
    // new membership (a first join, or a join again after leaving) and a changed meta take the
    // next tick of this node's meta clock, above every version it has seen: a rejoin's empty meta
    // replaces the old membership's on nodes that never saw the leave.
    const metaVersion = member !== undefined && (patch === undefined || sameJson(member.channelMeta, channelMeta)) ? current : ++this.metaClock;
    this.output.sync(session, this.addToChannel(session, name, channelMeta, this.clock.now(), metaVersion));
    return {};
  }

  /**
   * Puts a session (local or replicated) in a channel. The user joins when it is their first
   * session there; a changed channel meta is an update. The session itself gets no event: a local
   * joiner is sent `presence.sync` instead, and a replicated session has no socket here.
   */
  /**
   * A Lamport clock of channel-meta versions: above every version this node has made or applied.
   * Per node rather than per member, so a membership ended and begun again does not restart at 0.
   */
  private metaClock = 0;

  addToChannel(session: Session, name: string, channelMeta: Meta, joinedAt = this.clock.now(), metaVersion = 0): Channel {
    if (metaVersion > this.metaClock) this.metaClock = metaVersion;
    const user = session.user;
    let channel = this.channels.get(name);
    if (!channel) {
      channel = { name, seq: 0, members: new Map(), typing: new Map(), counts: { online: 0, away: 0, busy: 0 } };
      this.channels.set(name, channel);
    }
    let member = channel.members.get(user.record.userId);
    // A session joining again is in the channel already: it gets the update like everyone else,
    // so its seq runs on without a gap up to the sync that follows.
    const alreadyIn = session.channels.has(name);
    session.channels.add(name);
    let metaChanged = false;
    if (!member) {
      member = { user, joinedAt, channelMeta, metaVersion, sessions: new Set([session]), rendered: undefined };
      channel.members.set(user.record.userId, member);
      user.channels.add(name);
      if (user.announcedVisible) {
        this.announcer.memberJoined(channel, member, session);
      }
    } else {
      member.sessions.add(session);
      if (member.channelMeta !== channelMeta && !sameJson(member.channelMeta, channelMeta) && newerMeta(metaVersion, channelMeta, member)) {
        member.channelMeta = channelMeta;
        member.metaVersion = metaVersion;
        metaChanged = true;
        if (user.announcedVisible) {
          this.announcer.memberChanged('member.meta', channel, member, alreadyIn ? undefined : session);
        }
      }
    }
    // The member's other local sessions carry its channel meta: they are published again only
    // when it changed. Re-publishing them for every op applied here made two nodes with sessions
    // of one user in one channel answer each other's ops forever.
    if (metaChanged) this.replication.memberChanged(member);
    else this.replication.sessionChanged(session);
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
  removeFromChannel(channel: Channel, session: Session): void {
    const user = session.user;
    const userId = user.record.userId;
    const member = channel.members.get(userId);
    session.channels.delete(channel.name);
    this.replication.sessionChanged(session);
    if (!member) return;
    member.sessions.delete(session);
    if (member.sessions.size > 0) {
      if (!this.hasAttachedSessionIn(channel, user)) this.typingTracker.stop(channel, user);
      return;
    }
    this.typingTracker.stop(channel, user);
    channel.members.delete(userId);
    user.channels.delete(channel.name);
    if (user.announcedVisible) {
      // A user still connected elsewhere was seen just now; one who timed out, at their disconnect.
      const stillLive = hasLiveSession(user);
      const lastSeen = stillLive ? toIso(this.clock.now()) : toIso(user.record.lastSeenAt);
      this.announcer.memberLeft(channel, user, lastSeen);
    }
    if (channel.members.size === 0) {
      this.typingTracker.forget(channel);
      this.channels.delete(channel.name);
    }
  }

  private setChannelMeta(session: Session, name: string, patch: Meta): Record<string, unknown> {
    const channel = this.joinedChannel(session, name);
    const member = channel.members.get(session.user.record.userId)!;
    const next = mergeMeta(member.channelMeta, patch, this.config.limits);
    if (!sameJson(member.channelMeta, next)) {
      member.channelMeta = next;
      member.metaVersion = ++this.metaClock;
      this.replication.memberChanged(member);
      if (session.user.announcedVisible) {
        this.announcer.memberChanged('member.meta', channel, member);
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
  /** For `UserUpdates` too. */
  touchActivity(user: UserState, now: number): void {
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
    this.replication.sessionChanged(session);
    this.announcer.announce(session.user);
  }

  private typing(session: Session, name: string, typing: boolean): void {
    const channel = this.joinedChannel(session, name);
    const user = session.user;
    if (!typing) {
      if (channel.typing.has(user.record.userId)) this.replication.publish({ op: 'typing', channel: name, userId: user.record.userId, typing: false });
      this.typingTracker.stop(channel, user);
      return;
    }
    this.activity(session);
    // Invisible users type in silence: nothing is stored, so nothing can leak later.
    if (!user.announcedVisible) return;
    this.typingTracker.start(channel, user);
    this.replication.publish({ op: 'typing', channel: name, userId: user.record.userId, typing: true });
  }

  hasAttachedSessionIn(channel: Channel, user: UserState): boolean {
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
    this.output.send(session, { type: 'user.sync', users: unique.map((id) => this.reader.viewOf(id, viewer)) });
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

  unwatchAll(session: Session): void {
    this.unwatch(session, session.watching);
  }

  // -------------------------------------------------------------------------------------------
  // Helpers
  // -------------------------------------------------------------------------------------------

  /** The live state of a user, made from the stored record when absent. For the replica too. */
  userState(userId: string): UserState {
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
      shownAt: undefined,
    };
    user.published = publicView(factsOf(user), this.config.states);
    this.users.set(userId, user);
    this.updates.scheduleExpiry(user);
    return user;
  }

  /**
   * Forgets the live state of a user nobody needs in memory any more: no session, no pending
   * expiry. Their record stays in the store, and views of them are computed from it.
   */
  releaseIfUnused(user: UserState): void {
    // A watched user stays, so changes arriving from other nodes can be compared and announced.
    if (user.sessions.size > 0 || user.expiryTimer || this.watchers.isWatched(user.record.userId)) return;
    if (this.users.get(user.record.userId) === user) this.users.delete(user.record.userId);
  }

  /**
   * For the replica: drops a channel that no session here is in, with its remote members, without
   * events (nobody here can see it; its members' own nodes announce their changes).
   */
  forgetChannel(channel: Channel): void {
    for (const [userId, member] of channel.members) {
      for (const session of member.sessions) session.channels.delete(channel.name);
      member.user.channels.delete(channel.name);
      channel.members.delete(userId);
    }
    this.typingTracker.forget(channel);
    this.channels.delete(channel.name);
  }

  /**
   * For the replica: drops a user known only through other nodes' sessions that nobody here can
   * see any more (no shared channel, not watched), without events.
   */
  forgetUser(user: UserState): void {
    for (const session of user.sessions.values()) {
      if (!session.remote) return;
    }
    for (const session of user.sessions.values()) {
      this.clock.clearTimer(session.offlineTimer);
      this.clock.clearTimer(session.idleTimer);
      session.offlineTimer = session.idleTimer = undefined;
      this.sessions.delete(session.id);
    }
    user.sessions.clear();
    this.clock.clearTimer(user.expiryTimer);
    user.expiryTimer = undefined;
    this.announcer.forget(user);
    if (this.users.get(user.record.userId) === user) this.users.delete(user.record.userId);
  }

  /** Saves the user's record, naming the change that made it. For `UserUpdates` too. */
  save(user: UserState, kind: SaveKind = 'presence'): void {
    this.store.save(user.record, kind, this.causes.now().id);
  }

  // -------------------------------------------------------------------------------------------
  // The HTTP API's writes
  // -------------------------------------------------------------------------------------------

  updateUser(userId: string, patch: UserPatch): SelfPresence {
    return this.causes.local(() => this.updates.updateUser(userId, patch));
  }

  /** Ends every session at once (shutdown): no events, timers cleared. */
  dispose(): void {
    for (const session of this.sessions.values()) {
      this.clock.clearTimer(session.idleTimer);
      this.clock.clearTimer(session.offlineTimer);
      this.cancelUnload(session);
    }
    for (const user of this.users.values()) this.clock.clearTimer(user.expiryTimer);
    for (const channel of this.channels.values()) for (const timer of channel.typing.values()) this.clock.clearTimer(timer);
    this.sessions.clear();
    this.channels.clear();
    this.watchers.clear();
    this.users.clear();
    this.attachedCount = 0;
    this.announcer.visibleUserCount = 0;
  }
}

/** The clock whose timers each run as one change of this node (their events get a cause). */
function causedClock(clock: Clock, causes: ChangeCauses): Clock {
  return {
    now: () => clock.now(),
    setTimer: (delayMs, callback) => clock.setTimer(delayMs, () => causes.local(callback)),
    clearTimer: (handle) => clock.clearTimer(handle),
  };
}

function isAttached(session: Session): boolean {
  return session.sink !== null || session.remote?.attached === true;
}

/** A socket of the user's is open (here or on another node); lingering sessions do not count. */
function hasLiveSession(user: UserState): boolean {
  for (const session of user.sessions.values()) if (isAttached(session)) return true;
  return false;
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Whether a channel meta of this version replaces the member's. Two nodes that changed it at once
 * from the same version wrote the same number: the larger JSON wins on every node alike, so they
 * agree instead of each keeping its own. Version 0 on both sides is a node of an earlier release
 * (which sends none): the last applied wins, as it did there.
 */
function newerMeta(version: number, meta: Meta, member: ChannelMember): boolean {
  if (version !== member.metaVersion) return version > member.metaVersion;
  return version === 0 || JSON.stringify(meta) > JSON.stringify(member.channelMeta);
}
