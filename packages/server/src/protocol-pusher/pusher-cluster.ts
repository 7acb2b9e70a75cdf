/*
 * What the Pusher endpoint needs from the other nodes of a cluster. Presence channels' members,
 * the offline delay and statuses travel through the presence model like every session's; what
 * Pusher adds are messages that are not presence (client events, events of the HTTP API), which
 * must reach the subscribers of their channel on every node, and the list of occupied channels
 * that the HTTP API answers for the whole cluster. The cluster layer implements this over its
 * shared service (cluster/pusher-relay.ts).
 */

/** A message of one Pusher channel, for the subscribers on other nodes. */
export interface RelayedEvent {
  /** The node it came from, which sent it to its own subscribers already. */
  node: string;
  channel: string;
  event: string;
  /** As sent on the wire: a string. */
  data: string;
  /** A client event on a presence channel: the sender's user. */
  userId?: string;
  /** An event of the HTTP API with `socket_id`: the connection it is not sent to. */
  except?: string;
}

export interface PusherCluster {
  readonly nodeId: string;
  /** Starts delivering a channel's messages here; resolves once those published from now on come. */
  follow(channel: string): Promise<void>;
  unfollow(channel: string): void;
  publish(event: RelayedEvent): void;
  /** These channels' local counts changed (see `PusherProtocol.localChannel`): written soon, together. */
  changed(channels: Iterable<string>): void;
  /** Every node's Pusher channels: name → Pusher subscriptions summed over the nodes. */
  readChannels(): Promise<Map<string, number>>;
  /** One channel's Pusher subscriptions summed over the nodes. */
  readSubscriptionCount(channel: string): Promise<number>;
}
