import type { NodeCounts, NodeOp, SessionSnapshot } from '../presence/replication.js';
import type { WebhookGuard, WebhookItem, WebhookWrite } from '../webhooks/cluster-queues.js';

/*
 * What a shared service (Redis, Redis Cluster, or an in-process hub for tests and single-process
 * clusters) must do for the cluster. The state is sharded: each user is one shard (their record,
 * their sessions on every node, and a topic), each channel is one shard (an index of the sessions
 * in it, and a topic), and the node registry is one small shard touched only by lease renewals and
 * node lifecycle. Every method that writes touches one shard, as one atomic step that also
 * publishes on that shard's topic, so the order of a shard's messages is the order its writes ran.
 * A node receives a shard's messages only while it follows the shard: interest, not broadcast.
 * The cluster logic on top (cluster-link.ts) is the same for every service, so all of them pass
 * one conformance suite.
 */

/** A user record as stored: one string per field, so concurrent writers of different fields both win. */
export type StoredUserFields = Record<string, string>;

/** A session in a user's shard, with the node that owns it. */
export interface StoredSession {
  node: string;
  session: SessionSnapshot;
  /** Set once its node was declared dead (ms, the service's clock): it stays for the offline delay. */
  orphanedAt?: number;
}

export type ShardMessage =
  /**
   * One node's operations on one user's sessions (and typing, logout, unload for that user), in
   * the order they were made. `seq` is the user shard's sequence: it grows by one per message on
   * the user's topic, whatever the kind.
   */
  | { kind: 'ops'; user: string; seq: number; node: string; ops: NodeOp[] }
  /**
   * A user record after an announced write, whole. `node` is the writer; empty for a write made
   * for a dead node (its users' lastSeen at the reap), which is no live node's own write.
   */
  | { kind: 'record'; user: string; seq: number; node: string; fields: StoredUserFields }
  /**
   * A dead node's sessions of this user were removed from the shard (the reap); `fields` is the
   * record after its lastSeen was raised to the dead node's last lease renewal.
   */
  | { kind: 'reaped'; user: string; seq: number; node: string; fields: StoredUserFields }
  /** On a channel's topic: a session of `user` entered the channel (follow that user to see it). */
  | { kind: 'member'; channel: string; user: string }
  /** On the registry's topic: a node's lease was removed (expired and reaped, or the node left). */
  | { kind: 'down'; node: string };

/** One node's own counts, stored with its lease (see `NodeCounts`). */
export type NodeStats = NodeCounts;

export interface LeaseState {
  /** The service's own clock, ms since the epoch: the cluster's one clock. */
  now: number;
  /** Whether this node was still registered before this renewal (false after a reap or a flush). */
  wasRegistered: boolean;
  /** Nodes whose lease ran out (not yet dropped). */
  expired: string[];
  /** Every registered node, this one included. */
  nodes: string[];
  /** Dropped nodes whose sessions are still being removed from the user shards, with when their reap started. */
  reaping: { node: string; since: number }[];
}

/** A user's shard as read: the record's fields (null: no record), and every node's sessions. */
export interface UserShard {
  seq: number;
  fields: StoredUserFields | null;
  sessions: StoredSession[];
}

/** One entry of a channel's index: a session that is in the channel, its user and its node. */
export interface ChannelEntry {
  sessionId: string;
  userId: string;
  node: string;
}

/** An event of a user's change waiting in the user's forward list for another key's queue. */
export interface ForwardedWebhook {
  /** As stored: what `dropForwarded` takes. */
  raw: string;
  key: string;
  targets: string[];
  entry: string;
  /** Still to decide in the channel's slot: `always`, `occupied`, `vacated`, `left` or `emptied`. */
  guard: WebhookGuard;
  channel?: string;
  userId?: string;
}

/** A forwarded event as stored in a user's forward list (JSON). */
export function forwardedJson(item: WebhookItem): string {
  const guard: WebhookGuard = item.guard === 'occupied' || item.guard === 'vacated' || item.guard === 'left' || item.guard === 'emptied' ? item.guard : 'always';
  return JSON.stringify({ key: item.key, targets: item.targets, entry: item.entry, guard, channel: item.channel, userId: item.userId });
}

export interface Interest {
  users?: string[];
  channels?: string[];
}

