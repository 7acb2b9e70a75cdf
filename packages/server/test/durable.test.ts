import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config/env.js';
import { LOCK_FILE } from '../src/store/data-dir-lock.js';
import { FileUserStore } from '../src/store/file-user-store.js';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';
import { freePort } from './support/redis-server.js';

/*
 * A single node with PRESENCE_DATA_DIR, run as the real CLI (with tsx), restarted on the same
 * directory: after `kill -9` and after SIGTERM, what users set must still be there.
 */

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
/** The documented bound: activity and the list of connected users are written every second. */
const FLUSH_WINDOW_MS = 1000;
/** Room for a loaded 2-core machine (timers late, writes slow); the window itself is the documented figure. */
const SLACK_MS = 500;
const OFFLINE_DELAY_MS = 1000;

interface ServerProcess {
  url: string;
  wsUrl: string;
  child: ChildProcess;
  log: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) env[key] = value;
  }
  // No load shedding: a server stalled by a busy test machine must not refuse a test's client.
  return { ...env, HOST: '127.0.0.1', LOG_LEVEL: 'info', PRESENCE_OFFLINE_DELAY_MS: String(OFFLINE_DELAY_MS), PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0', ...extra };
}

function spawnServer(env: NodeJS.ProcessEnv, port: number): ServerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], { env: { ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
  const server: ServerProcess = {
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/realtime`,
    child,
    log: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.on('data', (chunk) => (server.log += chunk.toString()));
  child.stderr!.on('data', (chunk) => (server.log += chunk.toString()));
  return server;
}

async function startServer(dataDir: string): Promise<ServerProcess> {
  const server = spawnServer(cleanEnv({ PRESENCE_DATA_DIR: dataDir }), await freePort());
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (server.child.exitCode !== null) throw new Error(`server exited: ${server.log}`);
    const ready = await httpJson(server, '/readyz').catch(() => undefined);
    if (ready?.status === 200) return server;
    if (Date.now() > deadline) throw new Error(`server did not become ready: ${server.log}`);
    await sleep(50);
  }
}

async function stop(server: ServerProcess, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill(signal);
  return server.exited;
}

const ms = (iso: string | null | undefined): number => (iso ? Date.parse(iso) : NaN);

async function userPresence(server: ServerProcess, userId: string): Promise<Record<string, unknown> & { lastSeen: string | null; status: string }> {
  const answer = await httpJson(server, `/realtime/users/${userId}/presence`);
  assert.equal(answer.status, 200, answer.text);
  return answer.body.user;
}

describe('durable single node (PRESENCE_DATA_DIR, real CLI processes)', { timeout: 120_000 }, () => {
  const dirs: string[] = [];
  const servers: ServerProcess[] = [];
  const clients: TestClient[] = [];
  const dataDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'presence-durable-'));
    dirs.push(dir);
    return dir;
  };
  const start = async (dir: string): Promise<ServerProcess> => {
    const server = await startServer(dir);
    servers.push(server);
    return server;
  };
  const connect = async (server: ServerProcess, query: Record<string, string>): Promise<TestClient> => {
    const client = await TestClient.connect(server, query);
    clients.push(client);
    return client;
  };
  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close().catch(() => {});
    for (const server of servers.splice(0)) await stop(server, 'SIGKILL');
  });
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Ann: busy, in a call with a message, name and avatar, still connected at the end.
   * Bob: a custom state with a message and a name; disconnected before the end.
   * Dan: invisible, still connected (his lastSeen is frozen when he went invisible).
   */
  async function populate(server: ServerProcess): Promise<{ bobLastSeen: string; danLastSeen: string; annLastSeenBefore: number }> {
    const ann = await connect(server, { userId: 'ann', device: 'web' });
    assert.equal((await ann.request({ type: 'status', status: 'busy', state: 'in-call', message: 'Standup 📞 until 10:15' })).type, 'ack');
    assert.equal((await ann.request({ type: 'meta', meta: { name: 'Ann Émilie', avatar: 'https://example.com/ann.png' } })).type, 'ack');
    const bob = await connect(server, { userId: 'bob' });
    assert.equal((await bob.request({ type: 'status', state: 'lunch', message: 'Back at 2' })).type, 'ack');
    assert.equal((await bob.request({ type: 'meta', meta: { name: 'Bob' } })).type, 'ack');
    const dan = await connect(server, { userId: 'dan' });
    assert.equal((await dan.request({ type: 'status', status: 'invisible' })).type, 'ack');
    await bob.close();
    // Past Bob's offline delay: the view the API answers with is then the one announced at his leave.
    await sleep(OFFLINE_DELAY_MS + 300);
    const bobLastSeen = (await userPresence(server, 'bob')).lastSeen!;
    const danLastSeen = (await userPresence(server, 'dan')).lastSeen!;
    const annLastSeenBefore = ms((await userPresence(server, 'ann')).lastSeen);
    assert.ok(bobLastSeen && danLastSeen && annLastSeenBefore);
    return { bobLastSeen, danLastSeen, annLastSeenBefore };
  }

  /** What must have survived, checked over HTTP and over a WebSocket on the restarted server. */
  async function assertRestored(server: ServerProcess, before: { bobLastSeen: string; danLastSeen: string }): Promise<void> {
    const ann = await userPresence(server, 'ann');
    assert.equal(ann.status, 'offline', 'nobody is connected to the new process yet');
    assert.deepEqual(ann.meta, { name: 'Ann Émilie', avatar: 'https://example.com/ann.png' });
    const bob = await userPresence(server, 'bob');
    assert.deepEqual(bob.meta, { name: 'Bob' });
    assert.equal(bob.lastSeen, before.bobLastSeen, 'a disconnect is written at once, exactly');
    const dan = await userPresence(server, 'dan');
    assert.equal(dan.lastSeen, before.danLastSeen, 'invisible: lastSeen stays frozen, even across a crash');

    // The stored status wins over the hint a reconnecting client sends, so the record was there
    // before the first connect; watchers see it in the first announcement.
    const watcher = await connect(server, { userId: 'eve' });
    assert.equal((await watcher.request({ type: 'watch', users: ['ann', 'bob'] })).type, 'ack');
    const annAgain = await connect(server, { userId: 'ann', status: 'online' });
    assert.equal(annAgain.welcome.self.manualStatus, 'busy');
    assert.equal(annAgain.welcome.self.state, 'in-call');
    assert.equal(annAgain.welcome.self.message, 'Standup 📞 until 10:15');
    assert.deepEqual(annAgain.welcome.self.meta, { name: 'Ann Émilie', avatar: 'https://example.com/ann.png' });
    const update = await watcher.waitFor((m) => m.type === 'user.update' && m.user.userId === 'ann');
    assert.ok(update.type === 'user.update');
    assert.equal(update.user.status, 'busy');
    assert.equal(update.user.state, 'in-call');
    const bobAgain = await connect(server, { userId: 'bob' });
    assert.equal(bobAgain.welcome.self.state, 'lunch');
    assert.equal(bobAgain.welcome.self.message, 'Back at 2');
    assert.equal(bobAgain.welcome.self.status, 'away', 'lunch maps to away');
    const danAgain = await connect(server, { userId: 'dan' });
    assert.equal(danAgain.welcome.self.manualStatus, 'invisible');
    await sleep(50);
    assert.equal(watcher.ofType('user.update').filter((m) => m.user.userId === 'dan').length, 0);
  }

  it('kill -9: status, state, message and meta survive; lastSeen of users online at the crash is within the flush window', async () => {
    const dir = dataDir();
    const first = await start(dir);
    const before = await populate(first);
    // Long enough that Ann's own last activity is well outside the window: only the periodic
    // write of who is connected can bring her lastSeen close to the crash.
    await sleep(FLUSH_WINDOW_MS + 1500);
    const killedAt = Date.now();
    assert.deepEqual(await stop(first, 'SIGKILL'), { code: null, signal: 'SIGKILL' });
    assert.ok(existsSync(join(dir, LOCK_FILE)), 'a crash leaves the lock file behind');

    const second = await start(dir);
    assert.match(second.log, /"msg":"user records loaded"/);
    const ann = await userPresence(second, 'ann');
    const lastSeen = ms(ann.lastSeen);
    const lostMs = killedAt - lastSeen;
    // Reported for docs/operations.md.
    console.log(`# kill -9: lastSeen of a connected user was ${lostMs} ms before the kill (documented: at most ${FLUSH_WINDOW_MS} ms)`);
    assert.ok(lastSeen <= killedAt, `lastSeen ${ann.lastSeen} is not after the kill`);
    assert.ok(lostMs <= FLUSH_WINDOW_MS + SLACK_MS, `lastSeen ${ann.lastSeen} is ${lostMs} ms before the kill`);
    assert.ok(lastSeen > before.annLastSeenBefore + 1000, 'moved past her last activity');
    await assertRestored(second, before);
  });

  it('SIGTERM: a graceful restart keeps everything; lastSeen of connected users is the shutdown', async () => {
    const dir = dataDir();
    const first = await start(dir);
    const before = await populate(first);
    await sleep(300);
    const stoppedAt = Date.now();
    assert.deepEqual(await stop(first, 'SIGTERM'), { code: 0, signal: null });
    assert.equal(existsSync(join(dir, LOCK_FILE)), false, 'a clean shutdown releases the directory');

    const second = await start(dir);
    const lastSeen = ms((await userPresence(second, 'ann')).lastSeen);
    assert.ok(lastSeen >= stoppedAt && lastSeen <= stoppedAt + 3000, `lastSeen ${new Date(lastSeen).toISOString()} is the shutdown (${new Date(stoppedAt).toISOString()})`);
    await assertRestored(second, before);
  });

  it('a second server on the same data directory refuses to start, naming the lock', async () => {
    const dir = dataDir();
    await start(dir);
    const second = spawnServer(cleanEnv({ PRESENCE_DATA_DIR: dir }), await freePort());
    servers.push(second);
    const { code } = await second.exited;
    assert.equal(code, 1);
    assert.match(second.log, /failed to start/);
    assert.match(second.log, /is in use by another Presence server \(pid \d+/);
    assert.ok(second.log.includes(LOCK_FILE));
  });

  it('PRESENCE_DATA_DIR with REDIS_URL is refused at start (exit 2), naming both', async () => {
    const server = spawnServer(cleanEnv({ PRESENCE_DATA_DIR: dataDir(), REDIS_URL: 'redis://127.0.0.1:1' }), await freePort());
    servers.push(server);
    assert.equal((await server.exited).code, 2);
    assert.match(server.log, /^presence: PRESENCE_DATA_DIR and REDIS_URL are both set/m);
  });
});

