import type { Logger } from '../log.js';
import type { NodeOp } from '../presence/replication.js';
import type { WebhookItem, WebhookQueueStore, WebhookReapSource, WebhookSink, WebhookWrite } from '../webhooks/cluster-queues.js';
import type { SharedService, StoredSession } from './shared-service.js';

/*
 * Webhook queues in the shared store, on the cluster link's side (docs/webhooks.md#clusters). The
 * node's webhooks hand over the events of the changes made here (`queue`); they leave with the
 * same user's next write, in its script. The link calls `take` when it flushes, `writeFor` per
 * user it writes, and `settle` after the scripts ran: channel events are moved from the user's
 * forward list to their channel's queue, and every queue written goes into its URL's pending index.
 * As a `WebhookQueueStore` it serves the delivering node of each URL, and its sweep repairs what a
 * crash between a script and the steps after it left: queues missing from the index, forwarded
 * events not moved.
 */

/** Forwarded events older than this are moved by the sweep (younger ones are the writer's to move). */
const FORWARD_REPAIR_AGE_MS = 10_000;

export interface ClusterWebhooksOptions {
  service: SharedService;
  nodeId: string;
  log: Logger;
  /** A flush of the link is due (events wait for the end of the event-loop turn, as ops do). */
  scheduleFlush: () => void;
  /** The shared clock (ms). */
  now: () => number;
}

/** Events taken at a flush, by user ('' for events of no user). */
export type WebhookBatch = Map<string, WebhookItem[]>;

export class ClusterWebhooks implements WebhookSink, WebhookQueueStore {
  private outbox: WebhookBatch = new Map();
  private causes = 0;
  private sources: { reap: WebhookReapSource; maxBacklog: number; dropped: (count: number) => void }[] = [];

  constructor(private readonly options: ClusterWebhooksOptions) {}

  /** A node's webhooks (one per format) join: their reap events and their bound. */
  attach(source: { reap: WebhookReapSource; maxBacklog: number; dropped: (count: number) => void }): void {
    this.sources.push(source);
  }

  get active(): boolean {
    return this.sources.length > 0;
  }

  private get maxBacklog(): number {
    return Math.max(0, ...this.sources.map((s) => s.maxBacklog));
  }

  private readonly dropped = (count: number): void => {
    for (const source of this.sources.slice(0, 1)) source.dropped(count);
  };

  // Sink --------------------------------------------------------------------------------------

  queue(userId: string | undefined, items: WebhookItem[]): void {
    if (items.length === 0) return;
    const id = userId ?? '';
    const list = this.outbox.get(id);
    if (list) list.push(...items);
    else this.outbox.set(id, [...items]);
    this.options.scheduleFlush();
  }

  /** Everything queued since the last flush. */
  take(): WebhookBatch | undefined {
    if (this.outbox.size === 0) return undefined;
    const batch = this.outbox;
    this.outbox = new Map();
    return batch;
  }

  /** Put back after the store was unreachable: they go with the next flush (order kept). */
  restore(batch: WebhookBatch): void {
    for (const [id, items] of this.outbox) {
      const before = batch.get(id);
      if (before) before.push(...items);
      else batch.set(id, items);
    }
    this.outbox = batch;
  }

  get waiting(): boolean {
    return this.outbox.size > 0;
  }

  /** Tries the waiting events again (after the store was unreachable). */
  scheduleFlushLater(): void {
    if (this.outbox.size > 0) this.options.scheduleFlush();
  }

  /**
   * The events that go with a user's ops (taken off `batch`). `first` and `empty` stay only with
   * ops that write or end sessions (without a logout: the other nodes end theirs after it).
   */
  writeFor(batch: WebhookBatch | undefined, userId: string, ops: NodeOp[]): WebhookWrite | undefined {
    const items = batch?.get(userId);
    if (!items) return undefined;
    batch!.delete(userId);
    const writes = ops.some((op) => op.op === 'session');
    const ends = ops.some((op) => op.op === 'end') && !ops.some((op) => op.op === 'logout');
    for (const item of items) {
      if ((item.guard === 'first' && !writes) || (item.guard === 'empty' && !ends)) item.guard = 'always';
    }
    return { items, maxBacklog: this.maxBacklog, dropped: this.dropped };
  }

  /**
   * The events of a change that made an announced record write (taken for its script): the
   * user's and their channels', queued only if the write changed the record (several nodes
   * clearing the same expired status, each on its own, report it once).
   */
  takeForRecord(userId: string): WebhookWrite | undefined {
    const items = this.outbox.get(userId);
    if (!items) return undefined;
    this.outbox.delete(userId);
    for (const item of items) if (item.guard === 'first' || item.guard === 'empty') item.guard = 'always';
    return { items, maxBacklog: this.maxBacklog, dropped: this.dropped, onlyIfChanged: true };
  }

