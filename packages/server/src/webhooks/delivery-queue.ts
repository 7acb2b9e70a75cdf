import type { Logger } from '../log.js';
import type { Clock, TimerHandle } from '../presence/clock.js';
import type { OutgoingEvent } from './format.js';
import { nextRetry, type AttemptOutcome, type RetryPolicy } from './retry-schedule.js';

/*
 * One URL's queue. Events of one key (a user, a channel) go out one at a time and in order: while
 * the head of a key is retried, the events behind it wait. Different keys go out side by side, up
 * to `concurrency` requests at once. The queue holds at most `maxBacklog` events; past that the
 * oldest one not being sent right now is dropped (newer events carry the current state of their
 * user or channel, so they are the ones worth keeping).
 */

/** One event waiting for one URL. */
export interface QueuedEvent {
  readonly event: OutgoingEvent;
  /** The JSON body, serialized once and signed as is on every attempt. */
  readonly body: string;
  /** Order is kept per key: `user:<id>` or `channel:<name>`. */
  readonly key: string;
  /** When the event was queued (its change happened): the give-up age counts from here. */
  readonly queuedAt: number;
  attempts: number;
  lastFailure?: string;
}

/** An event given up on: retries exhausted, or refused by the receiver. */
export interface DeadLetter {
  event: OutgoingEvent;
  reason: string;
  attempts: number;
  queuedAt: number;
  /** When it was given up on. */
  at: number;
}

/** One attempt: resolves with its outcome (never rejects; the sender turns errors into outcomes). */
export type WebhookSender = (entry: QueuedEvent, attempt: number, signal: AbortSignal) => Promise<AttemptOutcome>;

/** Counts for metrics; `reason` is bounded (see `failureLabel`). */
export interface DeliveryObserver {
  delivered(): void;
  failedAttempt(reason: string): void;
  retried(): void;
  deadLettered(): void;
  dropped(): void;
}

export type Settlement = 'delivered' | 'dead' | 'dropped';

export interface DeliveryQueueOptions {
  /** For logs: the URL without its query string. */
  label: string;
  clock: Clock;
  send: WebhookSender;
  policy: RetryPolicy;
  maxBacklog: number;
  /** Requests in flight at once, each for a different key. @default 8 */
  concurrency?: number;
  /** @default Math.random */
  random?: () => number;
  log: Logger;
  observer?: DeliveryObserver;
  /** Called once per event when it leaves the queue (the durable outbox records it). */
  settled?: (entry: QueuedEvent, how: Settlement, deadLetter?: DeadLetter) => void;
  /** Dead letters kept in memory for the dashboard and tests. @default 1000 */
  keepDeadLetters?: number;
}

interface Lane {
  readonly key: string;
  readonly entries: QueuedEvent[];
  /** `ready`: in the ready set; `sending`: its head is in flight; `waiting`: for a retry timer. */
  state: 'idle' | 'ready' | 'sending' | 'waiting';
  timer?: TimerHandle;
  abort?: AbortController;
}

/** Log lines that could come once per event are written at once, then summarized every 10 s. */
const LOG_SUMMARY_MS = 10_000;

export class DeliveryQueue {
  private readonly lanes = new Map<string, Lane>();
  /** Lanes whose head may be sent now, oldest first. */
  private readonly ready = new Set<Lane>();
  /** Every queued event in queue order, for the backlog bound and the oldest-first drop. */
  private readonly order = new Set<QueuedEvent>();
  private inFlight = 0;
  private closed = false;
  private pumpScheduled = false;
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly keepDeadLetters: number;
  /** Newest last. */
  readonly deadLetters: DeadLetter[] = [];
  readonly counts = { delivered: 0, failedAttempts: 0, retries: 0, deadLetters: 0, dropped: 0 };
  /** Whether the last attempt failed: the first failure and the recovery are logged, not each attempt. */
  private failing = false;
  private readonly dropLog: SummarizedLog;
  private readonly deadLog: SummarizedLog;

  constructor(private readonly options: DeliveryQueueOptions) {
    this.concurrency = options.concurrency ?? 8;
    this.random = options.random ?? Math.random;
    this.keepDeadLetters = options.keepDeadLetters ?? 1000;
    this.dropLog = new SummarizedLog(options.clock, (dropped, fields) =>
      options.log.warn('webhook backlog full: dropping the oldest waiting events', { url: options.label, maxBacklog: options.maxBacklog, dropped, ...fields }),
    );
    this.deadLog = new SummarizedLog(options.clock, (count, fields) =>
      options.log.warn('webhook events dead-lettered', { url: options.label, count, ...fields }),
    );
  }

  /** Events waiting, the ones in flight or waiting for a retry included. */
  get backlog(): number {
    return this.order.size;
  }

  /** When the oldest waiting event was queued, if any. */
  get oldestQueuedAt(): number | undefined {
    for (const entry of this.order) return entry.queuedAt;
    return undefined;
  }

