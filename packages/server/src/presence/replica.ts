import type { UserRecord } from '../store/user-store.js';
import type { PresenceEngine, SessionReplication } from './engine.js';
import type { Cluster, ClusterListener, NodeOp, OwnedSession, SessionSnapshot } from './replication.js';
import type { ChannelMember, Session } from './state.js';
import { NO_WATCHES } from './watchers.js';

/** Channels a node lists with its counts (the busiest first): the admin stats sum them over nodes. */
const LOCAL_CHANNELS_KEPT = 1000;

/** A node's own counts, stored with its lease (see `ClusterListener.localStats`). */
export interface LocalStats {
  sessions: number;
  connections: number;
  users: number;
  /** Channels with a visible member who has a session on this node. */
  channels: number;
  /** Of those, the busiest (at most 1,000), with how many such members each. */
  top: [string, number][];
}

/**
 * The other nodes' sessions, and this node's as they are published. It keeps a replica of every
 * session another node owns (for member lists and merged presence) by applying that node's ops to
 * the engine with the engine's own rules, and publishes this node's session changes once per
 * turn. It imports the engine; the engine only knows it as `SessionReplication`.
 */
export class Replica implements SessionReplication, ClusterListener {
  /** Local sessions whose new state is published at the end of this turn (one op per session). */
  private readonly changedSessions = new Set<Session>();
  /** Local sessions just taken over from another node: their next op says so. */
  private readonly claimedSessions = new Set<Session>();
  /** The cause of each changed session's latest change in this turn, published with its op. */
  private readonly causeOf = new Map<Session, string>();
  private publishQueued = false;
  /**
   * Sessions that ended for good (here by their owner, by their owner's `end`, or by a logout),
   * with their moves, until a while after: a copy read or received later (a shard read that
   * raced the end, an op published before it) is stale and must not bring the session back, which
   * showed as a leave, a join and a leave again. Insertion order is end order, so the oldest go
   * first.
   */
  private readonly ended = new Map<string, { moves: number; until: number }>();
  /** Users this node lists as online in the shared state: visible, with a session here. */
  private readonly listedOnline = new Set<string>();
  /** Users whose listing may have changed in this turn. */
  private readonly onlineChecks = new Set<string>();

  constructor(
    private readonly engine: PresenceEngine,
    /** Absent on a single node, where only records (a durable store) are applied. */
    private readonly cluster?: Cluster,
  ) {
    if (!cluster) return;
    engine.replication = this;
    engine.announcer.subscribe((event) => {
      if (event.type === 'user.online' || event.type === 'user.offline') this.checkOnline(event.userId);
    });
  }

  /**
   * The cluster's online list is the union of what each node lists: the visible users with a
   * session on it. Checked at the end of the turn, after every change of sessions and visibility.
   */
  private checkOnline(userId: string): void {
    this.onlineChecks.add(userId);
    if (this.publishQueued) return;
    this.publishQueued = true;
    queueMicrotask(() => this.publishChangedSessions());
  }

