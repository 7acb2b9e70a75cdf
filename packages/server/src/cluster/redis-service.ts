import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';
import { masterProbeTopics, openRedis, publishCommand, type RedisConnection, type RedisConnectionOptions, type RedisMode } from './redis-connection.js';
import type { TopicSubscriber } from './topic-subscriber.js';
import type { NodeOp, SessionSnapshot } from '../presence/replication.js';
import type { WebhookGuard, WebhookWrite } from '../webhooks/cluster-queues.js';
import { forwardedJson, type ChannelEntry, type ForwardedWebhook, type Interest, type LeaseState, type NodeStats, type PusherChannelService, type ShardMessage, type SharedService, type StoredSession, type StoredUserFields, type UserShard } from './shared-service.js';

type Handlers = Parameters<SharedService['connect']>[0];
type Client = Redis | Cluster;

/**
 * Key layout. Every key a script touches at once shares a hash tag, and so does the topic it
 * publishes on, so each script runs unchanged on Redis Cluster: the registry and the reaping list
 * share `{prefix}`; a user's record, sessions and topic share `{user id}`; a channel's index and
 * topic share `{channel name}`; a node's index of users is alone in `{node id}`. The user record
 * keeps the name it had before sharding (`prefix:user:{id}`), so stored records carry over.
 */
export function redisKeys(prefix = 'presence') {
  return {
    registry: `{${prefix}}:registry`,
    reaping: `{${prefix}}:reaping`,
    nodeStats: `{${prefix}}:node-stats`,
    registryTopic: `{${prefix}}:registry:events`,
    nodeUsers: (nodeId: string) => `${prefix}:node-users:{${nodeId}}`,
    nodeOnline: (nodeId: string) => `${prefix}:node-online:{${nodeId}}`,
    user: (userId: string) => `${prefix}:user:{${userId}}`,
    userSessions: (userId: string) => `${prefix}:user:{${userId}}:sessions`,
    userTopic: (userId: string) => `${prefix}:user:{${userId}}:events`,
    channel: (name: string) => `${prefix}:channel:{${name}}:sessions`,
    channelTopic: (name: string) => `${prefix}:channel:{${name}}:events`,
    /** A Pusher channel's events that are not presence (client events, the HTTP API's), by its Pusher name. */
    pusherTopic: (channel: string) => `${prefix}:pusher:{${channel}}:events`,
    /** A node's Pusher channels and its subscriptions in each. */
    nodePusherChannels: (nodeId: string) => `${prefix}:node-pusher-channels:{${nodeId}}`,
    /** The registry of the layout before sharding: nodes still on it are another cluster. */
    previousRegistry: `{${prefix}}:nodes`,
    /**
     * A webhook URL's queue of one ordering key, in the key's slot: `user:<id>` beside the user's
     * shard, `channel:<name>` beside the channel's (docs/webhooks.md#clusters).
     */
    webhookQueue: (target: string, key: string) => {
      const colon = key.indexOf(':');
      const kind = key.slice(0, colon);
      if (colon === -1 || (kind !== 'user' && kind !== 'channel')) throw new Error(`not a webhook ordering key: ${key}`);
      return `${prefix}:${kind}:{${key.slice(colon + 1)}}:webhooks:${target}`;
    },
    /** A user's channel events on their way to their channels' queues. */
    webhookForward: (userId: string) => `${prefix}:user:{${userId}}:webhooks-forward`,
    /** A bucket of a URL's pending index: keys whose queue may hold events, spread over slots. */
    webhookPending: (target: string, bucket: number) => `${prefix}:webhooks-pending:{${target}:${bucket}}`,
    webhookLease: (target: string) => `${prefix}:webhooks-lease:{${target}}`,
  };
}

/** Buckets of each URL's pending index: no key is written by every change, and reading all stays cheap. */
export const WEBHOOK_PENDING_BUCKETS = 16;

function bucketOf(key: string): number {
  let hash = 0;
  for (let i = 0; i < key.length; i++) hash = (hash * 31 + key.charCodeAt(i)) >>> 0;
  return hash % WEBHOOK_PENDING_BUCKETS;
}

