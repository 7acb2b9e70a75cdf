/**
 * Webhooks end to end: real servers (in this process, and the real CLI for `kill -9`), real
 * WebSocket clients, and a real HTTP receiver on loopback that fails on purpose (5xx, 429 with
 * Retry-After, 400, answers that never come). Checks retries, order per user and per channel,
 * signatures, dead letters in the admin stats and the metrics, the backlog bound, and at least
 * once across a crash: a server killed mid-delivery and restarted on its data directory sends
 * the rest with the same ids, then tells the receiver its users and channels are gone.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, describe, it } from 'node:test';
import { DEFAULT_WEBHOOK_EVENT_TYPES, WEBHOOK_EVENT_TYPES, type WebhookEvent, type WebhookEventType } from '@presence/protocol';
import { resolveConfig, type WebhookConfig } from '../src/config/config.js';
import { silentLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { NEXT_SECRET, Receiver, SECRET, byKey } from './support/webhook-receiver.js';
import { TestClient, httpJson, sleep } from './support/harness.js';
import { freePort } from './support/redis-server.js';


async function metric(server: { url: string }, name: string, labels: Record<string, string>): Promise<number> {
  const text = (await httpJson(server, '/metrics')).text;
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length + 1, line.indexOf('}'));
    if (wanted.every((w) => labelText.split(',').includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return NaN;
}

describe('webhooks, delivered over HTTP (in-process server)', { timeout: 120_000 }, () => {
  const servers: RunningServer[] = [];
  const receivers: Receiver[] = [];
  const clients: TestClient[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) await client.close().catch(() => {});
    for (const server of servers.splice(0)) await server.shutdown();
    for (const receiver of receivers.splice(0)) await receiver.close();
  });

  const receiver = async (secrets?: string[]): Promise<Receiver> => {
    const r = await Receiver.start(secrets);
    receivers.push(r);
    return r;
  };
  /** A server with webhooks to `urls`; the backoff starts at 100 ms so retries come quickly. */
  const server = async (urls: string[], webhooks: Partial<WebhookConfig> = {}, baseDelayMs = 100): Promise<RunningServer & { wsUrl: string }> => {
    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      offlineDelayMs: 100,
      limits: { maxEventLoopLagMs: 0 },
      webhooks: { urls, secrets: [SECRET], events: [...DEFAULT_WEBHOOK_EVENT_TYPES], maxBacklog: 1000, timeoutMs: 5_000, giveUpMs: 60_000, ...webhooks },
    });
    const running = await startServer(config, { log: silentLogger, webhooks: { retry: { baseDelayMs, maxDelayMs: 2_000 } } });
    servers.push(running);
    return { ...running, wsUrl: `ws://127.0.0.1:${running.port}/realtime` };
  };
  const connect = async (target: { wsUrl: string }, userId: string): Promise<TestClient> => {
    const client = await TestClient.connect(target, { userId });
    clients.push(client);
    return client;
  };

  it('5xx then 200: the head is retried with the same id while later events of that user wait; other users and channels go on meanwhile; every attempt is signed', async () => {
    const r = await receiver([SECRET, NEXT_SECRET]);
    let adaOnline = '';
    // ada's first event fails at least twice, and until bob's first event and the room's have been
    // delivered: were they held up behind it, the test would time out.
    const othersThrough = () =>
      r.delivered().some((e) => e.type === 'user.online' && (e.data as { userId: string }).userId === 'bob') &&
      r.delivered().some((e) => e.type === 'channel.member_joined');
    r.answer = (request, nth) => {
      if (request.event.type === 'user.online' && (request.event.data as { userId: string }).userId === 'ada') {
        adaOnline = request.event.id;
        return nth <= 2 || !othersThrough() ? { status: 503 } : { status: 200 };
      }
      return { status: 200 };
    };
    const s = await server([r.url], { secrets: [SECRET, NEXT_SECRET] }, 300);
    const ada = await connect(s, 'ada');
    assert.equal((await ada.request({ type: 'status', status: 'busy' })).type, 'ack');
    assert.equal((await ada.request({ type: 'meta', meta: { name: 'Ada' } })).type, 'ack');
    assert.equal((await ada.request({ type: 'join', channel: 'room' })).type, 'ack');
    const bob = await connect(s, 'bob');
    assert.equal((await bob.request({ type: 'join', channel: 'room' })).type, 'ack');

    await r.waitFor(() => r.delivered().length === 7, 10_000, 'seven events delivered');
    const keys = byKey(r.delivered());
    assert.deepEqual(keys.get('user:ada'), ['user.online', 'user.status', 'user.meta']);
    assert.deepEqual(keys.get('user:bob'), ['user.online']);
    assert.deepEqual(keys.get('channel:room'), ['channel.member_joined ada', 'channel.occupied', 'channel.member_joined bob']);
    const attempts = r.requests.filter((q) => q.event.id === adaOnline);
    const failures = attempts.length - 1;
    assert.ok(failures >= 2);
    assert.deepEqual(
      attempts.map((q) => [q.attempt, q.answered]),
      attempts.map((_, i) => [i + 1, i < failures ? 503 : 200]),
      'the same id on every attempt, counted',
    );
    assert.ok(attempts[1].at - attempts[0].at >= 140, `backoff before the first retry (${attempts[1].at - attempts[0].at} ms)`);
    // ada's later events were not sent before her head was accepted.
    const accepted = attempts.at(-1)!.at;
    const adaLater = r.requests.filter((q) => q.event.type !== 'user.online' && (q.event.data as { userId?: string; channel?: string }).channel === undefined && (q.event.data as { userId: string }).userId === 'ada');
    assert.ok(adaLater.length === 2 && adaLater.every((q) => q.at >= accepted), 'user.status and user.meta waited for user.online');
    assert.ok(r.requests.every((q) => q.signed), 'every request verifies with each of the two secrets');
    assert.equal(new Set(r.delivered().map((e) => e.id)).size, 7, 'one delivery per id');
    assert.equal(await metric(s, 'presence_webhook_failed_attempts_total', { reason: 'http_5xx' }), failures);
    assert.equal(await metric(s, 'presence_webhook_retries_total', { url: r.url }), failures);
    assert.equal(await metric(s, 'presence_webhook_delivered_total', { url: r.url }), 7);
    assert.equal(await metric(s, 'presence_webhook_backlog', { url: r.url }), 0);
  });

  it('429 with Retry-After: the retry waits as long as the receiver asks, not the (shorter) backoff', async () => {
    const r = await receiver();
    r.answer = (_request, nth) => (nth === 1 ? { status: 429, headers: { 'retry-after': '2' } } : { status: 200 });
    const s = await server([r.url], { events: ['user.online'] }, 100);
    await connect(s, 'ada');
    await r.waitFor(() => r.delivered().length === 1, 10_000);
    const [first, second] = r.requests;
    assert.equal(first.answered, 429);
    assert.equal(second.event.id, first.event.id);
    assert.ok(second.at - first.at >= 1_900, `waited ${second.at - first.at} ms for Retry-After: 2`);
    assert.equal(await metric(s, 'presence_webhook_failed_attempts_total', { reason: 'http_429' }), 1);
  });

  it('400 is not retried: the event is dead-lettered (admin stats, metrics) and the next event of the user goes', async () => {
    const r = await receiver();
    r.answer = (request) => (request.event.type === 'user.status' ? { status: 400 } : { status: 200 });
    const s = await server([r.url]);
    const ada = await connect(s, 'ada');
    assert.equal((await ada.request({ type: 'status', status: 'busy' })).type, 'ack');
    assert.equal((await ada.request({ type: 'meta', meta: { name: 'Ada' } })).type, 'ack');
    await r.waitFor(() => r.delivered().some((e) => e.type === 'user.meta'), 10_000, 'user.meta after the refused user.status');
    await sleep(400);
    assert.equal(r.requests.filter((q) => q.event.type === 'user.status').length, 1, 'one attempt only');
    const stats = (await httpJson(s, '/realtime/admin/stats')).body;
    assert.equal(stats.webhooks.targets.length, 1);
    const target = stats.webhooks.targets[0];
    assert.equal(target.url, r.url);
    assert.equal(target.deadLetters, 1);
    assert.equal(target.delivered, 2);
    assert.equal(target.backlog, 0);
    assert.equal(target.recentDeadLetters[0].type, 'user.status');
    assert.equal(target.recentDeadLetters[0].reason, 'http 400');
    assert.equal(target.recentDeadLetters[0].attempts, 1);
    assert.equal(await metric(s, 'presence_webhook_dead_letters_total', { url: r.url }), 1);
    assert.equal(await metric(s, 'presence_webhook_failed_attempts_total', { reason: 'http_4xx' }), 1);
  });

  it('an answer that never comes times out and is retried; a receiver failing past the give-up age gets a dead letter', async () => {
    const r = await receiver();
    r.answer = (request, nth) => {
      if (request.event.type === 'user.online') return nth === 1 ? 'stall' : { status: 200 };
      return { status: 503 };
    };
    const s = await server([r.url], { timeoutMs: 400, giveUpMs: 1_500, events: ['user.online', 'user.status'] }, 100);
    const ada = await connect(s, 'ada');
    await r.waitFor(() => r.delivered().some((e) => e.type === 'user.online'), 10_000, 'user.online after a timeout');
    const online = r.requests.filter((q) => q.event.type === 'user.online');
    assert.ok(online[1].at - online[0].at >= 400, `the second attempt came after the timeout (${online[1].at - online[0].at} ms)`);
    assert.equal(await metric(s, 'presence_webhook_failed_attempts_total', { reason: 'timeout' }), 1);

    const before = Date.now();
    assert.equal((await ada.request({ type: 'status', status: 'busy' })).type, 'ack');
    const deadline = Date.now() + 15_000;
    let stats;
    for (;;) {
      stats = (await httpJson(s, '/realtime/admin/stats')).body;
      if (stats.webhooks.targets[0].deadLetters === 1 || Date.now() > deadline) break;
      await sleep(100);
    }
    assert.equal(stats.webhooks.targets[0].deadLetters, 1, 'given up on');
    const status = r.requests.filter((q) => q.event.type === 'user.status');
    assert.ok(status.length >= 3, `${status.length} attempts`);
    assert.ok(status.at(-1)!.at - before >= 1_450, `retried until the give-up age (${status.at(-1)!.at - before} ms)`);
    assert.equal(stats.webhooks.targets[0].recentDeadLetters[0].reason, 'http 503');
    assert.equal(stats.webhooks.targets[0].backlog, 0);
  });

  it('every URL gets every event, each with its own queue: one failing does not hold up the other', async () => {
    const good = await receiver();
    const down = await receiver();
    down.answer = () => ({ status: 500 });
    const s = await server([good.url, down.url]);
    const ada = await connect(s, 'ada');
    assert.equal((await ada.request({ type: 'join', channel: 'room' })).type, 'ack');
    await good.waitFor(() => good.delivered().length === 3, 10_000);
    assert.deepEqual(good.delivered().map((e) => e.type).sort(), ['channel.member_joined', 'channel.occupied', 'user.online']);
    await down.waitFor(() => down.requests.length >= 6, 10_000, 'retries at the failing URL');
    const goodIds = new Set(good.delivered().map((e) => e.id));
    assert.ok(down.requests.every((q) => goodIds.has(q.event.id)), 'the same events, the same ids');
    assert.ok(!down.requests.some((q) => q.event.type === 'channel.occupied'), 'occupied waits behind the failing member_joined of its channel');
    const stats = (await httpJson(s, '/realtime/admin/stats')).body;
    assert.deepEqual(
      stats.webhooks.targets.map((t: { url: string; delivered: number; backlog: number }) => [t.url, t.delivered, t.backlog]),
      [
        [good.url, 3, 0],
        [down.url, 0, 3],
      ],
    );
  });

  it('a full backlog drops the oldest waiting event (not the one being sent), counted in the metrics', async () => {
    const r = await receiver();
    r.answer = () => 'stall';
    const s = await server([r.url], { maxBacklog: 3, events: [...WEBHOOK_EVENT_TYPES] as WebhookEventType[] });
    const ada = await connect(s, 'ada');
    for (const message of ['one', 'two', 'three', 'four', 'five']) {
      assert.equal((await ada.request({ type: 'status', message })).type, 'ack');
    }
    await r.waitFor(() => r.requests.length >= 1, 5_000);
    assert.equal(await metric(s, 'presence_webhook_backlog', { url: r.url }), 3);
    assert.equal(await metric(s, 'presence_webhook_dropped_total', { url: r.url }), 3, 'six events, three kept');
    assert.equal(r.requests[0].event.type, 'user.online', 'the one in flight was kept');
  });
});

