import type { Logger } from '../log.js';
import type { Clock, TimerHandle } from '../presence/clock.js';
import { SummarizedLog, type DeadLetter, type DeliveryObserver, type QueuedEvent, type WebhookSender } from './delivery-queue.js';
import type { OutgoingEvent } from './format.js';
import { nextRetry, type AttemptOutcome, type RetryPolicy } from './retry-schedule.js';

/*
 * Webhooks in a cluster (docs/webhooks.md#clusters). The queues live in the shared store, one per
 * URL and ordering key (a user, a channel), in that user's or channel's slot. Events are queued by
 * the node that writes the change, in the script that writes it; channel events of a change
 * written in a user's slot go through that user's forward list (same script), and the writing
 * node moves them to the channel's queue right after. One node at a time delivers each URL's
 * queues, under a lease it renews; it finds the queues with events through a bucketed pending
 * index (written right after the scripts) and a periodic sweep that repairs what a crash between
 * the two left out.
 */

/**
 * When a queued event is really queued, decided by the script from the state it writes:
 * `always`; `first`: only if the user had no session but those the same ops write (user.online);
 * `empty`: only if none of the user's sessions is left after the write (user.offline);
 * `removed`: only if the reap removed a session of the user; `occupied`, `vacated`: only if the
 * channel's index lists no other user's session (decided in the channel's slot, see `channel`);
 * `left`: only if the index lists no session of the user any more; `emptied`: no session at all.
 */
export type WebhookGuard = 'always' | 'first' | 'empty' | 'removed' | 'occupied' | 'vacated' | 'left' | 'emptied';

/** One event to queue with a write, for some URLs (by target id). */
export interface WebhookItem {
  guard: WebhookGuard;
  /** The ordering key: `user:<id>` or `channel:<name>`. */
  key: string;
  targets: readonly string[];
  /** The stored entry (`StoredWebhook` as JSON). */
  entry: string;
  /**
   * A channel event of a user's change: the channel and user whose index entries decide
   * `occupied` and `vacated`, and in whose slot the event is moved (its key must then be
   * `channel:<channel>`; events of another key are moved as they are).
   */
  channel?: string;
  userId?: string;
}

/** Webhook events that go with a write of the shared store, in the same step. */
export interface WebhookWrite {
  items: WebhookItem[];
  /** Events per queue (per URL and key); past it the oldest waiting one is dropped. */
  maxBacklog: number;
  /** Told how many the bound dropped. */
  dropped?: (count: number) => void;
  /** A record write: queued only if it changed a field besides the activity timestamps. */
  onlyIfChanged?: boolean;
}

/** A queued event as the shared store holds it. */
export interface StoredWebhook {
  id: string;
  type: string;
  /** When the change happened (ms, cluster clock): the give-up age counts from here. */
  queuedAt: number;
  /** The JSON body, as signed and sent. */
  body: string;
}

/** What a node's webhooks hand to the cluster link: events of a change made here. */
export interface WebhookSink {
  /**
   * Queues events of a change of `userId` made on this node: they go with that user's next write
   * (in its script). Without a user (a format's own events) each goes to its key's queue directly.
   */
  queue(userId: string | undefined, items: WebhookItem[]): void;
}

/** Makes the events a reap causes (the reaping node queues them in its reap step). */
export interface WebhookReapSource {
  /**
   * The events that tell receivers that `userId`, whose sessions of a dead node are being removed,
   * left `channels` (and `vacated` lost their last member) and, if none of their sessions is
   * left, went offline. `view` is their stored record as a trusted caller sees it offline.
   */
  reapItems(reap: { userId: string; fields: Record<string, string> | null; channels: string[]; vacated: string[]; cause: string; at: number }): WebhookItem[];
}

