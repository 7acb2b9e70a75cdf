/**
 * The two shared services a cluster test runs against: the in-process hub and a real
 * `redis-server` on a free port. The conformance suite and the cluster model test use both.
 */
import { Redis } from 'ioredis';
import { MemoryHub, MemoryTransport } from '../../src/broker/memory-transport.js';
import { RedisTransport } from '../../src/broker/redis-transport.js';
import type { SharedService } from './cluster-conformance.js';
import { RedisServer } from './redis-server.js';

export async function memoryHubService(): Promise<SharedService> {
  const hub = new MemoryHub();
  return {
    transport: () => new MemoryTransport(hub),
    goDown: async () => hub.goDown(),
    // The nodes come back one after another, as Redis clients on their own retry schedules do.
    comeBackEmpty: async () => hub.comeBack({ empty: true, staggerMs: 100 }),
    keys: async () => hub.keys(),
    close: async () => {},
  };
}

export async function redisServerService(): Promise<SharedService> {
  const redis = await RedisServer.start();
  return {
    transport: () => new RedisTransport({ url: redis.url }),
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
