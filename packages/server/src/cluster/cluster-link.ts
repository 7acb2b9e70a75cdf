import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Clock } from '../presence/clock.js';
import type { SaveKind, UserRecord, UserStore } from '../store/user-store.js';
import type { Cluster, ClusterListener, NodeOp } from '../presence/replication.js';
import type { BusMessage, SharedService, LeaseState } from './shared-service.js';
import { UserRecords } from './user-records.js';

export interface ClusterLinkOptions {
  service: SharedService;
  /**
   * The configured id (`PRESENCE_NODE_ID`). The cluster knows this process as `<id>@<incarnation>`,
   * with a random incarnation per start: a node restarted under the same id is a new node, and it
   * ends its previous incarnation as a crashed node (see `register`). @default a random id
   */
  nodeId?: string;
  /**
   * Lease lifetime. It is renewed every third of it, and every renewal also reaps expired
   * leases, so a dead node is declared down at most `leaseTtlMs * 4/3` after its last renewal.
   */
  leaseTtlMs: number;
  /** Anti-entropy: every interval, nodes whose stored state moved without a message are re-read. */
  syncIntervalMs: number;
  /** This node's own clock; only used to measure the offset to the shared service's clock. */
  clock: Pick<Clock, 'now'>;
  log: Logger;
  /** How often activity timestamps are written (they are never announced). @default 1000 */
  activityFlushMs?: number;
  /** Records of users not held by the model that are kept for fast reads. @default 50000 */
  maxCachedUsers?: number;
}


type QueueItem =
  | BusMessage
  | { kind: 'resync'; node: string }
  /** A previous incarnation of this node (same configured id): end it as crashed. */
  | { kind: 'retire'; node: string }
  /** Resolves once everything queued before it was processed. */
  | { kind: 'barrier'; done: () => void };

/**
 * One node's link to the cluster, over any shared service. As a Cluster it publishes this node's
 * session operations in numbered batches, applies the other nodes' in order, re-reads a node's
 * whole state on a gap, renews the lease and reaps dead nodes. As a UserStore it keeps user
 * records in memory, writes changes field by field, and applies other nodes' writes in the order
 * the service ran them. After the service comes back (restarted, possibly empty) the node
 * re-registers, re-writes its sessions and records, and re-reads everyone else's.
 */
export class ClusterLink implements Cluster, UserStore {
  /** This process in the cluster: `<configured id>@<incarnation>`, or a random id. */
  readonly nodeId: string;
  clockOffsetMs = 0;
  private readonly service: SharedService;
  private readonly options: ClusterLinkOptions;
  private listener?: ClusterListener;
  private started = false;
  private closed = false;
  private seq = 0;
  /** Other nodes: the last batch applied from each. */
  private readonly appliedSeq = new Map<string, number>();
  /** Stored seq that differed from the applied one at the last anti-entropy round. */
  private readonly suspectSeq = new Map<string, number>();
  /** Known nodes missing from the registry, since when (ms, local clock). */
  private readonly missingSince = new Map<string, number>();
  private registry: string[] = [];
  private readonly queue: QueueItem[] = [];
  private draining = false;
  private outbox: NodeOp[] = [];
  /** Ops sent to the service whose write has not answered yet. */
  private opsInFlight = 0;
  private flushScheduled = false;
  private needsRegistration = false;
  private registering?: Promise<void>;
  private readonly timers: NodeJS.Timeout[] = [];
  /** User records: cached, written field by field, applied in the order the service ran them. */
  readonly records: UserRecords;

  constructor(options: ClusterLinkOptions) {
    this.options = options;
    this.service = options.service;
    this.nodeId = options.nodeId === undefined ? randomUUID() : `${options.nodeId}@${randomBytes(4).toString('hex')}`;
    this.records = new UserRecords({
      service: this.service,
      nodeId: this.nodeId,
      log: options.log,
      maxCachedUsers: options.maxCachedUsers,
      apply: (record, cause) => this.listener!.applyRecord(record, cause),
    });
  }