  private publishOnline(): void {
    for (const userId of this.onlineChecks) {
      const user = this.engine.state.users.get(userId);
      let local = false;
      if (user?.announcedVisible) for (const session of user.sessions.values()) if (!session.remote) local = true;
      if (local === this.listedOnline.has(userId)) continue;
      if (local) this.listedOnline.add(userId);
      else this.listedOnline.delete(userId);
      this.cluster?.listOnline(userId, local);
    }
    this.onlineChecks.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Publishing this node's sessions
  // -------------------------------------------------------------------------------------------

  sessionChanged(session: Session): void {
    if (session.remote) return;
    this.onlineChecks.add(session.user.record.userId);
    this.changedSessions.add(session);
    this.causeOf.set(session, this.engine.causes.now().id);
    if (this.publishQueued) return;
    this.publishQueued = true;
    queueMicrotask(() => this.publishChangedSessions());
  }

  memberChanged(member: ChannelMember): void {
    for (const session of member.sessions) this.sessionChanged(session);
  }

  sessionClaimed(session: Session): void {
    this.claimedSessions.add(session);
  }

  sessionEnded(session: Session): void {
    if (!session.remote || session.loggedOut) this.markEnded(session);
    this.changedSessions.delete(session);
    this.claimedSessions.delete(session);
    this.causeOf.delete(session);
    if (!session.remote) {
      this.checkOnline(session.user.record.userId);
      this.publish({ op: 'end', sessionId: session.id, userId: session.user.record.userId });
    }
  }

  private markEnded(session: Session): void {
    const now = this.engine.clock.now();
    // Long enough for any copy in flight, and for an owner back from an outage to write its end.
    const keepMs = this.engine.config.offlineDelayMs + 10_000;
    for (const [id, entry] of this.ended) {
      if (entry.until > now) break;
      this.ended.delete(id);
    }
    this.ended.delete(session.id);
    this.ended.set(session.id, { moves: session.moves, until: now + keepMs });
  }

  /** Before a session here joins a channel: the cluster brings its members from other nodes first. */
  prepareChannel(name: string): Promise<void> | undefined {
    return this.cluster?.loadChannel(name);
  }

  /** Publishes an op after the session changes it may depend on (a typing op needs the join first). */
  publish(op: NodeOp): void {
    this.publishChangedSessions();
    this.cluster?.publish({ ...op, cause: this.engine.causes.now().id });
  }

  private publishChangedSessions(): void {
    this.publishQueued = false;
    if (this.onlineChecks.size > 0) this.publishOnline();
    for (const session of this.changedSessions) {
      if (this.engine.state.sessions.get(session.id) !== session || session.remote) continue;
      const claim = this.claimedSessions.delete(session);
      const cause = this.causeOf.get(session);
      this.cluster?.publish({ op: 'session', session: this.snapshotOf(session), ...(claim ? { claim } : {}), ...(cause ? { cause } : {}) });
    }
    this.changedSessions.clear();
    this.causeOf.clear();
  }

  private snapshotOf(session: Session): SessionSnapshot {
    const userId = session.user.record.userId;
    const channels: SessionSnapshot['channels'] = {};
    for (const name of session.channels) {
      const member = this.engine.state.channels.get(name)?.members.get(userId);
      // Defined, not assigned: assigning to a channel named `__proto__` would set the prototype,
      // and the channel would silently drop out of every replica.
      if (member) Object.defineProperty(channels, name, { value: { meta: member.channelMeta, joinedAt: member.joinedAt, ...(member.metaVersion > 0 ? { metaVersion: member.metaVersion } : {}) }, enumerable: true, writable: true, configurable: true });
    }
    const snapshot: SessionSnapshot = { id: session.id, userId, device: session.device, idle: session.idle, attached: session.sink !== null, channels };
    if (session.moves > 0) snapshot.moves = session.moves;
    return snapshot;
  }

  /** This node's own counts, stored with its lease for the admin stats of every node. */
  localStats(): LocalStats {
    const counts = this.engine.reader.adminView(0).nodes.get(null) ?? { sessions: 0, connections: 0, users: 0 };
    // Channels where a visible member has a session here, with how many such members.
    const members: [string, number][] = [];
    for (const channel of this.engine.state.channels.values()) {
      let local = 0;
      for (const member of channel.members.values()) {
        if (!member.user.announcedVisible) continue;
        for (const session of member.sessions) {
          if (session.remote) continue;
          local += 1;
          break;
        }
      }
      if (local > 0) members.push([channel.name, local]);
    }
    members.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    return { ...counts, channels: members.length, top: members.slice(0, LOCAL_CHANNELS_KEPT) };
  }

  /** This node's sessions, for the cluster link to write whole (at start, and after Redis lost them). */
  localSnapshot(): SessionSnapshot[] {
    const snapshots: SessionSnapshot[] = [];
    for (const session of this.engine.state.sessions.values()) if (!session.remote) snapshots.push(this.snapshotOf(session));
    return snapshots;
  }

  /** Forgets what was waiting to be published (the engine was disposed). */
  clear(): void {
    this.changedSessions.clear();
    this.claimedSessions.clear();
    this.causeOf.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Applying the other nodes'
  // -------------------------------------------------------------------------------------------

  applyOps(nodeId: string, ops: NodeOp[]): void | Promise<void> {
    const unseen = ops.flatMap((op) => (op.op === 'session' && !this.engine.state.users.has(op.session.userId) ? [op.session.userId] : []));
    const loading = unseen.length > 0 ? this.engine.store.load(unseen) : undefined;
    if (loading) return loading.then(() => this.applyOpsNow(nodeId, ops));
    this.applyOpsNow(nodeId, ops);
  }

  private applyOpsNow(nodeId: string, ops: NodeOp[]): void {
    for (const op of ops) this.engine.causes.remote(op.cause ?? `${nodeId}.op`, () => this.applyOp(nodeId, op));
  }

  private applyOp(nodeId: string, op: NodeOp): void {
    const { engine } = this;
    switch (op.op) {
      case 'session':
        this.applySession(nodeId, op.session, op.claim === true);
        break;
      case 'end': {
        const session = engine.state.sessions.get(op.sessionId);
        // Only the owner ends a session; a late op from a node it moved away from is stale.
        if (!session || session.remote?.node !== nodeId) break;
        const user = session.user;
        this.markEnded(session);
        engine.expireSession(session);
        engine.releaseIfUnused(user);
        break;
      }
      case 'typing': {
        const channel = engine.state.channels.get(op.channel);
        const user = engine.state.users.get(op.userId);
        if (!channel || !user || !channel.members.has(op.userId)) break;
        if (!op.typing) engine.typingTracker.stop(channel, user);
        else if (user.announcedVisible) engine.typingTracker.start(channel, user);
        break;
      }
      case 'unload': {
        // A beacon that reached another node: only the owner runs the grace.
        const session = engine.state.sessions.get(op.sessionId);
        if (session && !session.remote) engine.unload(session);
        break;
      }
      case 'logout': {
        const user = engine.state.users.get(op.userId);
        if (!user) break;
        engine.endAllSessions(user);
        engine.releaseIfUnused(user);
        break;
      }
    }
  }

  applyUser(userId: string, sessions: OwnedSession[]): void | Promise<void> {
    const loading = this.engine.state.users.has(userId) || sessions.length === 0 ? undefined : this.engine.store.load([userId]);
    if (loading) return loading.then(() => this.applyUserNow(userId, sessions));
    this.applyUserNow(userId, sessions);
  }

  private applyUserNow(userId: string, stored: OwnedSession[]): void {
    // A whole shard read names no change: its events get ids of this reading (not a local change).
    this.engine.causes.observed(() => {
      const listed = new Set(stored.map(({ session }) => session.id));
      const user = this.engine.state.users.get(userId);
      if (user) {
        // A session the shard no longer holds ended while this node missed the message, or the
        // shared state lost it and its owner has not written it again yet (it does when it is
        // back). Either way it gets the offline delay, as if its node had died: no flap.
        const missing = [...user.sessions.values()].filter((session) => session.remote && !listed.has(session.id));
        for (const session of missing) this.orphan(session.remote!.node, [session]);
      }
      for (const { node, session } of stored) {
        // This node's own sessions are its own to describe: a stored copy is older, unless it moved.
        if (node === this.cluster?.nodeId && !this.engine.state.sessions.get(session.id)?.remote) continue;
        this.applySession(node, session, false);
      }
      const after = this.engine.state.users.get(userId);
      if (after) this.engine.releaseIfUnused(after);
    });
  }

  /** Brings the replica of one session in line with what its owner says about it. */
  private applySession(nodeId: string, snapshot: SessionSnapshot, claim: boolean): void {
    const { engine } = this;
    let session = engine.state.sessions.get(snapshot.id);
    const ended = session ? undefined : this.ended.get(snapshot.id);
    // A copy of a session that ended for good, from before its end. (A client that resumed it
    // elsewhere at the very moment it ended moved it: more moves, and that copy wins.)
    if (ended && (snapshot.moves ?? 0) <= ended.moves) return;
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
      } else if (session.remote.node !== nodeId && !claim && !movedSince && this.cluster?.nodes().includes(session.remote.node)) {
        // A late op from a node the session has since moved away from. Unless the owner on record
        // is gone: then this is news of a move whose claim this node missed (it read the new
        // owner's whole state instead, after a gap or a Redis restart), and it wins.
        return;
      }
      session.moves = moves;
      session.remote!.node = nodeId;
      // An orphan (its node died) that was resumed or re-registered is no longer on its way out.
      engine.clock.clearTimer(session.offlineTimer);
      session.offlineTimer = undefined;
    } else {
      const user = engine.userState(snapshot.userId);
      session = {
        id: snapshot.id,
        user,
        device: snapshot.device,
        sink: null,
        lastActivityAt: engine.clock.now(),
        reportedIdle: false,
        idle: snapshot.idle,
        idleTimer: undefined,
        offlineTimer: undefined,
        unloading: undefined,
        channels: new Set(),
        watching: NO_WATCHES,
        allowlist: undefined,
        moves: snapshot.moves ?? 0,
        remote: { node: nodeId, attached: snapshot.attached },
      };
      engine.state.sessions.set(session.id, session);
      user.sessions.set(session.id, session);
    }
    const user = session.user;
    session.device = snapshot.device;
    session.idle = snapshot.idle;
    session.remote!.attached = snapshot.attached;
    session.remote!.channels = Object.keys(snapshot.channels);
    for (const name of [...session.channels]) {
      if (Object.hasOwn(snapshot.channels, name)) continue;
      const channel = engine.state.channels.get(name);
      if (channel) engine.removeFromChannel(channel, session);
      else session.channels.delete(name);
    }
    for (const [name, entry] of Object.entries(snapshot.channels)) {
      // Only channels a session here is in (or a query asked for): nobody here sees the others.
      if (this.cluster && !this.cluster.followsChannel(name)) {
        if (session.channels.has(name)) {
          const channel = engine.state.channels.get(name);
          if (channel) engine.removeFromChannel(channel, session);
          else session.channels.delete(name);
        }
        continue;
      }
      engine.addToChannel(session, name, entry.meta, entry.joinedAt, entry.metaVersion ?? 0);
    }
    if (!snapshot.attached) {
      for (const name of session.channels) {
        const channel = engine.state.channels.get(name);
        if (channel && !engine.hasAttachedSessionIn(channel, user)) engine.typingTracker.stop(channel, user);
      }
    }
    engine.announcer.announce(user);
  }

