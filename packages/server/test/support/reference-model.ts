/*
 * The reference model for the model-based tests: what the presence rules of DESIGN.md and
 * docs/protocol.md say every observer should see, given the commands so far and the clock. It is
 * written to be read, not to be fast: plain maps, everything visible derived on demand from a few
 * facts (sessions, manual status, meta, channel meta, typing), no caches and no events.
 *
 * Times are milliseconds on one clock. A session may be detached at a time known only within a
 * window (`detachedAt` .. `detachedAt + detachSlackMs`): a node that crashed is detected by the
 * others some time after it died. The single-engine tests use no slack; the cluster tests ask
 * `settledAt` whether a moment is far enough from every such deadline to judge the state.
 */
import type { Meta, Status } from '@presence/protocol';

export type StateBase = Exclude<Status, 'offline'>;
export type ManualStatus = 'away' | 'busy' | 'invisible';

export interface ReferenceConfig {
  offlineDelayMs: number;
  idleTimeoutMs: number;
  typingTimeoutMs: number;
  states: Record<string, StateBase>;
  maxSessionsPerUser: number;
}

export interface StatusPatch {
  status?: 'online' | ManualStatus;
  state?: string | null;
  message?: string | null;
  /** Absolute time (ms); the command carries it as ISO 8601. */
  expiresAt?: number | null;
}

interface RefSession {
  id: string;
  userId: string;
  device: string;
  /** Where the socket is (cluster tests); any value in single-engine tests. */
  node: string;
  attached: boolean;
  /** Set while detached: the offline delay runs from here (plus up to `detachSlackMs`). */
  detachedAt?: number;
  detachSlackMs: number;
  /** Idleness is frozen while detached ("the idle clock stops with the socket"). */
  idleWhenDetached: boolean;
  channels: Set<string>;
  lastActivityAt: number;
  reportedIdle: boolean;
}

interface RefUser {
  manual: { status: ManualStatus | null; state: string | null; message: string | null; expiresAt: number | null };
  meta: Meta;
  /** When the user last stopped being invisible: their memberships count from here for others. */
  shownAt?: number;
}

/** What an observer should see of one member of a channel. */
export interface ExpectedMember {
  userId: string;
  status: Status;
  state?: string;
  message?: string;
  expiresAt?: number;
  meta: Meta;
  devices: string[];
  channelMeta: Meta;
  joinedAt: number;
}

const key = (channel: string, userId: string) => `${channel}\u0000${userId}`;

function mergeMeta(current: Meta, patch: Meta): Meta {
  const next: Meta = { ...current };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete next[k];
    else next[k] = v;
  }
  return next;
}

export class ReferenceModel {
  now: number;
  /** In creation order: "the oldest lingering session" is the first detached one here. */
  readonly sessions = new Map<string, RefSession>();
  readonly users = new Map<string, RefUser>();
  /** Channel meta and join time of each (channel, user) membership. */
  private readonly memberships = new Map<string, { meta: Meta; joinedAt: number }>();
  /** Typing of (channel, user): when it started (a step number, for observers) and when it ends. */
  private readonly typingState = new Map<string, { startedStep: number; until: number }>();
  /** Users the server has a record of (restore hints apply only to the others). */
  private readonly known = new Set<string>();
  step = 0;

  constructor(
    readonly config: ReferenceConfig,
    now: number,
  ) {
    this.now = now;
  }

  // ---------------------------------------------------------------------------------------------
  // Derived state: everything an observer sees
  // ---------------------------------------------------------------------------------------------

  private user(userId: string): RefUser {
    let user = this.users.get(userId);
    if (!user) {
      user = { manual: { status: null, state: null, message: null, expiresAt: null }, meta: {} };
      this.users.set(userId, user);
    }
    return user;
  }

  sessionsOf(userId: string): RefSession[] {
    return [...this.sessions.values()].filter((s) => s.userId === userId);
  }

  isIdle(session: RefSession): boolean {
    if (!session.attached) return session.idleWhenDetached;
    return session.reportedIdle || this.now - session.lastActivityAt >= this.config.idleTimeoutMs;
  }

  /** Present (some session, live or inside its offline delay) and not invisible. */
  isVisible(userId: string): boolean {
    return this.sessionsOf(userId).length > 0 && this.users.get(userId)?.manual.status !== 'invisible';
  }

