import type { PresenceEvent } from '../presence/events.js';
import type { WebhookSender } from './delivery-queue.js';
import type { ShownState } from './outbox-file.js';

/*
 * A webhook format: which events the presence events become, how they are ordered and sent, and
 * what they told receivers (so a restarted node can tell them that what it showed is gone). The
 * delivery (queues per URL, retries, the outbox file) is the same for every format: Presence's
 * own (webhooks.md) and Pusher's (pusher.md#webhooks).
 */

/** What the delivery needs of an event of any format: an id that names it and a type for logs. */
export interface OutgoingEvent {
  readonly id: string;
  readonly type: string;
}

export interface WebhookFormat<E extends OutgoingEvent = OutgoingEvent> {
  /** For logs. */
  readonly name: string;
  /** The outbox's file name in the data directory. */
  readonly outboxFile: string;
  /** The events a presence event stands for (none for most). Runs inside the change. */
  map(event: PresenceEvent): E[];
  /** Events of one key go out one at a time, in order. */
  key(event: E): string;
  /** The POST of one attempt to `url`. */
  sender(url: string): WebhookSender;
  /**
   * Whether an event says a channel got its first member or lost its last (in a cluster the
   * channel's index decides it again, so concurrent changes on two nodes report it once).
   */
  occupancy?(event: E): 'occupied' | 'vacated' | undefined;
  /** Records what `event` tells receivers. */
  track(event: E, shown: ShownState): void;
  /**
   * The name a native channel has in this format's events and `shown` state (Pusher's
   * `presence-X`), for a cluster's reap, which knows native names. @default the native name
   */
  shownChannel?(channel: string): string;
  /**
   * At start: the events that tell receivers that what the previous run showed is gone. In a
   * cluster, a reaping node's: `vacated` then names the channels that lost their last member
   * (default: every channel of `shown`).
   */
  reap(shown: ShownState, cause: string, now: number, vacated?: ReadonlySet<string>): E[];
}
