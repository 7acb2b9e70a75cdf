/**
 * Reads a Redis server's own counters (`INFO`, `PUBSUB`) for the scale-out scenario: commands
 * processed, messages published (PUBLISH and SPUBLISH, including those Lua scripts issue: Redis
 * counts a script's calls in `commandstats`), the subscribers of each pub/sub channel, and memory.
 * On a Redis Cluster one of these per master, each connected to its master alone: the counters are
 * the master's own. The only bench code that speaks Redis commands to a measured Redis.
 */
import { Redis } from 'ioredis';

export interface RedisSnapshot {
  /** Commands clients sent (a script counts once, whatever it calls). */
  commands: number;
  /** PUBLISH and SPUBLISH calls, from clients and from scripts. */
  published: number;
  /** `commandstats` calls by command name (`evalsha`, `hset`, …). */
  calls: Record<string, number>;
  usedMemory: number;
  netOutputBytes: number;
}

export interface PubSubChannels {
  /** Subscribers per channel (ordinary and sharded channels together). */
  subscribers: Record<string, number>;
}

export class RedisStats {
  private readonly client: Redis;

  private constructor(client: Redis) {
    this.client = client;
  }

  static async connect(url: string): Promise<RedisStats> {
    // No reconnects: the Redis measured is stopped with the run, perhaps before this client is
    // closed. A failed read rejects its command, so connection errors need no other handling.
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => null });
    client.on('error', () => undefined);
    await client.connect();
    return new RedisStats(client);
  }

  async snapshot(): Promise<RedisSnapshot> {
    const text = await this.client.info('all');
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(text)?.[1] ?? 0);
    const calls: Record<string, number> = {};
    for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[match[1]] = Number(match[2]);
    return {
      commands: field('total_commands_processed'),
      published: (calls.publish ?? 0) + (calls.spublish ?? 0),
      calls,
      usedMemory: field('used_memory'),
      netOutputBytes: field('total_net_output_bytes'),
    };
  }

  async channels(): Promise<PubSubChannels> {
    const subscribers: Record<string, number> = {};
    for (const [list, count] of [
      ['CHANNELS', 'NUMSUB'],
      ['SHARDCHANNELS', 'SHARDNUMSUB'],
    ] as const) {
      const names = (await this.client.call('PUBSUB', list)) as string[];
      if (names.length === 0) continue;
      const reply = (await this.client.call('PUBSUB', count, ...names)) as Array<string | number>;
      for (let i = 0; i < reply.length; i += 2) subscribers[String(reply[i])] = Number(reply[i + 1]);
    }
    return { subscribers };
  }

  close(): void {
    this.client.disconnect();
  }
}

/** The counters' growth between two snapshots (memory as the later value). */
export function redisDelta(before: RedisSnapshot, after: RedisSnapshot): RedisSnapshot {
  const calls: Record<string, number> = {};
  for (const [name, value] of Object.entries(after.calls)) {
    const grown = value - (before.calls[name] ?? 0);
    if (grown > 0) calls[name] = grown;
  }
  return {
    // The earlier snapshot's own INFO is counted in the later one.
    commands: Math.max(0, after.commands - before.commands - 1),
    published: after.published - before.published,
    calls,
    usedMemory: after.usedMemory,
    netOutputBytes: after.netOutputBytes - before.netOutputBytes,
  };
}

/** Several Redis processes' counters (a cluster's masters, or their deltas) added up. */
export function sumSnapshots(snapshots: RedisSnapshot[]): RedisSnapshot {
  const calls: Record<string, number> = {};
  for (const snapshot of snapshots) for (const [name, value] of Object.entries(snapshot.calls)) calls[name] = (calls[name] ?? 0) + value;
  const total = (pick: (s: RedisSnapshot) => number) => snapshots.reduce((sum, s) => sum + pick(s), 0);
  return {
    commands: total((s) => s.commands),
    published: total((s) => s.published),
    calls,
    usedMemory: total((s) => s.usedMemory),
    netOutputBytes: total((s) => s.netOutputBytes),
  };
}
