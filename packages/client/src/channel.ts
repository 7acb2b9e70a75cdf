import type {
  AckMessage,
  Meta,
  PresenceJoinMessage,
  PresenceOccupancyMessage,
  PresenceLeaveMessage,
  PresenceSyncMessage,
  PresenceUpdateMessage,
  TypingMessage,
} from '@presence/protocol';
import { Timer, type Clock } from './clock.js';
import type { Command, Delivery } from './commands.js';
import { Emitter } from './emitter.js';
import { PresenceError, isPresenceError } from './errors.js';
import { diffMembers, sameMember } from './member-diff.js';
import { TypingIndicator, type TypingOptions } from './typing.js';
import type { Member, MetaPatch } from './types.js';

/** `idle`: not a member (never joined, or left); `joining`: join sent or queued; `joined`: acked. */
export type ChannelState = 'idle' | 'joining' | 'joined';

/**
 * How many are in a channel. `members`: the whole member list is known (`channel.members`), and
 * these are its counts; `occupancy`: a large room sends counts and a sample instead (docs/protocol.md,
 * "Large rooms"), and `channel.members` holds the sample.
 */
export interface Occupancy {
  mode: 'members' | 'occupancy';
  /** Visible members (invisible users are never counted). */
  count: number;
  statuses: { online: number; away: number; busy: number };
}

/** One page of a channel's members (`channel.fetchMembers`), by user id. */
export interface MembersPage<M extends Member = Member> {
  count: number;
  statuses: Occupancy['statuses'];
  members: M[];
  /** Pass as `cursor` for the next page; absent on the last one. */
  nextCursor?: string;
}

export interface ChannelEvents<M extends Member = Member> {
  /** A user became a member (not fired for the members of the first sync). */
  join(member: M): void;
  /** A user stopped being a member. */
  leave(member: M, lastSeen: string | null): void;
  /** Status, meta or channel meta of a member changed. */
  update(member: M, previous: M): void;
  /** A member started or stopped typing. */
  typing(userId: string, typing: boolean): void;
  /** A full member list arrived (join, resync, reconnect); the events above already told the differences. */
  sync(members: ReadonlyMap<string, M>): void;
  /** Anything of this channel changed: members, typing users or state. For stores and renderers. */
  change(): void;
  /** The server refused something the client did on its own for this channel (re-join after reconnect, typing). */
  error(error: PresenceError): void;
}

/** What a channel needs from its client. */
export interface ChannelHost {
  readonly clock: Clock;
  readonly typingOptions: TypingOptions;
  /** The user this client is connected as, once known. */
  ownUserId(): string | undefined;
  isConnected(): boolean;
  serverTypingTimeoutMs(): number;
  submit(command: Command, delivery: Delivery): Promise<AckMessage>;
  sendNow(command: Command): Promise<AckMessage>;
}

/**
 * One channel as this client sees it: its members (users, keyed by user id), who is typing, and
 * this session's membership. `members` and `typingUsers` are replaced, never mutated, on every
 * change, so they can serve directly as snapshots for `useSyncExternalStore`.
 */
export class Channel<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string> extends Emitter<
  ChannelEvents<Member<UserMeta, ChannelMeta, State>>