const GUARD_CODES: Record<WebhookGuard, string> = { always: 'a', first: 'f', empty: 'e', removed: 'r', occupied: 'o', vacated: 'v', left: 'l', emptied: 'x' };

const SCRIPTS = {
  lease: 3,
  drop_node: 3,
  write_ops: 2,
  write_user: 1,
  reap_user: 2,
  expire_orphans: 1,
  add_to_channel: 1,
  remove_from_channel: 1,
  webhook_enqueue: 1,
  channel_webhooks: 1,
  webhook_ack: 1,
  webhook_lease: 1,
} as const;

/** Scripts that queue webhook events: lib_webhooks.lua goes in front of them. */
const WITH_WEBHOOKS: ReadonlySet<string> = new Set(['write_ops', 'write_user', 'expire_orphans', 'webhook_enqueue', 'channel_webhooks']);

/** The Lua scripts ship beside the compiled code (`lua/` in the package), one file each. */
function scriptDirectory(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'lua', 'lease.lua'))) return join(dir, 'lua');
    dir = dirname(dir);
  }
  throw new Error('the Lua scripts (lua/*.lua) are missing from the server package');
}

interface ScriptCommands {
  lease(registry: string, reaping: string, nodeStats: string, nodeId: string, ttlMs: number, stats: string): Promise<[string, number, string[], string[], string[]]>;
  drop_node(registry: string, reaping: string, nodeStats: string, ...args: string[]): Promise<number>;
  write_ops(record: string, sessions: string, ...args: string[]): Promise<number | [number, number]>;
  write_user(user: string, ...args: string[]): Promise<number | [number, number]>;
  reap_user(record: string, sessions: string, ...args: string[]): Promise<number>;
  expire_orphans(sessions: string, ...args: string[]): Promise<string[] | [string[], number]>;
  webhook_enqueue(first: string, spec: string): Promise<number>;
  webhook_ack(queue: string, entry: string): Promise<number>;
  webhook_lease(lease: string, nodeId: string, ttlMs: string, hold: string): Promise<number>;
  add_to_channel(channel: string, ...args: string[]): Promise<number | string[]>;
  channel_webhooks(channel: string, ...args: string[]): Promise<number>;
  remove_from_channel(channel: string, ...args: string[]): Promise<number>;
}

export interface RedisServiceOptions extends RedisConnectionOptions {
  /** Key prefix, for several clusters sharing one Redis. @default 'presence' */
  prefix?: string;
}

/**
 * The only code that speaks Redis. Two connections: one for commands (auto-pipelined, so the
 * writes of one tick go out as one round trip), one subscribed to the bus. Commands fail fast
 * while Redis is away instead of queueing: the cluster link rewrites its whole state on return.
 */
export class RedisService implements SharedService, PusherChannelService {
  private readonly commands: Client;
  private readonly subscriber: TopicSubscriber;
  private readonly connection: RedisConnection;
  private readonly mode: RedisMode;
  private readonly prefix: string;
  private readonly keys: ReturnType<typeof redisKeys>;
  private handlers?: Handlers;
  private wasReady = false;
  private lost = false;
  private closing = false;
  /** Classic pub/sub on one Redis; sharded (SPUBLISH) on Redis Cluster, where a topic lives on its slot's shard. */
  private readonly publishCommand: string;
  private pusherHandler?: (payload: string) => void;
  /** Every Pusher channel topic starts so (see `redisKeys`). */
  private readonly pusherTopicStart: string;

