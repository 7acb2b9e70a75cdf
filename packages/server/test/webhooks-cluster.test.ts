/**
 * Webhooks in a cluster (docs/webhooks.md#clusters): events queued in the shared store by the node
 * that writes each change, delivered by one node at a time per URL. First several servers in this
 * process over the in-process hub, then real server processes through a real redis-server (and a
 * real Redis Cluster), with a real HTTP receiver on loopback that fails on purpose and `kill -9`
 * of the delivering node mid-delivery.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { DEFAULT_WEBHOOK_EVENT_TYPES, type WebhookEvent } from '@presence/protocol';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { resolveConfig } from '../src/config/config.js';
import { silentLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { TestClient, sleep } from './support/harness.js';
import { Receiver, SECRET, byKey } from './support/webhook-receiver.js';

/** Every id at most once among what was delivered, and each change once. */
function assertOncePerId(events: readonly WebhookEvent[]): void {
  const ids = events.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `an id delivered twice: ${ids.join(' ')}`);
}

describe('webhooks in a cluster (in-process nodes over the in-process hub)', { timeout: 60_000 }, () => {
  const servers: RunningServer[] = [];
  const clients: TestClient[] = [];
  const receivers: Receiver[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close().catch(() => {});
    for (const server of servers.splice(0)) await server.shutdown();
    for (const receiver of receivers.splice(0)) await receiver.close();
  });

  const node = async (hub: MemoryHub, urls: string[], nodeId: string) => {
    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      nodeId,
      offlineDelayMs: 200,
      nodeLeaseMs: 600,
      syncIntervalMs: 1000,
      limits: { maxEventLoopLagMs: 0 },
      webhooks: { urls, secrets: [SECRET], events: [...DEFAULT_WEBHOOK_EVENT_TYPES], maxBacklog: 1000, timeoutMs: 5_000, giveUpMs: 60_000 },
    });
    const running = await startServer(config, { log: silentLogger, sharedService: new MemoryService(hub), webhooks: { retry: { baseDelayMs: 100, maxDelayMs: 1_000 } } });
    servers.push(running);
    return { ...running, wsUrl: `ws://127.0.0.1:${running.port}/realtime` };
  };
  const connect = async (target: { wsUrl: string }, userId: string): Promise<TestClient> => {
    const client = await TestClient.connect(target, { userId });
    clients.push(client);
    return client;
  };

  it('a user on two nodes and another on one: each change delivered once cluster-wide, by one node, in order per user and channel', async () => {
    const hub = new MemoryHub();
    const r = await Receiver.start();
    receivers.push(r);
    // The first answer of each event is a 503: every event is retried once.
    r.answer = (_request, nth) => (nth === 1 ? { status: 503 } : { status: 200 });
    const a = await node(hub, [r.url], 'a');
    const b = await node(hub, [r.url], 'b');
    const ada1 = await connect(a, 'ada');
    await sleep(100);
    const ada2 = await connect(b, 'ada');
    const bob = await connect(b, 'bob');
    assert.equal((await ada1.request({ type: 'join', channel: 'room' })).type, 'ack');
    await sleep(100);
    assert.equal((await ada2.request({ type: 'join', channel: 'room' })).type, 'ack');
    assert.equal((await bob.request({ type: 'join', channel: 'room' })).type, 'ack');
    await sleep(100);
    assert.equal((await ada1.request({ type: 'status', status: 'busy' })).type, 'ack');
    await sleep(100);
    await ada1.close();
    await sleep(300);
    await ada2.close();
    await bob.close();
    // ada: online, status, offline; bob: online, offline; room: joined ada, occupied, joined bob, left ada, left bob, vacated.
    await r.waitFor(() => r.delivered().length === 11, 15_000, 'eleven events');
    await sleep(500);
    const delivered = r.delivered();
    assertOncePerId(delivered);
    const keys = byKey(delivered);
    console.log(delivered.map((e) => `${e.id} ${e.type}`).join('\n'));
    assert.deepEqual(keys.get('user:ada'), ['user.online', 'user.status', 'user.offline']);
    assert.deepEqual(keys.get('user:bob'), ['user.online', 'user.offline']);
    assert.deepEqual(keys.get('channel:room'), [
      'channel.member_joined ada',
      'channel.occupied',
      'channel.member_joined bob',
      'channel.member_left ada',
      'channel.member_left bob',
      'channel.vacated',
    ]);
    assert.ok(r.requests.every((q) => q.signed));
    // Each event was refused once, then delivered: a retry of the same id.
    for (const event of delivered) assert.equal(r.requests.filter((q) => q.event.id === event.id).length, 2, event.id);
    assert.equal(hub.webhookBacklog(a.webhooks!.targets[0].id).size, 0, 'nothing left in the queues');
  });
});
