import type { NodeOp, SessionSnapshot } from '../presence/replication.js';

/*
 * What a shared service (Redis, or an in-process hub for tests and single-process clusters) must
 * do for the cluster. Everything here is one atomic step on the service; the ordering of the
 * messages it delivers is the order in which those steps ran. The cluster logic on top of it
 * (cluster-link.ts) is the same for every service, so both pass one conformance suite.
 */

/** A user record as stored: one string per field, so concurrent writers of different fields both win. */
export type StoredUserFields = Record<string, string>;

export type BusMessage =
  /** A batch of one node's operations; `seq` increases by one per batch. */
  | { kind: 'ops'; node: string; seq: number; ops: NodeOp[] }
  /** A node (re)wrote its whole state: read it instead of waiting for operations. */
  | { kind: 'hello'; node: string; seq: number }
  /** A node's lease was removed (expired and reaped, or the node left). */
  | { kind: 'down'; node: string }
  /**
   * A user record after a write, whole, with its version. `node` is the writer; empty for a write
   * made for a dead node (its users' lastSeen at the reap), which is no live node's own write.
   */
  | { kind: 'user'; node: string; userId: string; version: number; fields: StoredUserFields };

export interface LeaseState {
  /** The service's own clock, ms since the epoch: the cluster's one clock. */
  now: number;
  /** Whether this node was still registered before this renewal (false after a reap or a flush). */
  wasRegistered: boolean;
  /** Nodes whose lease ran out (not yet reaped). */
  expired: string[];
  /** Every registered node, this one included. */
  nodes: string[];
}

export interface NodeState {
  seq: number;
  sessions: SessionSnapshot[];
}

export interface StoredUser {
  version: number;
  fields: StoredUserFields;
}

export interface SharedService {
  /** Starts delivering bus messages (and connection changes) to the callbacks. */
  connect(handlers: { message(message: BusMessage): void; reconnected(): void; disconnected(): void }): Promise<void>;
  isConnected(): boolean;
  renewLease(nodeId: string, ttlMs: number): Promise<LeaseState>;
  /** Removes an expired node's lease and state and announces `down`; false if it renewed meanwhile. */
  reapNode(nodeId: string): Promise<boolean>;
  /** A node's lease deadline (its last renewal plus the lease lifetime, on the service's clock); null without a lease. */
  leaseDeadline(nodeId: string): Promise<number | null>;
  /**
   * Removes a node's lease and state and announces `down`: this node leaving gracefully, or a
   * previous incarnation of it (crashed, restarted under the same id before its lease ran out).
   */
  leave(nodeId: string): Promise<void>;
  /** Writes the node's whole state, registers its lease, announces `hello`. */
  registerNode(nodeId: string, ttlMs: number, state: NodeState): Promise<void>;
  /**
   * Applies one batch to the node's stored state and publishes it. Returns false (and writes
   * nothing) when the node is not registered: its state was reaped or lost, so it must re-register.
   */
  writeOps(nodeId: string, seq: number, ops: NodeOp[]): Promise<boolean>;
  readNode(nodeId: string): Promise<NodeState | null>;
  /** `seq` of every registered node's stored state. */
  readNodeSeqs(nodeIds: string[]): Promise<Map<string, number>>;
  /**
   * Writes some fields of a user record. `announce`: bump the version and publish the whole
   * record; otherwise (activity timestamps) write quietly. The activity timestamps `lastSeenAt`
   * and `lastActiveAt` only move forward: a value older than the stored one is not written.
   */
  writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean): Promise<void>;
  /**
   * Moves a user's stored `lastSeenAt` up to `at` (ms, the service's clock): never back, and not
   * while the stored record is invisible. Unless invisible, the version is bumped and the record
   * published as for an announced write, also when the stored value was later (quiet activity
   * writes are never published), so every node ends with the stored record.
   */
  raiseLastSeen(userId: string, at: number): Promise<void>;
  /** Writes a whole record only if the service has none (after it lost its data). */
  restoreUser(userId: string, fields: StoredUserFields): Promise<void>;
  readUsers(userIds: string[]): Promise<Map<string, StoredUser | null>>;
  close(): Promise<void>;
}