  constructor(options: RedisServiceOptions) {
    this.connection = openRedis(options);
    this.commands = this.connection.commands;
    this.mode = this.connection.mode;
    this.publishCommand = publishCommand(this.mode).toUpperCase();
    this.prefix = options.prefix ?? 'presence';
    this.keys = redisKeys(this.prefix);
    this.pusherTopicStart = `${this.prefix}:pusher:{`;
    this.subscriber = this.connection.topicSubscriber({
      message: (topic, text) => {
        if (topic.startsWith(this.pusherTopicStart)) {
          this.pusherHandler?.(text);
          return;
        }
        let message: ShardMessage;
        try {
          message = JSON.parse(text) as ShardMessage;
        } catch {
          return;
        }
        this.handlers?.message(message);
      },
      // Topics that lost their subscription may have missed messages: the node goes through its
      // re-registration once they are back (everything it follows is read again).
      lost: () => this.connectionChanged(),
      resubscribed: () => {
        this.lost = true;
        this.connectionChanged();
      },
    });
    const directory = scriptDirectory();
    const library = readFileSync(join(directory, 'lib_webhooks.lua'), 'utf8');
    for (const [name, numberOfKeys] of Object.entries(SCRIPTS)) {
      // ioredis runs these with EVALSHA and falls back to EVAL (e.g. after Redis restarted).
      const lua = readFileSync(join(directory, `${name}.lua`), 'utf8');
      this.commands.defineCommand(name, { numberOfKeys, lua: WITH_WEBHOOKS.has(name) ? `${library}\n${lua}` : lua });
    }
    this.commands.on('error', () => {
      // Connection errors surface as disconnects; ioredis keeps retrying.
    });
    this.commands.on('ready', () => this.connectionChanged());
    this.commands.on('close', () => this.connectionChanged());
  }

  private get scripts(): ScriptCommands {
    return this.commands as unknown as ScriptCommands;
  }

  async connect(handlers: Handlers): Promise<void> {
    this.handlers = handlers;
    if (this.commands.status === 'wait') await this.commands.connect();
    // On a Redis Cluster, also a probe topic on every master: one that fails or restarts (and with
    // it the shards it holds) takes this node through re-registration, as losing the registry's does.
    const probes = await masterProbeTopics(this.connection, (i) => `${this.prefix}:probe:{${i}}`);
    await this.subscriber.subscribe([this.keys.registryTopic, ...probes]);
    this.wasReady = true;
  }

  private connectionChanged(): void {
    if (!this.wasReady || this.closing) return;
    const connected = this.isConnected();
    if (!connected && !this.lost) {
      this.lost = true;
      this.handlers?.disconnected();
    } else if (connected && this.lost) {
      this.lost = false;
      this.handlers?.reconnected();
    }
  }

  isConnected(): boolean {
    return !this.closing && this.commands.status === 'ready' && this.subscriber.isLive();
  }

  private topicsOf(interest: Interest): string[] {
    return [...(interest.users ?? []).map((id) => this.keys.userTopic(id)), ...(interest.channels ?? []).map((name) => this.keys.channelTopic(name))];
  }

  async follow(interest: Interest): Promise<void> {
    const topics = this.topicsOf(interest);
    // The subscriber subscribes again to everything after a reconnect or a move of a slot.
    for (let i = 0; i < topics.length; i += 1000) await this.subscriber.subscribe(topics.slice(i, i + 1000));
  }

  async unfollow(interest: Interest): Promise<void> {
    const topics = this.topicsOf(interest);
    for (let i = 0; i < topics.length; i += 1000) await this.subscriber.unsubscribe(topics.slice(i, i + 1000));
  }

  async renewLease(nodeId: string, ttlMs: number, stats: NodeStats): Promise<LeaseState> {
    const [now, registered, expired, nodes, reaping] = await this.scripts.lease(this.keys.registry, this.keys.reaping, this.keys.nodeStats, nodeId, ttlMs, JSON.stringify(stats));
    const dropped: LeaseState['reaping'] = [];
    for (let i = 0; i < reaping.length; i += 2) dropped.push({ node: reaping[i], since: Number(reaping[i + 1]) });
    return { now: Number(now), wasRegistered: registered === 1, expired, nodes, reaping: dropped };
  }

  async readNodeStats(): Promise<Map<string, NodeStats>> {
    const stored = await this.commands.hgetall(this.keys.nodeStats);
    return new Map(Object.entries(stored).map(([node, json]) => [node, JSON.parse(json) as NodeStats]));
  }