export interface SharedService {
  /**
   * Connects and starts delivering the registry's messages. A shard's messages are delivered while
   * it is followed. `reconnected`: the service (or the connection to it) came back; whatever was
   * followed is followed again, but messages sent meanwhile are lost.
   */
  connect(handlers: { message(message: ShardMessage): void; reconnected(): void; disconnected(): void }): Promise<void>;
  isConnected(): boolean;
  /** Starts delivering these shards' messages; resolves once the service confirmed it. */
  follow(interest: Interest): Promise<void>;
  unfollow(interest: Interest): Promise<void>;

  // Registry: one small shard, touched only by leases and node lifecycle.
  /** Renews the lease and stores the node's counts beside it (what the admin stats show per node). */
  renewLease(nodeId: string, ttlMs: number, stats: NodeStats): Promise<LeaseState>;
  /** Every node's counts as of its last renewal. */
  readNodeStats(): Promise<Map<string, NodeStats>>;
  /** A node's lease deadline (its last renewal plus the lease lifetime, on the service's clock); null without a lease. */
  leaseDeadline(nodeId: string): Promise<number | null>;
  /**
   * Removes a node's lease, marks it for reaping and announces `down`. `onlyIfExpired`: false (and
   * nothing done) when the node renewed meanwhile. Returns whether this call dropped it.
   */
  dropNode(nodeId: string, onlyIfExpired: boolean): Promise<boolean>;
  /** Whether a node holds a lease, was dropped and is being reaped, or is unknown. */
  nodeStatus(nodeId: string): Promise<'live' | 'reaping' | 'gone'>;
  /** Adds users to a node's index of users it holds sessions of (written before their sessions). */
  indexUsers(nodeId: string, userIds: string[]): Promise<void>;
  /** The users a node's index lists (a superset of those it holds sessions of). */
  indexedUsers(nodeId: string): Promise<string[]>;
  /** Adds users to and removes them from a node's online list (its visible users with a session there). */
  listOnline(nodeId: string, add: string[], remove: string[]): Promise<void>;
  /**
   * Sets a node's online list to exactly these users, at re-registration: the service may have
   * lost the list, or kept one that misses the removals made while it was away.
   */
  replaceOnline(nodeId: string, userIds: string[]): Promise<void>;
  /** The union of these nodes' online lists. */
  readOnline(nodeIds: string[]): Promise<string[]>;
  /** The reap of a dropped node is over: its index, its online list and its reaping mark go. */
  finishReap(nodeId: string): Promise<void>;

