import type { Meta } from '@presence/protocol';
import type { UserRecord } from '../store/user-store.js';

/*
 * The contract between one node's presence model and the other nodes.
 *
 * Each node owns the sessions of its own sockets and is the only writer of their state. It
 * publishes what changed as ordered batches of operations; every other node applies them to a
 * replica, so member lists, user presence and the HTTP API answer cluster-wide from memory. A
 * node's full state is also stored, so a node that missed messages (a sequence gap, a Redis
 * restart) or that just started reads it whole instead. Liveness is a lease: a node that stops
 * renewing it is declared down by the others, and its sessions then get the offline delay.
 */

/** One session as its owner node describes it: everything another node needs to replicate it. */
export interface SessionSnapshot {
  id: string;
  userId: string;
  device: string;
  idle: boolean;
  /** False while the socket is gone and the session waits out its offline delay. */
  attached: boolean;
  /** Joined channels with the member's channel meta and join time (ms since the epoch). */
  channels: Record<string, { meta: Meta; joinedAt: number }>;
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
  | { op: 'end'; sessionId: string }
  /** Typing started, was refreshed, or stopped; each node runs its own expiry for it. */
  | { op: 'typing'; channel: string; userId: string; typing: boolean }
  /** The user logged out: every node ends that user's sessions at once. */
  | { op: 'logout'; userId: string }
  /**
   * An unload beacon for a session this node does not own reached it: the owner starts the grace
   * (published by any node; every node but the owner ignores it).
   */
  | { op: 'unload'; sessionId: string }
) & { cause?: string };

/**
 * What the cluster delivers, strictly in the cluster's order. A returned promise holds back later
 * deliveries until it settles (the model uses this to load user records it has not seen).
 */
export interface ClusterListener {
  /** Operations of another node, in that node's order. */
  applyOps(nodeId: string, ops: NodeOp[]): void | Promise<void>;
  /** The whole state of another node: it replaces every session that node owned. */
  applySnapshot(nodeId: string, sessions: SessionSnapshot[]): void | Promise<void>;
  /** Another node lost its lease: its sessions are orphaned and get the offline delay. */
  nodeDown(nodeId: string): void;
  /**
   * A user record changed (on any node, this one included), in the order writes happened. `cause`
   * names the change at its origin when the write carried it.
   */
  applyRecord(record: UserRecord, cause?: string): void | Promise<void>;
  /** This node's sessions as they are now, for re-registering after the shared state was lost. */
  localSnapshot(): SessionSnapshot[];
}

export interface Cluster {
  readonly nodeId: string;
  /** Registers the node, loads the other nodes' state, and starts delivering. */
  start(listener: ClusterListener): Promise<void>;
  /** Queues an operation; the operations of one tick are published together, in order. */
  publish(op: NodeOp): void;
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