  async leaseDeadline(nodeId: string): Promise<number | null> {
    const deadline = (await this.commands.zscore(this.keys.registry, nodeId)) ?? (await this.commands.zscore(this.keys.reaping, nodeId));
    return deadline === null ? null : Number(deadline);
  }

  async dropNode(nodeId: string, onlyIfExpired: boolean): Promise<boolean> {
    const down: ShardMessage = { kind: 'down', node: nodeId };
    const dropped = await this.scripts.drop_node(this.keys.registry, this.keys.reaping, this.keys.nodeStats, this.publishCommand, this.keys.registryTopic, nodeId, onlyIfExpired ? '1' : '0', JSON.stringify(down));
    return dropped === 1;
  }

  async nodeStatus(nodeId: string): Promise<'live' | 'reaping' | 'gone'> {
    const [live, reaping] = await Promise.all([this.commands.zscore(this.keys.registry, nodeId), this.commands.zscore(this.keys.reaping, nodeId)]);
    return live !== null ? 'live' : reaping !== null ? 'reaping' : 'gone';
  }

  async indexUsers(nodeId: string, userIds: string[]): Promise<void> {
    if (userIds.length > 0) await this.commands.sadd(this.keys.nodeUsers(nodeId), ...userIds);
  }

  async indexedUsers(nodeId: string): Promise<string[]> {
    return this.commands.smembers(this.keys.nodeUsers(nodeId));
  }

  async listOnline(nodeId: string, add: string[], remove: string[]): Promise<void> {
    const key = this.keys.nodeOnline(nodeId);
    await Promise.all([add.length > 0 ? this.commands.sadd(key, ...add) : undefined, remove.length > 0 ? this.commands.srem(key, ...remove) : undefined]);
  }

  async replaceOnline(nodeId: string, userIds: string[]): Promise<void> {
    const key = this.keys.nodeOnline(nodeId);
    // One key, so one slot: the delete and the add apply together.
    const transaction = this.commands.multi().del(key);
    if (userIds.length > 0) transaction.sadd(key, ...userIds);
    await transaction.exec();
  }

  async readOnline(nodeIds: string[]): Promise<string[]> {
    // One set per node, each in its own slot: read apart, joined here.
    const lists = await Promise.all(nodeIds.map((node) => this.commands.smembers(this.keys.nodeOnline(node))));
    return [...new Set(lists.flat())];
  }

  async finishReap(nodeId: string): Promise<void> {
    await this.commands.del(this.keys.nodeUsers(nodeId), this.keys.nodeOnline(nodeId));
    await this.commands.zrem(this.keys.reaping, nodeId);
  }

  async writeOps(nodeId: string, userId: string, ops: NodeOp[], webhooks?: WebhookWrite): Promise<void> {
    const args: string[] = [];
    for (const op of ops) {
      if (op.op === 'session') args.push('s', op.session.id, String(op.session.moves ?? 0), JSON.stringify(op.session));
      else if (op.op === 'end') args.push('e', op.sessionId);
    }
    if (webhooks) args.push('w', this.webhookSpec(userId, webhooks));
    const head = `{"kind":"ops","user":${JSON.stringify(userId)},"node":${JSON.stringify(nodeId)},"ops":${JSON.stringify(ops)},"seq":`;
    const result = await this.scripts.write_ops(this.keys.user(userId), this.keys.userSessions(userId), this.publishCommand, this.keys.userTopic(userId), nodeId, head, ...args);
    if (webhooks && Array.isArray(result) && result[1] > 0) webhooks.dropped?.(result[1]);
  }

  /**
   * The webhook events of a write in a user's slot (lib_webhooks.lua): the user's go to the user's
   * queues, every other one to the user's forward list (moved on by the writer right after).
   */
  private webhookSpec(userId: string, webhooks: WebhookWrite): string {
    const own = `user:${userId}`;
    const forward = this.keys.webhookForward(userId);
    const e = webhooks.items.map((item) =>
      item.key === own
        ? { g: GUARD_CODES[item.guard], k: item.targets.map((target) => this.keys.webhookQueue(target, item.key)), v: item.entry }
        : { g: GUARD_CODES[item.guard], k: [forward], v: forwardedJson(item) },
    );
    // cjson decodes [] and {} alike; an empty list is fine for ipairs either way.
    return JSON.stringify({ m: webhooks.maxBacklog, e, ...(webhooks.onlyIfChanged ? { c: 1 } : {}) });
  }

