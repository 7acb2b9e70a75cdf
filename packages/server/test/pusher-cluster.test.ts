/**
 * The Pusher endpoint in a cluster (docs/pusher.md#clusters): real server processes (the CLI, run
 * with tsx) sharing one real redis-server, then a real Redis Cluster, with the real, unmodified
 * pusher-js, Laravel Echo and `pusher` server library: presence across nodes, whispers and
 * triggered events relayed between nodes, the HTTP API answering for the cluster, and a reload
 * inside the offline delay that lands on the other node.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, it } from 'node:test';
import type { PresenceChannel } from 'pusher-js';
import type Echo from 'laravel-echo';
import PusherServer from 'pusher';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { resolveConfig } from '../src/config/config.js';
import { silentLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { httpJson, sleep } from './support/harness.js';
import { APP, echo, eventually, pusherBackend, pusherJs, type PusherEndpoint, type PusherJs } from './support/pusher.js';
import { RedisCluster } from './support/redis-cluster.js';
import { RedisServer, freePort } from './support/redis-server.js';

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
const OFFLINE_DELAY_MS = 1500;
/** Room for a loaded 2-core machine. */
const WAIT_MS = 8000;

interface PusherNode extends PusherEndpoint {
  id: string;
  url: string;
  child: ChildProcess;
  log: string;
}

/** Starts a node; again on another port when the free port found was taken meanwhile. */
async function startNode(env: Record<string, string>, id: string): Promise<PusherNode> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startNodeOnce(env, id);
    } catch (error) {
      if (attempt >= 3 || !/EADDRINUSE/.test(String(error))) throw error;
    }
  }
}

