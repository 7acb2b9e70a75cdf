import { Redis } from 'ioredis';
import { RedisTransport } from '../src/broker/redis-transport.js';
import { describeClusterConformance } from './support/cluster-conformance.js';
import { RedisServer } from './support/redis-server.js';

describeClusterConformance({
  name: 'redis-server',
  async create() {
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
  },
});
