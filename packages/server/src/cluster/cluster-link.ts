import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Clock } from '../presence/clock.js';
import type { SaveKind, UserRecord, UserStore } from '../store/user-store.js';
import { userOfOp, type Cluster, type ClusterListener, type NodeCounts, type NodeOp, type OwnedSession } from '../presence/replication.js';
import type { ChannelEntry, LeaseState, ShardMessage, SharedService, UserShard } from './shared-service.js';
import { ClusterWebhooks, type WebhookBatch } from './cluster-webhooks.js';
import { UserRecords, encodeRecord } from './user-records.js';

export interface ClusterLinkOptions {
  service: SharedService;
  /**
   * The configured id (`PRESENCE_NODE_ID`). The cluster knows this process as `<id>@<incarnation>`,
   * with a random incarnation per start: a node restarted under the same id is a new node, and it
   * ends its previous incarnation as a crashed node (see `register`). @default a random id
   */
  nodeId?: string;
  /**
   * Lease lifetime. It is renewed every third of it, and every renewal also drops expired
   * leases, so a dead node is declared down at most `leaseTtlMs * 4/3` after its last renewal.
   */
  leaseTtlMs: number;
  /**
   * Anti-entropy and interest: every interval, followed users whose stored shard moved without a
   * message are re-read, and shards nobody here needs any more (for two intervals) are let go.
   */
  syncIntervalMs: number;
  /** The offline delay: how long a dead node's sessions stay in the shards, resumable, before they go. */
  offlineDelayMs: number;
  /** This node's own clock; only used to measure the offset to the shared service's clock. */
  clock: Pick<Clock, 'now'>;
  log: Logger;
  /** How often activity timestamps are written (they are never announced). @default 1000 */
  activityFlushMs?: number;
  /** Followed users whose sequence one anti-entropy round reads. @default 2000 */
  antiEntropyBatch?: number;
}

type QueueItem =
  | ShardMessage
  /** Read these users' shards and apply them (newly followed, or messages missed). */
  | { kind: 'read'; users: string[]; done?: () => void }
  /** Start following a channel: its index, then every member's shard. */
  | { kind: 'channel'; channel: string; done: () => void }
  /** A previous incarnation of this node (same configured id): end it as crashed. */
  | { kind: 'retire'; node: string };

/** How many shards one reap step handles at once. */
const REAP_CONCURRENCY = 64;