/** What one URL's delivering node needs of the shared store. */
export interface WebhookQueueStore {
  /** Takes or renews the lease of a URL's queues; true while this node holds it. */
  holdLease(target: string, ttlMs: number): Promise<boolean>;
  releaseLease(target: string): Promise<void>;
  /** Ordering keys whose queue for `target` may hold events (the pending index). */
  pendingKeys(target: string): Promise<string[]>;
  /** The head entry (raw) and the length of each key's queue. */
  heads(target: string, keys: string[]): Promise<{ head: string | undefined; length: number }[]>;
  /** Takes `entry` off the head of the queue if it is still its head. */
  pop(target: string, key: string, entry: string): Promise<boolean>;
  /** The queue looked empty: off the pending index, unless it holds events again; returns whether it does. */
  settleKey(target: string, key: string): Promise<boolean>;
  /** Repair: indexes every queue of `target` that holds events, and moves forwarded events left behind. */
  sweep(target: string): Promise<void>;
}

/** What the stats and metrics read of a URL's queue, on one node or in a cluster. */
export interface WebhookQueueView {
  readonly backlog: number;
  readonly oldestQueuedAt: number | undefined;
  readonly counts: { delivered: number; failedAttempts: number; retries: number; deadLetters: number; dropped: number };
  readonly deadLetters: DeadLetter[];
  close(): void;
}

export interface ClusterDeliveryOptions {
  target: string;
  label: string;
  store: WebhookQueueStore;
  clock: Clock;
  send: WebhookSender;
  policy: RetryPolicy;
  maxBacklog: number;
  /** The lease's lifetime; renewed every third of it. */
  leaseTtlMs: number;
  /** How often the pending index is read. */
  pollMs: number;
  /** How often the repair sweep runs. */
  sweepMs: number;
  concurrency?: number;
  random?: () => number;
  log: Logger;
  observer?: DeliveryObserver;
  keepDeadLetters?: number;
}

interface Lane {
  readonly key: string;
  head?: string;
  /** The head parsed, with its attempts on this node. */
  entry?: QueuedEvent;
  state: 'idle' | 'ready' | 'sending' | 'waiting' | 'fetching';
  length: number;
  timer?: TimerHandle;
  abort?: AbortController;
}

/**
 * One URL's queues, delivered by this node while it holds their lease. Events of one key go out
 * one at a time from the head of their queue, which is popped only after the answer (delivered,
 * dead-lettered or dropped); the retry schedule, the concurrency and the counters are those of a
 * single node's queue. A node that loses the lease stops at once; the next holder sends the heads
 * again (same ids). Attempts are counted anew by each holder.
 */
export class ClusterDeliveryQueue implements WebhookQueueView {
  private readonly lanes = new Map<string, Lane>();
  private readonly ready = new Set<Lane>();
  private inFlight = 0;
  private holding = false;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private ticking = false;
  private lastSweep = 0;
  private failing = false;
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly keepDeadLetters: number;
  private readonly dropLog: SummarizedLog;
  private readonly deadLog: SummarizedLog;
  readonly deadLetters: DeadLetter[] = [];
  readonly counts = { delivered: 0, failedAttempts: 0, retries: 0, deadLetters: 0, dropped: 0 };

  constructor(private readonly options: ClusterDeliveryOptions) {
    this.concurrency = options.concurrency ?? 8;
    this.random = options.random ?? Math.random;
    this.keepDeadLetters = options.keepDeadLetters ?? 1000;
    this.dropLog = new SummarizedLog(options.clock, (dropped, fields) =>
      options.log.warn('webhook backlog full: dropping the oldest waiting events', { url: options.label, maxBacklog: options.maxBacklog, dropped, ...fields }),
    );
    this.deadLog = new SummarizedLog(options.clock, (count, fields) => options.log.warn('webhook events dead-lettered', { url: options.label, count, ...fields }));
  }