describe('startServer with dataDir (in process)', () => {
  it('a start that fails (port in use) releases the data directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presence-durable-'));
    const busy = await startTestServer();
    try {
      await assert.rejects(startTestServer({ dataDir: dir, port: busy.port }), /EADDRINUSE/);
      const store = await FileUserStore.open({ dir });
      await store.close();
    } finally {
      await busy.shutdown();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a restart in the same process reads back what the first server stored', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presence-durable-'));
    try {
      const first = await startTestServer({ dataDir: dir });
      first.engine.updateUser('ann', { status: 'away', message: 'Lunch', meta: { name: 'Ann' } });
      await first.shutdown();
      const second = await startTestServer({ dataDir: dir });
      try {
        const ann = await TestClient.connect(second, { userId: 'ann' });
        assert.equal(ann.welcome.self.manualStatus, 'away');
        assert.equal(ann.welcome.self.message, 'Lunch');
        assert.deepEqual(ann.welcome.self.meta, { name: 'Ann' });
        await ann.close();
      } finally {
        await second.shutdown();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PRESENCE_DATA_DIR configuration', () => {
  it('is unset by default (records in memory), read from the variable or --data-dir, trimmed', () => {
    assert.equal(loadConfig({}, []).dataDir, undefined);
    assert.equal(loadConfig({ PRESENCE_DATA_DIR: '   ' }, []).dataDir, undefined);
    assert.equal(loadConfig({ PRESENCE_DATA_DIR: ' /var/lib/presence ' }, []).dataDir, '/var/lib/presence');
    assert.equal(loadConfig({ PRESENCE_DATA_DIR: '/a' }, ['--data-dir', './data']).dataDir, './data');
  });

  it('refuses to be combined with REDIS_URL, naming both', () => {
    assert.throws(
      () => loadConfig({ PRESENCE_DATA_DIR: '/data', REDIS_URL: 'redis://redis:6379' }, []),
      (error: unknown) => error instanceof ConfigError && error.variable === 'PRESENCE_DATA_DIR' && /PRESENCE_DATA_DIR and REDIS_URL are both set/.test(error.message),
    );
    assert.throws(() => loadConfig({ REDIS_URL: 'redis://redis:6379' }, ['--data-dir=/data']), /--data-dir and REDIS_URL are both set/);
  });
});
