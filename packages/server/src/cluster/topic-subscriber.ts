import { SubscriberLink, type LinkAddress, type SubscribeKind } from './subscriber-link.js';

/**
 * Subscriptions to pub/sub topics, on one Redis (SUBSCRIBE) or spread over the shards of a Redis
 * Cluster (SSUBSCRIBE, each topic on the master that owns its slot). Topics survive reconnects,
 * failovers and slot migrations: a topic that lost its subscription is reported `lost`, and once it
 * is subscribed again (wherever it lives now) `resubscribed`, so the user can re-read whatever was
 * published meanwhile.
 */
export interface TopicSubscriber {
  /** Resolves once Redis acknowledged every topic; rejects if one could not be subscribed now (it is retried, and reported `resubscribed` once it is). */
  subscribe(topics: string[]): Promise<void>;
  /** Resolves once Redis acknowledged (or the connection holding a topic is gone anyway). */
  unsubscribe(topics: string[]): Promise<void>;
  /** True while no wanted topic is lost (or failed to subscribe) and not yet subscribed again. */
  isLive(): boolean;
  close(): void;
}

export interface TopicEvents {
  message(topic: string, payload: string): void;
  /** These topics lost their subscription (a connection dropped, a slot moved): messages are missed until `resubscribed`. */
  lost(topics: string[]): void;
  /** These topics are subscribed again after a loss or a failed `subscribe`: re-read what may have been missed. */
  resubscribed(topics: string[]): void;
}

/** Where topics are subscribed: one server, or the master owning each topic's slot. */
export interface TopicRouter {
  readonly kind: SubscribeKind;
  /**
   * The server of each topic, as groups of topics that may go in one command (one slot each on a
   * Redis Cluster): address key → address and groups.
   */
  route(topics: string[]): Promise<Map<string, { address: LinkAddress; groups: string[][] }>>;
  /** The topology may have changed (a MOVED reply, a failed connection): read it again before the next route. */
  invalidate(): void;
}

/** A retry after failures: 50 ms more per attempt, at most a second, jittered. */
function backoff(attempt: number): number {
  return Math.round(Math.min(50 * attempt, 1000) * (0.5 + Math.random() / 2));
}

interface Waiter {
  topics: Set<string>;
  resolve(): void;
  reject(error: Error): void;
}

export class RoutedTopicSubscriber implements TopicSubscriber {
  /** Topics the user wants. */
  private readonly wanted = new Set<string>();
  /** Acknowledged topics, on the link that holds them. */
  private readonly placed = new Map<string, SubscriberLink>();
  /**
   * Wanted topics not placed (yet, or any more): what the next run places. Kept beside the two
   * above so that a run costs what it places, not every topic held (a node following the 100,000
   * members of one channel subscribes one topic per member, one after the other).
   */
  private readonly unplaced = new Set<string>();
  /** Topics placed since the last `lost`/`resubscribed` report: reported together. */
  private readonly lostNow = new Set<string>();
  /** Topics that were lost or failed: their next placement is reported as `resubscribed`. */
  private readonly missed = new Set<string>();
  private readonly links = new Map<string, SubscriberLink>();
  private waiters: Waiter[] = [];
  private running?: Promise<void>;
  private again = false;
  private attempt = 0;
  private retryTimer?: NodeJS.Timeout;
  private lostReport?: NodeJS.Immediate;
  private closed = false;

  constructor(
    private readonly router: TopicRouter,
    private readonly events: TopicEvents,
  ) {}