  isInvisible(userId: string): boolean {
    return this.users.get(userId)?.manual.status === 'invisible';
  }

  statusOf(userId: string): Status {
    if (!this.isVisible(userId)) return 'offline';
    const { manual } = this.user(userId);
    if (manual.status === 'away' || manual.status === 'busy') return manual.status;
    const base = manual.state ? this.config.states[manual.state] : undefined;
    if (base === 'away' || base === 'busy') return base;
    return this.sessionsOf(userId).some((s) => !this.isIdle(s)) ? 'online' : 'away';
  }

  /** Users with a session (live or lingering) joined to the channel, visible or not. */
  membersOf(channel: string): string[] {
    const ids = new Set<string>();
    for (const s of this.sessions.values()) if (s.channels.has(channel)) ids.add(s.userId);
    return [...ids];
  }

  /**
   * The member list every observer of the channel should hold. `joinedAt` is when the user last
   * became visible there: their first join, or their last return from invisible if later.
   */
  expectedMembers(channel: string): Map<string, ExpectedMember> {
    const result = new Map<string, ExpectedMember>();
    for (const userId of this.membersOf(channel)) {
      if (!this.isVisible(userId)) continue;
      const { manual, meta, shownAt } = this.user(userId);
      const membership = this.memberships.get(key(channel, userId))!;
      const member: ExpectedMember = {
        userId,
        status: this.statusOf(userId),
        meta,
        devices: [...new Set(this.sessionsOf(userId).map((s) => s.device))].sort(),
        channelMeta: membership.meta,
        joinedAt: Math.max(membership.joinedAt, shownAt ?? -Infinity),
      };
      if (manual.state) member.state = manual.state;
      if (manual.message) member.message = manual.message;
      if (manual.expiresAt !== null) member.expiresAt = manual.expiresAt;
      result.set(userId, member);
    }
    return result;
  }

  /** Users typing in the channel, with the step their typing started at. */
  typingIn(channel: string): Map<string, number> {
    const result = new Map<string, number>();
    for (const [k, t] of this.typingState) {
      const [c, userId] = k.split('\u0000');
      if (c === channel) result.set(userId, t.startedStep);
    }
    return result;
  }

  visibleUserCount(): number {
    const ids = new Set([...this.sessions.values()].map((s) => s.userId));
    return [...ids].filter((id) => this.isVisible(id)).length;
  }

  // ---------------------------------------------------------------------------------------------
  // Commands. Each returns the error code the server must answer with, or undefined; a refused
  // command changes nothing.
  // ---------------------------------------------------------------------------------------------

  /**
   * A socket opens. With the id of a session of the same user that still exists, it resumes it;
   * otherwise a new session starts under a fresh id the server mints. Returns the id, or the
   * error when the user has too many sessions and none of them is only lingering.
   */
  connect(
    userId: string,
    options: { device: string; node?: string; sessionId?: string; newId: () => string; restore?: StatusPatch },
  ): { sessionId: string; resumed: boolean; replaced: boolean } | { error: string } {
    const wanted = options.sessionId ? this.sessions.get(options.sessionId) : undefined;
    if (!this.known.has(userId) && options.restore) {
      // Only a server with no record of the user takes the client's word for its status.
      if (this.checkStatus(options.restore) === undefined) this.applyStatus(userId, options.restore);
    }
    if (wanted && wanted.userId === userId) {
      const replaced = wanted.attached;
      wanted.attached = true;
      wanted.detachedAt = undefined;
      wanted.detachSlackMs = 0;
      wanted.device = options.device;
      wanted.node = options.node ?? wanted.node;
      this.known.add(userId);
      this.normalize();
      return { sessionId: wanted.id, resumed: true, replaced };
    }
    // The limit is per node: sessions on other nodes count there.
    const node = options.node ?? '';
    const mine = this.sessionsOf(userId).filter((s) => s.node === node);
    if (mine.length >= this.config.maxSessionsPerUser) {
      const lingering = mine.filter((s) => !s.attached);
      if (mine.length - lingering.length >= this.config.maxSessionsPerUser) return { error: 'TOO_MANY_SESSIONS' };
      for (const s of lingering.slice(0, mine.length - this.config.maxSessionsPerUser + 1)) this.sessions.delete(s.id);
    }
    const id = options.newId();
    this.sessions.set(id, {
      id,
      userId,
      device: options.device,
      node,
      attached: true,
      detachSlackMs: 0,
      idleWhenDetached: false,
      channels: new Set(),
      lastActivityAt: this.now,
      reportedIdle: false,
    });
    this.user(userId);
    this.known.add(userId);
    this.normalize();
    return { sessionId: id, resumed: false, replaced: false };
  }

