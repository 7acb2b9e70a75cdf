import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { LinkAddress } from './subscriber-link.js';
import { RoutedTopicSubscriber, type TopicEvents, type TopicRouter, type TopicSubscriber } from './topic-subscriber.js';

/*
 * The one place that knows whether the cluster runs on one Redis or on a Redis Cluster: it makes
 * the command client (ioredis `Redis` or `Cluster`, with TLS for rediss:// and the URL's
 * credentials) and the topic subscriber (classic SUBSCRIBE on one Redis, sharded SSUBSCRIBE per
 * shard on a Redis Cluster), and tells the Lua scripts which publish command to use.
 */

export type RedisMode = 'single' | 'cluster';

export interface RedisConnectionOptions {
  /** One Redis: a `redis://` or `rediss://` URL, optionally with `user:password@`. */
  url?: string;
  /** A Redis Cluster: seed nodes, each a `redis://`/`rediss://` URL or `host:port`, all with the same scheme and credentials. */
  clusterNodes?: string[];
  /** A client made elsewhere (a `Redis` or a `Cluster`); the subscriber connects with its options. */
  client?: Redis | Cluster;
}

export interface RedisConnection {
  readonly mode: RedisMode;
  /** Commands (and Lua scripts): auto-pipelined, failing fast while Redis is away. */
  readonly commands: Redis | Cluster;
  /** A topic subscriber on connections of its own. */
  topicSubscriber(events: TopicEvents): TopicSubscriber;
}

/**
 * The publish command for the Lua scripts: `PUBLISH` on one Redis; `SPUBLISH` on a Redis Cluster,
 * where a message goes only to the shard that owns the channel's slot (a script may only publish to
 * a channel of its own keys' slot: the channel must carry their hash tag).
 */
export function publishCommand(mode: RedisMode): 'publish' | 'spublish' {
  return mode === 'cluster' ? 'spublish' : 'publish';
}

/** Slots of a Redis Cluster. */
export const SLOTS = 16384;

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/**
 * The Redis Cluster slot of a key or shard channel (CLUSTER KEYSLOT): CRC16 (XMODEM) of its UTF-8
 * bytes modulo 16384, of only the part between the first `{` and the next `}` when that part is
 * not empty (the hash tag).
 */
export function keySlot(key: string): number {
  let bytes = Buffer.from(key, 'utf8');
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff];
  return crc % SLOTS;
}

/**
 * On a Redis Cluster: topics named by `name(i)` (i = 0, 1, …), one in a slot of each master. A
 * subscriber of these loses one whenever any master fails, restarts or gives up its slot, and gets
 * it back once that part of the cluster serves again; on one Redis, none.
 */
export async function masterProbeTopics(connection: RedisConnection, name: (i: number) => string): Promise<string[]> {
  if (connection.mode !== 'cluster') return [];
  const ranges = await (connection.commands as Cluster).cluster('SLOTS');
  const ownerOf = (slot: number) => ranges.find(([from, to]) => from <= slot && slot <= to)?.[2];
  const unprobed = new Set(ranges.map(([, , [host, port]]) => `${host}:${port}`));
  const topics: string[] = [];
  for (let i = 0; unprobed.size > 0 && i < 100_000; i++) {
    const owner = ownerOf(keySlot(name(i)));
    if (owner && unprobed.delete(`${owner[0]}:${owner[1]}`)) topics.push(name(i));
  }
  return topics;
}

/** A seed (`host:port` or a URL) as the address of a server, with the URL's credentials and TLS. */
export function seedAddress(seed: string): LinkAddress {
  const url = new URL(seed.includes('://') ? seed : `redis://${seed}`);
  const address: LinkAddress = { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 6379) };
  if (url.username) address.username = decodeURIComponent(url.username);
  if (url.password) address.password = decodeURIComponent(url.password);
  if (url.protocol === 'rediss:') address.tls = {};
  return address;
}

/** Credentials and TLS of an address, as ioredis options. */
function clientOptions(address: LinkAddress): RedisOptions {
  const options: RedisOptions = {};
  if (address.username !== undefined) options.username = address.username;
  if (address.password !== undefined) options.password = address.password;
  if (address.tls) options.tls = address.tls;
  return options;
}

/** The subscriber's address from a client's own options. */
function addressOf(options: RedisOptions): LinkAddress {
  const address: LinkAddress = { host: options.host ?? '127.0.0.1', port: options.port ?? 6379 };
  if (options.username) address.username = options.username;
  if (options.password) address.password = options.password;
  if (options.tls) address.tls = options.tls;
  return address;
}

