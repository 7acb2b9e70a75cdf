import type { Meta, ServerMessage, UserPresence } from '@presence/protocol';
import type { UserRecord } from '../store/user-store.js';
import type { TimerHandle } from './clock.js';

/*
 * The model's live state: sessions (one per socket), users (sessions merged) and channels
 * (user-level membership). The engine owns and mutates these; the other presence modules read them.
 */

/** Where the model writes a session's frames; the transport implements it over a socket. */
export interface SessionSink {
  /**
   * Queues one serialized server message. Must not throw. A channel's messages name it, and its
   * membership events their `seq` (a sink that buffers per channel, such as an HTTP session's,
   * needs both without parsing the JSON again).
   */
  send(json: string, type: ServerMessage['type'], channel?: string, seq?: number): void;
  /**
   * Queues a large channel's window: several membership messages as one frame, the same object
   * for every receiver (a socket writes its text as one frame, encoded once for all of them).
   * Optional: a sink without it is sent the messages one by one through `send`.
   */
  sendWindow?(frame: WindowFrame): void;
  /**
   * The connection asked for occupancy mode (`features=occupancy`): in a channel past the
   * occupancy threshold it is sent counts and a sample instead of the member list.
   */
  readonly occupancy?: boolean;
  close(code: number, reason: string): void;
  /**
   * The session's page said it is going away (the unload beacon). A sink that cannot see that by
   * itself (an HTTP session's: it would only notice when heartbeats stop) lets go of the session now.
   */
  unloaded?(): void;
}

/** One window of a large channel: its membership messages, and the JSON array of them. */
export interface WindowFrame {
  readonly channel: string;
  /** `[m1,m2,…]`: the frame every receiver is sent. */
  readonly text: string;
  readonly messages: readonly { readonly json: string; readonly type: ServerMessage['type']; readonly seq: number }[];
}

/**
 * How the model answers one session directly (not a change others see): `welcome`, `pong`,
 * `user.sync`, and a channel's full state after a join or a resume. A wire protocol implements it
 * beside its listener of the presence events.
 */
export interface SessionOutput {
  /** Sends one message to the session (dropped when it has no socket). */
  send(session: Session, message: ServerMessage): void;
  /** Sends the channel's visible members, as of now, with its current `seq`. */
  sync(session: Session, channel: Channel): void;
}

/** The model's live state. The engine alone changes it; the read side and listeners read it. */
export interface PresenceState {
  readonly users: Map<string, UserState>;
  /** Every session this node knows: its own, and replicas of other nodes' (`remote`). */
  readonly sessions: Map<string, Session>;
  readonly channels: Map<string, Channel>;
}

export interface Session {
  readonly id: string;
  readonly user: UserState;
  device: string;
  /** Null while detached: the socket is gone and the offline delay runs. */
  sink: SessionSink | null;
  lastActivityAt: number;
  /** The client said `idle`; cleared by the next `activity`. */
  reportedIdle: boolean;
  /** Result of the last idle check (reported idle, or no activity for the idle timeout). */
  idle: boolean;
  idleTimer?: TimerHandle;
  offlineTimer?: TimerHandle;
  /**
   * After an unload beacon: the grace timer while it runs; `true` once it ran out with the socket
   * still open (the session then ends at its close, without the offline delay). A resume clears it.
   */
  unloading: TimerHandle | true | undefined;
  channels: Set<string>;
  watching: Set<string>;
  allowlist?: string[];
  /**
   * How many times the session moved to another node. It orders ownership: a node that reads a
   * session from two owners (a crashed node's stale stored state and the node its client moved to)
   * keeps the one that knows of more moves.
   */
  moves: number;
  /**
   * Set when the session ends for good, whoever held it: a logout. (Its owner's own end is final
   * too; a replica's expiry of a dead node's session is not: the client may have resumed it on a
   * node this one has not heard from yet.)
   */
  loggedOut?: boolean;
  /**
   * Set for a session whose socket is on another node: this node keeps a replica of it (for
   * member lists and merged presence) but never runs its timers or writes to it.
   */
  remote?: {
    node: string;
    attached: boolean;
    /**
     * Every channel its owner lists, also those this node does not follow (which the replica
     * leaves out): a client that moves the session here takes them along (`prepareConnect`).
     */
    channels?: string[];
  };
}

export interface UserState {
  record: UserRecord;
  sessions: Map<string, Session>;
  /** Channels where the user is a member (at least one of their sessions joined). */
  channels: Set<string>;
  expiryTimer?: TimerHandle;
  /** The view last announced to others, for change detection. */
  published: UserPresence;
  /** Whether others could see the user at the last announcement. */
  announcedVisible: boolean;
  /** The record's `shownAt` at the last announcement: the announced join times count from it. */
  shownAt: number | undefined;
}

export interface ChannelMember {
  readonly user: UserState;
  joinedAt: number;
  channelMeta: Meta;
  /**
   * The channel meta's version, from the Lamport clock of the node that set it (above every version
   * that node had seen). A replica applies another node's meta only when it is newer, so a stale
   * copy (an earlier publish, a shard read racing a join) can no longer put back a meta changed since.
   */
  metaVersion: number;
  sessions: Set<Session>;
  /**
   * The member as last serialized, valid while the user's announced view and the channel meta
   * are the same objects (both are replaced, never mutated, on change). A sync of a big channel
   * then costs one string join instead of one object and one stringify per member.
   */
  rendered?: { published: UserPresence; channelMeta: Meta; json: string };
}

/** Visible members of a channel by status, as last announced. */
export interface StatusCounts {
  online: number;
  away: number;
  busy: number;
}

export interface Channel {
  readonly name: string;
  seq: number;
  members: Map<string, ChannelMember>;
  typing: Map<string, TimerHandle>;
  /**
   * Visible members by their announced status, kept by the announcer as it announces joins,
   * leaves and status changes: a large channel's occupancy costs nothing to read.
   */
  readonly counts: StatusCounts;
}