  /** The socket closed without `logout`: the session lingers for the offline delay. */
  disconnect(sessionId: string, slackMs = 0): void {
    const session = this.sessions.get(sessionId);
    if (!session || !session.attached) return;
    session.idleWhenDetached = this.isIdle(session);
    session.attached = false;
    session.detachedAt = this.now;
    session.detachSlackMs = slackMs;
    this.normalize();
  }

  /**
   * A node stopped (crashed, or left): the other nodes end its sessions after the offline delay,
   * counted from when they noticed, which is up to `slackMs` from now. Sessions already lingering
   * there start over: their owner, which ran their timers, is gone.
   */
  nodeDown(node: string, slackMs: number): void {
    for (const session of this.sessions.values()) {
      if (session.node !== node) continue;
      if (session.attached) session.idleWhenDetached = this.isIdle(session);
      session.attached = false;
      session.detachedAt = this.now;
      session.detachSlackMs = slackMs;
    }
    this.normalize();
  }

  /** Every session of the user ends now. */
  logout(userId: string): void {
    for (const s of this.sessionsOf(userId)) this.sessions.delete(s.id);
    this.normalize();
  }

  join(sessionId: string, channel: string, meta?: Meta): string | undefined {
    const session = this.sessions.get(sessionId)!;
    const k = key(channel, session.userId);
    const membership = this.memberships.get(k);
    session.channels.add(channel);
    if (membership) membership.meta = meta ? mergeMeta(membership.meta, meta) : membership.meta;
    else this.memberships.set(k, { meta: meta ? mergeMeta({}, meta) : {}, joinedAt: this.now });
    this.normalize();
    return undefined;
  }

  leave(sessionId: string, channel: string): string | undefined {
    const session = this.sessions.get(sessionId)!;
    if (!session.channels.delete(channel)) return 'NOT_IN_CHANNEL';
    this.normalize();
    return undefined;
  }

  channelMeta(sessionId: string, channel: string, meta: Meta): string | undefined {
    const session = this.sessions.get(sessionId)!;
    if (!session.channels.has(channel)) return 'NOT_IN_CHANNEL';
    const membership = this.memberships.get(key(channel, session.userId))!;
    membership.meta = mergeMeta(membership.meta, meta);
    return undefined;
  }

  private checkStatus(patch: StatusPatch): string | undefined {
    if (typeof patch.state === 'string' && !Object.hasOwn(this.config.states, patch.state)) return 'UNKNOWN_STATE';
    if (typeof patch.expiresAt === 'number' && patch.expiresAt <= this.now) return 'INVALID_EXPIRY';
    return undefined;
  }

  /** The `status` command: a patch of the user's manual presence (docs/protocol.md, Status). */
  status(userId: string, patch: StatusPatch): string | undefined {
    const error = this.checkStatus(patch);
    if (error) return error;
    this.applyStatus(userId, patch);
    return undefined;
  }

  private applyStatus(userId: string, patch: StatusPatch): void {
    const manual = { ...this.user(userId).manual };
    if (patch.status === 'online') {
      manual.status = null;
      manual.state = null;
    } else if (patch.status) {
      manual.status = patch.status;
    }
    if (patch.state !== undefined) {
      manual.state = patch.state;
      // A state carries its own base status, so it replaces away/busy; it never ends invisible.
      if (patch.state !== null && patch.status === undefined && manual.status !== 'invisible') manual.status = null;
    }
    if (patch.message !== undefined) manual.message = patch.message;
    // Every command that sets something sets the expiry anew (an empty one changes nothing); an
    // expiry of nothing is nothing.
    const setsSomething = patch.status !== undefined || patch.state !== undefined || patch.message !== undefined || patch.expiresAt !== undefined;
    if (setsSomething) manual.expiresAt = manual.status || manual.state || manual.message ? patch.expiresAt ?? null : null;
    const user = this.user(userId);
    if (user.manual.status === 'invisible' && manual.status !== 'invisible') user.shownAt = this.now;
    user.manual = manual;
    this.normalize();
  }