> {
  readonly name: string;
  /** Helper for this user's own typing signal: call `typing.input()` on every input event. */
  readonly typing: TypingIndicator;
  private currentState: ChannelState = 'idle';
  private failure: PresenceError | undefined;
  private memberMap: ReadonlyMap<string, Member<UserMeta, ChannelMeta, State>> = new Map();
  private typingSet: ReadonlySet<string> = new Set();
  /** Set in occupancy mode: what the server last counted. */
  private occ: Occupancy | undefined;
  /** The counts of a member list, kept with the list they count. */
  private counted: [ReadonlyMap<string, Member>, Occupancy] | undefined;
  /** `seq` of the last event applied; events are only trusted after a sync on this connection. */
  private seq = 0;
  private synced = false;
  private awaitingSync = false;
  private resyncing = false;
  /** Bumped by every join/leave call, so the answer to an older one cannot undo a newer one. */
  private membershipVersion = 0;
  /** This user's channel meta as the server last reported it, to restore after a server restart. */
  private ownChannelMeta: Meta = {};
  /** Members kept through a server restart while their own clients reconnect. */
  private returning = new Set<string>();
  /** Grace period of the first sync after a connection whose session the server did not know. */
  private pendingGraceMs = 0;
  private readonly graceTimer: Timer;

  constructor(
    name: string,
    private readonly host: ChannelHost,
  ) {
    super();
    this.name = name;
    this.graceTimer = new Timer(host.clock, () => this.graceOver());
    this.typing = new TypingIndicator({
      ...host.typingOptions,
      clock: host.clock,
      serverTimeoutMs: () => host.serverTypingTimeoutMs(),
      canSend: () => this.currentState === 'joined' && host.isConnected(),
      send: (typing) => {
        host.submit({ type: 'typing', channel: this.name, typing }, 'ephemeral').catch((error: unknown) => this.reportQuietly(error));
      },
    });
  }

  get state(): ChannelState {
    return this.currentState;
  }

  /** Members by user id (this user included while visible). */
  get members(): ReadonlyMap<string, Member<UserMeta, ChannelMeta, State>> {
    return this.memberMap;
  }

  /** How many are in the channel: counted from `members`, or as the server counts a large room. */
  get occupancy(): Occupancy {
    if (this.occ) return this.occ;
    const map = this.memberMap;
    if (this.counted?.[0] !== map) {
      const statuses = { online: 0, away: 0, busy: 0 };
      for (const m of map.values()) if (m.status !== 'offline') statuses[m.status] += 1;
      this.counted = [map, { mode: 'members', count: map.size, statuses }];
    }
    return this.counted[1];
  }

  /**
   * One page of the channel's visible members as they are now, by user id (the whole list of a
   * room in occupancy mode, read page by page). Needs the channel joined.
   */
  fetchMembers(options: { cursor?: string; limit?: number } = {}): Promise<MembersPage<Member<UserMeta, ChannelMeta, State>>> {
    // Answered by `presence.page` in place of an ack.
    return this.host.submit({ type: 'members', channel: this.name, ...options }, 'durable') as Promise<unknown> as Promise<MembersPage<Member<UserMeta, ChannelMeta, State>>>;
  }

  /** User ids of members typing now (never this user). */
  get typingUsers(): ReadonlySet<string> {
    return this.typingSet;
  }

  /**
   * Why this channel is not joined, when a join failed: the server refused it (or refused the
   * join again after a reconnect), or the connection ended while joining. Cleared by the next join.
   */
  get joinError(): PresenceError | undefined {
    return this.failure;
  }

  /**
   * Joins with this session, or merges `meta` into this user's channel meta when already joined
   * (`null` removes a key). Queued while disconnected. Resolves once the member list has arrived.
   */
  async join(meta?: MetaPatch<ChannelMeta>): Promise<this> {
    const version = ++this.membershipVersion;
    const patch = meta as Meta | undefined;
    this.failure = undefined;
    if (this.currentState === 'idle') this.setState('joining');
    if (patch) this.ownChannelMeta = { ...this.ownChannelMeta, ...patch };
    try {
      await this.host.submit({ type: 'join', channel: this.name, ...(patch ? { meta: patch } : {}) }, 'durable');
    } catch (error) {
      if (version === this.membershipVersion && this.currentState === 'joining') {
        if (isPresenceError(error)) this.failure = error;
        this.setState('idle');
      }
      throw error;
    }
    if (version === this.membershipVersion) this.setState('joined');
    return this;
  }

  /** Leaves at once for this session (no offline delay). Queued while disconnected. */
  async leave(): Promise<void> {
    if (this.currentState === 'idle') return;
    this.membershipVersion += 1;
    this.reset();
    try {
      await this.host.submit({ type: 'leave', channel: this.name }, 'durable');
    } catch (error) {
      // Not a member on the server (it restarted, or the join never happened): the goal is reached.
      if (isPresenceError(error) && error.code === 'NOT_IN_CHANNEL') return;
      throw error;
    }
  }

  /** Merges into this user's per-channel meta (`null` removes a key). Resolves with the merged meta. */
  async setMeta(meta: MetaPatch<ChannelMeta>): Promise<ChannelMeta> {
    const ack = await this.host.submit({ type: 'channel.meta', channel: this.name, meta: meta as Meta }, 'durable');
    const merged = (ack as { channelMeta?: Meta }).channelMeta;
    if (merged) this.ownChannelMeta = merged;
    return (merged ?? this.ownChannelMeta) as ChannelMeta;
  }

  // Called by the client --------------------------------------------------------------------

  /**
   * A new connection was welcomed. Joined channels are joined again: harmless when the session
   * was resumed (no event reaches anyone), necessary when the server forgot it (restart). The
   * sync that answers is reconciled against the members known before.
   */
  restore(resumed: boolean, offlineDelayMs: number): void {
    if (this.currentState !== 'joined') return;
    this.awaitingSync = true;
    this.resyncing = false;
    this.pendingGraceMs = resumed ? 0 : offlineDelayMs;
    const meta = !resumed && Object.keys(this.ownChannelMeta).length > 0 ? { meta: this.ownChannelMeta } : {};
    const version = this.membershipVersion;
    this.host.sendNow({ type: 'join', channel: this.name, ...meta }).catch((error: unknown) => {
      // Lost with the connection or the client closed: the next connection tries again.
      if (version !== this.membershipVersion || !isPresenceError(error) || !error.refusedByServer) return;
      // Refused now (e.g. the new token's channel allowlist): this session is not a member any more.
      this.failure = error;
      this.reset();
      this.emit('error', error);
    });
  }

  /** The connection dropped: typing state is unknown until the next connection. */
  connectionLost(): void {
    this.typing.reset();
    if (this.typingSet.size > 0) {
      this.typingSet = new Set();
      this.emit('change');
    }
  }

  /** Stops this channel's timers (the client is closing). Members stay, for a later reconnect. */
  dispose(): void {
    this.typing.reset();
    this.graceTimer.cancel();
  }

  /** Not a member any more, locally: clears members and typing. */
  reset(): void {
    this.typing.reset();
    this.graceTimer.cancel();
    this.returning = new Set();
    this.synced = false;
    this.awaitingSync = false;
    this.resyncing = false;
    this.seq = 0;
    this.occ = undefined;
    this.memberMap = new Map();
    this.typingSet = new Set();
    this.currentState = 'idle';
    this.emit('change');
  }

  applySync(message: PresenceSyncMessage): void {
    if (this.currentState === 'idle') return;
    // The end of occupancy mode: the whole list is a new starting point, not a series of joins.
    if (this.occ) {
      this.occ = undefined;
      this.synced = false;
    }
    this.seq = message.seq;
    this.awaitingSync = false;
    this.resyncing = false;
    const incoming = new Map<string, Member<UserMeta, ChannelMeta, State>>();
    for (const member of message.members) incoming.set(member.userId, member as Member<UserMeta, ChannelMeta, State>);
    this.noteOwnMember(incoming.get(this.host.ownUserId() ?? ''));
    if (!this.synced) {
      // The first member list of a join is the starting point, not a series of joins.
      this.synced = true;
      this.memberMap = incoming;
      this.pruneTyping();
      this.emit('sync', incoming);
      this.emit('change');
      return;
    }
    this.keepReturningMembers(incoming);
    const before = this.memberMap;
    this.memberMap = incoming;
    this.pruneTyping();
    const diff = diffMembers(before, incoming);
    for (const member of diff.left) this.emit('leave', member, member.lastSeen);
    for (const member of diff.joined) this.emit('join', member);
    for (const { member, previous } of diff.updated) this.emit('update', member, previous);
    this.emit('sync', incoming);
    this.emit('change');
  }

  /** Occupancy mode: the counts, and the sample as `members` (a whole one, or a diff of it). */
  applyOccupancy(message: PresenceOccupancyMessage): void {
    if (this.currentState === 'idle') return;
    const { sample, added, removed, typing } = message;
    if (sample || added || removed) {
      const next = new Map(sample ? [] : this.memberMap);
      for (const userId of removed ?? []) next.delete(userId);
      for (const member of sample ?? added ?? []) next.set(member.userId, member as Member<UserMeta, ChannelMeta, State>);
      this.memberMap = next;
    }
    if (typing) this.typingSet = new Set(typing.filter((userId) => userId !== this.host.ownUserId()));
    this.occ = { mode: 'occupancy', count: message.count, statuses: message.statuses };
    this.synced = true;
    this.awaitingSync = this.resyncing = false;
    this.emit('change');
  }

  applyEvent(message: PresenceJoinMessage | PresenceLeaveMessage | PresenceUpdateMessage): void {
    // Until this connection's sync arrives, the sync is the truth: it includes these events.
    if (this.currentState === 'idle' || this.awaitingSync || !this.synced || this.occ) return;
    if (message.seq <= this.seq) return;
    const gap = message.seq > this.seq + 1;
    this.seq = message.seq;
    if (message.type === 'presence.leave') this.removeMember(message.userId, message.lastSeen);
    else this.putMember(message.member as Member<UserMeta, ChannelMeta, State>, message.type === 'presence.join');
    // A missed event means the list may be wrong somewhere else too: ask for the full list.
    if (gap) this.resync();
  }

  applyTyping(message: TypingMessage): void {
    if (this.currentState === 'idle') return;
    const has = this.typingSet.has(message.userId);
    if (has === message.typing) return;
    const next = new Set(this.typingSet);
    if (message.typing) next.add(message.userId);
    else next.delete(message.userId);
    this.typingSet = next;
    this.emit('typing', message.userId, message.typing);
    this.emit('change');
  }

  // Internals --------------------------------------------------------------------------------

  private putMember(member: Member<UserMeta, ChannelMeta, State>, announcedAsJoin: boolean): void {
    const previous = this.memberMap.get(member.userId);
    const next = new Map(this.memberMap);
    next.set(member.userId, member);
    this.memberMap = next;
    this.noteOwnMember(member);
    const wasReturning = this.returning.delete(member.userId);
    if (!previous) {
      this.emit('join', member);
    } else if (!sameMember(previous, member) || (!announcedAsJoin && !wasReturning)) {
      this.emit('update', member, previous);
    }
    this.emit('change');
  }

  private removeMember(userId: string, lastSeen: string | null): void {
    const previous = this.memberMap.get(userId);
    this.returning.delete(userId);
    if (!previous) return;
    const next = new Map(this.memberMap);
    next.delete(userId);
    this.memberMap = next;
    this.dropTyping(userId);
    this.emit('leave', previous, lastSeen);
    this.emit('change');
  }

  /**
   * After a server restart the first sync lacks everyone whose client has not reconnected yet.
   * Their clients are reconnecting too, so they are kept, as the server itself keeps a dropped
   * user for the offline delay; whoever is not back when it runs out has really left.
   */
  private keepReturningMembers(incoming: Map<string, Member<UserMeta, ChannelMeta, State>>): void {
    const graceMs = this.pendingGraceMs;
    this.pendingGraceMs = 0;
    const ownUserId = this.host.ownUserId();
    for (const userId of [...this.returning]) {
      if (incoming.has(userId)) this.returning.delete(userId);
    }
    if (graceMs > 0) {
      for (const userId of this.memberMap.keys()) {
        if (!incoming.has(userId) && userId !== ownUserId) this.returning.add(userId);
      }
      if (this.returning.size > 0) this.graceTimer.arm(graceMs);
    }
    for (const userId of this.returning) {
      const member = this.memberMap.get(userId);
      if (member) incoming.set(userId, member);
    }
  }

  private graceOver(): void {
    const gone = [...this.returning];
    this.returning = new Set();
    for (const userId of gone) {
      const member = this.memberMap.get(userId);
      this.removeMember(userId, member?.lastSeen ?? null);
    }
  }

  private resync(): void {
    if (this.resyncing) return;
    this.resyncing = true;
    this.host.submit({ type: 'join', channel: this.name }, 'ephemeral').catch((error: unknown) => {
      this.resyncing = false;
      this.reportQuietly(error);
    });
  }

  private noteOwnMember(member: Member<UserMeta, ChannelMeta, State> | undefined): void {
    if (member && member.userId === this.host.ownUserId()) this.ownChannelMeta = member.channelMeta;
  }

  private pruneTyping(): void {
    let pruned: Set<string> | undefined;
    for (const userId of this.typingSet) {
      if (this.memberMap.has(userId)) continue;
      pruned ??= new Set(this.typingSet);
      pruned.delete(userId);
    }
    if (pruned) this.typingSet = pruned;
  }

  private dropTyping(userId: string): void {
    if (!this.typingSet.has(userId)) return;
    const next = new Set(this.typingSet);
    next.delete(userId);
    this.typingSet = next;
    this.emit('typing', userId, false);
  }

  private setState(state: ChannelState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit('change');
  }

  /** Lost connections are expected; what the server refused is worth telling. */
  private reportQuietly(error: unknown): void {
    if (isPresenceError(error) && error.refusedByServer) this.emit('error', error);
  }
}
