/**
 * Webhooks in a cluster (docs/webhooks.md#clusters): events queued in the shared store by the node
 * that writes each change, delivered by one node at a time per URL. First several servers in this
 * process over the in-process hub, then real server processes through a real redis-server (and a
 * real Redis Cluster), with a real HTTP receiver on loopback that fails on purpose and `kill -9`
 * of the delivering node mid-delivery.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import { DEFAULT_WEBHOOK_EVENT_TYPES, type WebhookEvent } from '@presence/protocol';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { resolveConfig } from '../src/config/config.js';
import { silentLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { TestClient, httpJson, sleep } from './support/harness.js';
import { RedisCluster } from './support/redis-cluster.js';
import { RedisServer, freePort } from './support/redis-server.js';
import { Receiver, SECRET, byKey } from './support/webhook-receiver.js';

async function metricOf(server: { url: string }, name: string): Promise<number> {
  const text = (await httpJson(server, '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : NaN;
}

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

  const node = async (hub: MemoryHub, urls: string[], nodeId: string, sweepMs?: number, webhooks: { maxBacklog?: number; giveUpMs?: number } = {}) => {
    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      nodeId,
      offlineDelayMs: 200,
      nodeLeaseMs: 600,
      syncIntervalMs: 1000,
      limits: { maxEventLoopLagMs: 0 },
      webhooks: { urls, secrets: [SECRET], events: [...DEFAULT_WEBHOOK_EVENT_TYPES], maxBacklog: 1000, timeoutMs: 5_000, giveUpMs: 60_000, ...webhooks },
    });
    const running = await startServer(config, {
      log: silentLogger,
      sharedService: new MemoryService(hub),
      webhooks: { retry: { baseDelayMs: 100, maxDelayMs: 1_000 } },
      ...(sweepMs !== undefined ? { clusterWebhooks: { sweepMs } } : {}),
    });
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

  it('changes on two nodes at the same moment: the last tab of a user on each node closing gives one user.offline, two users leaving gives one vacated; invisible is offline', async () => {
    const hub = new MemoryHub();
    const r = await Receiver.start();
    receivers.push(r);
    const a = await node(hub, [r.url], 'a');
    const b = await node(hub, [r.url], 'b');
    const ada1 = await connect(a, 'ada');
    const ada2 = await connect(b, 'ada');
    const bob = await connect(a, 'bob');
    const carol = await connect(b, 'carol');
    for (const client of [bob, carol]) assert.equal((await client.request({ type: 'join', channel: 'room' })).type, 'ack');
    // Two tabs of eve, on two nodes, leave the channel at the same moment: one member_left.
    const eve1 = await connect(a, 'eve');
    const eve2 = await connect(b, 'eve');
    for (const client of [eve1, eve2]) assert.equal((await client.request({ type: 'join', channel: 'hall' })).type, 'ack');
    const dan = await connect(a, 'dan');
    assert.equal((await dan.request({ type: 'join', channel: 'lobby' })).type, 'ack');
    await sleep(300);
    // The same moment on both nodes: each node still holds the other's session or member.
    await Promise.all([ada1.close(), ada2.close(), bob.close(), carol.close(), eve1.request({ type: 'leave', channel: 'hall' }), eve2.request({ type: 'leave', channel: 'hall' })]);
    assert.equal((await dan.request({ type: 'status', status: 'invisible' })).type, 'ack');
    await r.waitFor(() => r.delivered().some((e) => e.type === 'channel.vacated' && (e.data as { channel: string }).channel === 'room'), 10_000, 'room vacated');
    await r.waitFor(() => r.delivered().filter((e) => e.type === 'user.offline').length >= 4, 10_000, 'four users offline');
    await sleep(800);
    const delivered = r.delivered();
    assertOncePerId(delivered);
    const keys = byKey(delivered);
    assert.deepEqual(keys.get('user:ada'), ['user.online', 'user.offline'], 'one online, one offline for the two tabs');
    const room = keys.get('channel:room')!;
    assert.equal(room.filter((t) => t === 'channel.occupied').length, 1, `occupied once: ${room.join(', ')}`);
    assert.equal(room.filter((t) => t === 'channel.vacated').length, 1, `vacated once: ${room.join(', ')}`);
    assert.equal(room.at(-1), 'channel.vacated');
    assert.deepEqual(keys.get('channel:hall'), ['channel.member_joined eve', 'channel.occupied', 'channel.member_left eve', 'channel.vacated']);
    // Going invisible: what going offline produces.
    assert.deepEqual(keys.get('user:dan'), ['user.online', 'user.offline']);
    assert.deepEqual(keys.get('channel:lobby'), ['channel.member_joined dan', 'channel.occupied', 'channel.member_left dan', 'channel.vacated']);
  });

  it('dead letters, give-up and the backlog bound as on one node: shown by the delivering node (admin stats, metrics)', async () => {
    const hub = new MemoryHub();
    const r = await Receiver.start();
    receivers.push(r);
    // user.status refused (400: dead at once); user.meta failing past the give-up age; the rest fails until released.
    let release = false;
    r.answer = (request) =>
      request.event.type === 'user.status' ? { status: 400 } : request.event.type === 'user.meta' ? { status: 503 } : release ? { status: 200 } : { status: 503 };
    const a = await node(hub, [r.url], 'a', undefined, { maxBacklog: 4, giveUpMs: 1_500 });
    const b = await node(hub, [r.url], 'b', undefined, { maxBacklog: 4, giveUpMs: 1_500 });
    // Six users first, failing: past the bound of 4 the oldest waiting events (not in flight) go.
    for (const id of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6']) await connect(b, id);
    await r.waitFor(() => r.requests.length >= 6, 5_000, 'the users online, failing');
    const ada = await connect(b, 'ada');
    assert.equal((await ada.request({ type: 'status', status: 'busy' })).type, 'ack');
    assert.equal((await ada.request({ type: 'meta', meta: { name: 'Ada' } })).type, 'ack');
    await sleep(800);
    release = true;
    await r.waitFor(() => r.requests.some((q) => q.event.type === 'user.status'), 10_000, 'the refused user.status');
    await sleep(3_000);
    const holders = [a, b].filter((s) => s.webhooks!.targets[0].queue.counts.failedAttempts > 0);
    assert.equal(holders.length, 1, 'one node delivered');
    const holder = holders[0];
    const stats = (await httpJson(holder, '/realtime/admin/stats')).body;
    const target = stats.webhooks.targets[0];
    assert.ok(target.dropped >= 1, `dropped: ${target.dropped}`);
    assert.ok(target.deadLetters >= 2, `dead letters: ${target.deadLetters}`);
    const reasons = holder.webhooks!.targets[0].queue.deadLetters.map((d) => `${d.event.type} ${d.reason}`);
    assert.ok(reasons.includes('user.status http 400'), reasons.join(', '));
    assert.ok(reasons.includes('user.meta http 503'), `given up after the give-up age: ${reasons.join(', ')}`);
    assert.equal(r.requests.filter((q) => q.event.type === 'user.status').length, 1, 'a 400 is not retried');
    assert.ok((await metricOf(holder, 'presence_webhook_dead_letters_total')) >= 2);
    assert.ok((await metricOf(holder, 'presence_webhook_dropped_total')) >= 1);
  });

  it('the sweep repairs a queue missing from the pending index (a crash between the script and the index)', async () => {
    const hub = new MemoryHub();
    const r = await Receiver.start();
    receivers.push(r);
    const a = await node(hub, [r.url], 'a', 300);
    const target = a.webhooks!.targets[0].id;
    // As if a node had run a script and died before indexing: an event in a queue, nowhere in the index.
    const event = { id: 'crashed.1/user.online//zoe', type: 'user.online', createdAt: new Date().toISOString(), data: { userId: 'zoe', user: { userId: 'zoe', status: 'online', meta: {}, lastSeen: null, devices: [] } } };
    hub.pushWebhooks('user:zoe', [target], [JSON.stringify({ id: event.id, type: event.type, queuedAt: Date.now(), body: JSON.stringify(event) })], 100);
    assert.deepEqual(hub.pendingWebhookKeys(target), []);
    await r.waitFor(() => r.delivered().some((e) => e.id === event.id), 5_000, 'the swept event');
  });
});

// Real server processes through real Redis ------------------------------------------------------

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
const OFFLINE_DELAY_MS = 1500;
const LEASE_MS = 600;

interface NodeProcess {
  id: string;
  url: string;
  wsUrl: string;
  child: ChildProcess;
  log: string;
  exited: Promise<unknown>;
}

async function startNode(redisEnv: Record<string, string>, id: string, hookUrl: string, tries = 3): Promise<NodeProcess> {
  try {
    return await startNodeOnce(redisEnv, id, hookUrl);
  } catch (error) {
    // The free port was taken meanwhile (the other nodes' outgoing connections use the same range).
    if (tries > 1 && /EADDRINUSE/.test(String((error as Error).message))) return startNode(redisEnv, id, hookUrl, tries - 1);
    throw error;
  }
}

async function startNodeOnce(redisEnv: Record<string, string>, id: string, hookUrl: string): Promise<NodeProcess> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'REDIS_CLUSTER_NODES', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) env[key] = value;
  }
  Object.assign(env, {
    PORT: String(port),
    HOST: '127.0.0.1',
    ...redisEnv,
    PRESENCE_NODE_ID: id,
    PRESENCE_OFFLINE_DELAY_MS: String(OFFLINE_DELAY_MS),
    PRESENCE_NODE_LEASE_MS: String(LEASE_MS),
    PRESENCE_SYNC_INTERVAL_MS: '1000',
    PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
    PRESENCE_WEBHOOK_URLS: hookUrl,
    PRESENCE_WEBHOOK_SECRET: SECRET,
    // Shortened: a process test cannot wait an hour (docs/webhooks.md#retries).
    PRESENCE_WEBHOOK_GIVE_UP_MS: '60000',
    LOG_LEVEL: 'info',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const node: NodeProcess = { id, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/realtime`, child, log: '', exited: new Promise((resolve) => child.once('exit', resolve)) };
  child.stdout!.on('data', (chunk) => (node.log += chunk.toString()));
  child.stderr!.on('data', (chunk) => (node.log += chunk.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`node ${id} exited: ${node.log}`);
    const ready = await httpJson(node, '/readyz').catch(() => undefined);
    if (ready?.status === 200) return node;
    if (Date.now() > deadline) throw new Error(`node ${id} did not become ready: ${node.log}`);
    await sleep(50);
  }
}

async function stopNode(node: NodeProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  node.child.kill(signal);
  await node.exited;
}

const DELIVERING = 'delivering webhooks of this URL for the cluster';

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

interface Backend {
  env: Record<string, string>;
  stop(): Promise<void>;
}

function describeProcesses(name: string, start: () => Promise<Backend>, only?: 'basic'): void {
  describe(`webhooks in a cluster (server processes, ${name})`, { timeout: 240_000 }, () => {
    let backend: Backend;
    const nodes: NodeProcess[] = [];
    const clients: TestClient[] = [];
    const receivers: Receiver[] = [];
    before(async () => {
      backend = await start();
    });
    after(async () => {
      await backend?.stop();
    });
    afterEach(async () => {
      for (const client of clients.splice(0)) await client.close().catch(() => {});
      for (const node of nodes.splice(0)) await stopNode(node);
      for (const receiver of receivers.splice(0)) await receiver.close();
    });
    const node = async (id: string, hookUrl: string) => {
      const started = await startNode(backend.env, id, hookUrl);
      nodes.push(started);
      return started;
    };
    const connect = async (target: NodeProcess, userId: string): Promise<TestClient> => {
      const client = await TestClient.connect(target, { userId });
      clients.push(client);
      return client;
    };
    const receiver = async () => {
      const r = await Receiver.start();
      receivers.push(r);
      return r;
    };

    it('a user on two nodes, another on a third: each change once, one id, in order per user and channel, through 503s and a 429 with Retry-After', async () => {
      const r = await receiver();
      // Every event's first attempt fails: 429 with Retry-After: 2 for user.status, 503 for the others.
      r.answer = (request, nth) => (nth > 1 ? { status: 200 } : request.event.type === 'user.status' ? { status: 429, headers: { 'retry-after': '2' } } : { status: 503 });
      const [a, b, c] = [await node('a', r.url), await node('b', r.url), await node('c', r.url)];
      const ada1 = await connect(a, 'ada');
      await sleep(200);
      const ada2 = await connect(b, 'ada');
      const bob = await connect(c, 'bob');
      assert.equal((await ada1.request({ type: 'join', channel: 'room' })).type, 'ack');
      await sleep(200);
      assert.equal((await ada2.request({ type: 'join', channel: 'room' })).type, 'ack');
      assert.equal((await bob.request({ type: 'join', channel: 'room' })).type, 'ack');
      await sleep(200);
      assert.equal((await ada2.request({ type: 'status', status: 'busy' })).type, 'ack');
      await sleep(200);
      await ada1.close();
      await sleep(OFFLINE_DELAY_MS + 500);
      await ada2.close();
      await sleep(400);
      await bob.close();
      await r.waitFor(() => r.delivered().length === 11, 30_000, 'eleven events');
      await sleep(1500);
      const delivered = r.delivered();
      assertOncePerId(delivered);
      assert.equal(delivered.length, 11, 'nothing more');
      const keys = byKey(delivered);
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
      for (const event of delivered) assert.equal(r.requests.filter((q) => q.event.id === event.id).length, 2, `${event.id}: refused once, then delivered`);
      const status = r.requests.filter((q) => q.event.type === 'user.status');
      assert.ok(status[1].at - status[0].at >= 1900, `Retry-After honoured: ${status[1].at - status[0].at} ms`);
      assert.equal(nodes.filter((n) => n.log.includes(DELIVERING)).length, 1, 'one node delivered the URL');
    });

    if (only === 'basic') return;

    it('kill -9 of the delivering node mid-delivery: another node takes the lease and sends what was owed, same ids, in order; its users leave once, from the reaper', async () => {
      const r = await receiver();
      r.answer = () => 'stall';
      const a = await node('a', r.url);
      await until(() => a.log.includes(DELIVERING), 5_000, 'node a delivering');
      const [b, c] = [await node('b', r.url), await node('c', r.url)];
      // erin is on the node that will die, in a channel of her own.
      const erin = await connect(a, 'erin');
      assert.equal((await erin.request({ type: 'join', channel: 'lobby' })).type, 'ack');
      const carol = await connect(b, 'carol');
      const dave = await connect(c, 'dave');
      assert.equal((await carol.request({ type: 'join', channel: 'room' })).type, 'ack');
      await sleep(200);
      assert.equal((await dave.request({ type: 'join', channel: 'room' })).type, 'ack');
      assert.equal((await carol.request({ type: 'status', status: 'busy', message: 'carol at work' })).type, 'ack');
      // One request in flight per key (user:erin, user:carol, user:dave, channel:lobby, channel:room), none answered.
      await r.waitFor(() => new Set(r.requests.map((q) => q.event.id)).size === 5, 10_000, 'a request in flight per key');
      const inFlight = r.requests.map((q) => q.event.id);
      a.child.kill('SIGKILL');
      await a.exited;
      const killedAt = Date.now();
      r.answer = () => ({ status: 200 });
      // Owed: erin online, joined lobby, occupied lobby; carol online + status; dave online; room joined carol, occupied, joined dave.
      // The reap adds: lobby member_left erin + vacated, erin offline.
      await r.waitFor(() => r.delivered().length === 12, 30_000, 'the owed events and the reap');
      await sleep(1500);
      const delivered = r.delivered();
      assertOncePerId(delivered);
      assert.equal(delivered.length, 12, 'nothing more');
      const keys = byKey(delivered);
      assert.deepEqual(keys.get('user:erin'), ['user.online', 'user.offline']);
      assert.deepEqual(keys.get('user:carol'), ['user.online', 'user.status']);
      assert.deepEqual(keys.get('user:dave'), ['user.online']);
      assert.deepEqual(keys.get('channel:room'), ['channel.member_joined carol', 'channel.occupied', 'channel.member_joined dave']);
      assert.deepEqual(keys.get('channel:lobby'), ['channel.member_joined erin', 'channel.occupied', 'channel.member_left erin', 'channel.vacated']);
      for (const id of inFlight) {
        const sent = r.requests.filter((q) => q.event.id === id);
        assert.equal(sent.length, 2, `${id}: in flight at the kill, sent again by the next holder`);
        assert.deepEqual(sent[1].event, sent[0].event, 'the same event');
        assert.ok(sent[1].at >= killedAt);
      }
      const reaped = delivered.filter((e) => e.id.includes('.reap/'));
      assert.deepEqual(reaped.map((e) => e.type).sort(), ['channel.member_left', 'channel.vacated', 'user.offline']);
      assert.ok([b, c].some((n) => n.log.includes(DELIVERING)), 'another node took the lease');
    });
  });
}

describeProcesses('redis-server', async () => {
  const redis = await RedisServer.start();
  return { env: { REDIS_URL: redis.url }, stop: () => redis.stop() };
});

describeProcesses(
  'Redis Cluster',
  async () => {
    const cluster = await RedisCluster.start();
    return { env: { REDIS_CLUSTER_NODES: cluster.seeds.join(',') }, stop: () => cluster.stop() };
  },
  'basic',
);