/**
 * One node's link to the cluster, over any shared service. The state is sharded by user and by
 * channel, and a node follows only the shards its own clients can see: the users of its sessions,
 * the users they watch, the channels they are in and those channels' members. As a Cluster it
 * writes this node's session operations to each user's shard, applies the followed users'
 * operations in each shard's order, re-reads a shard on a gap, renews the lease and reaps dead
 * nodes shard by shard. As a UserStore it keeps the followed users' records, written field by field.
 * After the service comes back (restarted, possibly empty) the node writes its own sessions and
 * records again and re-reads everything it follows.
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
  /** Followed users: the last shard sequence applied (0 before the first read). */
  private readonly userSeq = new Map<string, number>();
  /** Followed users being read again because the model asked for them (see `follow`). */
  private readonly reading = new Set<string>();
  /** Followed users whose first read is under way, and the promise of it. */
  private readonly loadingUsers = new Map<string, Promise<void>>();
  /** Followed channels; the value is the promise of the first read, undefined once read. */
  private readonly channels = new Map<string, Promise<void> | undefined>();
  /** Channels that were not needed at the last interest round: let go if still not needed at the next. */
  private readonly unneeded = { channels: new Set<string>() };
  /** Stored sequence that differed from the applied one at the last anti-entropy round. */
  private readonly suspectSeq = new Map<string, number>();
  private antiEntropyCursor = 0;
  private registry: string[] = [];
  private readonly queue: QueueItem[] = [];
  private draining = false;
  private outbox: NodeOp[] = [];
  /** Ops sent to the service whose write has not answered yet. */
  private opsInFlight = 0;
  private flushScheduled = false;
  private writing: Promise<void> = Promise.resolve();
  /** Users this node lists as online (visible, with a session here), and changes not written yet. */
  private readonly online = new Set<string>();
  private onlineChanges = new Map<string, boolean>();
  /** Dropped nodes still being reaped, as of the last lease renewal (their online lists still count). */
  private reapingNodes: string[] = [];
  /** Users this node's index lists (written before their first session is). */
  private readonly indexed = new Set<string>();
  /** Channels each local session is listed in, in the channels' indexes. */
  private readonly listedChannels = new Map<string, { userId: string; channels: Set<string> }>();
  private needsRegistration = false;
  private registering?: Promise<void>;
  /** Dead nodes this node is reaping now. */
  private readonly reaping = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  /** User records: the followed users', written field by field, applied in their shard's order. */
  readonly records: UserRecords;
  /** Webhook queues in the shared store: the events of this node's changes go with its writes. */
  readonly webhooks: ClusterWebhooks;

  constructor(options: ClusterLinkOptions) {
    this.options = options;
    this.service = options.service;
    this.nodeId = options.nodeId === undefined ? randomUUID() : `${options.nodeId}@${randomBytes(4).toString('hex')}`;
    const webhooks = new ClusterWebhooks({
      service: this.service,
      nodeId: this.nodeId,
      log: options.log,
      now: () => options.clock.now() + this.clockOffsetMs,
      scheduleFlush: () => {
        if (this.flushScheduled || this.closed) return;
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      },
    });
    this.webhooks = webhooks;
    this.records = new UserRecords({
      service: this.service,
      nodeId: this.nodeId,
      log: options.log,
      apply: (record, cause) => this.listener!.applyRecord(record, cause),
      webhooks: {
        get active() {
          return webhooks.active;
        },
        // A change that also wrote sessions of the user queues its events with those ops instead.
        take: (userId) => (this.outbox.some((op) => userOfOp(op) === userId) ? undefined : webhooks.takeForRecord(userId)),
        written: (userId, write) => webhooks.afterWrite({ node: this.nodeId, writes: new Map([[userId, write]]), removed: new Map(), userOf: new Map() }),
        failed: (userId, write) => webhooks.queue(userId, write.items),
      },
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
    await this.checkPreviousLayout();
    this.started = true;
    const { leaseTtlMs, syncIntervalMs } = this.options;
    this.every(Math.max(10, Math.floor(leaseTtlMs / 3)), () => this.renewLease());
    this.every(syncIntervalMs, () => this.interestRound());
    this.every(this.options.activityFlushMs ?? 1000, async () => this.records.flushActivity());
  }

  publish(op: NodeOp): void {
    if (this.closed) return;
    this.outbox.push(op);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  /**
   * Sends everything queued now: the ops of each user to that user's shard, in order. A user's
   * first session here goes into this node's index first (so a reaper finds it if this node dies),
   * and a session entering a channel goes into the channel's index (so nodes following the channel
   * find its user).
   */
  listOnline(userId: string, online: boolean): void {
    if (this.closed) return;
    if (online) this.online.add(userId);
    else this.online.delete(userId);
    this.onlineChanges.set(userId, online);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  async readNodeStats(): Promise<Map<string, NodeCounts>> {
    const stored = await this.service.readNodeStats();
    const live = new Set(this.registry);
    const rows = new Map([...stored].filter(([node]) => live.has(node)));
    rows.set(this.nodeId, this.listener!.localStats());
    return rows;
  }

  async readOnline(): Promise<string[]> {
    const ids = await this.service.readOnline([...new Set([...this.registry, ...this.reapingNodes])]);
    return ids.sort();
  }

  flush(): void {
    this.flushScheduled = false;
    if (!this.started) return;
    if (this.registering) {
      void this.registering.then(() => this.flush());
      return;
    }
    if (!this.service.isConnected()) {
      // Everything is written again on reconnect, so these ops are not needed.
      if (this.outbox.length > 0 || this.onlineChanges.size > 0) this.needsRegistration = true;
      this.outbox = [];
      this.onlineChanges = new Map();
      // Webhook events are not: they wait (in memory) for the store to come back.
      if (this.webhooks.waiting) setTimeout(() => this.webhooks.scheduleFlushLater(), 500).unref();
      return;
    }
    const hooks = this.webhooks.take();
    if (this.outbox.length > 0) {
      const ops = this.outbox;
      this.outbox = [];
      this.opsInFlight += ops.length;
      // One flush after the other: a user's ops reach the shard in the order they were made.
      this.writing = this.writing.then(() => this.write(ops, hooks)).then(
        () => {
          this.opsInFlight -= ops.length;
        },
        (error: unknown) => {
          this.opsInFlight -= ops.length;
          this.needsRegistration = true;
          this.options.log.debug('session ops not written; will re-register', { error });
        },
      );
    } else if (hooks) {
      this.writing = this.writing.then(() => this.writeWebhooks(hooks));
    }
    if (this.onlineChanges.size > 0) {
      const changes = this.onlineChanges;
      this.onlineChanges = new Map();
      const add = [...changes].filter(([, on]) => on).map(([id]) => id);
      const remove = [...changes].filter(([, on]) => !on).map(([id]) => id);
      // After the sessions of the same turn: a reader of the list finds the user's sessions.
      this.writing = this.writing
        .then(() => this.service.listOnline(this.nodeId, add, remove))
        .catch(() => {
          this.needsRegistration = true;
        });
    }
  }

  /** Webhook events with no ops of their user in this flush. Put back if the store failed (sent again, same ids). */
  private async writeWebhooks(hooks: WebhookBatch | undefined, all = hooks && new Map(hooks)): Promise<void> {
    try {
      await this.webhooks.writeRest(hooks);
    } catch (error) {
      if (all) this.webhooks.restore(all);
      this.options.log.debug('webhook events not queued yet; trying again', { error });
    }
  }

  private async write(ops: NodeOp[], hooks?: WebhookBatch): Promise<void> {
    const all = hooks && new Map(hooks);
    const byUser = new Map<string, NodeOp[]>();
    for (const op of ops) {
      const userId = userOfOp(op);
      let list = byUser.get(userId);
      if (!list) byUser.set(userId, (list = []));
      list.push(op);
    }
    const newUsers = [...byUser.keys()].filter((id) => !this.indexed.has(id) && byUser.get(id)!.some((op) => op.op === 'session'));
    if (newUsers.length > 0) {
      await this.service.indexUsers(this.nodeId, newUsers);
      for (const id of newUsers) this.indexed.add(id);
    }
    const { added, removed } = this.channelChanges(ops);
    const writes: Promise<unknown>[] = [];
    const webhooks = this.webhooks.active;
    // With webhooks, an add says whether it made the channel occupied (decided by the index).
    const firsts = new Map<string, Set<string>>();
    for (const [channel, entries] of added) writes.push(this.service.addToChannel(channel, entries, webhooks).then((users) => firsts.set(channel, new Set(users))));
    const hooked = new Map<string, ReturnType<ClusterWebhooks['writeFor']>>();
    const userOf = new Map<string, string>();
    for (const op of ops) {
      if (op.op === 'session') userOf.set(op.session.id, op.session.userId);
      else if (op.op === 'end') userOf.set(op.sessionId, op.userId);
    }
    for (const [userId, userOps] of byUser) {
      // The events of these ops go in the same script (docs/webhooks.md#clusters).
      let write = this.webhooks.writeFor(hooks, userId, userOps);
      const ended = userOps.flatMap((op) => (op.op === 'end' ? [op.sessionId] : []));
      const left = [...removed].filter(([, ids]) => ids.some((id) => userOf.get(id) === userId)).map(([channel]) => channel);
      if (webhooks && (ended.length > 0 || left.length > 0) && !userOps.some((op) => op.op === 'logout')) {
        // Another node may be ending (or taking out of a channel) the user's last session there at the same moment.
        const record = this.records.get(userId);
        write = this.webhooks.addCandidates(write, {
          userId,
          fields: record ? encodeRecord(record) : null,
          channels: left,
          offline: ended.length > 0,
          cause: this.webhooks.nextCause(),
          at: this.options.clock.now() + this.clockOffsetMs,
        });
      }
      hooked.set(userId, write);
      writes.push(this.service.writeOps(this.nodeId, userId, userOps, write));
    }
    try {
      await Promise.all(writes);
    } catch (error) {
      // Some scripts may have run: their events are queued again with the rest (same ids).
      if (all) this.webhooks.restore(all);
      throw error;
    }
    // Taken out of a channel's index only after the shard says so: a reader never misses a member.
    if (!webhooks) {
      await Promise.all([...removed].map(([channel, ids]) => this.service.removeFromChannel(channel, this.nodeId, ids)));
      return;
    }
    // With webhooks, each user's channel events move with that user's removals (one script per channel).
    await this.webhooks.afterWrite({ node: this.nodeId, writes: hooked, removed, userOf, firsts });
    await this.writeWebhooks(hooks);
  }

  /** What the channels' indexes must learn from these ops: sessions that entered and left channels. */
  private channelChanges(ops: NodeOp[]): { added: Map<string, ChannelEntry[]>; removed: Map<string, string[]> } {
    const added = new Map<string, ChannelEntry[]>();
    const removed = new Map<string, string[]>();
    const add = <T>(map: Map<string, T[]>, key: string, value: T) => {
      const list = map.get(key);
      if (list) list.push(value);
      else map.set(key, [value]);
    };
    for (const op of ops) {
      if (op.op === 'session') {
        const { id, userId } = op.session;
        let listed = this.listedChannels.get(id);
        if (!listed) this.listedChannels.set(id, (listed = { userId, channels: new Set() }));
        const now = new Set(Object.keys(op.session.channels));
        for (const channel of now) {
          // A claimed session is listed again under its new owner.
          if (!listed.channels.has(channel) || op.claim) add(added, channel, { sessionId: id, userId, node: this.nodeId });
        }
        for (const channel of listed.channels) if (!now.has(channel)) add(removed, channel, id);
        listed.channels = now;
      } else if (op.op === 'end') {
        const listed = this.listedChannels.get(op.sessionId);
        if (!listed) continue;
        this.listedChannels.delete(op.sessionId);
        for (const channel of listed.channels) add(removed, channel, op.sessionId);
      }
    }
    return { added, removed };
  }

  isReady(): boolean {
    return this.started && !this.closed && this.service.isConnected() && !this.needsRegistration && !this.registering;
  }

  nodes(): string[] {
    return [...this.registry];
  }

  /** Live nodes and dropped nodes still being reaped (their sessions wait out the offline delay). */
  nodesWithSessions(): string[] {
    return [...new Set([...this.registry, ...this.reapingNodes])];
  }

  /** A node's name for people (the admin stats): its configured id, without the incarnation. */
  nameOf(node: string): string {
    const at = node.lastIndexOf('@');
    return at > 0 ? node.slice(0, at) : node;
  }

  followsChannel(name: string): boolean {
    return this.channels.has(name);
  }

  loadChannel(name: string): Promise<void> | undefined {
    if (!this.started) return undefined;
    if (this.channels.has(name)) return this.channels.get(name);
    this.unneeded.channels.delete(name);
    let done!: () => void;
    const loaded = new Promise<void>((resolve) => (done = resolve));
    // Followed from now on: remote sessions applied meanwhile keep this channel.
    this.channels.set(name, loaded);
    this.enqueue({ kind: 'channel', channel: name, done });
    void loaded.then(() => {
      if (this.channels.get(name) === loaded) this.channels.set(name, undefined);
    });
    return loaded;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    await this.writing;
    await this.records.flushActivity();
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    try {
      if (this.service.isConnected()) {
        // Leaving: every node orphans this node's sessions at once (offline delay from now), and
        // so do the shards, as a reaper would mark them.
        const at = this.options.clock.now() + this.clockOffsetMs;
        await this.service.dropNode(this.nodeId, false);
        // Orphaned at once; another node removes them after the offline delay (the reaping list).
        const users = await this.service.indexedUsers(this.nodeId);
        await this.eachInBatches(users, (userId) => this.service.reapUser(this.nodeId, userId, at));
      }
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
  // Registration, lease, reaping
  // -------------------------------------------------------------------------------------------

  /**
   * Registers the lease; after the service was lost, also writes this node's sessions again, user
   * by user (the shards' stored copies of this node's sessions are replaced by what is true now),
   * and lists them in their channels' indexes again.
   */
  private async register(): Promise<void> {
    // Ops not yet written are part of what is written now.
    this.outbox = [];
    const lease = await this.timedRenewal();
    this.registry = lease.nodes;
    const sessions = this.listener!.localSnapshot();
    const byUser = new Map<string, NodeOp[]>();
    for (const session of sessions) {
      let ops = byUser.get(session.userId);
      if (!ops) byUser.set(session.userId, (ops = []));
      ops.push({ op: 'session', session });
    }
    this.needsRegistration = false;
    // Users whose sessions this node wrote before: one that ended while the service was away (its
    // end dropped) is still in the shard, which may have survived (a Redis Cluster loses only the
    // masters that failed), also when the user has no session here any more.
    const written = new Set([...this.listedChannels.values()].map((listed) => listed.userId));
    const live = new Set(sessions.map((session) => session.id));
    if (byUser.size > 0 || written.size > 0) {
      if (byUser.size > 0) await this.service.indexUsers(this.nodeId, [...byUser.keys()]);
      for (const id of byUser.keys()) this.indexed.add(id);
      // This node's stored sessions that ended while the service was away end in the shard too.
      const stored = await this.service.readUsers([...new Set([...byUser.keys(), ...written])]);
      for (const [userId, shard] of stored) {
        for (const { node, session } of shard.sessions) {
          if (node !== this.nodeId || live.has(session.id)) continue;
          let ops = byUser.get(userId);
          if (!ops) byUser.set(userId, (ops = []));
          ops.push({ op: 'end', sessionId: session.id, userId });
        }
      }
      this.listedChannels.clear();
      const { added } = this.channelChanges(sessions.map((session) => ({ op: 'session', session })));
      await Promise.all([...added].map(([channel, entries]) => this.service.addToChannel(channel, entries)));
      await Promise.all([...byUser].map(([userId, ops]) => this.service.writeOps(this.nodeId, userId, ops)));
    }
    // The online list is written whole: the service may have lost it, or kept one (a surviving
    // Redis Cluster master) without the removals made while it was away.
    this.onlineChanges = new Map();
    await this.service.replaceOnline(this.nodeId, [...this.online]);
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

  /** After the service was lost or this node was reaped: write everything again, read everything again. */
  private reregister(): Promise<void> {
    if (this.closed || !this.started) return Promise.resolve();
    this.registering ??= (async () => {
      try {
        await this.register();
        await this.records.resync();
        // Messages sent while this node was away are lost: every followed shard is read again,
        // and every followed channel's index (members who joined meanwhile).
        for (const channel of this.channels.keys()) this.enqueue({ kind: 'channel', channel, done: () => {} });
        this.enqueue({ kind: 'read', users: [...this.userSeq.keys()] });
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

  /**
   * Nodes of the layout before sharding seen on the same service at the last check (every tenth
   * renewal): they are a second cluster this one cannot see, so this node says so (log, /readyz)
   * until they are gone.
   */
  previousLayoutNodes: string[] = [];
  private renewals = 0;

  private async checkPreviousLayout(): Promise<void> {
    const nodes = await this.service.previousLayoutNodes();
    if (nodes.length > 0 && this.previousLayoutNodes.length === 0) {
      this.options.log.warn('nodes of the layout before sharding run against the same Redis: they form a separate cluster; upgrade or stop them (docs/scaling.md#upgrading-a-running-cluster)', { nodes });
    } else if (nodes.length === 0 && this.previousLayoutNodes.length > 0) {
      this.options.log.info('no node of the layout before sharding is left');
    }
    this.previousLayoutNodes = nodes;
  }

  private async renewLease(): Promise<void> {
    if (!this.service.isConnected()) return;
    if (this.needsRegistration) {
      await this.reregister();
      return;
    }
    const lease = await this.timedRenewal();
    this.registry = lease.nodes;
    this.reapingNodes = lease.reaping.map(({ node }) => node);
    if (this.renewals++ % 10 === 0) await this.checkPreviousLayout();
    if (!lease.wasRegistered) {
      await this.reregister();
      return;
    }
    for (const node of lease.expired) {
      if (node !== this.nodeId) void this.reap(node, true);
    }
    // A reap whose reaper died before it was over is taken over once it has had a lease's time.
    const now = lease.now;
    for (const { node, since } of lease.reaping) {
      if (node !== this.nodeId && now - since > 2 * this.options.leaseTtlMs) void this.reap(node, false);
    }
  }

  /**
   * Declares a dead node down and removes its sessions from the shards. Dropping its lease
   * announces `down`: every node orphans its sessions at once (offline delay from now). Then each
   * user shard it had sessions in loses them, one shard at a time (atomic per shard, safe to repeat
   * when several nodes reap at once); its users with a socket open on it were online at least until
   * its last lease renewal, so their stored lastSeen moves up to that (never back, never for an
   * invisible user).
   */
  private async reap(node: string, expired: boolean): Promise<void> {
    if (this.reaping.has(node)) return;
    this.reaping.add(node);
    try {
      const deadline = await this.service.leaseDeadline(node);
      if (expired) {
        const dropped = await this.service.dropNode(node, true);
        if (!dropped) return;
      }
      // Every node runs the same lease lifetime (docs/scaling.md), so this is the dead node's last renewal.
      const renewedAt = (deadline ?? this.options.clock.now() + this.clockOffsetMs) - this.options.leaseTtlMs;
      await this.reapShards(node, renewedAt);
    } catch (error) {
      // The service went away midway: the reaping list keeps the node until a reap is over.
      this.options.log.debug('reap not finished; it is taken over later', { node, error });
    } finally {
      this.reaping.delete(node);
    }
  }

  /**
   * Two passes over the dead node's users: its sessions are marked orphaned at once (every node
   * following a user starts the offline delay; a client may still resume its session anywhere),
   * then, an offline delay later, the orphans leave the shards and the channels' indexes.
   */
  private async reapShards(node: string, lastSeenAt: number): Promise<void> {
    const users = await this.service.indexedUsers(node);
    await this.eachInBatches(users, (userId) => this.service.reapUser(node, userId, lastSeenAt));
    await new Promise((resolve) => setTimeout(resolve, this.options.offlineDelayMs + 50).unref());
    if (this.closed) return;
    // The webhook events the reap causes are queued by this node, in each user's reap step.
    const hooks = await this.webhooks.prepareReap(node, users, this.options.clock.now() + this.clockOffsetMs).catch((error: unknown) => {
      this.options.log.warn('webhook events of a reap could not be prepared; they are not sent', { node, err: error });
      return new Map<string, never>();
    });
    await this.eachInBatches(users, async (userId) => {
      const webhooks = hooks.get(userId);
      const removed = await this.service.expireOrphans(node, userId, this.options.offlineDelayMs, webhooks);
      if (webhooks) {
        // The reap's channel events move with the removed sessions' index entries.
        const byChannel = new Map<string, string[]>();
        for (const session of removed) for (const channel of Object.keys(session.channels)) byChannel.set(channel, [...(byChannel.get(channel) ?? []), session.id]);
        const userOf = new Map(removed.map((session) => [session.id, userId]));
        await this.webhooks.afterWrite({ node, writes: new Map([[userId, webhooks]]), removed: byChannel, userOf });
        return;
      }
      await Promise.all(removed.flatMap((session) => Object.keys(session.channels).map((channel) => this.service.removeFromChannel(channel, node, [session.id]))));
    });
    await this.service.finishReap(node);
  }

  private async eachInBatches(items: string[], task: (item: string) => Promise<unknown>): Promise<void> {
    for (let i = 0; i < items.length; i += REAP_CONCURRENCY) await Promise.all(items.slice(i, i + REAP_CONCURRENCY).map(task));
  }

  /** Renews the lease and measures this node's clock against the service's on the way. */
  private async timedRenewal(): Promise<LeaseState> {
    const sentAt = this.options.clock.now();
    const lease = await this.service.renewLease(this.nodeId, this.options.leaseTtlMs, this.listener!.localStats());
    const receivedAt = this.options.clock.now();
    // The service's clock is the cluster's: timestamps and expiries never trust one node's wall clock.
    this.clockOffsetMs = Math.round(lease.now - (sentAt + receivedAt) / 2);
    return lease;
  }

  /**
   * Every interval: shards nobody here needs since the last round are let go (two rounds, so a
   * leave and a quick rejoin do not churn subscriptions), and a slice of the followed users'
   * stored sequences is compared with what was applied (a lost message, a missed reconnect).
   */
  private async interestRound(): Promise<void> {
    if (!this.service.isConnected() || this.registering) return;
    const listener = this.listener!;
    const dropChannels: string[] = [];
    for (const [channel, loading] of this.channels) {
      if (loading || listener.needsChannel(channel)) {
        this.unneeded.channels.delete(channel);
      } else if (this.unneeded.channels.has(channel)) {
        this.unneeded.channels.delete(channel);
        dropChannels.push(channel);
      } else {
        this.unneeded.channels.add(channel);
      }
    }
    for (const channel of dropChannels) this.channels.delete(channel);
    listener.dropUnfollowed();
    // Users go at once: the model has let them go already (a user it holds is held whole).
    const dropUsers: string[] = [];
    for (const userId of this.userSeq.keys()) {
      if (!this.loadingUsers.has(userId) && !this.reading.has(userId) && !listener.needsUser(userId) && !this.records.busy(userId)) dropUsers.push(userId);
    }
    for (const userId of dropUsers) {
      this.userSeq.delete(userId);
      this.suspectSeq.delete(userId);
      this.records.forget(userId);
    }
    if (dropChannels.length > 0 || dropUsers.length > 0) await this.service.unfollow({ users: dropUsers, channels: dropChannels });
    await this.antiEntropy();
  }

  private async antiEntropy(): Promise<void> {
    const followed = [...this.userSeq.keys()];
    if (followed.length === 0) return;
    const batch = this.options.antiEntropyBatch ?? 2000;
    if (this.antiEntropyCursor >= followed.length) this.antiEntropyCursor = 0;
    const slice = followed.slice(this.antiEntropyCursor, this.antiEntropyCursor + batch);
    this.antiEntropyCursor += slice.length;
    const stored = await this.service.readSeqs(slice);
    const stale: string[] = [];
    for (const [userId, seq] of stored) {
      const applied = this.userSeq.get(userId);
      if (applied === undefined || applied === seq) {
        this.suspectSeq.delete(userId);
        continue;
      }
      // A message may simply be in flight: read again only when the same difference is still there.
      if (this.suspectSeq.get(userId) === seq) {
        this.suspectSeq.delete(userId);
        stale.push(userId);
      } else {
        this.suspectSeq.set(userId, seq);
      }
    }
    if (stale.length > 0) this.enqueue({ kind: 'read', users: stale });
  }

  // -------------------------------------------------------------------------------------------
  // Following users: subscribe, then read, so nothing written in between is missed
  // -------------------------------------------------------------------------------------------

  /** Brings these users' shards here (their records and every node's sessions of them) and follows them. */
  private follow(userIds: string[]): Promise<void> | undefined {
    const waits: Promise<void>[] = [];
    const toRead: string[] = [];
    const reread: string[] = [];
    for (const id of new Set(userIds)) {
      // Being read and applied right now (the model asks for it while applying it): that is the read.
      if (this.reading.has(id)) continue;
      const loading = this.loadingUsers.get(id);
      if (loading) waits.push(loading);
      else if (!this.userSeq.has(id)) toRead.push(id);
      // Followed still (its writes are pending) while the model let the user go: read it again.
      else if (!this.listener!.needsUser(id) && !this.reading.has(id)) reread.push(id);
    }
    if (reread.length > 0) {
      for (const id of reread) this.reading.add(id);
      waits.push(
        new Promise<void>((done) => this.enqueue({ kind: 'read', users: reread, done })).finally(() => {
          for (const id of reread) this.reading.delete(id);
        }),
      );
    }
    if (toRead.length > 0) {
      for (const id of toRead) this.userSeq.set(id, 0);
      const read = this.service
        .follow({ users: toRead })
        .then(() => new Promise<void>((done) => this.enqueue({ kind: 'read', users: toRead, done })))
        .catch((error: unknown) => {
          // Unreachable service: the user starts from an empty record now and the shard is read
          // again after reconnecting, so nobody is refused while the service is away.
          this.options.log.debug('user shards not read', { error });
          for (const id of toRead) this.records.markUnread(id);
        })
        .finally(() => {
          for (const id of toRead) this.loadingUsers.delete(id);
        });
      for (const id of toRead) this.loadingUsers.set(id, read);
      waits.push(read);
    }
    return waits.length > 0 ? Promise.all(waits).then(() => undefined) : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Delivery, strictly in order
  // -------------------------------------------------------------------------------------------

  private enqueue(item: QueueItem): void {
    if (this.closed) {
      if ('done' in item && item.done) item.done();
      return;
    }
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
          if ('user' in item) this.userSeq.set(item.user, 0);
        } finally {
          if ('done' in item && item.done) item.done();
        }
      }
    } finally {
      this.draining = false;
    }
    for (const item of this.queue.splice(0)) if ('done' in item && item.done) item.done();
  }

  private async process(item: QueueItem): Promise<void> {
    const listener = this.listener!;
    switch (item.kind) {
      case 'ops':
      case 'record':
      case 'reaped': {
        const applied = this.userSeq.get(item.user);
        // Not followed (any more), or already in what was read.
        if (applied === undefined || this.loadingUsers.has(item.user) && applied === 0) return;
        if (item.seq <= applied) {
          // Already in what a read brought (a read can overtake the echo of this node's own write):
          // the write was seen back all the same.
          if (item.kind === 'record' && item.node === this.nodeId) this.records.echoSkipped(item.user);
          return;
        }
        if (item.seq !== applied + 1) {
          await this.read([item.user]);
          return;
        }
        this.userSeq.set(item.user, item.seq);
        await this.applying(item.user, async () => {
          if (item.kind === 'ops') {
            if (item.node !== this.nodeId) await listener.applyOps(item.node, item.ops);
          } else if (item.kind === 'record') {
            await this.records.receive({ node: item.node, userId: item.user, version: item.seq, fields: item.fields });
          } else {
            await this.records.receive({ node: '', userId: item.user, version: item.seq, fields: item.fields });
            listener.userOrphaned(item.node, item.user);
          }
        });
        return;
      }
      case 'member':
        if (this.channels.has(item.channel) && !this.userSeq.has(item.user)) void this.follow([item.user]);
        return;
      case 'down':
        if (item.node === this.nodeId) {
          // Dropped while alive (a long pause or partition): come back with everything.
          if (!this.closed) void this.reregister();
          return;
        }
        this.registry = this.registry.filter((node) => node !== item.node);
        listener.nodeDown(item.node);
        // A node that left (rather than being reaped) has its shards cleaned by one node: the
        // first of the others by id (a reaper may do the same; every step is safe to repeat).
        if ([...this.registry].sort()[0] === this.nodeId) void this.reap(item.node, false);
        return;
      case 'read':
        await this.read(item.users.filter((id) => this.userSeq.has(id)));
        return;
      case 'channel':
        await this.readChannel(item.channel);
        return;
      case 'retire':
        // Dropping it announces `down`: every node gives its sessions the offline delay from now,
        // as for a crash, instead of after its lease runs out; clients that resume here find their
        // session orphaned on the other nodes and their user still there.
        this.options.log.warn('a previous run of this node id is still registered; ending it as crashed', { node: this.nodeId, previous: item.node });
        {
          const deadline = await this.service.leaseDeadline(item.node);
          await this.service.dropNode(item.node, false);
          void this.reapShards(item.node, (deadline ?? this.options.clock.now() + this.clockOffsetMs) - this.options.leaseTtlMs).catch((error: unknown) =>
            this.options.log.debug('reap of the previous run not finished; another node takes it over', { error }),
          );
        }
        return;
    }
  }

  /** Reads users' shards whole and applies them (records first, then sessions). */
  private async read(userIds: string[]): Promise<Map<string, UserShard>> {
    if (userIds.length === 0) return new Map();
    const shards = await this.service.readUsers(userIds);
    for (const [userId, shard] of shards) {
      if (!this.userSeq.has(userId)) continue;
      await this.applying(userId, () => this.applyShard(userId, shard));
    }
    return shards;
  }

  /**
   * Applies something of one user's shard. Applying may ask for the user (the model loads users it
   * does not hold): `follow` then finds them being read, and does not wait for this very queue.
   */
  private async applying(userId: string, apply: () => Promise<void>): Promise<void> {
    const wasReading = this.reading.has(userId);
    this.reading.add(userId);
    try {
      await apply();
    } finally {
      if (!wasReading) this.reading.delete(userId);
    }
  }

  private async applyShard(userId: string, shard: UserShard): Promise<void> {
    this.userSeq.set(userId, shard.seq);
    this.suspectSeq.delete(userId);
    if (this.records.adopt(userId, shard.seq, shard.fields)) await this.listener!.applyRecord(this.records.get(userId)!);
    const { sessions, deadOwners } = await this.liveSessions(userId, shard);
    await this.listener!.applyUser(userId, sessions);
    for (const node of deadOwners) this.listener!.userOrphaned(node, userId);
  }

  /**
   * A shard's sessions as this node must hold them: those of live nodes, and those of dead nodes
   * still inside their offline delay (orphaned in the shard, or not marked yet because the reap has
   * not reached this user), which are orphaned here too. An owner missing from this node's view of
   * the registry is asked about first: the view is only as fresh as the last lease renewal.
   */
  private async liveSessions(userId: string, shard: UserShard): Promise<{ sessions: OwnedSession[]; deadOwners: Set<string> }> {
    const now = this.options.clock.now() + this.clockOffsetMs;
    const sessions: OwnedSession[] = [];
    const deadOwners = new Set<string>();
    for (const { node, session, orphanedAt } of shard.sessions) {
      if (orphanedAt !== undefined) {
        if (orphanedAt + this.options.offlineDelayMs <= now) continue;
      } else if (this.registry.includes(node) || node === this.nodeId) {
        sessions.push({ node, session });
        continue;
      } else {
        const status = await this.service.nodeStatus(node);
        if (status === 'live') {
          if (!this.registry.includes(node)) this.registry = [...this.registry, node];
          sessions.push({ node, session });
          continue;
        }
        // Dropped, but no reaper marked it (the registry was lost with the service's data): this
        // reader marks it, so every node following the user orphans it, as a reap would.
        if (status === 'gone') void this.service.reapUser(node, userId, 0).catch(() => undefined);
      }
      sessions.push({ node, session });
      deadOwners.add(node);
    }
    return { sessions, deadOwners };
  }

  /**
   * Starts following a channel: subscribes, then reads its index, then every member's shard (also
   * of users followed already: their sessions in this channel were left out until now).
   */
  private async readChannel(channel: string): Promise<void> {
    if (!this.channels.has(channel)) return;
    await this.service.follow({ channels: [channel] });
    const entries = await this.service.readChannel(channel);
    const users = new Set(entries.map((entry) => entry.userId));
    const fresh = [...users].filter((id) => !this.userSeq.has(id));
    // Held against the interest round until read (they are not in the model yet).
    for (const id of users) this.reading.add(id);
    let shards: Map<string, UserShard>;
    try {
      if (fresh.length > 0) {
        for (const id of fresh) this.userSeq.set(id, 0);
        await this.service.follow({ users: fresh });
      }
      shards = await this.read([...users]);
    } finally {
      for (const id of users) this.reading.delete(id);
    }
    // An entry whose session its user's shard no longer holds under that node (it ended, or moved,
    // and the removal never came: its node died in between) is repaired by the reader.
    for (const entry of entries) {
      const stored = shards.get(entry.userId)?.sessions.find(({ session }) => session.id === entry.sessionId);
      if (!stored || stored.node !== entry.node) void this.service.removeFromChannel(channel, entry.node, [entry.sessionId]).catch(() => undefined);
    }
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
  // UserStore: the followed users' records, kept by `UserRecords`
  // -------------------------------------------------------------------------------------------

  get(userId: string): UserRecord | undefined {
    return this.records.get(userId);
  }

  /** Follows these users: their records and their sessions on every node come here, and stay while needed. */
  load(userIds: string[]): Promise<void> | undefined {
    if (!this.started) return undefined;
    return this.follow(userIds);
  }

  save(record: UserRecord, kind: SaveKind = 'presence', cause?: string): void {
    this.records.save(record, kind, cause);
  }

  /**
   * For tests and the operations docs: what this node holds. `unwrittenOps`: session ops published
   * here that the shared service does not hold yet (they leave at the end of the event-loop turn),
   * so a node that reads now would not see them.
   */
  inspect(): { cachedUsers: number; pendingWrites: number; knownNodes: number; unwrittenOps: number; followedUsers: number; followedChannels: number } {
    return {
      ...this.records.inspect(),
      knownNodes: this.registry.filter((node) => node !== this.nodeId).length,
      unwrittenOps: this.outbox.length + this.opsInFlight,
      followedUsers: this.userSeq.size,
      followedChannels: this.channels.size,
    };
  }
}