  /** Queues an event; synchronous, so it is queued in the same step as the change it reports. */
  enqueue(entry: QueuedEvent): void {
    if (this.closed) return;
    let lane = this.lanes.get(entry.key);
    if (!lane) {
      lane = { key: entry.key, entries: [], state: 'idle' };
      this.lanes.set(entry.key, lane);
    }
    lane.entries.push(entry);
    this.order.add(entry);
    if (lane.state === 'idle') this.markReady(lane);
    if (this.order.size > this.options.maxBacklog) this.dropOldest();
    // Sending (signing, building the request) waits until the change that queued this is over.
    if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      queueMicrotask(() => {
        this.pumpScheduled = false;
        this.pump();
      });
    }
  }

  /** Stops: no more attempts, timers cleared, requests in flight aborted. What is queued stays unsent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const lane of this.lanes.values()) {
      this.options.clock.clearTimer(lane.timer);
      lane.abort?.abort();
    }
    this.ready.clear();
    this.dropLog.flush();
    this.deadLog.flush();
  }

  private markReady(lane: Lane): void {
    lane.state = 'ready';
    this.ready.add(lane);
  }

  private pump(): void {
    while (!this.closed && this.inFlight < this.concurrency && this.ready.size > 0) {
      const lane = this.ready.values().next().value as Lane;
      this.ready.delete(lane);
      const head = lane.entries[0];
      if (!head) {
        lane.state = 'idle';
        this.lanes.delete(lane.key);
        continue;
      }
      this.attempt(lane, head);
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
        if (this.closed) return;
        this.inFlight -= 1;
        lane.abort = undefined;
        this.settle(lane, entry, result);
        this.pump();
      });
  }

  private settle(lane: Lane, entry: QueuedEvent, outcome: AttemptOutcome): void {
    const { log, label, observer } = this.options;
    if (outcome.kind === 'delivered') {
      this.counts.delivered += 1;
      observer?.delivered();
      if (this.failing) {
        this.failing = false;
        log.info('webhook deliveries succeed again', { url: label });
      }
      this.finish(lane, entry, 'delivered');
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
      if (this.closed) return;
      this.markReady(lane);
      this.pump();
    });
  }

  private deadLetter(lane: Lane, entry: QueuedEvent, reason: string, now: number): void {
    const letter: DeadLetter = { event: entry.event, reason, attempts: entry.attempts, queuedAt: entry.queuedAt, at: now };
    this.remember(letter);
    this.counts.deadLetters += 1;
    this.options.observer?.deadLettered();
    this.deadLog.count({ id: entry.event.id, type: entry.event.type, reason, attempts: entry.attempts });
    this.finish(lane, entry, 'dead', letter);
  }

  /** Adds a dead letter to the list (also those read back from the outbox at start). */
  remember(letter: DeadLetter): void {
    this.deadLetters.push(letter);
    if (this.deadLetters.length > this.keepDeadLetters) this.deadLetters.splice(0, this.deadLetters.length - this.keepDeadLetters);
  }

  /** The head of `lane` is done with: the next one of its key may go. */
  private finish(lane: Lane, entry: QueuedEvent, how: Settlement, letter?: DeadLetter): void {
    lane.entries.shift();
    this.order.delete(entry);
    this.options.settled?.(entry, how, letter);
    if (lane.entries.length === 0) {
      lane.state = 'idle';
      this.lanes.delete(lane.key);
    } else {
      this.markReady(lane);
    }
  }

  /** Drops the oldest event not in flight: the head of its key, or the one right behind it. */
  private dropOldest(): void {
    for (const entry of this.order) {
      const lane = this.lanes.get(entry.key)!;
      const index = lane.entries.indexOf(entry);
      if (index === 0 && lane.state === 'sending') continue;
      lane.entries.splice(index, 1);
      this.order.delete(entry);
      this.counts.dropped += 1;
      this.options.observer?.dropped();
      this.dropLog.count({ id: entry.event.id, type: entry.event.type });
      this.options.settled?.(entry, 'dropped');
      if (lane.entries.length === 0) {
        // A lane waiting for a retry timer keeps it: the receiver was failing a moment ago.
        this.options.clock.clearTimer(lane.timer);
        lane.timer = undefined;
        this.ready.delete(lane);
        lane.state = 'idle';
        this.lanes.delete(lane.key);
      }
      return;
    }
  }
}

/**
 * A warning that may be due once per event: the first is written at once (with the event's
 * fields), later ones are counted and written as one line per `LOG_SUMMARY_MS`.
 */
export class SummarizedLog {
  private suppressed = 0;
  private timer: TimerHandle | undefined;
  private lastAt = -Infinity;

  constructor(
    private readonly clock: Clock,
    private readonly write: (count: number, fields: Record<string, unknown>) => void,
  ) {}

  count(fields: Record<string, unknown>): void {
    const now = this.clock.now();
    if (now - this.lastAt >= LOG_SUMMARY_MS && this.suppressed === 0) {
      this.lastAt = now;
      this.write(1, { first: fields });
      return;
    }
    this.suppressed += 1;
    this.timer ??= this.clock.setTimer(Math.max(0, this.lastAt + LOG_SUMMARY_MS - now), () => {
      this.timer = undefined;
      this.flush();
    });
  }

  flush(): void {
    this.clock.clearTimer(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    this.lastAt = this.clock.now();
    this.write(this.suppressed, { summarizedOverMs: LOG_SUMMARY_MS });
    this.suppressed = 0;
  }
}