  /** Another node resumed one of our sessions: our socket for it (if any) is the stale one. */
  private handOver(session: Session, nodeId: string): void {
    this.changedSessions.delete(session);
    this.claimedSessions.delete(session);
    this.engine.clock.clearTimer(session.idleTimer);
    this.engine.clock.clearTimer(session.offlineTimer);
    session.idleTimer = session.offlineTimer = undefined;
    this.engine.cancelUnload(session);
    this.engine.unwatchAll(session);
    // Drops it from this node's stored state; others ignore an `end` from a non-owner.
    this.publish({ op: 'end', sessionId: session.id, userId: session.user.record.userId });
    session.remote = { node: nodeId, attached: true };
    // Its user may have no session here any more: off this node's online list then.
    this.checkOnline(session.user.record.userId);
    this.engine.closeSocket(session, 4000, 'SESSION_REPLACED');
  }

  /**
   * A node lost its lease (crash, partition, shutdown): its sessions stay for the offline delay,
   * as if their sockets had just closed, so clients that resume elsewhere cause no leave.
   */
  nodeDown(nodeId: string): void {
    this.orphan(nodeId, this.engine.state.sessions.values());
  }

  /** The dead node's sessions of one user were reaped from the shard (`nodeDown` may not have come yet). */
  userOrphaned(nodeId: string, userId: string): void {
    const user = this.engine.state.users.get(userId);
    if (user) this.orphan(nodeId, user.sessions.values());
  }