  subscribe(topics: string[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the topic subscriber is closed'));
    const fresh = topics.filter((topic) => !this.placed.has(topic));
    for (const topic of topics) this.wanted.add(topic);
    for (const topic of fresh) this.unplaced.add(topic);
    if (fresh.length === 0) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ topics: new Set(fresh), resolve, reject }));
    this.kick();
    return done;
  }

  async unsubscribe(topics: string[]): Promise<void> {
    for (const topic of topics) {
      this.wanted.delete(topic);
      this.unplaced.delete(topic);
    }
    for (const waiter of this.waiters) {
      if (topics.some((topic) => waiter.topics.has(topic))) waiter.reject(new Error('unsubscribed before the subscription was acknowledged'));
    }
    this.waiters = this.waiters.filter((waiter) => !topics.some((topic) => waiter.topics.has(topic)));
    const byLink = new Map<SubscriberLink, string[]>();
    for (const topic of topics) {
      this.missed.delete(topic);
      const link = this.placed.get(topic);
      if (!link) continue;
      this.placed.delete(topic);
      byLink.set(link, [...(byLink.get(link) ?? []), topic]);
    }
    await Promise.all(
      [...byLink].map(([link, linkTopics]) =>
        link.unsubscribe(this.router.kind, linkTopics).catch(() => {
          // Closed meanwhile: nothing is subscribed there any more.
        }),
      ),
    );
    // A run may be about to use a link that holds nothing yet.
    if (!this.running) this.dropIdleLinks();
  }

  isLive(): boolean {
    if (this.closed) return false;
    // A topic being subscribed for the first time is not a loss: nothing was missed on it yet (and a
    // node that follows users all the time would never count as connected). Lost or failed ones are.
    for (const topic of this.missed) if (this.wanted.has(topic)) return false;
    return true;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.lostReport) clearImmediate(this.lostReport);
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error('the topic subscriber is closed'));
  }

  /** Places every wanted topic that is not placed; one run at a time, batching what arrives meanwhile. */
  private kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.running = this.place().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async place(): Promise<void> {
    const unplaced = [...this.unplaced];
    if (unplaced.length === 0) return;
    let failure: Error | undefined;
    const placeGroup = async (link: SubscriberLink, group: string[]) => {
      try {
        await link.subscribe(this.router.kind, group);
      } catch (error) {
        failure ??= error as Error;
        return;
      }
      for (const topic of group) {
        if (this.wanted.has(topic)) {
          this.placed.set(topic, link);
          this.unplaced.delete(topic);
        }
        // Unsubscribed while this was in flight: undo it.
        else link.unsubscribe(this.router.kind, [topic]).catch(() => {});
      }
    };
    try {
      const routes = await this.router.route(unplaced);
      await Promise.all(
        [...routes].map(async ([key, { address, groups }]) => {
          let link: SubscriberLink;
          try {
            link = await this.link(key, address);
          } catch (error) {
            failure ??= error as Error;
            return;
          }
          await Promise.all(groups.map((group) => placeGroup(link, group)));
        }),
      );
    } catch (error) {
      failure ??= error as Error;
    }
    this.settled(failure, new Set(unplaced));
  }

  /**
   * After a run over `attempted`: resolve callers whose topics are all placed, reject those whose
   * topics the run failed to place, report recovered topics, retry the rest.
   */
  private settled(failure: Error | undefined, attempted: Set<string>): void {
    const recovered = [...this.missed].filter((topic) => this.placed.has(topic));
    for (const topic of recovered) this.missed.delete(topic);
    const waiting: Waiter[] = [];
    for (const waiter of this.waiters) {
      for (const topic of [...waiter.topics]) if (this.placed.has(topic)) waiter.topics.delete(topic);
      if (waiter.topics.size === 0) waiter.resolve();
      else if (failure && [...waiter.topics].every((topic) => attempted.has(topic))) {
        for (const topic of waiter.topics) this.missed.add(topic);
        waiter.reject(failure);
      } else waiting.push(waiter);
    }
    this.waiters = waiting;
    if (recovered.length > 0) this.events.resubscribed(recovered);
    if (this.unplaced.size === 0) {
      this.attempt = 0;
      this.dropIdleLinks();
      return;
    }
    if (failure) this.router.invalidate();
    this.attempt += 1;
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, failure ? backoff(this.attempt) : 0);
    this.retryTimer.unref();
  }

  private async link(key: string, address: LinkAddress): Promise<SubscriberLink> {
    let link = this.links.get(key);
    if (!link || link.closed) {
      link = new SubscriberLink(address, {
        message: (topic, payload) => {
          // Also between the acknowledgement and its placement (the same read may hold both).
          if (this.wanted.has(topic)) this.events.message(topic, payload);
        },
        dropped: (topic) => this.lose(topic, link!),
        closed: (closed) => {
          if (this.links.get(key) === closed) this.links.delete(key);
          for (const [topic, holder] of this.placed) if (holder === closed) this.lose(topic, closed);
        },
      });
      this.links.set(key, link);
    }
    await link.ready();
    return link;
  }

  /** A topic's subscription is gone: report it (with the others lost in this turn) and place it again. */
  private lose(topic: string, link: SubscriberLink): void {
    if (this.placed.get(topic) !== link) return;
    this.placed.delete(topic);
    if (!this.wanted.has(topic) || this.closed) return;
    this.unplaced.add(topic);
    this.missed.add(topic);
    this.lostNow.add(topic);
    this.router.invalidate();
    this.lostReport ??= setImmediate(() => {
      this.lostReport = undefined;
      const topics = [...this.lostNow];
      this.lostNow.clear();
      if (topics.length > 0) this.events.lost(topics);
      this.kick();
    });
  }

  private dropIdleLinks(): void {
    // Usually every link holds topics: the scan ends as soon as each was seen once.
    const idle = new Set(this.links.values());
    for (const link of this.placed.values()) {
      if (idle.delete(link) && idle.size === 0) return;
    }
    for (const [key, link] of this.links) {
      if (idle.has(link)) {
        this.links.delete(key);
        link.close();
      }
    }
  }
}