  meta(userId: string, patch: Meta): void {
    const user = this.user(userId);
    user.meta = mergeMeta(user.meta, patch);
  }

  activity(sessionId: string): void {
    const session = this.sessions.get(sessionId)!;
    session.lastActivityAt = this.now;
    session.reportedIdle = false;
  }

  idle(sessionId: string): void {
    this.sessions.get(sessionId)!.reportedIdle = true;
  }

  typing(sessionId: string, channel: string, typing: boolean): string | undefined {
    const session = this.sessions.get(sessionId)!;
    if (!session.channels.has(channel)) return 'NOT_IN_CHANNEL';
    const k = key(channel, session.userId);
    if (!typing) {
      this.typingState.delete(k);
      return undefined;
    }
    this.activity(sessionId);
    // Invisible users type in silence.
    if (!this.isVisible(session.userId)) return undefined;
    const current = this.typingState.get(k);
    this.typingState.set(k, { startedStep: current?.startedStep ?? this.step, until: this.now + this.config.typingTimeoutMs });
    return undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Time
  // ---------------------------------------------------------------------------------------------

  /** The next moment something changes by itself (a session expires, a status clears, typing or idle times out). */
  nextDue(): number | undefined {
    const due: number[] = [];
    for (const s of this.sessions.values()) {
      if (s.detachedAt !== undefined) due.push(s.detachedAt + s.detachSlackMs + this.config.offlineDelayMs);
      else if (!s.reportedIdle) due.push(s.lastActivityAt + this.config.idleTimeoutMs);
    }
    for (const u of this.users.values()) if (u.manual.expiresAt !== null) due.push(u.manual.expiresAt);
    for (const t of this.typingState.values()) due.push(t.until);
    const future = due.filter((t) => t > this.now);
    return future.length > 0 ? Math.min(...future) : undefined;
  }

  /**
   * Moves the clock to `time`, applying everything due by then. With detach slack, a session is
   * taken to expire at the end of its window: callers only ask once the window has passed.
   */
  advanceTo(time: number): void {
    this.now = Math.max(this.now, time);
    for (const s of [...this.sessions.values()]) {
      if (s.detachedAt !== undefined && s.detachedAt + s.detachSlackMs + this.config.offlineDelayMs <= this.now) this.sessions.delete(s.id);
    }
    // Sessions first: an offline delay that ends at the instant a status expires has ended by then.
    for (const u of this.users.values()) {
      if (u.manual.expiresAt !== null && u.manual.expiresAt <= this.now) {
        if (u.manual.status === 'invisible') u.shownAt = u.manual.expiresAt;
        u.manual = { status: null, state: null, message: null, expiresAt: null };
      }
    }
    for (const [k, t] of [...this.typingState]) if (t.until <= this.now) this.typingState.delete(k);
    this.normalize();
  }

  /**
   * Whether the state at `time` can be judged: no deadline (a session's offline delay, a status
   * expiry) falls within `before` ms ahead of it or `after` ms behind it. The cluster tests wait
   * for such a moment, so that delivery delays never decide a verdict.
   */
  settledAt(time: number, before: number, after: number): boolean {
    for (const s of this.sessions.values()) {
      if (s.detachedAt === undefined) continue;
      const from = s.detachedAt + this.config.offlineDelayMs;
      const to = from + s.detachSlackMs;
      if (time > from - before && time < to + after) return false;
    }
    for (const u of this.users.values()) {
      const at = u.manual.expiresAt;
      if (at !== null && time > at - before && time < at + after) return false;
    }
    return true;
  }

  /**
   * Invariants of the facts themselves: typing only for a visible user with a live session in the
   * channel, channel meta only for members. Every rule that ends typing (leave, disconnect,
   * going invisible, expiry) is this one rule.
   */
  private normalize(): void {
    for (const k of [...this.memberships.keys()]) {
      const [channel, userId] = k.split('\u0000');
      if (!this.sessionsOf(userId).some((s) => s.channels.has(channel))) this.memberships.delete(k);
    }
    for (const k of [...this.typingState.keys()]) {
      const [channel, userId] = k.split('\u0000');
      const live = this.sessionsOf(userId).some((s) => s.attached && s.channels.has(channel));
      if (!live || !this.isVisible(userId)) this.typingState.delete(k);
    }
  }
}
