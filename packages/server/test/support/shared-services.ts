/**
 * The shared services a cluster test runs against: the in-process hub, a real `redis-server` on a
 * free port, and a real Redis Cluster of three masters. The conformance suite and the cluster
 * model test use all three.
 */
import { Redis } from 'ioredis';
import { MemoryHub, MemoryService } from '../../src/cluster/memory-service.js';
import { RedisService, redisKeys } from '../../src/cluster/redis-service.js';
import type { ServiceUnderTest } from './cluster-conformance.js';
import { RedisCluster, type ClusterNodeProcess } from './redis-cluster.js';
import { RedisServer } from './redis-server.js';

export async function memoryHubService(): Promise<ServiceUnderTest> {
  const hub = new MemoryHub();
  return {
    connect: () => new MemoryService(hub),
    goDown: async () => hub.goDown(),
    // The nodes come back one after another, as Redis clients on their own retry schedules do.
    comeBackEmpty: async () => hub.comeBack({ empty: true, staggerMs: 100 }),
    keys: async () => hub.keys(),
    close: async () => {},
  };
}

export async function redisServerService(): Promise<ServiceUnderTest> {
  const redis = await RedisServer.start();
  return {
    connect: () => new RedisService({ url: redis.url }),
    goDown: () => redis.kill(),
    comeBackEmpty: () => redis.restart(),
    async keys() {
      const client = new Redis(redis.url, { lazyConnect: true });
      await client.connect();
      try {
        return await client.keys('*');
      } finally {
        client.disconnect();
      }
    },
    close: () => redis.stop(),
  };
}

/**
 * A Redis Cluster of three masters. "Down" is the master that serves the node registry and the bus
 * (the `{presence}` slot), killed; "back empty" is that master restarted with its nodes.conf and no
 * data, rejoining with its slots. The user records on the other masters stay.
 */
export async function redisClusterService(): Promise<ServiceUnderTest> {
  const cluster = await RedisCluster.start();
  let down: ClusterNodeProcess | undefined;
  return {
    connect: () => new RedisService({ clusterNodes: cluster.seeds }),
    async goDown() {
      down = await cluster.masterOf(redisKeys().registry);
      await cluster.kill(down);
    },
    async comeBackEmpty() {
      if (down) await cluster.restart(down);
      down = undefined;
    },
    keys: () => cluster.keys(),
    close: () => cluster.stop(),
  };
}