  async reapUser(nodeId: string, userId: string, lastSeenAt: number): Promise<number> {
    return this.scripts.reap_user(this.keys.user(userId), this.keys.userSessions(userId), this.publishCommand, this.keys.userTopic(userId), nodeId, userId, String(lastSeenAt));
  }

  async expireOrphans(nodeId: string, userId: string, offlineDelayMs: number, webhooks?: WebhookWrite): Promise<SessionSnapshot[]> {
    if (!webhooks) {
      const removed = (await this.scripts.expire_orphans(this.keys.userSessions(userId), nodeId, String(offlineDelayMs))) as string[];
      return removed.map((json) => JSON.parse(json) as SessionSnapshot);
    }
    const [removed, dropped] = (await this.scripts.expire_orphans(this.keys.userSessions(userId), nodeId, String(offlineDelayMs), this.webhookSpec(userId, webhooks))) as [string[], number];
    if (dropped > 0) webhooks.dropped?.(dropped);
    return removed.map((json) => JSON.parse(json) as SessionSnapshot);
  }

  async readUsers(userIds: string[]): Promise<Map<string, UserShard>> {
    // Two reads per user in its own slot, auto-pipelined into one round trip.
    const shards = await Promise.all(userIds.map((id) => Promise.all([this.commands.hgetall(this.keys.user(id)), this.commands.hgetall(this.keys.userSessions(id))])));
    const result = new Map<string, UserShard>();
    userIds.forEach((id, i) => {
      const [{ '~v': seq, ...fields }, stored] = shards[i];
      const sessions: StoredSession[] = [];
      for (const value of Object.values(stored)) {
        // node \n moves \n orphaned at ('' while its node lives) \n snapshot JSON (write_ops.lua)
        const a = value.indexOf('\n');
        const b = value.indexOf('\n', a + 1);
        const c = value.indexOf('\n', b + 1);
        const entry: StoredSession = { node: value.slice(0, a), session: JSON.parse(value.slice(c + 1)) as SessionSnapshot };
        if (c > b + 1) entry.orphanedAt = Number(value.slice(b + 1, c));
        sessions.push(entry);
      }
      result.set(id, { seq: Number(seq ?? 0), fields: Object.keys(fields).length === 0 ? null : fields, sessions });
    });
    return result;
  }

  async readSeqs(userIds: string[]): Promise<Map<string, number>> {
    const seqs = await Promise.all(userIds.map((id) => this.commands.hget(this.keys.user(id), '~v')));
    return new Map(userIds.map((id, i) => [id, Number(seqs[i] ?? 0)]));
  }