  // User shards.
  /**
   * Applies one node's ops to a user's stored sessions and publishes them, in one step; with
   * `webhooks`, queues their webhook events in the same step (the user's in the user's queues,
   * the others in the user's forward list; see `forwardedWebhooks`).
   */
  writeOps(nodeId: string, userId: string, ops: NodeOp[], webhooks?: WebhookWrite): Promise<void>;
  /**
   * Marks a dead node's sessions in one user's shard as orphaned: they stay for the offline delay,
   * so a client can still resume its session on any node. When any was newly marked, the user's
   * stored lastSeen moves up to `lastSeenAt` (never back, not while invisible) if one of them was
   * attached, and `reaped` is published. Returns how many were newly marked. Safe to repeat.
   */
  reapUser(nodeId: string, userId: string, lastSeenAt: number): Promise<number>;
  /**
   * Removes a dead node's sessions orphaned at least `offlineDelayMs` ago from a user's shard;
   * returns them. With `webhooks`, queues the events this causes in the same step (guards
   * `removed` and `empty`).
   */
  expireOrphans(nodeId: string, userId: string, offlineDelayMs: number, webhooks?: WebhookWrite): Promise<SessionSnapshot[]>;
  readUsers(userIds: string[]): Promise<Map<string, UserShard>>;
  /** The shard sequence of each user (0 for a shard with nothing in it). */
  readSeqs(userIds: string[]): Promise<Map<string, number>>;
  /**
   * Writes some fields of a user record. `announce`: publish the whole record; otherwise (activity
   * timestamps) write quietly. The activity timestamps `lastSeenAt` and `lastActiveAt` only move
   * forward: a value older than the stored one is not written.
   */
  writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean, webhooks?: WebhookWrite): Promise<void>;
  /** Writes every field the stored record lacks (after the service lost its data); never overwrites one. */
  restoreUser(userId: string, fields: StoredUserFields): Promise<void>;

  // Channel shards: an index of who is where, so a node that follows a channel finds its members.
  /**
   * Adds sessions to a channel's index and announces each new user in it on the channel's topic.
   * `reportFirst` (webhooks): returns the users whose entry found no other user's listed (the
   * channel became occupied with them); otherwise an empty list.
   */
  addToChannel(channel: string, entries: ChannelEntry[], reportFirst?: boolean): Promise<string[]>;
  /** Takes sessions out of a channel's index, each only where `node` still owns it (a moved session stays listed). */
  removeFromChannel(channel: string, node: string, sessionIds: string[]): Promise<void>;
  readChannel(channel: string): Promise<ChannelEntry[]>;

  // Webhook queues (docs/webhooks.md#clusters): one list per URL (`target`) and ordering key, in
  // the key's slot (`user:<id>` in the user's, `channel:<name>` in the channel's).
  /** Queues events in one key's queues for these targets (guards are `always`); returns how many the bound dropped. */
  enqueueWebhooks(key: string, targets: readonly string[], entries: string[], maxBacklog: number): Promise<number>;
  /** The events of a user's changes waiting in the user's forward list for their channel's queue, oldest first. */
  forwardedWebhooks(userId: string): Promise<ForwardedWebhook[]>;
  /** Takes forwarded events off a user's forward list (after they reached their queues). */
  dropForwarded(userId: string, raws: string[]): Promise<void>;
  /**
   * In one step of a channel's slot: takes `sessionIds` of `userId` out of the channel's index
   * where `node` owns them (as `removeFromChannel`), then queues that user's forwarded channel
   * events in the channel's queues; `occupied` and `vacated` only if no other user's session is
   * listed then. Every item's key is `channel:<channel>`.
   */
  channelWebhooks(channel: string, node: string, userId: string, sessionIds: string[], webhooks: WebhookWrite): Promise<void>;
  /** Adds keys to a target's pending index (bucketed; several slots). */
  markWebhooksPending(target: string, keys: string[]): Promise<void>;
  pendingWebhookKeys(target: string): Promise<string[]>;
  /** A key's queue looked empty: off the index, then back on if it holds events; returns whether it does. */
  settleWebhookKey(target: string, key: string): Promise<boolean>;
  webhookHeads(target: string, keys: string[]): Promise<{ head: string | undefined; length: number }[]>;
  /** Pops `entry` if it is still the head of the queue. */
  popWebhook(target: string, key: string, entry: string): Promise<boolean>;
  /** Takes or renews (`hold`) or lets go of a target's delivery lease; true while `nodeId` holds it. */
  webhookLease(target: string, nodeId: string, ttlMs: number, hold: boolean): Promise<boolean>;
  /** The repair sweep: every key with a queue of `target`, and every user with a forward list (a full scan). */
  scanWebhooks(target: string): Promise<{ keys: string[]; forwarding: string[] }>;

  /**
   * Live nodes of the layout before sharding (one registry and one pub/sub channel for everything)
   * on the same service: they form a cluster of their own that this one cannot see.
   */
  previousLayoutNodes(): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * What the Pusher endpoint needs of the service in a cluster, beside the presence shards: a topic
 * per Pusher channel for the events that are not presence (client events, events of the HTTP API),
 * followed by the nodes with a Pusher subscriber of that channel, and each node's list of its Pusher
 * channels (what `GET /apps/:id/channels` reads). Messages on these topics are not stored: a node
 * that was not following when one was sent never sees it, as on Pusher.
 */
export interface PusherChannelService {
  /** Where the messages of followed Pusher channels go (set once, before following any). */
  onPusherMessage(handler: (payload: string) => void): void;
  /** Resolves once the service confirmed it: messages published from then on come here. */
  followPusherChannels(channels: string[]): Promise<void>;
  unfollowPusherChannels(channels: string[]): Promise<void>;
  publishPusherMessage(channel: string, payload: string): Promise<void>;
  /**
   * A node's Pusher channels with its count of Pusher subscriptions in each (0: only native
   * members of a presence channel there). `whole`: `set` is the whole list (the stored one is
   * replaced). The list expires `ttlMs` after its last write, so a crashed node's goes by itself.
   */
  writePusherChannels(nodeId: string, set: Record<string, number>, remove: string[], whole: boolean, ttlMs: number): Promise<void>;
  /** These nodes' lists. */
  readPusherChannels(nodeIds: string[]): Promise<Record<string, number>[]>;
  /** One channel's count summed over these nodes. */
  readPusherChannel(nodeIds: string[], channel: string): Promise<number>;
}

export function hasPusherChannels(service: SharedService): service is SharedService & PusherChannelService {
  return typeof (service as Partial<PusherChannelService>).publishPusherMessage === 'function';
}