// Retry forever, at most a second apart: Redis coming back must be noticed quickly. Jittered, so the
// nodes that lost Redis together do not all come back in the same instant.
const retryStrategy = (attempt: number) => Math.round(Math.min(50 * attempt, 1000) * (0.5 + Math.random() / 2));

export function openRedis(options: RedisConnectionOptions): RedisConnection {
  if (options.client) {
    return options.client instanceof Cluster ? clusterConnection(options.client, addressOf(options.client.options.redisOptions ?? {})) : singleConnection(options.client);
  }
  if (options.url !== undefined && options.clusterNodes !== undefined) throw new Error('give a Redis url or Redis Cluster nodes, not both');
  if (options.url !== undefined) {
    const commands = new Redis(options.url, {
      lazyConnect: true,
      enableAutoPipelining: true,
      retryStrategy,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
    });
    return singleConnection(commands);
  }
  if (options.clusterNodes !== undefined && options.clusterNodes.length > 0) {
    const seeds = options.clusterNodes.map(seedAddress);
    const clusterOptions: ClusterOptions = {
      lazyConnect: true,
      enableAutoPipelining: true,
      enableOfflineQueue: false,
      clusterRetryStrategy: retryStrategy,
      redisOptions: {
        ...clientOptions(seeds[0]),
        maxRetriesPerRequest: 1,
        // A node that died mid-command (before a failover) must not hold a command for ever.
        commandTimeout: 5000,
      },
    };
    const commands = new Cluster(
      seeds.map(({ host, port }) => ({ host, port })),
      clusterOptions,
    );
    return clusterConnection(commands, seeds[0]);
  }
  throw new Error('a Redis connection needs a url, cluster nodes or a client');
}

function singleConnection(commands: Redis): RedisConnection {
  const address = addressOf(commands.options);
  const router: TopicRouter = {
    kind: 'subscribe',
    async route(topics) {
      return new Map([['server', { address, groups: [topics] }]]);
    },
    invalidate() {},
  };
  return { mode: 'single', commands, topicSubscriber: (events) => new RoutedTopicSubscriber(router, events) };
}

/** `template`: the credentials and TLS of every node of the cluster. */
function clusterConnection(commands: Cluster, template: LinkAddress): RedisConnection {
  return { mode: 'cluster', commands, topicSubscriber: (events) => new RoutedTopicSubscriber(new SlotRouter(commands, template), events) };
}

/** Routes each topic to the master that owns its slot, from `CLUSTER SLOTS` (read again after any sign of a change). */
class SlotRouter implements TopicRouter {
  readonly kind = 'ssubscribe' as const;
  private owners?: Promise<string[]>;

  constructor(
    private readonly commands: Cluster,
    /** Credentials and TLS of every node. */
    private readonly template: LinkAddress,
  ) {}

  invalidate(): void {
    this.owners = undefined;
  }

  async route(topics: string[]): Promise<Map<string, { address: LinkAddress; groups: string[][] }>> {
    const owners = await (this.owners ??= this.readSlots());
    const bySlot = new Map<number, string[]>();
    for (const topic of topics) {
      const slot = keySlot(topic);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), topic]);
    }
    const routes = new Map<string, { address: LinkAddress; groups: string[][] }>();
    for (const [slot, group] of bySlot) {
      const owner = owners[slot];
      if (owner === undefined) throw new Error(`no master serves slot ${slot}`);
      let route = routes.get(owner);
      if (!route) {
        const at = owner.lastIndexOf(':');
        route = { address: { ...this.template, host: owner.slice(0, at), port: Number(owner.slice(at + 1)) }, groups: [] };
        routes.set(owner, route);
      }
      route.groups.push(group);
    }
    return routes;
  }

  private readSlots(): Promise<string[]> {
    const read = this.commands.cluster('SLOTS').then((ranges) => {
      const owners: string[] = new Array(SLOTS);
      for (const [from, to, [host, port]] of ranges) {
        // An empty host: the node answering does not know its own address; it is the one we asked.
        const key = `${host || this.template.host}:${port}`;
        for (let slot = from; slot <= to; slot++) owners[slot] = key;
      }
      return owners;
    });
    // A failed read is not kept: the next route asks again.
    read.catch(() => {
      if (this.owners === read) this.invalidate();
    });
    return read;
  }
}
