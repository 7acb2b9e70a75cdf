import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { TestClient, httpJson, sleep } from './support/harness.js';
import { RedisServer, freePort } from './support/redis-server.js';
import * as log from './support/presence-log.js';

/*
 * Real server processes (the CLI, run with tsx) sharing one real redis-server: the multi-node
 * promises checked end to end, including `kill -9` of a node and of Redis itself.
 */

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
const OFFLINE_DELAY_MS = 1500;
const LEASE_MS = 600;
const SYNC_INTERVAL_MS = 1000;
/** Documented bound: a dead node is declared down within 4/3 of the lease after its last renewal. */
const DETECTION_BOUND_MS = Math.ceil((LEASE_MS * 4) / 3);
/** Room for a loaded 2-core machine; the bound itself is the documented figure. */
const SLACK_MS = 2500;
/** The Redis client retries at most this far apart while Redis is away (redis-transport.ts). */
const RECONNECT_STEP_MS = 1000;

interface NodeProcess {
  id: string;
  url: string;
  wsUrl: string;
  child: ChildProcess;
  log: string;
}

async function startNode(redisUrl: string, id: string, extraEnv: Record<string, string> = {}): Promise<NodeProcess> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) env[key] = value;
  }
  Object.assign(env, {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    PRESENCE_NODE_ID: id,
    PRESENCE_OFFLINE_DELAY_MS: String(OFFLINE_DELAY_MS),
    PRESENCE_NODE_LEASE_MS: String(LEASE_MS),
    PRESENCE_SYNC_INTERVAL_MS: String(SYNC_INTERVAL_MS),
    PRESENCE_TYPING_TIMEOUT_MS: '5000',
    // No load shedding: a node stalled by a busy test machine must not refuse a test's client.
    PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
    LOG_LEVEL: 'warn',
    ...extraEnv,
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

async function stopNode(node: NodeProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  const exited = new Promise((resolve) => node.child.once('exit', resolve));
  node.child.kill(signal);
  await exited;
}

async function redisKeys(url: string): Promise<string[]> {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await client.scan(cursor, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return keys.sort();
  } finally {
    client.disconnect();
  }
}

async function redisHash(url: string, key: string): Promise<Record<string, string>> {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  try {
    return await client.hgetall(key);
  } finally {
    client.disconnect();
  }
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function members(node: NodeProcess, channel: string): Promise<string[]> {
  const answer = await httpJson(node, `/realtime/channels/${channel}/presence`);
  return (answer.body.members as { userId: string; status: string }[]).map((m) => `${m.userId}:${m.status}`).sort();
}

/** What one client made of a channel's presence messages. */
const presenceEvents = (client: TestClient, channel: string) => log.presenceEvents(client.messages, channel);
const joinsAndLeaves = (client: TestClient, channel: string, userId: string) => log.joinsAndLeaves(client.messages, channel, userId);
const replay = (client: TestClient, channel: string) => log.replay(client.messages, channel);

describe('many nodes through Redis (3 processes, real redis-server)', { timeout: 180_000 }, () => {
  let redis: RedisServer | undefined;
  let nodes: NodeProcess[] = [];
  const clients: TestClient[] = [];

  async function cluster(count: number, env: (i: number) => Record<string, string> = () => ({})): Promise<NodeProcess[]> {
    redis ??= await RedisServer.start();
    const tag = Math.random().toString(36).slice(2, 7);
    const started = await Promise.all(Array.from({ length: count }, (_, i) => startNode(redis!.url, `n${i + 1}-${tag}`, env(i))));
    nodes.push(...started);
    return started;
  }

  async function connect(node: NodeProcess, query: Record<string, string>): Promise<TestClient> {
    const client = await TestClient.connect(node, query);
    clients.push(client);
    return client;
  }

  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close().catch(() => {});
    await Promise.all(nodes.map((node) => stopNode(node)));
    nodes = [];
    await redis?.stop();
    redis = undefined;
  });
  after(async () => redis?.stop());

  it('users on three nodes (one with its clock 30 s ahead) see each other in order, and every node answers for the cluster', async () => {
    const [n1, n2, n3] = await cluster(3, (i): Record<string, string> => (i === 2 ? { PRESENCE_CLOCK_SKEW_MS: '30000' } : {}));
    const ann = await connect(n1, { userId: 'ann' });
    const bob = await connect(n2, { userId: 'bob' });
    const cat = await connect(n3, { userId: 'cat' });
    for (const client of [ann, bob, cat]) assert.equal((await client.request({ type: 'join', channel: 'room' })).type, 'ack');
    assert.equal((await bob.request({ type: 'watch', users: ['ann'] })).type, 'ack');
    await until(async () => (await members(n3, 'room')).length === 3, 5000, 'n3 to list all three');

    await ann.request({ type: 'status', status: 'busy', message: 'In a call' });
    await ann.request({ type: 'meta', meta: { name: 'Ann' } });
    await ann.request({ type: 'typing', channel: 'room', typing: true });
    for (const receiver of [bob, cat]) {
      await receiver.waitFor((m) => m.type === 'typing' && m.userId === 'ann' && m.typing, 5000);
      const update = presenceEvents(receiver, 'room').filter((e) => e.type === 'presence.update').at(-1);
      assert.ok(update?.type === 'presence.update');
      assert.equal(update.member.message, 'In a call');
      assert.deepEqual(update.member.meta, { name: 'Ann' }, 'the meta update came before the typing');
    }
    await bob.waitFor((m) => m.type === 'user.update' && m.user.userId === 'ann' && m.user.status === 'busy', 5000);
    await ann.request({ type: 'typing', channel: 'room', typing: false });
    await cat.waitFor((m) => m.type === 'typing' && m.userId === 'ann' && !m.typing, 5000);

    // An expiry set through one node is honoured on every node on the cluster's clock: the node
    // whose wall clock runs 30 s ahead neither clears it early nor late.
    const expiresAt = new Date(Date.now() + 2500).toISOString();
    assert.equal((await httpJson(n1, '/realtime/presence/update', { body: { userId: 'cat', status: 'away', expiresAt } })).status, 200);
    await until(async () => (await members(n3, 'room')).includes('cat:away'), 5000, 'cat away on n3');
    await sleep(1000);
    for (const node of [n1, n2, n3]) assert.ok((await members(node, 'room')).includes('cat:away'), `still away on ${node.id}`);
    await until(async () => (await members(n2, 'room')).includes('cat:online'), 6000, 'cat back online');

    const metrics = await fetch(`${n2.url}/metrics`).then((r) => r.text());
    assert.match(metrics, /^presence_cluster_nodes 3$/m);
    assert.match(metrics, /^presence_cluster_ready 1$/m);
    assert.match(metrics, /^presence_online_users 3$/m, 'users are counted cluster-wide');
    assert.match(metrics, /^presence_connections 1$/m, 'connections are this node\'s');
    const expected = ['ann:busy', 'bob:online', 'cat:online'];
    for (const node of [n1, n2, n3]) {
      assert.deepEqual(await members(node, 'room'), expected, `channel on ${node.id}`);
      const user = await httpJson(node, '/realtime/users/ann/presence');
      assert.equal(user.body.user.message, 'In a call');
    }
    for (const client of [ann, bob, cat]) {
      await until(() => replay(client, 'room').join() === expected.join(), 5000, 'every client to agree');
    }
    await bob.request({ type: 'leave', channel: 'room' });
    await ann.waitFor((m) => m.type === 'presence.leave' && m.userId === 'bob', 5000);
    await cat.waitFor((m) => m.type === 'presence.leave' && m.userId === 'bob', 5000);
    assert.deepEqual(replay(ann, 'room'), ['ann:busy', 'cat:online']);
    assert.deepEqual(replay(cat, 'room'), ['ann:busy', 'cat:online']);
  });

  it('kill -9 of a node: its users leave everywhere after the offline delay plus detection, a user who moves never leaves, and no key of it stays', async (t) => {
    const [n1, n2, n3] = await cluster(3);
    const obs = await connect(n3, { userId: 'obs' });
    await obs.request({ type: 'join', channel: 'room' });
    const ann = await connect(n1, { userId: 'ann' });
    const ben = await connect(n1, { userId: 'ben' });
    await ann.request({ type: 'join', channel: 'room' });
    await ben.request({ type: 'join', channel: 'room' });
    await until(async () => (await members(n2, 'room')).length === 3, 5000, 'three members');
    assert.ok((await redisKeys(redis!.url)).some((k) => k.includes(n1.id)), 'n1 has state in Redis');

    const killedAt = Date.now();
    await stopNode(n1, 'SIGKILL');
    // ben's client reconnects to another node with its session id, as the SDK does.
    const benAgain = await connect(n2, { userId: 'ben', sessionId: ben.welcome.sessionId });
    assert.equal(benAgain.welcome.resumed, true);

    await obs.waitFor((m) => m.type === 'presence.leave' && m.userId === 'ann', OFFLINE_DELAY_MS + DETECTION_BOUND_MS + SLACK_MS + 2000);
    const took = Date.now() - killedAt;
    t.diagnostic(`kill -9 → leave at the other nodes: ${took} ms (offline delay ${OFFLINE_DELAY_MS} + detection bound ${DETECTION_BOUND_MS})`);
    assert.ok(took >= OFFLINE_DELAY_MS, `leave waited for the offline delay (${took} ms)`);
    assert.ok(took <= OFFLINE_DELAY_MS + DETECTION_BOUND_MS + SLACK_MS, `leave within delay + detection bound (${took} ms)`);
    await sleep(300);
    assert.deepEqual(joinsAndLeaves(obs, 'room', 'ben'), ['join'], 'ben moved nodes without a leave or join');
    for (const node of [n2, n3]) assert.deepEqual(await members(node, 'room'), ['ben:online', 'obs:online'], `no ghost on ${node.id}`);
    assert.deepEqual((await redisKeys(redis!.url)).filter((k) => k.includes(n1.id)), [], 'no key of the dead node left');
  });

  it('graceful shutdown of a node: its clients get 1001, resume on another node, and nobody sees a leave or join', async () => {
    const [n1, n2] = await cluster(2);
    const obs = await connect(n2, { userId: 'obs' });
    await obs.request({ type: 'join', channel: 'room' });
    const ann = await connect(n1, { userId: 'ann' });
    await ann.request({ type: 'join', channel: 'room' });
    await until(async () => (await members(n2, 'room')).length === 2, 5000, 'ann listed on n2');
    const closed = ann.closed;
    await stopNode(n1, 'SIGTERM');
    assert.equal((await closed).code, 1001);
    const again = await connect(n2, { userId: 'ann', sessionId: ann.welcome.sessionId });
    assert.equal(again.welcome.resumed, true);
    await sleep(OFFLINE_DELAY_MS + DETECTION_BOUND_MS);
    assert.deepEqual(joinsAndLeaves(obs, 'room', 'ann'), ['join']);
    assert.deepEqual(await members(n2, 'room'), ['ann:online', 'obs:online']);
    assert.deepEqual((await redisKeys(redis!.url)).filter((k) => k.includes(n1.id)), [], 'the node left no key behind');
  });

  it('Redis killed and restarted empty: nodes serve local clients, report not ready, then converge without any client reconnecting', async (t) => {
    const [n1, n2] = await cluster(2);
    const obs = await connect(n2, { userId: 'obs' });
    await obs.request({ type: 'join', channel: 'room' });
    const ann = await connect(n1, { userId: 'ann' });
    await ann.request({ type: 'join', channel: 'room' });
    await ann.request({ type: 'status', status: 'busy' });
    await until(async () => (await members(n2, 'room')).includes('ann:busy'), 5000, 'ann busy on n2');

    const killedAt = Date.now();
    await redis!.kill();
    for (const node of [n1, n2]) await until(async () => (await httpJson(node, '/readyz')).status === 503, 5000, `${node.id} not ready`);
    t.diagnostic(`Redis killed → /readyz 503 on both nodes: ${Date.now() - killedAt} ms`);
    assert.match(await fetch(`${n1.url}/metrics`).then((r) => r.text()), /^presence_cluster_ready 0$/m);
    // Local clients keep working while Redis is away.
    const cal = await connect(n2, { userId: 'cal' });
    assert.equal((await cal.request({ type: 'join', channel: 'room' })).type, 'ack');
    await obs.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'cal', 2000);
    assert.deepEqual(await members(n2, 'room'), ['ann:busy', 'cal:online', 'obs:online']);

    const restartedAt = Date.now();
    await redis!.restart();
    for (const node of [n1, n2]) await until(async () => (await httpJson(node, '/readyz')).status === 200, 10_000, `${node.id} ready again`);
    await until(async () => (await members(n1, 'room')).join() === 'ann:busy,cal:online,obs:online', SYNC_INTERVAL_MS + SLACK_MS, 'n1 to learn of cal');
    const converged = Date.now() - restartedAt;
    t.diagnostic(`Redis restarted empty → every node converged: ${converged} ms (sync interval ${SYNC_INTERVAL_MS})`);
    assert.ok(converged <= SYNC_INTERVAL_MS + SLACK_MS, `converged in ${converged} ms`);
    await ann.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'cal', 2000);
    await sleep(OFFLINE_DELAY_MS);
    assert.deepEqual(joinsAndLeaves(obs, 'room', 'ann'), ['join'], 'ann never flapped');
    for (const client of [obs, ann, cal]) assert.equal(client.ws.readyState, client.ws.OPEN, 'no client reconnected');
    const keys = await redisKeys(redis!.url);
    assert.ok(keys.some((k) => k.includes(n1.id)) && keys.some((k) => k.includes(n2.id)), 'both nodes re-wrote their sessions');
    assert.ok(keys.includes('presence:user:{ann}'), 'records re-written from memory');
  });

  it('a status set while Redis is down (kill -9, back empty seconds later) reaches every node soon after it returns: invisible is offline everywhere', async (t) => {
    const [n1, n2, n3] = await cluster(3);
    const all = [n1, n2, n3];
    // A user on every node, all in one channel, none with a status yet: the other nodes know them
    // only from their sessions (their records hold no status, nothing was ever announced).
    const users = ['ann', 'bob', 'cat'];
    const sockets = new Map<string, TestClient>();
    for (const [i, userId] of users.entries()) {
      const client = await connect(all[i], { userId });
      assert.equal((await client.request({ type: 'join', channel: 'room' })).type, 'ack');
      sockets.set(userId, client);
    }
    for (const node of all) await until(async () => (await members(node, 'room')).length === 3, 5000, `${node.id} to list all three`);
    // Each round one user changes status on their own node at a random moment inside an outage
    // longer than the Redis client's reconnect step (1 s), so the nodes come back at different
    // moments and the first one's writes are published before the others listen again.
    const rounds: [string, 'invisible' | 'busy'][] = [['ann', 'invisible'], ['bob', 'busy'], ['cat', 'invisible']];
    const status = new Map(users.map((u) => [u, 'online']));
    const timings: number[] = [];
    for (const [round, [userId, wanted]] of rounds.entries()) {
      const outageMs = 4000 + Math.floor(Math.random() * 2000);
      const changeAtMs = 300 + Math.floor(Math.random() * (outageMs - 600));
      await redis!.kill();
      await sleep(changeAtMs);
      assert.equal((await sockets.get(userId)!.request({ type: 'status', status: wanted })).type, 'ack');
      status.set(userId, wanted === 'invisible' ? 'offline' : wanted);
      await sleep(outageMs - changeAtMs);
      await redis!.restart();
      const restartedAt = Date.now();
      const expected = users.filter((u) => status.get(u) !== 'offline').map((u) => `${u}:${status.get(u)}`);
      const wrong = async (): Promise<string | undefined> => {
        for (const node of all) {
          const listed = (await members(node, 'room')).join();
          if (listed !== expected.join()) return `${node.id} lists ${listed}`;
          for (const u of users) {
            const shown = (await httpJson(node, `/realtime/users/${u}/presence`)).body.user.status;
            if (shown !== status.get(u)) return `${node.id} answers ${u} ${shown}`;
          }
        }
        return undefined;
      };
      const what = `round ${round + 1}: ${userId} ${wanted} ${changeAtMs} ms into a ${outageMs} ms outage`;
      let problem: string | undefined;
      await until(async () => (problem = await wrong()) === undefined, RECONNECT_STEP_MS + SLACK_MS, what).catch((error: Error) => {
        throw new Error(`${error.message}: ${problem}`);
      });
      timings.push(Date.now() - restartedAt);
      const stored = await redisHash(redis!.url, `presence:user:{${userId}}`);
      assert.equal(JSON.parse(stored.manual).status, wanted, `${what}: Redis holds the status`);
      // Converged stays converged: nothing brings the old status back later.
      await sleep(2 * SYNC_INTERVAL_MS);
      assert.equal(await wrong(), undefined, `${what}: still right two sync intervals later`);
    }
    t.diagnostic(`status set during a Redis outage → right on every node: ${timings.join(', ')} ms after the restart`);
    // Every client was told, once: an invisible user left and never came back; nobody reconnected.
    for (const [observer, client] of sockets) {
      assert.deepEqual(replay(client, 'room'), ['bob:busy'], `what ${observer} holds`);
      for (const hidden of ['ann', 'cat']) {
        if (hidden === observer) continue;
        const seen = joinsAndLeaves(client, 'room', hidden);
        assert.ok(seen.at(-1) === 'leave' && seen.filter((e) => e === 'leave').length === 1, `${observer} saw ${hidden}: ${seen.join(',')}`);
      }
      assert.equal(client.ws.readyState, client.ws.OPEN, `${observer} still connected`);
    }
  });

  it('lastSeen, manual status, state, message and meta survive a restart of every node', async () => {
    const [n1, n2] = await cluster(2);
    const ann = await connect(n1, { userId: 'ann' });
    await ann.request({ type: 'status', state: 'in-call', message: 'Standup' });
    await ann.request({ type: 'meta', meta: { name: 'Ann', avatar: 'https://example.com/a.png' } });
    await ann.close();
    await until(async () => (await httpJson(n2, '/realtime/users/ann/presence')).body.user.status === 'offline', 5000, 'ann offline');
    await Promise.all([stopNode(n1), stopNode(n2)]);
    nodes = [];
    const [fresh] = await cluster(1);
    const user = (await httpJson(fresh, '/realtime/users/ann/presence')).body.user;
    assert.equal(user.status, 'offline');
    assert.notEqual(user.lastSeen, null);
    assert.deepEqual(user.meta, { name: 'Ann', avatar: 'https://example.com/a.png' });
    const back = await connect(fresh, { userId: 'ann' });
    assert.equal(back.welcome.self.state, 'in-call');
    assert.equal(back.welcome.self.message, 'Standup');
    assert.equal(back.welcome.self.status, 'busy');
  });
});
