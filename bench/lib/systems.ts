import { join, resolve } from 'node:path';
import { BENCH_PUSHER_APP, type SystemName } from '../loadgen/wire.js';
import { BENCH_DIR, Child, freePort, presenceEntry, startNodeServer, startRedis, type Pinning, type ProbeResult } from './proc.js';
import { startRedisCluster, type RedisClusterMaster } from './redis-cluster.js';

export const SYSTEMS: SystemName[] = ['presence', 'ws', 'socketio', 'pusher'];

export const SYSTEM_LABELS: Record<SystemName, string> = {
  presence: 'Presence',
  ws: 'bare ws (ceiling)',
  socketio: 'Socket.IO + Redis',
  pusher: 'Presence, Pusher protocol',
};

/** Scenarios that measure the Pusher endpoint (multi-node: client events relayed between nodes); the others are about the model or the baselines. */
export const PUSHER_SCENARIOS: ReadonlySet<string> = new Set(['connections', 'fanout', 'multinode']);

/** One system under test: its server process(es) and, when it has one, its Redis. */
export interface RunningSystem {
  name: SystemName;
  /** `ws://127.0.0.1:PORT` per node. */
  urls: string[];
  servers: Child[];
  redis?: Child;
  /** `redis://127.0.0.1:PORT` of the system's Redis, when it has one. */
  redisUrl?: string;
  /** Presence on a Redis Cluster instead (`redis` and `redisUrl` then absent): its masters. */
  redisCluster?: RedisClusterMaster[];
  /** Every Redis process: the one `redis-server`, or the cluster's masters. */
  redisProcesses: Child[];
  serverCpuSeconds(): number;
  redisCpuSeconds(): number;
  probe(gc: boolean): Promise<ProbeResult[]>;
  stop(): Promise<void>;
}

export interface StartOptions {
  pinning: Pinning;
  nodes?: number;
  /** Presence: run through Redis even with one node (a cluster of one, to compare with larger ones). */
  redis?: boolean;
  /** Presence: through a Redis Cluster of 3 masters (REDIS_CLUSTER_NODES) instead of one Redis. */
  redisCluster?: boolean;
  /** Extra environment for Presence (limits, offline delay, …). */
  env?: Record<string, string>;
  /** Extra node flags for the server processes (e.g. `--cpu-prof`). */
  nodeFlags?: string[];
  /** Presence CLI entry to run instead of this repository's server. */
  presenceEntry?: string;
}

export async function startSystem(name: SystemName, options: StartOptions): Promise<RunningSystem> {
  const nodes = options.nodes ?? 1;
  if (options.redisCluster && name !== 'presence') throw new Error(`${name} has no Redis Cluster mode here`);
  const needsRedis = name === 'socketio' || ((name === 'presence' || name === 'pusher') && !options.redisCluster && (nodes > 1 || options.redis === true));
  const redis = needsRedis ? await startRedis(options.pinning.loadgen) : undefined;
  // Pinned like the single Redis: every master on the load generator's core.
  const cluster = options.redisCluster ? await startRedisCluster(options.pinning.loadgen) : undefined;
  const redisProcesses = redis ? [redis.child] : (cluster?.masters.map((m) => m.child) ?? []);
  const servers: Child[] = [];
  const urls: string[] = [];
  const stopAll = async () => {
    // Servers first: they close the sockets, so the load generator's ports do not linger.
    await Promise.all(servers.map((s) => s.stop()));
    await redis?.child.stop();
    await cluster?.stop();
  };
  try {
    for (let i = 0; i < nodes; i += 1) {
      const port = await freePort();
      const env: Record<string, string> = { PORT: String(port), HOST: '127.0.0.1' };
      let entry: string[];
      if (name === 'presence' || name === 'pusher') {
        entry = options.presenceEntry
          ? [...(options.presenceEntry.endsWith('.ts') ? ['--import', 'tsx'] : []), resolve(options.presenceEntry)]
          : presenceEntry();
        Object.assign(env, { LOG_LEVEL: 'warn', NODE_ENV: 'development' }, options.env ?? {});
        if (name === 'pusher') {
          Object.assign(env, { PRESENCE_PUSHER_APP_ID: BENCH_PUSHER_APP.appId, PRESENCE_PUSHER_KEY: BENCH_PUSHER_APP.key, PRESENCE_PUSHER_SECRET: BENCH_PUSHER_APP.secret });
        }
        if (redis) env.REDIS_URL = redis.url;
        if (cluster) env.REDIS_CLUSTER_NODES = cluster.seeds;
      } else {
        entry = ['--import', 'tsx', join(BENCH_DIR, 'baselines', name === 'ws' ? 'ws-server.ts' : 'socketio-server.ts')];
        if (redis) env.REDIS_URL = redis.url;
      }
      servers.push(await startNodeServer({ name: `${name}-${i}`, entry, env, port, cores: options.pinning.server, extraNodeFlags: options.nodeFlags }));
      urls.push(`ws://127.0.0.1:${port}`);
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return {
    name,
    urls,
    servers,
    redis: redis?.child,
    ...(redis ? { redisUrl: redis.url } : {}),
    ...(cluster ? { redisCluster: cluster.masters } : {}),
    redisProcesses,
    serverCpuSeconds: () => servers.reduce((sum, s) => sum + s.cpuSeconds(), 0),
    redisCpuSeconds: () => redisProcesses.reduce((sum, r) => sum + r.cpuSeconds(), 0),
    probe: (gc) => Promise.all(servers.map((s) => s.probe(gc))),
    stop: stopAll,
  };
}