  /** Events with no write of their user in this flush (a record write, a format's own): straight to their queues. */
  async writeRest(batch: WebhookBatch | undefined): Promise<void> {
    if (!batch) return;
    const done: WebhookItem[] = [];
    for (const items of batch.values()) {
      for (const item of items) {
        const dropped = await this.options.service.enqueueWebhooks(item.key, item.targets, [item.entry], this.maxBacklog);
        if (dropped > 0) this.dropped(dropped);
        done.push(item);
      }
    }
    await this.index(done);
  }

  /**
   * After the scripts of a flush (or a reap step), in each channel's slot: each user's forwarded
   * events move to their channel's queues in one script with that user's sessions leaving the
   * channel's index (so `occupied` and `vacated` are decided by the index); the other removals
   * are plain; queues written go into their URLs' pending index; the moved events leave the
   * forward lists. `firsts`: per channel, the users whose add in this flush made it occupied.
   */
  async afterWrite(step: {
    node: string;
    writes: Map<string, WebhookWrite | undefined>;
    removed: Map<string, string[]>;
    userOf: Map<string, string>;
    firsts?: Map<string, Set<string>>;
  }): Promise<void> {
    const { service } = this.options;
    const handled = new Set<string>();
    const moves: Promise<void>[] = [];
    for (const [userId, write] of step.writes) {
      if (!write) continue;
      const own = write.items.filter((item) => item.key === `user:${userId}`);
      moves.push(this.index(own));
      if (own.length === write.items.length) continue;
      const removals = new Map<string, string[]>();
      for (const [channel, ids] of step.removed) {
        const mine = ids.filter((id) => step.userOf.get(id) === userId);
        if (mine.length > 0) removals.set(channel, mine);
      }
      const entries = new Set(write.items.filter((item) => item.key !== `user:${userId}`).map((item) => item.entry));
      moves.push(
        this.moveForwarded(userId, { only: entries, node: step.node, removals, firsts: step.firsts }).then((channels) => {
          for (const channel of channels) for (const id of removals.get(channel) ?? []) handled.add(`${channel}\n${id}`);
        }),
      );
    }
    await Promise.all(moves);
    await Promise.all(
      [...step.removed].map(([channel, ids]) => {
        const rest = ids.filter((id) => !handled.has(`${channel}\n${id}`));
        return rest.length > 0 ? service.removeFromChannel(channel, step.node, rest) : undefined;
      }),
    );
  }

  /**
   * Moves a user's forwarded events to their queues, oldest first, then off the forward list (a
   * crash in between sends them twice, same ids). `only`: the entries this node wrote; without,
   * those older than the repair age (the sweep's). Returns the channels whose removals it made.
   */
  async moveForwarded(
    userId: string,
    step: { only?: ReadonlySet<string>; node?: string; removals?: Map<string, string[]>; firsts?: Map<string, Set<string>> } = {},
  ): Promise<string[]> {
    const { service } = this.options;
    const forwarded = await service.forwardedWebhooks(userId);
    const now = this.options.now();
    const moving = forwarded.filter((f) => (step.only ? step.only.has(f.entry) : now - queuedAtOf(f.entry) >= FORWARD_REPAIR_AGE_MS));
    if (moving.length === 0) return [];
    // By channel, in order: one script per channel with the user's removals there.
    const byChannel = new Map<string, WebhookItem[]>();
    const loose: typeof moving = [];
    for (const f of moving) {
      if (f.channel === undefined || f.key !== `channel:${f.channel}`) {
        loose.push(f);
        continue;
      }
      let guard = f.guard;
      // An add of this flush already said whether this user made the channel occupied.
      const firsts = step.firsts?.get(f.channel);
      if (guard === 'occupied' && firsts && step.firsts!.has(f.channel)) {
        if (!firsts.has(userId)) continue;
        guard = 'always';
      }
      const list = byChannel.get(f.channel) ?? [];
      list.push({ key: f.key, targets: f.targets, entry: f.entry, guard });
      byChannel.set(f.channel, list);
    }
    const node = step.node ?? this.options.nodeId;
    await Promise.all(
      [...byChannel].map(([channel, items]) => service.channelWebhooks(channel, node, userId, step.removals?.get(channel) ?? [], { items, maxBacklog: this.maxBacklog, dropped: this.dropped })),
    );
    for (const f of loose) {
      const dropped = await service.enqueueWebhooks(f.key, f.targets, [f.entry], this.maxBacklog);
      if (dropped > 0) this.dropped(dropped);
    }
    await this.index(moving);
    await service.dropForwarded(userId, moving.map((f) => f.raw));
    return [...byChannel.keys()];
  }

  private async index(items: readonly { key: string; targets: readonly string[] }[]): Promise<void> {
    const byTarget = new Map<string, Set<string>>();
    for (const item of items) {
      for (const target of item.targets) {
        let keys = byTarget.get(target);
        if (!keys) byTarget.set(target, (keys = new Set()));
        keys.add(item.key);
      }
    }
    await Promise.all([...byTarget].map(([target, keys]) => this.options.service.markWebhooksPending(target, [...keys])));
  }

