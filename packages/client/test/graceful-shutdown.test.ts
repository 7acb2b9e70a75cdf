/**
 * A rolling deploy, end to end: three server processes (the CLI) share a real redis-server, SDK
 * clients reach them through a load balancer that health-checks `/readyz`, and one node gets
 * SIGTERM. Its clients must land on another node and resume their sessions, and nobody — raw
 * observers on a third node, nor the other SDK clients — may see a leave, a join or an offline,
 * not even after the offline delay has run out.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { ServerMessage } from '@presence/protocol';
import type { Channel, PresenceClient } from '../src/index.js';
import { RedisServer, freePort } from '../../server/test/support/redis-server.js';
import { devClient } from './support/clients.js';
import { Observer } from './support/observer.js';
import { tracker } from './support/tracked.js';
import { record, until } from './support/wait.js';

const BIN = fileURLToPath(new URL('../../server/bin/presence.ts', import.meta.url));
const OFFLINE_DELAY_MS = 3000;
const LEASE_MS = 600;
/** How often the balancer asks each node's /readyz. */
const HEALTH_CHECK_MS = 100;

interface Node {
  name: string;
  port: number;
  child: ChildProcess;
  log: string;
}

async function startNode(redisUrl: string, name: string): Promise<Node> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PRESENCE_') && !['PORT', 'HOST', 'REDIS_URL', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) env[key] = value;
  }
  Object.assign(env, {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    PRESENCE_NODE_ID: name,
    PRESENCE_OFFLINE_DELAY_MS: String(OFFLINE_DELAY_MS),
    PRESENCE_NODE_LEASE_MS: String(LEASE_MS),
    PRESENCE_SYNC_INTERVAL_MS: '1000',
    LOG_LEVEL: 'warn',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const node: Node = { name, port, child, log: '' };
  child.stdout!.on('data', (chunk) => (node.log += chunk.toString()));
  child.stderr!.on('data', (chunk) => (node.log += chunk.toString()));
  const deadline = Date.now() + 20_000;
  while (!(await isReady(port))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`node ${name} did not start: ${node.log}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return node;
}

async function isReady(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
  } catch {
    return false;
  }
}

function stopNode(node: Node, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => node.child.once('exit', () => resolve()));
  node.child.kill(signal);
  return exited;
}

/**
 * A TCP load balancer as deployments have one: round robin over the backends whose `/readyz`
 * answered 200 at the last health check; no stickiness.
 */
class LoadBalancer {
  readonly routed = new Map<string, number>();
  private readonly healthy = new Set<Node>();
  private readonly sockets = new Set<Socket>();
  private next = 0;
  private checking?: NodeJS.Timeout;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly backends: Node[],
  ) {}

  static async start(backends: Node[]): Promise<LoadBalancer> {
    const port = await freePort();
    let balancer: LoadBalancer | undefined;
    const server = createServer((client) => balancer!.route(client));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    balancer = new LoadBalancer(server, port, backends);
    await balancer.check();
    balancer.checking = setInterval(() => void balancer!.check(), HEALTH_CHECK_MS);
    return balancer;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/realtime`;
  }

  private async check(): Promise<void> {
    await Promise.all(
      this.backends.map(async (node) => {
        if (await isReady(node.port)) this.healthy.add(node);
        else this.healthy.delete(node);
      }),
    );
  }

  private route(client: Socket): void {
    const pool = this.backends.filter((node) => this.healthy.has(node));
    if (pool.length === 0) {
      client.destroy();
      return;
    }
    const node = pool[this.next++ % pool.length];
    this.routed.set(node.name, (this.routed.get(node.name) ?? 0) + 1);
    const upstream = connect(node.port, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  async close(): Promise<void> {
    clearInterval(this.checking);
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('graceful shutdown of a node in a cluster (3 processes, real redis-server, SDK clients behind a balancer)', { timeout: 90_000 }, () => {
  let redis: RedisServer;
  let nodes: Node[] = [];
  let balancer: LoadBalancer;
  const { track, closeAll } = tracker();

  before(async () => {
    redis = await RedisServer.start();
    nodes = await Promise.all(['gs-1', 'gs-2', 'gs-3'].map((name) => startNode(redis.url, name)));
    // Only the first two are behind the balancer; the third is where the observers are.
    balancer = await LoadBalancer.start(nodes.slice(0, 2));
  });
  after(async () => {
    await closeAll();
    await balancer?.close();
    await Promise.all(nodes.map((node) => stopNode(node)));
    await redis?.stop();
  });

  test('SIGTERM: its clients resume on another node; nobody sees a leave, join or offline, even after the offline delay', async (t) => {
    const [n1, , n3] = nodes;
    const users = ['ada', 'bob', 'cyd', 'dan'];
    const obs = track(await Observer.connect(`ws://127.0.0.1:${n3.port}/realtime`, 'obs'));
    await obs.request({ type: 'join', channel: 'room:deploy' });
    await obs.request({ type: 'watch', users });

    const clients: PresenceClient[] = [];
    const rooms: Channel[] = [];
    for (const userId of users) {
      // The SDK's default backoff (first retry after 250–500 ms), as applications run it.
      const client = track(devClient(balancer.wsUrl, userId, { reconnect: undefined }));
      rooms.push(await client.join('room:deploy'));
      await client.setStatus({ status: 'busy', message: `${userId} deploys` });
      clients.push(client);
    }
    assert.deepEqual(Object.fromEntries(balancer.routed), { 'gs-1': 2, 'gs-2': 2 }, 'round robin put two on each node');
    await until(() => users.every((u) => memberStatus(obs.messages, u) === 'busy'), 'the observer to see all four busy');
    for (const room of rooms) await until(() => room.members.size === 5, 'every client to see everyone');
    await obs.barrier();
    obs.drain();
    const roomEvents = rooms.map((room) => record(room, ['join', 'leave']));
    const sessions = clients.map((client) => client.sessionId);
    const welcomes: { userId: string; resumed: boolean }[] = [];
    clients.forEach((client, i) => client.on('connected', (welcome) => welcomes.push({ userId: users[i], resumed: welcome.resumed })));

    const stoppedAt = performance.now();
    await stopNode(n1, 'SIGTERM');
    t.diagnostic(`gs-1 exited ${Math.round(performance.now() - stoppedAt)} ms after SIGTERM`);
    await until(() => welcomes.length === 2 && clients.every((client) => client.status === 'connected'), 'the two clients of gs-1 to reconnect', 15_000);
    t.diagnostic(`both clients of gs-1 welcomed elsewhere ${Math.round(performance.now() - stoppedAt)} ms after SIGTERM (offline delay ${OFFLINE_DELAY_MS} ms)`);
    assert.deepEqual(welcomes.map((w) => w.resumed), [true, true], 'sessions resumed on the other node');
    assert.deepEqual(clients.map((client) => client.sessionId), sessions, 'same session ids');

    // Past the offline delay (counted from the shutdown) and the lease: a session that did not
    // really move would have left by now.
    await new Promise((resolve) => setTimeout(resolve, OFFLINE_DELAY_MS + LEASE_MS * 2));
    await obs.barrier();
    const seen = obs.drain();
    const flaps = seen.filter(
      (m) =>
        m.type === 'presence.join' ||
        m.type === 'presence.leave' ||
        (m.type === 'user.update' && m.user.status !== 'busy') ||
        (m.type === 'presence.update' && m.member.status !== 'busy'),
    );
    assert.deepEqual(flaps, [], 'the observer on gs-3 saw no leave, join or status change');
    for (const events of roomEvents) assert.deepEqual(events.log, [], 'no SDK client saw a leave or join');
    for (const room of rooms) assert.equal(room.members.size, 5);
    for (const userId of users) assert.equal(memberStatus(obs.messages, userId), 'busy', `${userId} still present and busy`);

    const listed = await fetch(`http://127.0.0.1:${n3.port}/realtime/channels/room:deploy/presence`).then((r) => r.json() as Promise<{ members: { userId: string; status: string }[] }>);
    assert.deepEqual(
      listed.members.map((m) => `${m.userId}:${m.status}`).sort(),
      ['ada:busy', 'bob:busy', 'cyd:busy', 'dan:busy', 'obs:online'],
      'gs-3 lists everyone',
    );
  });
});

/** A user's status as the observer last heard it (the channel sync and updates, or its watch). */
function memberStatus(messages: ServerMessage[], userId: string): string | undefined {
  let status: string | undefined;
  for (const m of messages) {
    if (m.type === 'presence.sync') status = m.members.find((member) => member.userId === userId)?.status ?? status;
    else if ((m.type === 'presence.join' || m.type === 'presence.update') && m.member.userId === userId) status = m.member.status;
    else if (m.type === 'presence.leave' && m.userId === userId) status = 'offline';
    else if (m.type === 'user.update' && m.user.userId === userId) status = m.user.status;
  }
  return status;
}