  async writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean, webhooks?: WebhookWrite): Promise<void> {
    const pairs = Object.entries(fields).flat();
    if (webhooks) pairs.push('w', this.webhookSpec(userId, webhooks));
    const result = await this.scripts.write_user(this.keys.user(userId), this.publishCommand, this.keys.userTopic(userId), nodeId, userId, announce ? '1' : '0', ...pairs);
    if (webhooks && Array.isArray(result) && result[1] > 0) webhooks.dropped?.(result[1]);
  }

  async enqueueWebhooks(key: string, targets: readonly string[], entries: string[], maxBacklog: number): Promise<number> {
    if (targets.length === 0 || entries.length === 0) return 0;
    const queues = targets.map((target) => this.keys.webhookQueue(target, key));
    const spec = JSON.stringify({ m: maxBacklog, e: entries.map((v) => ({ g: 'a', k: queues, v })) });
    return this.scripts.webhook_enqueue(queues[0], spec);
  }

  async forwardedWebhooks(userId: string): Promise<ForwardedWebhook[]> {
    const raws = await this.commands.lrange(this.keys.webhookForward(userId), 0, -1);
    const out: ForwardedWebhook[] = [];
    for (const raw of raws) {
      try {
        out.push({ raw, ...(JSON.parse(raw) as Omit<ForwardedWebhook, 'raw'>) });
      } catch {
        // Not ours: left alone.
      }
    }
    return out;
  }

  async dropForwarded(userId: string, raws: string[]): Promise<void> {
    const key = this.keys.webhookForward(userId);
    await Promise.all(raws.map((raw) => this.commands.lrem(key, 1, raw)));
  }

  async markWebhooksPending(target: string, keys: string[]): Promise<void> {
    const buckets = new Map<number, string[]>();
    for (const key of keys) {
      const bucket = bucketOf(key);
      const list = buckets.get(bucket);
      if (list) list.push(key);
      else buckets.set(bucket, [key]);
    }
    await Promise.all([...buckets].map(([bucket, members]) => this.commands.sadd(this.keys.webhookPending(target, bucket), ...members)));
  }

  async pendingWebhookKeys(target: string): Promise<string[]> {
    const sets = await Promise.all(Array.from({ length: WEBHOOK_PENDING_BUCKETS }, (_, b) => this.commands.smembers(this.keys.webhookPending(target, b))));
    return sets.flat();
  }

  async settleWebhookKey(target: string, key: string): Promise<boolean> {
    const pending = this.keys.webhookPending(target, bucketOf(key));
    // Off the index first, then look: an event queued meanwhile is either seen here or indexed after.
    await this.commands.srem(pending, key);
    if ((await this.commands.llen(this.keys.webhookQueue(target, key))) === 0) return false;
    await this.commands.sadd(pending, key);
    return true;
  }

  async webhookHeads(target: string, keys: string[]): Promise<{ head: string | undefined; length: number }[]> {
    return Promise.all(
      keys.map(async (key) => {
        const queue = this.keys.webhookQueue(target, key);
        const [head, length] = await Promise.all([this.commands.lindex(queue, 0), this.commands.llen(queue)]);
        return { head: head ?? undefined, length };
      }),
    );
  }

  async popWebhook(target: string, key: string, entry: string): Promise<boolean> {
    return (await this.scripts.webhook_ack(this.keys.webhookQueue(target, key), entry)) === 1;
  }

  async webhookLease(target: string, nodeId: string, ttlMs: number, hold: boolean): Promise<boolean> {
    return (await this.scripts.webhook_lease(this.keys.webhookLease(target), nodeId, String(ttlMs), hold ? '1' : '0')) === 1;
  }

  async scanWebhooks(target: string): Promise<{ keys: string[]; forwarding: string[] }> {
    const suffix = `:webhooks:${target}`;
    const queues = await this.scan(`${this.prefix}:*:{*}${suffix}`);
    const forwards = await this.scan(`${this.prefix}:user:{*}:webhooks-forward`);
    const keys: string[] = [];
    for (const name of queues) {
      const match = /^[^{]*:(user|channel):\{(.*)\}:webhooks:/.exec(name.slice(this.prefix.length));
      if (match && name.endsWith(suffix)) keys.push(`${match[1]}:${match[2]}`);
    }
    const forwarding = forwards.map((name) => name.slice(`${this.prefix}:user:{`.length, -'}:webhooks-forward'.length));
    return { keys, forwarding };
  }

  /** Every key matching `pattern`: on Redis Cluster, on every master. */
  private async scan(pattern: string): Promise<string[]> {
    const clients: Redis[] = this.mode === 'cluster' ? (this.commands as Cluster).nodes('master') : [this.commands as Redis];
    const found = new Set<string>();
    for (const client of clients) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        for (const key of keys) found.add(key);
      } while (cursor !== '0');
    }
    return [...found];
  }

  async restoreUser(userId: string, fields: StoredUserFields): Promise<void> {
    // Field by field: a quiet activity write that reached the emptied Redis first keeps the rest coming back.
    await Promise.all(Object.entries(fields).map(([field, value]) => this.commands.hsetnx(this.keys.user(userId), field, value)));
  }

  async addToChannel(channel: string, entries: ChannelEntry[], reportFirst = false): Promise<string[]> {
    if (entries.length === 0) return [];
    const args = entries.flatMap((entry) => [entry.sessionId, entry.userId, entry.node]);
    if (reportFirst) args.unshift('~first');
    const result = await this.scripts.add_to_channel(this.keys.channel(channel), this.publishCommand, this.keys.channelTopic(channel), channel, ...args);
    return Array.isArray(result) ? result : [];
  }

  async channelWebhooks(channel: string, node: string, userId: string, sessionIds: string[], webhooks: WebhookWrite): Promise<void> {
    const e = webhooks.items.map((item) => ({ g: GUARD_CODES[item.guard], k: item.targets.map((target) => this.keys.webhookQueue(target, item.key)), v: item.entry }));
    const dropped = await this.scripts.channel_webhooks(this.keys.channel(channel), node, userId, JSON.stringify({ m: webhooks.maxBacklog, e }), ...sessionIds);
    if (dropped > 0) webhooks.dropped?.(dropped);
  }

  async removeFromChannel(channel: string, node: string, sessionIds: string[]): Promise<void> {
    if (sessionIds.length > 0) await this.scripts.remove_from_channel(this.keys.channel(channel), node, ...sessionIds);
  }

  async readChannel(channel: string): Promise<ChannelEntry[]> {
    const stored = await this.commands.hgetall(this.keys.channel(channel));
    return Object.entries(stored).map(([sessionId, value]) => {
      const at = value.indexOf('\n');
      return { sessionId, userId: value.slice(0, at), node: value.slice(at + 1) };
    });
  }

  async previousLayoutNodes(): Promise<string[]> {
    // The old registry held lease deadlines on Redis's clock, as this one does.
    const [seconds, micros] = await this.commands.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    return this.commands.zrangebyscore(this.keys.previousRegistry, now, '+inf');
  }

  // Pusher channels ------------------------------------------------------------------------------

  onPusherMessage(handler: (payload: string) => void): void {
    this.pusherHandler = handler;
  }

  async followPusherChannels(channels: string[]): Promise<void> {
    if (channels.length > 0) await this.subscriber.subscribe(channels.map((name) => this.keys.pusherTopic(name)));
  }

  async unfollowPusherChannels(channels: string[]): Promise<void> {
    if (channels.length > 0) await this.subscriber.unsubscribe(channels.map((name) => this.keys.pusherTopic(name)));
  }

  async publishPusherMessage(channel: string, payload: string): Promise<void> {
    const topic = this.keys.pusherTopic(channel);
    // On a Redis Cluster the topic lives on its slot's shard, where its followers subscribed.
    if (this.mode === 'cluster') await this.commands.spublish(topic, payload);
    else await this.commands.publish(topic, payload);
  }

  async writePusherChannels(nodeId: string, set: Record<string, number>, remove: string[], whole: boolean, ttlMs: number): Promise<void> {
    const key = this.keys.nodePusherChannels(nodeId);
    const pairs = Object.entries(set).flatMap(([name, count]) => [name, String(count)]);
    // One key, one slot: the steps go as one transaction.
    const steps = this.commands.multi();
    if (whole) steps.del(key);
    else if (remove.length > 0) steps.hdel(key, ...remove);
    if (pairs.length > 0) {
      steps.hset(key, ...pairs);
      steps.pexpire(key, ttlMs);
    }
    await steps.exec();
  }

  async readPusherChannels(nodeIds: string[]): Promise<Record<string, number>[]> {
    const lists = await Promise.all(nodeIds.map((node) => this.commands.hgetall(this.keys.nodePusherChannels(node))));
    return lists.map((list) => Object.fromEntries(Object.entries(list).map(([name, count]) => [name, Number(count)])));
  }

  async readPusherChannel(nodeIds: string[], channel: string): Promise<number> {
    const counts = await Promise.all(nodeIds.map((node) => this.commands.hget(this.keys.nodePusherChannels(node), channel)));
    return counts.reduce((sum, count) => sum + Number(count ?? 0), 0);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.subscriber.close();
    this.commands.disconnect();
  }
}
