import { randomUUID } from 'node:crypto';
import type { AdminWebhookTarget, UserPresence } from '@presence/protocol';
import type { WebhookConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { Clock } from '../presence/clock.js';
import type { PresenceEvent } from '../presence/events.js';
import { ClusterDeliveryQueue, storedWebhook, type WebhookGuard, type WebhookItem, type WebhookQueueStore, type WebhookQueueView, type WebhookReapSource, type WebhookSink } from './cluster-queues.js';
import { DeliveryQueue, type DeliveryObserver, type QueuedEvent, type WebhookSender } from './delivery-queue.js';
import type { ChannelOccupancy } from './event-mapper.js';
import type { OutgoingEvent, WebhookFormat } from './format.js';
import { ShownState, WebhookOutbox, type OutboxRecovery } from './outbox-file.js';
import { presenceFormat } from './presence-format.js';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from './retry-schedule.js';
import { displayUrl, targetId } from './target-id.js';

/*
 * Webhooks: a listener of the presence events that maps each to webhook events and queues them,
 * in the same synchronous step. On one node: on one delivery queue per URL (and, with a data
 * directory, in the outbox file). In a cluster (`cluster`): only the changes made on this node,
 * handed to the cluster link, which queues them in the shared store in the script that writes the
 * change; one node at a time delivers each URL's queues (cluster-queues.ts).
 */

/** Webhooks in a cluster: the seam between a format's events and the shared store's queues. */
export interface ClusterWebhooksOptions {
  /** Takes the events of this node's changes into the writes of the shared store. */
  sink: WebhookSink;
  store: WebhookQueueStore;
  /** The delivery lease per URL; renewed every third of it. */
  leaseTtlMs: number;
  /** How often the delivering node reads the pending index. @default 250 */
  pollMs?: number;
  /** How often the delivering node runs the repair sweep. @default 30000 */
  sweepMs?: number;
  /**
   * A user's offline view from their stored record (the reaping node may not follow them);
   * undefined for a user who was out of sight (invisible): a reap then tells nothing.
   */
  offlineView: (userId: string, fields: Record<string, string> | null) => UserPresence | undefined;
}

export interface WebhooksOptions {
  config: WebhookConfig;
  clock: Clock;
  log: Logger;
  /** The model's state, read while an event is emitted (channel occupied / vacated). */
  occupancy: ChannelOccupancy;
  /** A user's presence as a trusted caller sees it: the offline view of a user reaped at start. */
  userView: (userId: string) => UserPresence;
  /** The data directory (already locked by the user store): the outbox is kept there. */
  dataDir?: string;
  /** Metrics of one URL. */
  observer?: (url: string) => DeliveryObserver;
  /** Tests shorten the backoff; the give-up age comes from `config.giveUpMs`. */
  retry?: Partial<Omit<RetryPolicy, 'giveUpAfterMs'>>;
  /** Requests in flight at once per URL, each for a different user or channel. @default 8 */
  concurrency?: number;
  random?: () => number;
  /** Tests replace the HTTP client. @default the format's POST */
  sender?: (url: string) => WebhookSender;
  /** Which events and how they are sent. @default Presence's own (docs/webhooks.md), from `config` */
  format?: WebhookFormat;
  /** In a cluster: queues in the shared store instead of this process (no data directory then). */
  cluster?: ClusterWebhooksOptions;
}

export interface WebhookTarget {
  readonly url: string;
  /** In logs, metrics and the dashboard: no query string. */
  readonly label: string;
  /** In the outbox file; in a cluster, the queues' name (with the format's). */
  readonly id: string;
  readonly queue: WebhookQueueView;
}

export class Webhooks implements WebhookReapSource {
  readonly targets: WebhookTarget[];
  private readonly format: WebhookFormat;
  private readonly outbox: WebhookOutbox | undefined;
  private readonly targetIds: string[];
  private closed = false;
  /** While a reaping node builds its events: the reaped users' views from their stored records. */
  private readonly reapViews = new Map<string, UserPresence>();

  constructor(private readonly options: WebhooksOptions) {
    const { config, clock, log, cluster } = options;
    const userView = (userId: string) => this.reapViews.get(userId) ?? options.userView(userId);
    // In a cluster every join and leave is a candidate for occupied and vacated: the channel's
    // index decides (this node may not have seen another node's member yet).
    const occupancy = cluster ? { hasOtherVisibleMember: () => false } : options.occupancy;
    this.format = options.format ?? (presenceFormat({ config, occupancy, userView, now: () => clock.now() }) as WebhookFormat);
    const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retry, giveUpAfterMs: config.giveUpMs };
    let outbox: WebhookOutbox | undefined;
    this.targets = config.urls.map((url) => {
      const label = displayUrl(url);
      const send = options.sender?.(url) ?? this.format.sender(url);
      if (cluster) {
        // Named by format too: the same URL may take Presence's and Pusher's webhooks.
        const id = `${this.format.name}-${targetId(url)}`;
        const queue = new ClusterDeliveryQueue({
          target: id,
          label,
          store: cluster.store,
          clock,
          send,
          policy,
          maxBacklog: config.maxBacklog,
          leaseTtlMs: cluster.leaseTtlMs,
          pollMs: cluster.pollMs ?? 250,
          sweepMs: cluster.sweepMs ?? 30_000,
          concurrency: options.concurrency,
          random: options.random,
          log,
          observer: options.observer?.(label),
        });
        return { url, label, id, queue };
      }
      const id = targetId(url);
      const queue = new DeliveryQueue({
        label,
        clock,
        send,
        policy,
        maxBacklog: config.maxBacklog,
        concurrency: options.concurrency,
        random: options.random,
        log,
        observer: options.observer?.(label),
        settled: (entry, how, letter) => outbox?.settled(id, entry.event.id, how, letter),
      });
      return { url, label, id, queue };
    });
    this.targetIds = this.targets.map((t) => t.id);
    let recovery: OutboxRecovery | undefined;
    if (options.dataDir !== undefined && !cluster) {
      const { format } = this;
      ({ outbox, recovery } = WebhookOutbox.open({ dir: options.dataDir, log, targets: this.targetIds, file: format.outboxFile, track: (event, shown) => format.track(event, shown) }));
    }
    this.outbox = outbox;
    if (recovery) this.resume(recovery);
    log.info('webhooks on', {
      format: this.format.name,
      urls: this.targets.map((t) => t.label),
      ...(options.format ? {} : { events: config.events }),
      durable: this.outbox !== undefined || cluster !== undefined,
      ...(cluster ? { cluster: true } : {}),
      ...(recovery ? { resumed: recovery.pending.length } : {}),
    });
  }

  /** The presence event listener (subscribe it to the node). Never throws into the model. */
  readonly onEvent = (event: PresenceEvent): void => {
    if (this.closed) return;
    // In a cluster each change is queued by the node that made it (other nodes' changes, and the
    // ends of a dead node's sessions, are queued by their writer and by the reaping node).
    if (this.options.cluster && !event.local) return;
    let events: OutgoingEvent[];
    try {
      events = this.format.map(event);
    } catch (error) {
      this.options.log.error('webhook event could not be built; it is not sent', { id: event.id, type: event.type, err: error });
      return;
    }
    if (events.length === 0) return;
    if (this.options.cluster) {
      const channel = 'channel' in event ? event.channel : undefined;
      this.options.cluster.sink.queue(event.userId, this.items(events, this.options.clock.now(), guardOf(event), channel, event.userId));
    }
    else this.enqueue(events, this.options.clock.now());
  };

  /** The stored form of events, for every URL, each with its ordering key. */
  private items(events: readonly OutgoingEvent[], queuedAt: number, guard: (key: string) => WebhookGuard, channel?: string, userId?: string): WebhookItem[] {
    const targets = this.targetIds;
    return events.map((event) => {
      const key = this.format.key(event);
      const item: WebhookItem = { guard: this.format.occupancy?.(event) ?? guard(key), key, targets, entry: storedWebhook(event, JSON.stringify(event), queuedAt) };
      if (channel !== undefined && userId !== undefined) Object.assign(item, { channel, userId });
      return item;
    });
  }

  /**
   * A reaping node's events for one user of a dead node (WebhookReapSource): the format's own reap
   * events, built from the stored record. The user's events wait for the script to find none of
   * their sessions left; the channel events for it to have removed one.
   */
  reapItems(reap: Parameters<WebhookReapSource['reapItems']>[0]): WebhookItem[] {
    const cluster = this.options.cluster;
    if (this.closed || !cluster) return [];
    const view = cluster.offlineView(reap.userId, reap.fields);
    if (!view) return [];
    const shown = new ShownState();
    shown.users.add(reap.userId);
    const named = (channel: string) => this.format.shownChannel?.(channel) ?? channel;
    for (const channel of reap.channels) shown.channels.set(named(channel), new Set([reap.userId]));
    this.reapViews.set(reap.userId, view);
    let events: OutgoingEvent[];
    try {
      events = this.format.reap(shown, reap.cause, reap.at, new Set(reap.vacated.map(named)));
    } finally {
      this.reapViews.delete(reap.userId);
    }
    // Channel events of a reap: moved with the index entries of the reaped sessions (see ClusterWebhooks).
    return events.map((event) => {
      const key = this.format.key(event);
      const channel = key.startsWith('channel:') ? key.slice('channel:'.length) : undefined;
      const guard: WebhookGuard = key === `user:${reap.userId}` ? 'empty' : this.format.occupancy?.(event) ?? 'removed';
      return { guard, key, targets: this.targetIds, entry: storedWebhook(event, JSON.stringify(event), reap.at), ...(channel !== undefined ? { channel, userId: reap.userId } : {}) };
    });
  }

  /** Queues events that do not come from the presence events (a format's own, such as Pusher's client events). */
  send(events: readonly OutgoingEvent[], userId?: string): void {
    if (this.closed || events.length === 0) return;
    if (this.options.cluster) this.options.cluster.sink.queue(userId, this.items(events, this.options.clock.now(), () => 'always'));
    else this.enqueue(events, this.options.clock.now());
  }

  /** In a cluster: starts competing for the delivery of each URL (once the node has joined). */
  startDelivery(): void {
    for (const { queue } of this.targets) if (queue instanceof ClusterDeliveryQueue) queue.start();
  }

  /** Per URL, for the admin stats. */
  stats(): AdminWebhookTarget[] {
    return this.targets.map(({ label, queue }) => {
      const oldest = queue.oldestQueuedAt;
      return {
        url: label,
        backlog: queue.backlog,
        oldestPendingAt: oldest === undefined ? null : new Date(oldest).toISOString(),
        delivered: queue.counts.delivered,
        failedAttempts: queue.counts.failedAttempts,
        deadLetters: queue.counts.deadLetters,
        dropped: queue.counts.dropped,
        recentDeadLetters: queue.deadLetters
          .slice(-5)
          .reverse()
          .map((letter) => ({ id: letter.event.id, type: letter.event.type, reason: letter.reason, attempts: letter.attempts, at: new Date(letter.at).toISOString() })),
      };
    });
  }

  /**
   * Stops delivering: requests in flight are aborted. With a data directory what was not
   * acknowledged is sent at the next start (same ids); without one it is lost, and logged.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    let unsent = 0;
    for (const { queue } of this.targets) {
      unsent += queue.backlog;
      queue.close();
    }
    this.outbox?.close();
    if (unsent > 0 && this.options.cluster) {
      this.options.log.info('webhooks stopped; undelivered events stay in the shared store for the next delivering node', { events: unsent });
    } else if (unsent > 0) {
      if (this.outbox) this.options.log.info('webhooks stopped; undelivered events stay in the outbox for the next start', { events: unsent });
      else this.options.log.warn('webhooks stopped with undelivered events; without PRESENCE_DATA_DIR they are lost', { events: unsent });
    }
  }

  /** Sizes of the outbox, for tests. */
  inspectOutbox(): ReturnType<WebhookOutbox['inspect']> | undefined {
    return this.outbox?.inspect();
  }

  private enqueue(events: readonly OutgoingEvent[], queuedAt: number): void {
    const entries = events.map((event) => ({ event, body: JSON.stringify(event), key: this.format.key(event), queuedAt }));
    // On disk first: once a queue has it, a delivery (and its `done` line) may follow at any time.
    this.outbox?.append(entries, this.targetIds);
    for (const { queue } of this.targets) {
      for (const entry of entries) (queue as DeliveryQueue).enqueue(queued(entry));
    }
  }

  /** Events a queue's bound dropped where they were written (a cluster's writing node). */
  droppedAtWrite(count: number): void {
    const queue = this.targets[0]?.queue;
    if (queue instanceof ClusterDeliveryQueue) queue.droppedAtWrite(count);
  }

  /** At start: what the previous run still owed, then the reap of what it showed. */
  private resume(recovery: OutboxRecovery): void {
    const byId = new Map(this.targets.map((t) => [t.id, t]));
    for (const [id, letters] of recovery.deadLetters) {
      for (const letter of letters) (byId.get(id)?.queue as DeliveryQueue | undefined)?.remember(letter);
    }
    for (const { event, queuedAt, targets } of recovery.pending) {
      const entry = { event, body: JSON.stringify(event), key: this.format.key(event), queuedAt };
      for (const id of targets) (byId.get(id)?.queue as DeliveryQueue | undefined)?.enqueue(queued(entry));
    }
    this.reapPreviousRun(recovery.shown);
  }

  /**
   * The previous run of this node stopped (a crash, or a shutdown that disposed every session
   * without events): the users and channel members it showed are gone. Receivers are told so, as
   * a cluster's reaping node tells them about a dead node.
   */
  private reapPreviousRun(shown: OutboxRecovery['shown']): void {
    if (shown.users.size === 0 && shown.channels.size === 0) return;
    const cause = `reap-${randomUUID().slice(0, 8)}`;
    const events = this.format.reap(shown, cause, this.options.clock.now());
    this.options.log.info('webhooks: telling receivers that the previous run\'s users and channels are gone', {
      format: this.format.name,
      users: shown.users.size,
      channels: shown.channels.size,
      events: events.length,
    });
    if (events.length > 0) this.enqueue(events, this.options.clock.now());
    // Nothing was sent for types not wanted; the outbox must forget them all the same.
    shown.users.clear();
    shown.channels.clear();
  }
}

function queued(entry: { event: OutgoingEvent; body: string; key: string; queuedAt: number }): QueuedEvent {
  return { ...entry, attempts: 0 };
}

/**
 * Which guard the script applies to the events of a presence event: a user coming online or going
 * offline because of a session is decided again by the user's shard, which knows every node's
 * sessions (the node that wrote the change may not have seen another node's yet). The cluster
 * link keeps `first` and `empty` only with ops that start or end sessions; otherwise they become
 * `always` (a status write: invisible, back from it).
 */
function guardOf(event: PresenceEvent): (key: string) => WebhookGuard {
  const userKey = `user:${event.userId}`;
  if (event.type === 'user.online') return (key) => (key === userKey ? 'first' : 'always');
  if (event.type === 'user.offline') return (key) => (key === userKey ? 'empty' : 'always');
  return () => 'always';
}
