/**
 * Occupancy counts across nodes (docs/protocol.md, "Large rooms"; docs/scaling.md): three real
 * server processes through one real redis-server, one channel past PRESENCE_OCCUPANCY_ONLY_MEMBERS
 * (set low here), occupancy listeners (`features=occupancy`) on every node, and joins, leaves,
 * status changes and invisibility made on one node. Every listener's count and per-status counts
 * must be right after each change, and an invisible user is never counted.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import type { ServerMessage } from '@presence/protocol';
import { TestClient, httpJson, sleep } from './support/harness.js';
import { RedisServer, freePort } from './support/redis-server.js';

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
const WINDOW_MS = 100;
const OCCUPANCY_MEMBERS = 6;

interface NodeProcess {
  id: string;
  url: string;
  wsUrl: string;
  child: ChildProcess;
  log: string;
}

async function startNode(redisUrl: string, id: string): Promise<NodeProcess> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'REDIS_CLUSTER_NODES', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) env[key] = value;
  }
  Object.assign(env, {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    PRESENCE_NODE_ID: id,
    PRESENCE_OFFLINE_DELAY_MS: '300',
    PRESENCE_NODE_LEASE_MS: '600',
    PRESENCE_SYNC_INTERVAL_MS: '1000',
    PRESENCE_LARGE_CHANNEL_MEMBERS: '0',
    PRESENCE_LARGE_CHANNEL_WINDOW_MS: String(WINDOW_MS),
    PRESENCE_OCCUPANCY_ONLY_MEMBERS: String(OCCUPANCY_MEMBERS),
    PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
    LOG_LEVEL: 'warn',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const node: NodeProcess = { id, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/realtime`, child, log: '' };
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

async function stopNode(node: NodeProcess): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  const exited = new Promise((resolve) => node.child.once('exit', resolve));
  node.child.kill('SIGTERM');
  await exited;
}

type Occupancy = Extract<ServerMessage, { type: 'presence.occupancy' }>;
interface Counts {
  count: number;
  online: number;
  away: number;
  busy: number;
}

/** A listener's view: the counts of its last `presence.occupancy` (undefined before the first). */
function lastCounts(client: TestClient, channel: string): Counts | undefined {
  const last = client.messages.filter((m): m is Occupancy => m.type === 'presence.occupancy' && m.channel === channel).at(-1);
  if (!last) return undefined;
  return { count: last.count, ...last.statuses };
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await sleep(20);
  }
}

describe('occupancy counts across nodes (3 processes, one redis-server)', { timeout: 120_000 }, () => {
  let redis: RedisServer | undefined;
  const nodes: NodeProcess[] = [];
  const clients: TestClient[] = [];
  const names = new Map<TestClient, string>();

  after(async () => {
    for (const client of clients.splice(0)) await client.close().catch(() => {});
    await Promise.all(nodes.map((node) => stopNode(node)));
    await redis?.stop();
  });

  it('every listener on every node holds the right count and per-status counts after each change on one node; invisible users never count', async () => {
    redis = await RedisServer.start();
    const tag = Math.random().toString(36).slice(2, 7);
    nodes.push(...(await Promise.all([1, 2, 3].map((i) => startNode(redis!.url, `n${i}-${tag}`)))));
    const [n1] = nodes;
    const connect = async (node: NodeProcess, query: Record<string, string>) => {
      const client = await TestClient.connect(node, query);
      clients.push(client);
      names.set(client, query.userId);
      return client;
    };

    // Three occupancy listeners per node, one of them invisible (it listens, and is never counted).
    const listeners: TestClient[] = [];
    for (const [i, node] of nodes.entries()) {
      for (let k = 0; k < 3; k += 1) {
        const client = await connect(node, { userId: `l${i + 1}${k}`, features: 'occupancy' });
        if (k === 2) assert.equal((await client.request({ type: 'status', status: 'invisible' })).type, 'ack');
        assert.equal((await client.request({ type: 'join', channel: 'hall' })).type, 'ack');
        listeners.push(client);
      }
    }
    const expected: Counts = { count: 6, online: 6, away: 0, busy: 0 };
    const shown = (client: TestClient) => JSON.stringify(lastCounts(client, 'hall'));
    const check = async (what: string) => {
      const want = JSON.stringify(expected);
      await until(
        () => listeners.every((client) => shown(client) === want),
        // A window, a few Redis round trips and three busy processes on a loaded machine.
        5000,
        () => `${what}: every listener to show ${want}; they show ${listeners.map((c) => `${names.get(c)}=${shown(c)}`).join(' ')}`,
      );
      // And it stays so: nothing arrives later that undoes it.
      await sleep(3 * WINDOW_MS);
      for (const client of listeners) assert.equal(shown(client), want, `${what}: ${names.get(client)} after settling`);
    };
    await check('six visible listeners, three invisible');

    // Changes on n1, one at a time.
    const actors: TestClient[] = [];
    for (let k = 0; k < 3; k += 1) {
      const actor = await connect(n1, { userId: `a${k}` });
      assert.equal((await actor.request({ type: 'join', channel: 'hall' })).type, 'ack');
      actors.push(actor);
      expected.count += 1;
      expected.online += 1;
      await check(`a${k} joined on n1`);
    }
    const [a0, a1, a2] = actors;
    assert.equal((await a0.request({ type: 'status', status: 'away' })).type, 'ack');
    expected.online -= 1;
    expected.away += 1;
    await check('a0 away');
    assert.equal((await a1.request({ type: 'status', status: 'busy' })).type, 'ack');
    expected.online -= 1;
    expected.busy += 1;
    await check('a1 busy');
    assert.equal((await a0.request({ type: 'status', status: 'busy' })).type, 'ack');
    expected.away -= 1;
    expected.busy += 1;
    await check('a0 from away to busy');
    assert.equal((await a2.request({ type: 'status', status: 'invisible' })).type, 'ack');
    expected.count -= 1;
    expected.online -= 1;
    await check('a2 invisible');
    // A user who joins while invisible is never counted.
    const hidden = await connect(n1, { userId: 'hidden' });
    assert.equal((await hidden.request({ type: 'status', status: 'invisible' })).type, 'ack');
    assert.equal((await hidden.request({ type: 'join', channel: 'hall' })).type, 'ack');
    await check('an invisible user joined');
    assert.equal((await a2.request({ type: 'status', status: 'online' })).type, 'ack');
    expected.count += 1;
    expected.online += 1;
    await check('a2 visible again');
    assert.equal((await a1.request({ type: 'leave', channel: 'hall' })).type, 'ack');
    expected.count -= 1;
    expected.busy -= 1;
    await check('a1 left the channel');
    // A listener's own status on another node counts too.
    const remote = listeners[3];
    assert.equal((await remote.request({ type: 'status', status: 'away' })).type, 'ack');
    expected.online -= 1;
    expected.away += 1;
    await check('a listener on n2 away');
    await a0.close();
    expected.count -= 1;
    expected.busy -= 1;
    await check('a0 disconnected (after the offline delay)');
  });
});
