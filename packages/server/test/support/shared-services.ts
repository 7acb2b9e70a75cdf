/**
 * The two shared services a cluster test runs against: the in-process hub and a real
 * `redis-server` on a free port. The conformance suite and the cluster model test use both.
 */
import { Redis } from 'ioredis';
import { MemoryHub, MemoryService } from '../../src/cluster/memory-service.js';
import { RedisService } from '../../src/cluster/redis-service.js';
import type { ServiceUnderTest } from './cluster-conformance.js';
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
