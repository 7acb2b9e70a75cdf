/**
 * The load balancer of compose.yaml for real: `deploy/haproxy.cfg` run by a `haproxy` process, with
 * only its listening address and its two servers' addresses moved to free loopback ports, in front
 * of two server processes. WebSockets pass through it to both nodes, and its health check on
 * `/readyz` takes a node that cannot reach Redis out of rotation while that node keeps the
 * connections it has. Skipped where `haproxy` is not installed (`.ci/run` installs it).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_CONFIG } from '../src/config/config.js';
import { ROUTES } from '../src/http/api.js';
import { TestClient } from './support/harness.js';
import { ProcessGroup } from './support/process-group.js';
import { RedisServer, freePort } from './support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));

function haproxyInstalled(): boolean {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^PRESENCE_/.test(key) || ['PORT', 'HOST', 'NODE_ENV', 'REDIS_URL', 'LOG_LEVEL'].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** `deploy/haproxy.cfg` with `bind` and each `server` moved to loopback ports; nothing else changed. */
function localConfig(lbPort: number, nodePorts: Record<string, number>): string {
  const port = DEFAULT_CONFIG.port;
  let config = readFileSync(join(ROOT, 'deploy/haproxy.cfg'), 'utf8');
  const bind = `bind :${port}`;
  assert.ok(config.includes(bind), `haproxy.cfg has "${bind}"`);
  config = config.replace(bind, `bind 127.0.0.1:${lbPort}`);
  for (const [name, nodePort] of Object.entries(nodePorts)) {
    const line = `server ${name} ${name}:${port}`;
    assert.ok(config.includes(line), `haproxy.cfg has "${line}"`);
    config = config.replace(line, `server ${name} 127.0.0.1:${nodePort}`);
  }
  return config;
}

async function stats(url: string): Promise<{ connections: number }> {
  const answer = await fetch(`${url}${ROUTES.adminStats}`);
  assert.equal(answer.status, 200);
  return (await answer.json()) as { connections: number };
}

describe('deploy/haproxy.cfg in front of two nodes', { skip: haproxyInstalled() ? false : 'haproxy is not installed (apt-get install haproxy)' }, () => {
  let base: string;
  let shared: RedisServer;
  let lonely: RedisServer;
  let lb: ProcessGroup;
  let lbUrl: string;
  let lbStarted: number;
  const nodes: Record<string, { group: ProcessGroup; url: string }> = {};
  const clients: TestClient[] = [];

  before(async () => {
    base = mkdtempSync(join(tmpdir(), 'presence-lb-'));
    shared = await RedisServer.start();
    // presence2 gets a Redis of its own, so that one node alone can lose it.
    lonely = await RedisServer.start();
    for (const [name, redis] of [['presence1', shared], ['presence2', lonely]] as const) {
      const group = new ProcessGroup(process.execPath, ['--import', 'tsx', BIN], {
        cwd: ROOT,
        env: cleanEnv({ PORT: '0', HOST: '127.0.0.1', REDIS_URL: redis.url, PRESENCE_NODE_ID: name, LOG_LEVEL: 'info' }),
      });
      nodes[name] = { group, url: '' };
    }
    for (const node of Object.values(nodes)) node.url = (await node.group.logLine<{ url: string }>('presence server listening', 30_000)).url;

    const lbPort = await freePort();
    const configFile = join(base, 'haproxy.cfg');
    writeFileSync(configFile, localConfig(lbPort, Object.fromEntries(Object.entries(nodes).map(([name, node]) => [name, Number(new URL(node.url).port)]))));
    execFileSync('haproxy', ['-c', '-q', '-f', configFile]);
    lb = new ProcessGroup('haproxy', ['-db', '-f', configFile], { env: cleanEnv({}) });
    lbStarted = Date.now();
    lbUrl = `http://127.0.0.1:${lbPort}`;
    for (let attempt = 0; ; attempt += 1) {
      const answer = await fetch(`${lbUrl}${ROUTES.ready}`).catch(() => undefined);
      if (answer?.status === 200) break;
      if (attempt > 250) throw new Error(`the load balancer did not answer:\n${lb.stdout}\n${lb.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });

  after(async () => {
    for (const client of clients) client.ws.terminate();
    await lb?.kill();
    for (const node of Object.values(nodes)) await node.group.kill();
    await shared?.stop();
    await lonely?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  const connect = async (userId: string): Promise<TestClient> => {
    const client = await TestClient.connect({ wsUrl: `${lbUrl.replace(/^http/, 'ws')}/realtime` }, { userId });
    clients.push(client);
    assert.equal(client.welcome.userId, userId, `${userId} got its welcome through the load balancer`);
    return client;
  };

  test('passes WebSocket upgrades through, one connection to each node (leastconn), and the HTTP API', async () => {
    const ann = await connect('ann');
    await connect('bob');
    assert.deepEqual([(await stats(nodes.presence1.url)).connections, (await stats(nodes.presence2.url)).connections], [1, 1]);
    assert.equal((await ann.request({ type: 'join', channel: 'room:lb' })).type, 'ack');
    const sync = await ann.waitFor((m) => m.type === 'presence.sync');
    assert.deepEqual(sync.type === 'presence.sync' && sync.members.map((m) => m.userId), ['ann']);
    assert.equal((await fetch(`${lbUrl}${ROUTES.health}`)).status, 200);
  });

  test('a node that cannot reach Redis fails the /readyz check: new connections go to the other, its own stay', async (t) => {
    const before = { presence1: (await stats(nodes.presence1.url)).connections, presence2: (await stats(nodes.presence2.url)).connections };
    const held = [...clients];
    // A server HAProxy has just started with is barely up: one failed check would take it out. Let
    // the checks run long enough for a node to be fully healthy, as in production (rise 2 + fall 2).
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, lbStarted + 5000 - Date.now())));
    await lonely.kill();
    const killed = Date.now();
    // inter 2s, fall 2: out within about 4 s of the first 503.
    const deadline = killed + 20_000;
    while (!/presence\/presence2 is DOWN/.test(lb.stdout + lb.stderr)) {
      assert.ok(Date.now() < deadline, `HAProxy did not take presence2 out:\n${lb.stdout}\n${lb.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    t.diagnostic(`presence2 out of rotation ${Date.now() - killed} ms after its Redis was killed`);
    assert.match(lb.stdout + lb.stderr, /presence\/presence2 is DOWN.*503/);
    assert.equal((await fetch(`${nodes.presence2.url}${ROUTES.ready}`)).status, 503);

    for (const userId of ['cy', 'di', 'ed']) await connect(userId);
    assert.equal((await stats(nodes.presence1.url)).connections, before.presence1 + 3, 'every new connection went to presence1');
    assert.equal((await stats(nodes.presence2.url)).connections, before.presence2, 'presence2 got none');
    for (const client of held) assert.equal(client.ws.readyState, client.ws.OPEN, 'the connections both nodes held are still open');
  });
});