async function startNodeOnce(env: Record<string, string>, id: string): Promise<PusherNode> {
  const port = await freePort();
  const childEnv: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'REDIS_CLUSTER_NODES', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) childEnv[key] = value;
  }
  Object.assign(childEnv, {
    PORT: String(port),
    HOST: '127.0.0.1',
    ...env,
    PRESENCE_NODE_ID: id,
    PRESENCE_PUSHER_APP_ID: APP.appId,
    PRESENCE_PUSHER_KEY: APP.key,
    PRESENCE_PUSHER_SECRET: APP.secret,
    PRESENCE_OFFLINE_DELAY_MS: String(OFFLINE_DELAY_MS),
    PRESENCE_NODE_LEASE_MS: '600',
    PRESENCE_SYNC_INTERVAL_MS: '1000',
    PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
    LOG_LEVEL: 'warn',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const node: PusherNode = { id, port, url: `http://127.0.0.1:${port}`, backend: pusherBackend(port), child, log: '' };
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

async function stopNode(node: PusherNode): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  const exited = new Promise((resolve) => node.child.once('exit', resolve));
  node.child.kill('SIGTERM');
  await exited;
}

/** A promise, or a failure naming what did not come within WAIT_MS. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function subscribed(channel: { name: string; bind(event: string, callback: (data: unknown) => void): unknown }): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${channel.name}: no subscription_succeeded within ${WAIT_MS} ms`)), WAIT_MS);
    channel.bind('pusher:subscription_succeeded', () => {
      clearTimeout(timer);
      resolve();
    });
    channel.bind('pusher:subscription_error', (error) => {
      clearTimeout(timer);
      reject(new Error(`${channel.name}: subscription refused: ${JSON.stringify(error)}`));
    });
  });
}

async function get(node: PusherEndpoint, path: string, params?: Record<string, string>): Promise<Record<string, unknown>> {
  const response = await node.backend.get({ path, params });
  return (await response.json()) as Record<string, unknown>;
}

/** Polls a query until it answers `expected` (the nodes' lists are written a moment after a change). */
async function answers(node: PusherEndpoint, path: string, params: Record<string, string> | undefined, expected: unknown): Promise<void> {
  let last: unknown;
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    last = await get(node, path, params);
    try {
      assert.deepEqual(last, expected);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    await sleep(50);
  }
}

const verifier = new PusherServer({ appId: APP.appId, key: APP.key, secret: APP.secret, host: '127.0.0.1' });

/** An app's webhook endpoint on loopback: records every POST, answers 200; its events are checked as an app's backend checks them. */
async function webhookReceiver(): Promise<{ url: string; server: Server; events(): { name: string; channel: string; user_id?: string }[] }> {
  const deliveries: { headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const events = () =>
    deliveries.flatMap((delivery) => {
      assert.equal(delivery.headers['x-pusher-key'], APP.key);
      const webhook = verifier.webhook({ headers: delivery.headers as Record<string, string>, rawBody: delivery.body });
      assert.ok(webhook.isValid(), 'X-Pusher-Key and X-Pusher-Signature check out');
      return webhook.getEvents() as unknown as { name: string; channel: string; user_id?: string }[];
    });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/pusher/webhooks`, server, events };
}

interface Backend {
  env: Record<string, string>;
  stop(): Promise<void>;
}

function describeCluster(name: string, start: () => Promise<Backend>, full: boolean): void {
  describe(`the Pusher endpoint on two nodes through ${name}`, { timeout: 360_000 }, () => {
    let backend: Backend | undefined;
    let nodes: PusherNode[] = [];
    const pages: PusherJs[] = [];
    const echos: Echo<'pusher'>[] = [];

    async function pair(env: Record<string, string> = {}): Promise<[PusherNode, PusherNode]> {
      backend ??= await start();
      const tag = Math.random().toString(36).slice(2, 7);
      const results = await Promise.allSettled([startNode({ ...backend.env, ...env }, `a-${tag}`), startNode({ ...backend.env, ...env }, `b-${tag}`)]);
      // Every node that started is stopped after the test, also when the other one failed.
      for (const result of results) if (result.status === 'fulfilled') nodes.push(result.value);
      for (const result of results) if (result.status === 'rejected') throw result.reason;
      const [a, b] = results.map((result) => (result as PromiseFulfilledResult<PusherNode>).value);
      return [a, b];
    }

    const page = async (node: PusherNode, user: Parameters<typeof pusherJs>[1] = {}) => {
      const client = await pusherJs(node, user);
      pages.push(client);
      return client;
    };
    const echoOn = async (node: PusherNode, user: Parameters<typeof echo>[1] = {}) => {
      const instance = await echo(node, user);
      echos.push(instance);
      return instance;
    };

    /** Everything a test started ends, also after a failure: nothing may keep the test process alive. */
    async function cleanUp(): Promise<void> {
      for (const client of pages.splice(0)) client.disconnect();
      for (const instance of echos.splice(0)) instance.disconnect();
      await Promise.all(nodes.map((node) => stopNode(node)));
      nodes = [];
      await backend?.stop();
      backend = undefined;
    }
    afterEach(cleanUp);
    after(cleanUp);

    it("Echo's here/joining/leaving and whisper/listenForWhisper across nodes; a private channel's whispers too", async () => {
      const [a, b] = await pair();
      const ann = await echoOn(a, { userId: 'ann', info: { name: 'Ann' } });
      const annRoom = ann.join('room.1');
      const annSaw: string[] = [];
      const annHeard: unknown[] = [];
      annRoom.joining((m: { name: string }) => annSaw.push(`joining ${m.name}`));
      annRoom.leaving((m: { name: string }) => annSaw.push(`leaving ${m.name}`));
      annRoom.listenForWhisper('typing', (e: unknown) => annHeard.push(e));
      await within(new Promise((resolve) => annRoom.here(resolve)), "ann's here");

      const bob = await echoOn(b, { userId: 'bob', info: { name: 'Bob' } });
      const bobRoom = bob.join('room.1');
      const bobHeard: unknown[] = [];
      bobRoom.listenForWhisper('typing', (e: unknown) => bobHeard.push(e));
      const here = (await within(new Promise((resolve) => bobRoom.here(resolve)), "bob's here")) as { name: string }[];
      assert.deepEqual(here.map((m) => m.name).sort(), ['Ann', 'Bob'], 'bob, on the other node, sees ann at once');
      await eventually(() => (annSaw.includes('joining Bob') ? true : undefined), 'ann sees bob join', WAIT_MS);

      annRoom.whisper('typing', { from: 'ann' });
      await eventually(() => bobHeard[0], 'ann\'s whisper on the other node', WAIT_MS);
      bobRoom.whisper('typing', { from: 'bob' });
      await eventually(() => annHeard[0], 'bob\'s whisper on the other node', WAIT_MS);
      assert.deepEqual(bobHeard, [{ from: 'ann' }], 'never back to the sender, once to the others');
      assert.deepEqual(annHeard, [{ from: 'bob' }]);

      const dmHeard: unknown[] = [];
      const annDm = ann.private('dm.7');
      bob.private('dm.7').listenForWhisper('ping', (e: unknown) => dmHeard.push(e));
      await within(new Promise((resolve) => annDm.subscribed(() => resolve(undefined))), 'the private channel');
      await sleep(200);
      annDm.whisper('ping', { n: 1 });
      await eventually(() => dmHeard[0], 'a private whisper on the other node', WAIT_MS);

      bob.leave('room.1');
      await eventually(() => (annSaw.includes('leaving Bob') ? true : undefined), 'an explicit leave on the other node, at once', WAIT_MS);
    });

    it('a server-triggered event (the pusher library, on node A) reaches subscribers on node B; socket_id is left out on any node; /batch_events too', async () => {
      const [a, b] = await pair();
      const onA = await page(a, { userId: 'ua' });
      const onB = await page(b, { userId: 'ub' });
      const got: string[] = [];
      for (const [client, who] of [[onA, 'A'], [onB, 'B']] as const) {
        for (const channelName of ['ticker', 'private-orders', 'presence-shop']) {
          const channel = client.subscribe(channelName);
          channel.bind('shipped', (data: { id: number }) => got.push(`${who} ${channelName} ${data.id}`));
          await subscribed(channel);
        }
      }
      await a.backend.trigger(['ticker', 'private-orders', 'presence-shop'], 'shipped', { id: 1 });
      await eventually(() => (got.length === 6 ? true : undefined), 'six deliveries', WAIT_MS);
      assert.deepEqual(got.sort(), ['A presence-shop 1', 'A private-orders 1', 'A ticker 1', 'B presence-shop 1', 'B private-orders 1', 'B ticker 1']);

      got.length = 0;
      // socket_id of a connection on B, sent through A; a batch through B.
      await a.backend.trigger('ticker', 'shipped', { id: 2 }, { socket_id: onB.connection.socket_id });
      await b.backend.triggerBatch([
        { channel: 'private-orders', name: 'shipped', data: JSON.stringify({ id: 3 }) },
        { channel: 'presence-shop', name: 'shipped', data: JSON.stringify({ id: 4 }), socket_id: onA.connection.socket_id },
      ]);
      await eventually(() => (got.length === 4 ? true : undefined), 'four deliveries', WAIT_MS);
      await sleep(200);
      assert.deepEqual(got.sort(), ['A private-orders 3', 'A ticker 2', 'B presence-shop 4', 'B private-orders 3']);
    });

    it('the HTTP API answers for the cluster: channels, counts and users from any node; terminate_connections ends the user on every node', async () => {
      const [a, b] = await pair();
      const onA = await page(a, { userId: 'ann', info: { name: 'Ann' } });
      const onB = await page(b, { userId: 'bob' });
      const annOnB = await page(b, { userId: 'ann' });
      for (const client of [onA, onB, annOnB]) await subscribed(client.subscribe('presence-q.stats'));
      await subscribed(onB.subscribe('q.ticker'));
      await subscribed(onA.subscribe('private-q.orders'));
      await subscribed(onB.subscribe('private-q.orders'));

      for (const node of [a, b]) {
        await answers(node, '/channels/presence-q.stats', { info: 'user_count,subscription_count' }, { occupied: true, user_count: 2, subscription_count: 3 });
        await answers(node, '/channels/q.ticker', { info: 'subscription_count' }, { occupied: true, subscription_count: 1 });
        await answers(node, '/channels/private-q.orders', { info: 'subscription_count' }, { occupied: true, subscription_count: 2 });
        await answers(node, '/channels/presence-q.stats/users', undefined, { users: [{ id: 'ann' }, { id: 'bob' }] });
        await answers(node, '/channels', { filter_by_prefix: 'q.' }, { channels: { 'q.ticker': {} } });
        await answers(node, '/channels', { filter_by_prefix: 'presence-q.', info: 'user_count' }, { channels: { 'presence-q.stats': { user_count: 2 } } });
        await answers(node, '/channels', undefined, { channels: { 'presence-q.stats': {}, 'private-q.orders': {}, 'q.ticker': {} } });
      }

      // Through A, for a user whose connections are on both nodes.
      const removed: string[] = [];
      const watched = onB.channel('presence-q.stats') as PresenceChannel;
      watched.bind('pusher:member_removed', (m: { id: string }) => removed.push(m.id));
      await a.backend.terminateUserConnections('ann');
      await eventually(() => (annOnB.connection.state !== 'connected' ? true : undefined), "ann's connection on B ends", WAIT_MS);
      await eventually(() => (onA.connection.state !== 'connected' ? true : undefined), "ann's connection on A ends", WAIT_MS);
      await eventually(() => (removed.includes('ann') ? true : undefined), 'member_removed on B without the offline delay', OFFLINE_DELAY_MS - 200);
      await sleep(300);
      assert.ok(['disconnected', 'failed', 'unavailable'].includes(annOnB.connection.state), `pusher-js does not come back after 4009 (${annOnB.connection.state})`);
      await answers(b, '/channels/presence-q.stats/users', undefined, { users: [{ id: 'bob' }] });
    });

    if (full) {
      it('Pusher-format webhooks: a presence channel joined on both nodes at once, then left as node A dies (kill -9) and its member on B leaves: each event once across the cluster, signed', async () => {
        const hook = await webhookReceiver();
        try {
          const [a, b] = await pair({ PRESENCE_PUSHER_WEBHOOK_URLS: hook.url });
          const [ann, bob] = await Promise.all([page(a, { userId: 'ann' }), page(b, { userId: 'bob' })]);
          // Both subscribe at the same moment, each on its node: either node may think itself first.
          await Promise.all([subscribed(ann.subscribe('presence-hooks')), subscribed(bob.subscribe('presence-hooks'))]);
          await eventually(() => (hook.events().length >= 3 ? true : undefined), 'occupied and two member_added', WAIT_MS);
          // Both go at the same moment: ann's node dies (the reaping node reports her gone), bob leaves B.
          a.child.kill('SIGKILL');
          bob.disconnect();
          await eventually(() => (hook.events().some((e) => e.name === 'channel_vacated') ? true : undefined), 'channel_vacated', OFFLINE_DELAY_MS + WAIT_MS);
          await sleep(1500);
          const seen = hook.events().map((e) => `${e.name}${e.user_id === undefined ? '' : ` ${e.user_id}`}`);
          for (const e of hook.events()) assert.equal(e.channel, 'presence-hooks');
          assert.deepEqual([...seen].sort(), ['channel_occupied', 'channel_vacated', 'member_added ann', 'member_added bob', 'member_removed ann', 'member_removed bob'], `each once: ${seen.join(', ')}`);
          assert.equal(seen[0], 'channel_occupied', 'occupied before the members');
          assert.equal(seen.at(-1), 'channel_vacated', 'vacated after them');
        } finally {
          hook.server.closeAllConnections();
          hook.server.close();
        }
      });

      it('a reload inside the offline delay that moves to the other node is silent to the other members; leaving for good is member_removed after it', async () => {
        const [a, b] = await pair();
        const watcher = await page(b, { userId: 'w' });
        const lobby = watcher.subscribe('presence-lobby') as PresenceChannel;
        const seen: string[] = [];
        lobby.bind('pusher:member_added', (m: { id: string }) => seen.push(`added ${m.id}`));
        lobby.bind('pusher:member_removed', (m: { id: string }) => seen.push(`removed ${m.id}`));
        await subscribed(lobby);

        const first = await page(a, { userId: 'dave', info: { name: 'Dave' } });
        await subscribed(first.subscribe('presence-lobby'));
        await eventually(() => (seen.includes('added dave') ? true : undefined), 'dave added', WAIT_MS);

        // The page reloads, and its new connection lands on the other node.
        first.disconnect();
        await sleep(200);
        const second = await page(b, { userId: 'dave', info: { name: 'Dave' } });
        const again = second.subscribe('presence-lobby') as PresenceChannel;
        await subscribed(again);
        assert.equal(again.members.count, 2);
        await sleep(OFFLINE_DELAY_MS + 1500);
        assert.deepEqual(seen, ['added dave'], 'nothing for the reload');

        second.disconnect();
        await eventually(() => (seen.includes('removed dave') ? true : undefined), 'dave removed after the offline delay', OFFLINE_DELAY_MS + WAIT_MS);
      });
    }
  });
}

describeCluster(
  'one redis-server',
  async () => {
    const redis = await RedisServer.start();
    return { env: { REDIS_URL: redis.url }, stop: () => redis.stop() };
  },
  true,
);

describeCluster(
  'a Redis Cluster of 3 masters (sharded pub/sub)',
  async () => {
    const cluster = await RedisCluster.start();
    return { env: { REDIS_CLUSTER_NODES: cluster.seeds.join(',') }, stop: () => cluster.stop() };
  },
  false,
);

describe('the Pusher endpoint on two in-process nodes over the memory hub', () => {
  it('whispers and triggered events cross nodes, the queries answer for both, and a node that leaves takes its channels from the lists', async () => {
    const hub = new MemoryHub();
    const servers: RunningServer[] = [];
    const clients: PusherJs[] = [];
    try {
      for (let i = 0; i < 2; i += 1) {
        const config = resolveConfig({ port: 0, host: '127.0.0.1', pusher: { ...APP, webhookUrls: [] }, nodeLeaseMs: 600, syncIntervalMs: 400, limits: { maxEventLoopLagMs: 0 } });
        servers.push(await startServer(config, { log: silentLogger, sharedService: new MemoryService(hub) }));
      }
      const [a, b] = servers.map((server) => ({ port: server.port, backend: pusherBackend(server.port) }));
      const ann = await pusherJs(a, { userId: 'ann' });
      const bob = await pusherJs(b, { userId: 'bob' });
      clients.push(ann, bob);
      const heard: unknown[] = [];
      const annRoom = ann.subscribe('presence-hub.room');
      const bobRoom = bob.subscribe('presence-hub.room');
      bobRoom.bind('client-wave', (data: unknown) => heard.push(data));
      bobRoom.bind('news', (data: unknown) => heard.push(data));
      await subscribed(annRoom);
      await subscribed(bobRoom);
      annRoom.trigger('client-wave', { from: 'ann' });
      await a.backend.trigger('presence-hub.room', 'news', { n: 1 });
      await eventually(() => (heard.length === 2 ? true : undefined), 'a whisper and an event from node A on node B', WAIT_MS);
      assert.deepEqual(heard, [{ from: 'ann' }, { n: 1 }]);
      await subscribed(bob.subscribe('hub.ticker'));
      await answers(a, '/channels/presence-hub.room', { info: 'user_count,subscription_count' }, { occupied: true, user_count: 2, subscription_count: 2 });
      await answers(a, '/channels', { filter_by_prefix: 'hub.' }, { channels: { 'hub.ticker': {} } });

      // Node B leaves: its list goes with it.
      bob.disconnect();
      await servers[1].shutdown();
      assert.deepEqual(hub.keys().filter((key) => key.endsWith(':pusher-channels')).length, 1, 'only node A lists channels');
      await answers(a, '/channels', { filter_by_prefix: 'hub.' }, { channels: {} });
    } finally {
      for (const client of clients) client.disconnect();
      for (const server of servers) await server.shutdown();
    }
  });
});
