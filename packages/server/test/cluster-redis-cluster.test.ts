import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RedisService, redisKeys } from '../src/cluster/redis-service.js';
import { describeClusterConformance } from './support/cluster-conformance.js';
import { ClusterNode, eventually } from './support/cluster-nodes.js';
import { RedisCluster } from './support/redis-cluster.js';
import { redisClusterService } from './support/shared-services.js';

describeClusterConformance({ name: 'Redis Cluster (3 masters)', create: redisClusterService, timeoutMs: 240_000 });

describe('cluster on a Redis Cluster: a master that holds user records and not the registry', { timeout: 90_000 }, () => {
  it('killed and restarted empty: the nodes are not ready meanwhile, then restore the records it lost and write a status set meanwhile', async () => {
    const cluster = await RedisCluster.start();
    const nodes: ClusterNode[] = [];
    try {
      const registryMaster = await cluster.masterOf(redisKeys().registryTopic);
      let userId = '';
      for (let i = 0; !userId; i++) if ((await cluster.masterOf(redisKeys().user(`user${i}`))) !== registryMaster) userId = `user${i}`;
      const recordMaster = await cluster.masterOf(redisKeys().user(userId));
      const start = async () => {
        const node = await ClusterNode.start({ service: new RedisService({ clusterNodes: cluster.seeds }) });
        nodes.push(node);
        return node;
      };
      const [a, b] = [await start(), await start()];
      const session = await a.connect(userId);
      await a.send(session, { type: 'status', status: 'busy', message: 'Before' });
      await a.send(session, { type: 'meta', meta: { name: 'Ann' } });
      // As b's HTTP API would: it reads the user it does not follow, then follows them for a moment.
      const seenOnB = async () => {
        await b.engine.loadUsers([userId]);
        return b.engine.userPresence(userId, { trusted: true }).message;
      };
      await eventually(async () => (await seenOnB()) === 'Before', 5000, 'b to hear of the status');

      await cluster.kill(recordMaster);
      await eventually(async () => !a.link.isReady() && !b.link.isReady(), 5000, 'both nodes not ready');
      await a.send(session, { type: 'status', message: 'Meanwhile' });
      await cluster.restart(recordMaster);
      await eventually(async () => a.link.isReady() && b.link.isReady(), 30_000, 'both nodes ready again');
      await eventually(async () => (await seenOnB()) === 'Meanwhile', 10_000, 'b to hear of the message set meanwhile');

      const c = await start();
      await c.engine.loadUsers([userId]);
      const stored = c.link.get(userId);
      assert.equal(stored?.manual.status, 'busy', `the restored record: ${JSON.stringify(stored)}`);
      assert.equal(stored?.manual.message, 'Meanwhile');
      assert.deepEqual(stored?.meta, { name: 'Ann' });
    } finally {
      for (const node of nodes) await node.stop().catch(() => {});
      await cluster.stop();
    }
  });
});
