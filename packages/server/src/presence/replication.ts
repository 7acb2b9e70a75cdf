import type { Meta } from '@presence/protocol';
import type { UserRecord } from '../store/user-store.js';

/*
 * The contract between one node's presence model and the other nodes.
 *
 * Each node owns the sessions of its own sockets and is the only writer of their state. It
 * publishes what changed as operations on each user's shard; a node that follows the user (one of
 * its sessions is that user's, watches them, or shares a channel with them) applies them to its
 * replica, so member lists and user presence answer from memory for what this node's clients can
 * see, and nothing else reaches it. A user's shard is also stored, so a node that missed messages
 * (a sequence gap, a Redis restart) or that starts following reads it whole instead. Liveness is
 * a lease: a node that stops renewing it is declared down by the others, and its sessions then get
 * the offline delay.
 */

/**
 * One node's own counts, stored with its lease: its sessions, open connections and visible users,
 * and its channels with a visible member there (the busiest with their counts, summed over nodes
 * for the admin stats).
 */
export interface NodeCounts {
  sessions: number;
  connections: number;
  users: number;
  channels?: number;
  top?: [string, number][];
}

/** One session as its owner node describes it: everything another node needs to replicate it. */
export interface SessionSnapshot {
  id: string;
  userId: string;
  device: string;
  idle: boolean;
  /** False while the socket is gone and the session waits out its offline delay. */
  attached: boolean;
  /**
   * Joined channels with the member's channel meta, join time (ms since the epoch) and the meta's
   * version (`ChannelMember.metaVersion`; absent from older nodes: 0).
   */
  channels: Record<string, { meta: Meta; joinedAt: number; metaVersion?: number }>;
  /** How many times the session moved to another node (absent: never); the higher count owns it. */
  moves?: number;
}

/**
 * Every op may carry `cause`: the id of the change at its origin, from which every node derives the
 * same event ids (see `ChangeCauses`). Absent from ops written before this field existed.
 */
export type NodeOp = (
  /**
   * A session was opened or changed. `claim` marks a session this node took over from another
   * node (a client resumed its `sessionId` here); only a claim may change a session's owner.
   */
  | { op: 'session'; session: SessionSnapshot; claim?: boolean }
  /** A session ended (offline delay over, logout, or left for good). */
  | { op: 'end'; sessionId: string; userId: string }
  /** Typing started, was refreshed, or stopped; each node runs its own expiry for it. */
  | { op: 'typing'; channel: string; userId: string; typing: boolean }
  /** The user logged out: every node ends that user's sessions at once. */
  | { op: 'logout'; userId: string }
  /**
   * An unload beacon for a session this node does not own reached it: the owner starts the grace
   * (published by any node; every node but the owner ignores it).
   */
  | { op: 'unload'; sessionId: string; userId: string }
) & { cause?: string };

/** The user an op is about: the shard it is written to. */
export function userOfOp(op: NodeOp): string {
  return op.op === 'session' ? op.session.userId : op.userId;
}

/** A session in a user's shard, with the node that owns it. */
export interface OwnedSession {
  node: string;
  session: SessionSnapshot;
}

/**
 * What the cluster delivers, strictly in the cluster's order. A returned promise holds back later
 * deliveries until it settles (the model uses this to load user records it has not seen).
 */
export interface ClusterListener {
  /** Operations of another node on one user, in the order of that user's shard. */
  applyOps(nodeId: string, ops: NodeOp[]): void | Promise<void>;
  /**
   * A user's shard as read whole (the user is newly followed, or messages were missed): it
   * replaces every session of that user that another node owns.
   */
  applyUser(userId: string, sessions: OwnedSession[]): void | Promise<void>;
  /** Another node lost its lease: its sessions are orphaned and get the offline delay. */
  nodeDown(nodeId: string): void;
  /** A dead node's sessions of one user were removed from the shard: orphaned here too, if not yet. */
  userOrphaned(nodeId: string, userId: string): void;
  /**
   * Whether this node still needs a followed user (a session here is theirs, watches them, or
   * shares a channel with them) or a followed channel (a session here is in it). Before asking,
   * the cluster calls `dropUnfollowed` so replicas nobody here can see are gone.
   */
  needsUser(userId: string): boolean;
  needsChannel(name: string): boolean;
  /** Forgets, without events, remote members of channels no session here is in, and users nobody here can see. */
  dropUnfollowed(): void;
  /**
   * A user record changed (on any node, this one included), in the order writes happened. `cause`
   * names the change at its origin when the write carried it.
   */
  applyRecord(record: UserRecord, cause?: string): void | Promise<void>;
  /** This node's own counts (sessions, open connections, visible users with a session here), stored with its lease. */
  localStats(): NodeCounts;
  /** This node's sessions as they are now, for re-registering after the shared state was lost. */
  localSnapshot(): SessionSnapshot[];
}

export interface Cluster {
  readonly nodeId: string;
  /** Registers the node, loads the other nodes' state, and starts delivering. */
  start(listener: ClusterListener): Promise<void>;
  /** Queues an operation; the operations of one tick are published together, in order. */
  publish(op: NodeOp): void;
  /**
   * Follows a channel (before a session here joins it, or a query about it): resolves once its
   * members' sessions are in the replica. Undefined when it is followed already.
   */
  loadChannel(name: string): Promise<void> | undefined;
  /** Whether the cluster delivers this channel's members here (remote sessions keep only such channels). */
  followsChannel(name: string): boolean;
  /** Lists a user as online on this node in the shared state (visible, with a session here), or not. */
  listOnline(userId: string, online: boolean): void;
  /** The cluster's online users: the union of every node's list, by user id. */
  readOnline(): Promise<string[]>;
  /** Every live node's counts as of its last lease renewal (this one's as of now). */
  readNodeStats(): Promise<Map<string, NodeCounts>>;
  /** Sends everything queued now (before a typing op that must follow the session it concerns). */
  flush(): void;
  /** The cluster's clock minus this node's clock, so timestamps never depend on one node's wall clock. */
  readonly clockOffsetMs: number;
  /** False while the shared state is unreachable. */
  isReady(): boolean;
  /** Number of nodes with a live lease, this one included. */
  nodes(): string[];
  /**
   * Leaves the cluster (graceful shutdown): the other nodes orphan this node's sessions at once,
   * so the offline delay starts now and clients that reconnect elsewhere resume without a leave.
   */
  close(): Promise<void>;
}