  /** Starts competing for the lease (once the node has joined the cluster). */
  start(): void {
    if (this.closed || this.timers.length > 0) return;
    const { options } = this;
    const renew = setInterval(() => void this.renew(), Math.max(10, Math.floor(options.leaseTtlMs / 3)));
    const poll = setInterval(() => void this.tick(), options.pollMs);
    renew.unref();
    poll.unref();
    this.timers.push(renew, poll);
    void this.renew().then(() => this.tick());
  }

  /** Whether this node delivers this URL now. */
  get isHolder(): boolean {
    return this.holding;
  }

  /** Events waiting in the queues this node delivers, as of its last read (0 on other nodes). */
  get backlog(): number {
    let total = 0;
    for (const lane of this.lanes.values()) total += lane.length;
    return total;
  }

  get oldestQueuedAt(): number | undefined {
    let oldest: number | undefined;
    for (const lane of this.lanes.values()) if (lane.entry && (oldest === undefined || lane.entry.queuedAt < oldest)) oldest = lane.entry.queuedAt;
    return oldest;
  }

  /** Counted where the event was queued: the writer's bound dropped it. */
  droppedAtWrite(count: number): void {
    for (let i = 0; i < count; i++) {
      this.counts.dropped += 1;
      this.options.observer?.dropped();
    }
    if (count > 0) this.dropLog.count({ where: 'queue of one key' });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    this.stopDelivering();
    this.dropLog.flush();
    this.deadLog.flush();
    if (this.holding) {
      this.holding = false;
      void this.options.store.releaseLease(this.options.target).catch(() => undefined);
    }
  }

  private async renew(): Promise<void> {
    if (this.closed) return;
    let held: boolean;
    try {
      held = await this.options.store.holdLease(this.options.target, this.options.leaseTtlMs);
    } catch {
      held = false;
    }
    if (this.closed) return;
    if (held && !this.holding) {
      this.holding = true;
      this.options.log.info('delivering webhooks of this URL for the cluster', { url: this.options.label });
      void this.tick();
    } else if (!held && this.holding) {
      this.holding = false;
      this.options.log.info('another node delivers webhooks of this URL now', { url: this.options.label });
      this.stopDelivering();
    }
  }

  private stopDelivering(): void {
    for (const lane of this.lanes.values()) {
      this.options.clock.clearTimer(lane.timer);
      lane.abort?.abort();
    }
    this.lanes.clear();
    this.ready.clear();
    this.inFlight = 0;
  }

  /** Reads the pending index and the heads of new queues, enforces the backlog, sends. */
  private async tick(): Promise<void> {
    if (this.closed || !this.holding || this.ticking) return;
    this.ticking = true;
    const { store, target } = this.options;
    try {
      const now = this.options.clock.now();
      if (now - this.lastSweep >= this.options.sweepMs) {
        this.lastSweep = now;
        await store.sweep(target);
      }
      const keys = await store.pendingKeys(target);
      if (!this.holding) return;
      const idle = keys.filter((key) => !this.lanes.has(key) || this.lanes.get(key)!.state === 'idle');
      // Lengths of the others too: the backlog counts every queue.
      const busy = [...this.lanes.values()].filter((lane) => lane.state !== 'idle' && lane.state !== 'fetching').map((lane) => lane.key);
      const read = await store.heads(target, [...idle, ...busy]);
      if (!this.holding) return;
      idle.forEach((key, i) => {
        let lane = this.lanes.get(key);
        if (!lane) this.lanes.set(key, (lane = { key, state: 'idle', length: 0 }));
        this.setHead(lane, read[i]);
      });
      busy.forEach((key, i) => {
        const lane = this.lanes.get(key);
        if (lane) lane.length = read[idle.length + i].length;
      });
      await this.enforceBacklog();
      for (const lane of [...this.lanes.values()]) {
        if (lane.state === 'idle' && lane.head === undefined) await this.settle(lane);
      }
      this.pump();
    } catch (error) {
      this.options.log.debug('webhook queues not read; trying again', { url: this.options.label, error });
    } finally {
      this.ticking = false;
    }
  }