// ---------------------------------------------------------------------------------------------
// The real CLI, killed mid-delivery
// ---------------------------------------------------------------------------------------------

const BIN = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));

interface ServerProcess {
  url: string;
  wsUrl: string;
  child: ChildProcess;
  log: string;
  exited: Promise<unknown>;
}

async function startCli(env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  const base: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^PRESENCE_/.test(key) && !['PORT', 'HOST', 'REDIS_URL', 'LOG_LEVEL', 'NODE_ENV'].includes(key)) base[key] = value;
  }
  const child = spawn(process.execPath, ['--import', 'tsx', BIN], {
    env: { ...base, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server: ServerProcess = {
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/realtime`,
    child,
    log: '',
    exited: new Promise((resolve) => child.once('exit', resolve)),
  };
  child.stdout!.on('data', (chunk) => (server.log += chunk.toString()));
  child.stderr!.on('data', (chunk) => (server.log += chunk.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited: ${server.log}`);
    const ready = await httpJson(server, '/readyz').catch(() => undefined);
    if (ready?.status === 200) return server;
    if (Date.now() > deadline) throw new Error(`server did not become ready: ${server.log}`);
    await sleep(50);
  }
}

describe('webhooks across a crash (real CLI, PRESENCE_DATA_DIR, kill -9)', { timeout: 120_000 }, () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

  it('a node killed mid-delivery sends the rest after a restart, with the same ids, then reaps its users and channels', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'presence-webhooks-crash-'));
    dirs.push(dataDir);
    const r = await Receiver.start();
    const clients: TestClient[] = [];
    let second: ServerProcess | undefined;
    const first = await startCli({
      PRESENCE_DATA_DIR: dataDir,
      PRESENCE_WEBHOOK_URLS: r.url,
      PRESENCE_WEBHOOK_SECRET: SECRET,
      PRESENCE_OFFLINE_DELAY_MS: '60000',
    });
    try {
      // Nothing is answered before the crash: the first event of each key hangs in flight.
      r.answer = () => 'stall';
      for (const userId of ['ada', 'bob']) {
        const client = await TestClient.connect(first, { userId });
        clients.push(client);
        assert.equal((await client.request({ type: 'join', channel: 'room' })).type, 'ack');
        assert.equal((await client.request({ type: 'status', status: 'busy', message: `${userId} at work` })).type, 'ack');
      }
      await r.waitFor(() => r.requests.length === 3, 10_000, 'one request in flight per key');
      const inFlight = r.requests.map((q) => q.event.id);
      first.child.kill('SIGKILL');
      await first.exited;
      for (const client of clients) await client.close();

      r.answer = () => ({ status: 200 });
      const restartedAt = Date.now();
      second = await startCli({ PRESENCE_DATA_DIR: dataDir, PRESENCE_WEBHOOK_URLS: r.url, PRESENCE_WEBHOOK_SECRET: SECRET });
      // Before the crash: user.online, user.status (ada, bob); member_joined ×2, occupied, member_updated ×0 (not in the default set).
      // After it: member_left ×2, vacated, user.offline ×2.
      await r.waitFor(() => r.delivered().length === 12, 20_000, 'twelve events after the restart');
      const delivered = r.delivered();
      const keys = byKey(delivered);
      assert.deepEqual(keys.get('user:ada'), ['user.online', 'user.status', 'user.offline']);
      assert.deepEqual(keys.get('user:bob'), ['user.online', 'user.status', 'user.offline']);
      assert.deepEqual(keys.get('channel:room'), [
        'channel.member_joined ada',
        'channel.occupied',
        'channel.member_joined bob',
        'channel.member_left ada',
        'channel.member_left bob',
        'channel.vacated',
      ]);
      for (const id of inFlight) {
        const sent = r.requests.filter((q) => q.event.id === id);
        assert.equal(sent.length, 2, `${id}: in flight at the crash, sent again after it`);
        assert.deepEqual(sent[1].event, sent[0].event, 'the same event, byte for byte the same fields');
        assert.ok(sent[1].at >= restartedAt);
      }
      assert.equal(new Set(delivered.map((e) => e.id)).size, 12, 'each id delivered once after the restart');
      assert.ok(r.requests.every((q) => q.signed));
      const offline = delivered.filter((e) => e.type === 'user.offline');
      for (const event of offline) {
        assert.ok(event.type === 'user.offline');
        assert.equal(event.data.user.status, 'offline');
        assert.ok(event.data.lastSeen !== null && Date.parse(event.data.lastSeen) <= restartedAt, 'lastSeen from the data directory, before the restart');
      }
      assert.match(second.log, /"msg":"webhooks on".*"resumed":7/);
      // A third start owes nothing.
      second.child.kill('SIGTERM');
      await second.exited;
      const before = r.requests.length;
      second = await startCli({ PRESENCE_DATA_DIR: dataDir, PRESENCE_WEBHOOK_URLS: r.url, PRESENCE_WEBHOOK_SECRET: SECRET });
      await sleep(500);
      assert.equal(r.requests.length, before, 'nothing more to send');
    } finally {
      for (const client of clients) await client.close().catch(() => {});
      for (const server of [first, second]) if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await r.close();
    }
  });
});