  private orphan(nodeId: string, sessions: Iterable<Session>): void {
    const { engine } = this;
    for (const session of [...sessions]) {
      if (session.remote?.node !== nodeId || session.offlineTimer) continue;
      const user = session.user;
      session.remote.attached = false;
      // Every node runs this expiry on its own: the cause names the session and its dead owner.
      const cause = `${nodeId}.down.${session.id}`;
      engine.causes.remote(cause, () => {
        for (const name of session.channels) {
          const channel = engine.state.channels.get(name);
          if (channel && !engine.hasAttachedSessionIn(channel, user)) engine.typingTracker.stop(channel, user);
        }
      });
      const expire = () =>
        engine.causes.remote(cause, () => {
          engine.expireSession(session);
          engine.releaseIfUnused(user);
        });
      if (engine.config.offlineDelayMs <= 0) expire();
      else session.offlineTimer = engine.clock.setTimer(engine.config.offlineDelayMs, expire);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Interest: what the cluster must keep delivering here
  // -------------------------------------------------------------------------------------------

  needsUser(userId: string): boolean {
    return this.engine.state.users.has(userId);
  }

  needsChannel(name: string): boolean {
    const channel = this.engine.state.channels.get(name);
    if (!channel) return false;
    for (const member of channel.members.values()) for (const session of member.sessions) if (!session.remote) return true;
    return false;
  }

  dropUnfollowed(): void {
    const { engine } = this;
    for (const channel of [...engine.state.channels.values()]) {
      if (this.needsChannel(channel.name) || this.cluster?.followsChannel(channel.name)) continue;
      engine.forgetChannel(channel);
    }
    for (const user of [...engine.state.users.values()]) {
      if (user.channels.size > 0 || user.expiryTimer || engine.watchers.isWatched(user.record.userId)) continue;
      let local = false;
      for (const session of user.sessions.values()) if (!session.remote) local = true;
      if (!local) engine.forgetUser(user);
    }
  }

  /**
   * A user record as the shared store now holds it. Writes arrive in the order they happened,
   * so the newest wins, except `lastSeen`/`lastActive`, which only move forward (this node may
   * hold newer activity than it has written yet).
   */
  applyRecord(record: UserRecord, cause?: string): void {
    const user = this.engine.state.users.get(record.userId);
    if (!user) return;
    const before = user.record;
    const merged: UserRecord = {
      ...record,
      lastSeenAt: latest(before.lastSeenAt, record.lastSeenAt),
      lastActiveAt: latest(before.lastActiveAt, record.lastActiveAt),
      // The last return from invisible only moves forward too: this node may have stamped a return
      // (an expiry it cleared itself) that a record read back from the shared service lacks.
      ...(before.shownAt !== undefined || record.shownAt !== undefined ? { shownAt: latest(before.shownAt ?? null, record.shownAt ?? null)! } : {}),
      // The same meta keeps its object: a change is detected by identity, and a record written
      // elsewhere for another field (a lastSeen) must not look like a meta change to others.
      meta: sameJson(before.meta, record.meta) ? before.meta : record.meta,
    };
    // A status whose time ran out while no node could write its clearing (the shared service was
    // away; each node cleared it by itself meanwhile) is over here too, not shown again first.
    if (merged.manual.expiresAt !== null && merged.manual.expiresAt <= this.engine.clock.now()) {
      merged.manual = { status: null, state: null, message: null, expiresAt: null };
    }
    if (sameJson(merged, before)) return;
    const privacyChanged = before.visibility !== merged.visibility || !sameJson(before.contacts, merged.contacts);
    user.record = merged;
    const apply = () => {
      if (before.manual.expiresAt !== merged.manual.expiresAt) this.engine.updates.scheduleExpiry(user);
      this.engine.announcer.announce(user, privacyChanged);
      this.engine.releaseIfUnused(user);
    };
    // Our own writes come back too: their cause is already ours.
    if (cause) this.engine.causes.remote(cause, apply);
    else this.engine.causes.observed(apply);
  }
}

function latest(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