  private setHead(lane: Lane, read: { head: string | undefined; length: number }): void {
    lane.length = read.length;
    if (read.head !== lane.head || !lane.entry) {
      lane.head = read.head;
      lane.entry = read.head === undefined ? undefined : parseEntry(read.head, lane.key);
      if (read.head !== undefined && !lane.entry) {
        // Unreadable: written by something else. Given up on, so the key goes on.
        this.options.log.warn('webhook queue entry unreadable; dropped', { url: this.options.label, key: lane.key });
      }
    }
    if (lane.state === 'idle' || lane.state === 'fetching') {
      if (lane.head === undefined) lane.state = 'idle';
      else this.markReady(lane);
    }
  }

  private markReady(lane: Lane): void {
    lane.state = 'ready';
    this.ready.add(lane);
  }

  private pump(): void {
    while (!this.closed && this.holding && this.inFlight < this.concurrency && this.ready.size > 0) {
      const lane = this.ready.values().next().value as Lane;
      this.ready.delete(lane);
      if (!lane.entry || lane.head === undefined) {
        if (lane.head !== undefined) void this.finish(lane, 'dropped');
        else lane.state = 'idle';
        continue;
      }
      this.attempt(lane, lane.entry);
    }
  }

  private attempt(lane: Lane, entry: QueuedEvent): void {
    lane.state = 'sending';
    entry.attempts += 1;
    this.inFlight += 1;
    const abort = new AbortController();
    lane.abort = abort;
    let outcome: Promise<AttemptOutcome>;
    try {
      outcome = this.options.send(entry, entry.attempts, abort.signal);
    } catch (error) {
      outcome = Promise.resolve({ kind: 'retry', reason: `error ${(error as Error).message}` });
    }
    outcome
      .catch((error: unknown): AttemptOutcome => ({ kind: 'retry', reason: `error ${(error as Error).message}` }))
      .then((result) => {
        if (this.closed || abort.signal.aborted || this.lanes.get(lane.key) !== lane) return;
        this.inFlight -= 1;
        lane.abort = undefined;
        this.settleAttempt(lane, entry, result);
      });
  }

  private settleAttempt(lane: Lane, entry: QueuedEvent, outcome: AttemptOutcome): void {
    const { log, label, observer } = this.options;
    if (outcome.kind === 'delivered') {
      this.counts.delivered += 1;
      observer?.delivered();
      if (this.failing) {
        this.failing = false;
        log.info('webhook deliveries succeed again', { url: label });
      }
      void this.finish(lane, 'delivered');
      return;
    }
    this.counts.failedAttempts += 1;
    observer?.failedAttempt(outcome.reason);
    entry.lastFailure = outcome.reason;
    if (!this.failing) {
      this.failing = true;
      log.warn('webhook delivery failing; retrying with backoff', { url: label, reason: outcome.reason, id: entry.event.id, type: entry.event.type, attempt: entry.attempts });
    }
    const now = this.options.clock.now();
    if (outcome.kind === 'reject') {
      this.deadLetter(lane, entry, outcome.reason, now);
      return;
    }
    const decision = nextRetry(this.options.policy, { attempts: entry.attempts, queuedAt: entry.queuedAt, now, retryAfterMs: outcome.retryAfterMs }, this.random);
    if ('giveUp' in decision) {
      this.deadLetter(lane, entry, outcome.reason, now);
      return;
    }
    this.counts.retries += 1;
    observer?.retried();
    lane.state = 'waiting';
    lane.timer = this.options.clock.setTimer(decision.retryAt - now, () => {
      lane.timer = undefined;
      if (this.closed || this.lanes.get(lane.key) !== lane) return;
      this.markReady(lane);
      this.pump();
    });
    this.pump();
  }