  // -------------------------------------------------------------------------------------------
  // Cluster
  // -------------------------------------------------------------------------------------------

  async start(listener: ClusterListener): Promise<void> {
    this.listener = listener;
    await this.service.connect({
      message: (message) => this.enqueue(message),
      reconnected: () => {
        this.options.log.info('shared state reachable again; re-registering', { node: this.nodeId });
        void this.reregister();
      },
      disconnected: () => {
        this.needsRegistration = true;
        this.options.log.warn('shared state unreachable; serving local clients only', { node: this.nodeId });
      },
    });
    await this.register();
    // Ready only once the other nodes' state is read: a client that resumes here at once (its node
    // just restarted) finds its session.
    await new Promise<void>((done) => this.enqueue({ kind: 'barrier', done }));
    this.started = true;
    const { leaseTtlMs, syncIntervalMs } = this.options;
    this.every(Math.max(10, Math.floor(leaseTtlMs / 3)), () => this.renewLease());
    this.every(syncIntervalMs, () => this.antiEntropy());
    this.every(this.options.activityFlushMs ?? 1000, async () => this.records.flushActivity());
  }

  publish(op: NodeOp): void {
    if (this.closed) return;
    this.outbox.push(op);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || !this.started) return;
    if (this.registering) {
      void this.registering.then(() => this.flush());
      return;
    }
    if (!this.service.isConnected()) {
      // The whole state is written again on reconnect, so these ops are not needed.
      this.outbox = [];
      this.needsRegistration = true;
      return;
    }
    const ops = this.outbox;
    this.outbox = [];
    const seq = ++this.seq;
    this.opsInFlight += ops.length;
    this.service.writeOps(this.nodeId, seq, ops).then(
      (written) => {
        this.opsInFlight -= ops.length;
        if (!written) void this.reregister();
      },
      () => {
        this.opsInFlight -= ops.length;
        this.needsRegistration = true;
      },
    );
  }

  isReady(): boolean {
    return this.started && !this.closed && this.service.isConnected() && !this.needsRegistration && !this.registering;
  }

  nodes(): string[] {
    return [...this.registry];
  }

  /** A node's name for people (the admin stats): its configured id, without the incarnation. */
  nameOf(node: string): string {
    const at = node.lastIndexOf('@');
    return at > 0 ? node.slice(0, at) : node;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    await this.records.flushActivity();
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    try {
      if (this.service.isConnected()) await this.service.leave(this.nodeId);
    } catch (error) {
      this.options.log.warn('could not leave the cluster cleanly; the lease will expire', { error });
    }
    await this.service.close();
  }

  /** Stops at once without leaving, as `kill -9` would: for tests of crash detection. */
  async crash(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.service.close();
  }

  // -------------------------------------------------------------------------------------------
  // Registration, lease, anti-entropy
  // -------------------------------------------------------------------------------------------

  private async register(): Promise<void> {
    // Ops not yet written are part of the snapshot taken now.
    this.outbox = [];
    const sessions = this.listener!.localSnapshot();
    await this.service.registerNode(this.nodeId, this.options.leaseTtlMs, { seq: ++this.seq, sessions });
    this.needsRegistration = false;
    const lease = await this.timedRenewal();
    this.registry = lease.nodes;
    for (const node of lease.nodes) if (node !== this.nodeId) this.enqueue({ kind: 'resync', node });
    // At start only: if re-registrations retired too, two live processes given one id (a
    // misconfiguration) would end each other in turn forever.
    if (!this.started) for (const node of lease.nodes) if (this.isPreviousIncarnation(node)) this.enqueue({ kind: 'retire', node });
  }

  /**
   * A registered node with this node's configured id but another incarnation: this node crashed
   * and was restarted before that lease ran out (ids are one per running process).
   */
  private isPreviousIncarnation(node: string): boolean {
    const configured = this.options.nodeId;
    return configured !== undefined && node !== this.nodeId && node.startsWith(`${configured}@`);
  }

  /** After the service was lost or this node was reaped: write everything again. */
  private reregister(): Promise<void> {
    if (this.closed || !this.started) return Promise.resolve();
    this.registering ??= (async () => {
      try {
        await this.register();
        await this.records.resync();
        this.options.log.info('registered again', { node: this.nodeId, nodes: this.registry.length });
      } catch (error) {
        this.needsRegistration = true;
        this.options.log.debug('re-registration failed; will retry', { error });
      } finally {
        this.registering = undefined;
      }
    })();
    return this.registering;
  }

  private async renewLease(): Promise<void> {
    if (!this.service.isConnected()) return;
    if (this.needsRegistration) {
      await this.reregister();
      return;
    }
    const lease = await this.timedRenewal();
    this.registry = lease.nodes;
    if (!lease.wasRegistered) {
      await this.reregister();
      return;
    }
    for (const node of lease.expired) {
      if (node !== this.nodeId) await this.reap(node);
    }
    this.checkMembership(lease.nodes, this.options.clock.now());
  }

  /**
   * Declares an expired node down. Its users with a socket open on it were online at least until
   * its last lease renewal, so their stored lastSeen moves up to that first (never back, never for
   * an invisible user): every node receives the new record before `down`, their leaves carry it,
   * and a node started later reads the same. Both steps are safe to repeat when several nodes reap
   * at once; a node that renewed meanwhile is not dropped, and its users were online then anyway.
   */
  private async reap(node: string): Promise<void> {
    await this.raiseLastSeenOf(node);
    await this.service.reapNode(node);
  }

  /** Moves the stored lastSeen of a dead node's connected users up to its last lease renewal. */
  private async raiseLastSeenOf(node: string): Promise<void> {
    const [deadline, state] = await Promise.all([this.service.leaseDeadline(node), this.service.readNode(node)]);
    if (deadline === null || !state) return;
    // Every node runs the same lease lifetime (docs/scaling.md), so this is the dead node's last renewal.
    const renewedAt = deadline - this.options.leaseTtlMs;
    const connected = new Set(state.sessions.filter((session) => session.attached).map((session) => session.userId));
    await Promise.all([...connected].map((userId) => this.service.raiseLastSeen(userId, renewedAt)));
  }

  /** Renews the lease and measures this node's clock against the service's on the way. */
  private async timedRenewal(): Promise<LeaseState> {
    const sentAt = this.options.clock.now();
    const lease = await this.service.renewLease(this.nodeId, this.options.leaseTtlMs);
    const receivedAt = this.options.clock.now();
    // The service's clock is the cluster's: timestamps and expiries never trust one node's wall clock.
    this.clockOffsetMs = Math.round(lease.now - (sentAt + receivedAt) / 2);
    return lease;
  }

  /**
   * Nodes this one replicates but that the registry no longer lists (the service restarted
   * empty and they have not come back) are treated as down once a lease lifetime has passed.
   */
  private checkMembership(registered: string[], now: number): void {
    const listed = new Set(registered);
    for (const node of listed) {
      this.missingSince.delete(node);
      if (node !== this.nodeId && !this.appliedSeq.has(node)) this.enqueue({ kind: 'resync', node });
    }
    for (const node of this.appliedSeq.keys()) {
      if (listed.has(node)) continue;
      const since = this.missingSince.get(node);
      if (since === undefined) this.missingSince.set(node, now);
      else if (now - since >= this.options.leaseTtlMs) {
        this.missingSince.delete(node);
        this.enqueue({ kind: 'down', node });
      }
    }
  }

  /** Catches state that moved without a message reaching us (a lost publish, a missed reconnect). */
  private async antiEntropy(): Promise<void> {
    if (!this.service.isConnected() || this.registering) return;
    const others = this.registry.filter((node) => node !== this.nodeId);
    if (others.length === 0) return;
    const stored = await this.service.readNodeSeqs(others);
    for (const [node, seq] of stored) {
      const applied = this.appliedSeq.get(node);
      if (applied === seq) {
        this.suspectSeq.delete(node);
        continue;
      }
      // A batch may simply be in flight: resync only when the same difference is still there.
      if (this.suspectSeq.get(node) === seq) {
        this.suspectSeq.delete(node);
        this.enqueue({ kind: 'resync', node });
      } else {
        this.suspectSeq.set(node, seq);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Delivery, strictly in order
  // -------------------------------------------------------------------------------------------

  private enqueue(item: QueueItem): void {
    if (this.closed) return;
    this.queue.push(item);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const item = this.queue.shift()!;
        try {
          await this.process(item);
        } catch (error) {
          // A read that failed because the service went away: the reconnect re-reads everything.
          this.options.log.debug('cluster message not applied', { kind: item.kind, error });
          if ('node' in item && item.kind !== 'user') this.appliedSeq.delete(item.node);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async process(item: QueueItem): Promise<void> {
    const listener = this.listener!;
    switch (item.kind) {
      case 'ops': {
        if (item.node === this.nodeId) return;
        const applied = this.appliedSeq.get(item.node);
        if (applied !== undefined && item.seq <= applied) return;
        if (applied === undefined || item.seq !== applied + 1) {
          await this.resync(item.node);
          return;
        }
        this.appliedSeq.set(item.node, item.seq);
        await listener.applyOps(item.node, item.ops);
        return;
      }
      case 'hello':
      case 'resync':
        if (item.node !== this.nodeId) await this.resync(item.node);
        return;
      case 'down':
        if (item.node === this.nodeId) {
          // Reaped while alive (a long pause or partition): come back with everything.
          if (!this.closed) void this.reregister();
          return;
        }
        this.appliedSeq.delete(item.node);
        this.suspectSeq.delete(item.node);
        listener.nodeDown(item.node);
        return;
      case 'user':
        await this.records.receive(item);
        return;
      case 'retire':
        // Its state was read just before (the resync queued ahead of this), so its sessions can
        // still be resumed here. Dropping it now announces `down`: every node gives its sessions the
        // offline delay from now, as for a crash, instead of after its lease runs out.
        this.options.log.warn('a previous run of this node id is still registered; ending it as crashed', { node: this.nodeId, previous: item.node });
        // Like a reap: its users were online at least until its last renewal (see `reap`).
        await this.raiseLastSeenOf(item.node);
        await this.service.leave(item.node);
        return;
      case 'barrier':
        item.done();
        return;
    }
  }

  private async resync(node: string): Promise<void> {
    const state = await this.service.readNode(node);
    if (!state) {
      if (this.appliedSeq.delete(node)) this.listener!.nodeDown(node);
      return;
    }
    this.appliedSeq.set(node, state.seq);
    this.suspectSeq.delete(node);
    await this.listener!.applySnapshot(node, state.sessions);
  }

  private every(ms: number, task: () => Promise<void>): void {
    let running = false;
    const timer = setInterval(() => {
      if (running || this.closed) return;
      running = true;
      task()
        .catch((error: unknown) => this.options.log.debug('cluster task failed', { error }))
        .finally(() => (running = false));
    }, ms);
    timer.unref();
    this.timers.push(timer);
  }

  // -------------------------------------------------------------------------------------------
  // UserStore: the records, kept by `UserRecords`
  // -------------------------------------------------------------------------------------------

  get(userId: string): UserRecord | undefined {
    return this.records.get(userId);
  }

  load(userIds: string[]): Promise<void> | undefined {
    return this.records.load(userIds);
  }

  save(record: UserRecord, kind: SaveKind = 'presence', cause?: string): void {
    this.records.save(record, kind, cause);
  }

  /**
   * For tests and the operations docs: what this node holds. `unwrittenOps`: session ops published
   * here that the shared service does not hold yet (they leave at the end of the event-loop turn),
   * so a node that reads this one's state now would not see them.
   */
  inspect(): { cachedUsers: number; pendingWrites: number; knownNodes: number; unwrittenOps: number } {
    return {
      ...this.records.inspect(),
      knownNodes: this.appliedSeq.size,
      unwrittenOps: this.outbox.length + this.opsInFlight,
    };
  }
}

