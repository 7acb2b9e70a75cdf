import { it } from 'node:test';
import { redisServerService as memoryHubService } from './support/shared-services.js';
import { ClusterNode, pause, eventually } from './support/cluster-nodes.js';
const ids = async (n: ClusterNode) => { await n.engine.loadChannel('room'); return n.engine.channelPresence('room', { limit: 100 }).members.map((m) => m.userId).sort().join(); };
const st = async (n: ClusterNode) => { await n.engine.loadUsers(['ann']); return n.engine.userPresence('ann', { trusted: true }).status; };
it('dbg', async () => {
  const service = await memoryHubService();
  const [a, b, c] = [await ClusterNode.start({ service: service.connect(), leaseTtlMs: 300 }), await ClusterNode.start({ service: service.connect(), leaseTtlMs: 300 }), await ClusterNode.start({ service: service.connect(), leaseTtlMs: 300 })];
  console.log('a', a.link.nodeId.slice(0,4), 'b', b.link.nodeId.slice(0,4), 'c', c.link.nodeId.slice(0,4));
  const obs = await b.connect('obs');
  await b.send(obs, { type: 'join', channel: 'room' });
  const ann = await a.connect('ann');
  await a.send(ann, { type: 'join', channel: 'room' });
  await eventually(async () => (await ids(a)) === 'ann,obs' && (await ids(b)) === 'ann,obs' && (await ids(c)) === 'ann,obs');
  await service.goDown();
  await pause(200);
  await a.send(ann, { type: 'status', status: 'invisible' });
  await service.comeBackEmpty();
  for (let i = 0; i < 25; i++) { await pause(100); console.log(Date.now() % 100000, [a, b, c].map((n) => n.link.isReady()).join(), await ids(a), await ids(b), await ids(c), await st(a), await st(b), await st(c)); }
  await a.stop(); await b.stop(); await c.stop();
});