  private deadLetter(lane: Lane, entry: QueuedEvent, reason: string, now: number): void {
    const letter: DeadLetter = { event: entry.event, reason, attempts: entry.attempts, queuedAt: entry.queuedAt, at: now };
    this.deadLetters.push(letter);
    if (this.deadLetters.length > this.keepDeadLetters) this.deadLetters.splice(0, this.deadLetters.length - this.keepDeadLetters);
    this.counts.deadLetters += 1;
    this.options.observer?.deadLettered();
    this.deadLog.count({ id: entry.event.id, type: entry.event.type, reason, attempts: entry.attempts });
    void this.finish(lane, 'dead');
  }

  /** The head is done with: off the queue (if still its head), then the next one of its key. */
  private async finish(lane: Lane, how: 'delivered' | 'dead' | 'dropped'): Promise<void> {
    const { store, target } = this.options;
    lane.state = 'fetching';
    const head = lane.head;
    try {
      if (head !== undefined) await store.pop(target, lane.key, head);
      if (this.lanes.get(lane.key) !== lane) return;
      const [read] = await store.heads(target, [lane.key]);
      if (this.lanes.get(lane.key) !== lane) return;
      lane.head = undefined;
      lane.entry = undefined;
      this.setHead(lane, read);
      if (lane.head === undefined) await this.settle(lane);
    } catch (error) {
      // The store went away: the next read of the index starts this key again.
      this.options.log.debug('webhook queue not updated', { url: this.options.label, how, error });
      if (this.lanes.get(lane.key) === lane) this.lanes.delete(lane.key);
      this.ready.delete(lane);
    }
    this.pump();
  }

  /** An empty queue leaves the pending index (and comes back if an event arrived meanwhile). */
  private async settle(lane: Lane): Promise<void> {
    const remaining = await this.options.store.settleKey(this.options.target, lane.key);
    if (this.lanes.get(lane.key) !== lane) return;
    if (!remaining) {
      this.lanes.delete(lane.key);
      this.ready.delete(lane);
      return;
    }
    const [read] = await this.options.store.heads(this.options.target, [lane.key]);
    if (this.lanes.get(lane.key) === lane) this.setHead(lane, read);
  }

  /**
   * The URL's backlog bound across its queues: past it, the oldest waiting event not being sent
   * goes (it is the head of some queue, since each queue is in the order of its changes).
   */
  private async enforceBacklog(): Promise<void> {
    let total = this.backlog;
    while (total > this.options.maxBacklog) {
      let oldest: Lane | undefined;
      for (const lane of this.lanes.values()) {
        if (lane.state === 'sending' || lane.state === 'fetching' || !lane.entry) continue;
        if (!oldest || lane.entry.queuedAt < oldest.entry!.queuedAt) oldest = lane;
      }
      if (!oldest) return;
      const entry = oldest.entry!;
      this.options.clock.clearTimer(oldest.timer);
      oldest.timer = undefined;
      this.ready.delete(oldest);
      this.counts.dropped += 1;
      this.options.observer?.dropped();
      this.dropLog.count({ id: entry.event.id, type: entry.event.type });
      await this.finish(oldest, 'dropped');
      total -= 1;
    }
  }
}

/** A stored entry as the queue's head, with its attempts on this node. */
function parseEntry(raw: string, key: string): QueuedEvent | undefined {
  try {
    const stored = JSON.parse(raw) as StoredWebhook;
    if (typeof stored.id !== 'string' || typeof stored.body !== 'string') return undefined;
    const event: OutgoingEvent = { id: stored.id, type: stored.type };
    return { event, body: stored.body, key, queuedAt: stored.queuedAt, attempts: 0 };
  } catch {
    return undefined;
  }
}

/** The stored form of an event queued for delivery by the cluster. */
export function storedWebhook(event: OutgoingEvent, body: string, queuedAt: number): string {
  const stored: StoredWebhook = { id: event.id, type: event.type, queuedAt, body };
  return JSON.stringify(stored);
}
