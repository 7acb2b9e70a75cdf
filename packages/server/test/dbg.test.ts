import { it } from 'node:test';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { ClusterNode, pause, eventually } from './support/cluster-nodes.js';
const ids = async (n: ClusterNode) => { await n.engine.loadChannel('room'); return n.engine.channelPresence('room', { limit: 100 }).members.map((m) => m.userId).sort().join(); };
it('dbg', async () => {
  const hub = new MemoryHub();
  const a = await ClusterNode.start({ service: new MemoryService(hub), leaseTtlMs: 300 });
  const b = await ClusterNode.start({ service: new MemoryService(hub), leaseTtlMs: 300 });
  console.log('a', a.link.nodeId.slice(0,4), 'b', b.link.nodeId.slice(0,4));
  const obs = await b.connect('obs');
  await b.send(obs, { type: 'join', channel: 'room' });
  const ann = await a.connect('ann');
  await a.send(ann, { type: 'join', channel: 'room' });
  await a.send(ann, { type: 'status', status: 'busy' });
  await eventually(async () => (await ids(b)) === 'ann,obs');
  hub.goDown();
  await pause(300);
  const cal = await b.connect('cal');
  await b.send(cal, { type: 'join', channel: 'room' });
  hub.comeBack({ empty: true, staggerMs: 100 });
  await eventually(async () => a.link.isReady() && b.link.isReady(), 10_000);
  await eventually(async () => (await ids(a)) === 'ann,cal,obs');
  console.log('LEARNT', Date.now() % 100000);
  for (let i = 0; i < 8; i++) { await pause(100); console.log(Date.now() % 100000, await ids(a), await ids(b)); }
  await a.stop(); await b.stop();
});
