import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { describeClusterConformance } from './support/cluster-conformance.js';
import { httpJson, startTestServer } from './support/harness.js';
import { RedisServer } from './support/redis-server.js';
import { redisServerService } from './support/shared-services.js';

describeClusterConformance({ name: 'redis-server', create: redisServerService });

describe('upgrading from the layout before sharding', () => {
  let redis: RedisServer | undefined;
  after(async () => redis?.stop());

  it('a node that finds live nodes of the old layout on its Redis says so on /readyz (MIXED_CLUSTER) until they are gone, and reads their user records unchanged', async () => {
    redis = await RedisServer.start();
    const client = new Redis(redis.url, { lazyConnect: true });
    await client.connect();
    try {
      // What a node of the old layout leaves in Redis: its lease in `{presence}:nodes` (deadline on
      // Redis's clock) and user records in `presence:user:{id}`, version in `~v`.
      const [seconds] = await client.time();
      await client.zadd('{presence}:nodes', Number(seconds) * 1000 + 60_000, 'old-node@1234');
      await client.hset('presence:user:{ann}', { manual: JSON.stringify({ status: 'busy', state: null, message: 'Old layout', expiresAt: null }), meta: '{"name":"Ann"}', visibility: 'everyone', contacts: '[]', lastSeenAt: '1700000000000', lastActiveAt: '1700000000000', '~v': '7' });
      const server = await startTestServer({ redisUrl: redis.url, nodeLeaseMs: 300 });
      try {
        const ready = await httpJson({ url: `http://127.0.0.1:${server.port}` }, '/readyz');
        assert.equal(ready.status, 503);
        assert.equal(ready.body.error.code, 'MIXED_CLUSTER');
        const ann = await httpJson({ url: `http://127.0.0.1:${server.port}` }, '/realtime/users/ann/presence');
        assert.deepEqual(ann.body.user.meta, { name: 'Ann' }, 'an old user record reads unchanged');
        assert.equal(ann.body.user.lastSeen, new Date(1700000000000).toISOString());
        // The old node stops (its lease is gone): the new node is ready again.
        await client.zrem('{presence}:nodes', 'old-node@1234');
        const deadline = Date.now() + 5000;
        for (;;) {
          const again = await httpJson({ url: `http://127.0.0.1:${server.port}` }, '/readyz');
          if (again.status === 200) break;
          assert.ok(Date.now() < deadline, 'ready again once the old node is gone');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } finally {
        await server.shutdown();
      }
    } finally {
      client.disconnect();
    }
  });
});