  /** A fresh name for a change of this node's link (candidates' ids derive from it). */
  nextCause(): string {
    return `${this.options.nodeId}.w${(this.causes += 1).toString(36)}`;
  }

  /**
   * A node ended sessions of a user, or took them out of channels, while it still held another
   * node's session of that user (which may be ending, or leaving, at the same moment there): the
   * user going offline (`offline`: sessions ended) and leaving the channels are queued as
   * candidates that the user's shard and each channel's index decide (`empty`, `left`,
   * `emptied`), so exactly one of two concurrent writers reports them. Events the model already
   * made for the user or a channel are not doubled.
   */
  addCandidates(
    write: WebhookWrite | undefined,
    change: { userId: string; fields: Record<string, string> | null; channels: string[]; offline: boolean; cause: string; at: number },
  ): WebhookWrite | undefined {
    if (!this.active) return write;
    const items = write?.items ?? [];
    const userKey = `user:${change.userId}`;
    const offline = change.offline && !items.some((item) => item.key === userKey && (item.guard === 'empty' || item.guard === 'first'));
    const covered = new Set(items.map((item) => item.channel).filter((c): c is string => c !== undefined));
    const channels = change.channels.filter((channel) => !covered.has(channel));
    if (!offline && channels.length === 0) return write;
    const extra = this.sources
      .flatMap((source) => source.reap.reapItems({ userId: change.userId, fields: change.fields, channels, vacated: channels, cause: change.cause, at: change.at }))
      .filter((item) => offline || item.key !== userKey)
      .map((item) => (item.guard === 'removed' ? { ...item, guard: 'left' as const } : item.guard === 'vacated' ? { ...item, guard: 'emptied' as const } : item));
    if (extra.length === 0) return write;
    return { items: [...items, ...extra], maxBacklog: this.maxBacklog, dropped: this.dropped };
  }

  // Reaping -----------------------------------------------------------------------------------

  /**
   * Before a dead node's orphans leave the shards: for each of its users, the events their reap
   * causes. A channel is vacated when the reap step of one of its users leaves no other user's
   * session listed (decided in the channel's slot: exactly one step finds it so).
   */
  async prepareReap(node: string, users: string[], at: number): Promise<Map<string, WebhookWrite>> {
    const out = new Map<string, WebhookWrite>();
    if (!this.active || users.length === 0) return out;
    const { service } = this.options;
    const shards = await service.readUsers(users);
    const leaving = new Map<string, string[]>();
    const channels = new Set<string>();
    for (const [userId, shard] of shards) {
      const dead = shard.sessions.filter((s) => s.node === node && s.orphanedAt !== undefined);
      if (dead.length === 0) continue;
      const staying = new Set(shard.sessions.filter((s) => !dead.includes(s)).flatMap((s: StoredSession) => Object.keys(s.session.channels)));
      const left = [...new Set(dead.flatMap((s) => Object.keys(s.session.channels)))].filter((c) => !staying.has(c));
      leaving.set(userId, left);
      for (const channel of left) channels.add(channel);
    }
    const cause = `${node}.reap`;
    for (const [userId, left] of leaving) {
      // Every channel left is a candidate: the channel's index decides whether it is vacated.
      const vacated = left;
      const items = this.sources.flatMap((source) => source.reap.reapItems({ userId, fields: shards.get(userId)!.fields, channels: left, vacated, cause, at }));
      if (items.length > 0) out.set(userId, { items, maxBacklog: this.maxBacklog, dropped: this.dropped });
    }
    return out;
  }

  // WebhookQueueStore (the delivering node's) ------------------------------------------------

  holdLease(target: string, ttlMs: number): Promise<boolean> {
    return this.options.service.webhookLease(target, this.options.nodeId, ttlMs, true);
  }

  async releaseLease(target: string): Promise<void> {
    await this.options.service.webhookLease(target, this.options.nodeId, 0, false);
  }

  pendingKeys(target: string): Promise<string[]> {
    return this.options.service.pendingWebhookKeys(target);
  }

  heads(target: string, keys: string[]): Promise<{ head: string | undefined; length: number }[]> {
    return this.options.service.webhookHeads(target, keys);
  }

  pop(target: string, key: string, entry: string): Promise<boolean> {
    return this.options.service.popWebhook(target, key, entry);
  }

  settleKey(target: string, key: string): Promise<boolean> {
    return this.options.service.settleWebhookKey(target, key);
  }

  async sweep(target: string): Promise<void> {
    const { keys, forwarding } = await this.options.service.scanWebhooks(target);
    if (keys.length > 0) await this.options.service.markWebhooksPending(target, keys);
    for (const userId of forwarding) await this.moveForwarded(userId);
  }
}

function queuedAtOf(entry: string): number {
  try {
    return Number((JSON.parse(entry) as { queuedAt?: number }).queuedAt) || 0;
  } catch {
    return 0;
  }
}
