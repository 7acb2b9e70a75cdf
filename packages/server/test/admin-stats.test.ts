/**
 * `GET /realtime/admin/stats`, the dashboard's data: who may read it, what it counts (invisible
 * users nowhere), the busiest channels, event rates from the counters, and the rate sampler.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createAdminStats } from '../src/http/admin-stats.js';
import { EventLoopWindow } from '../src/metrics/event-loop-window.js';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';

describe('GET /realtime/admin/stats', () => {
  it('needs the API key when one is configured: 401 without or with a wrong one', async () => {
    const server = await startTestServer({ auth: { apiKey: 'the-admin-key-0123456789' } });
    after(() => server.shutdown());
    assert.equal((await httpJson(server, '/realtime/admin/stats')).status, 401);
    const wrong = await httpJson(server, '/realtime/admin/stats', { bearer: 'not-the-key' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'UNAUTHORIZED');
    const ok = await httpJson(server, '/realtime/admin/stats', { bearer: 'the-admin-key-0123456789' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('cache-control'), 'no-store');
    assert.equal(ok.body.nodeId, null);
    assert.equal(ok.body.cluster, null);
  });

  it('counts what others can see: invisible users are in no figure but sessions and connections', async () => {
    const server = await startTestServer();
    after(() => server.shutdown());
    const clients: TestClient[] = [];
    const people: [string, string[], boolean][] = [
      ['ada', ['room:a', 'room:b'], false],
      ['bob', ['room:a'], false],
      ['cy', ['room:a', 'room:c'], true],
      ['dee', ['room:b'], false],
    ];
    for (const [userId, channels, invisible] of people) {
      const client = await TestClient.connect(server, { userId });
      clients.push(client);
      if (invisible) assert.equal((await client.request({ type: 'status', status: 'invisible' })).type, 'ack');
      for (const channel of channels) assert.equal((await client.request({ type: 'join', channel })).type, 'ack');
    }
    after(() => Promise.all(clients.map((c) => c.close())));

    const first = await httpJson(server, '/realtime/admin/stats');
    assert.equal(first.status, 200);
    const stats = first.body;
    assert.equal(stats.connections, 4);
    assert.equal(stats.sessions, 4);
    assert.equal(stats.onlineUsers, 3);
    assert.equal(stats.channels, 2, 'room:c has only an invisible member');
    assert.deepEqual(stats.topChannels, [
      { channel: 'room:a', members: 2 },
      { channel: 'room:b', members: 2 },
    ]);
    assert.ok(!JSON.stringify(stats).includes('room:c'));
    assert.equal(stats.rates, null, 'nothing to compare the first request with');
    assert.ok(stats.totals.eventsIn >= 7, `eventsIn ${stats.totals.eventsIn}`);
    assert.deepEqual(stats, { ...stats, ...server.engine.stats() }, 'the same figures as the metrics gauges');

    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const client of clients) await client.request({ type: 'join', channel: 'room:a' });
    const second = (await httpJson(server, '/realtime/admin/stats')).body;
    assert.ok(second.rates, 'rates on the second request');
    assert.ok(second.rates.windowSeconds > 0);
    assert.ok(second.rates.eventsInPerSecond > 0);
    assert.ok(second.totals.eventsIn >= stats.totals.eventsIn + 4);
  });

  it('refuses user tokens: the figures are for operators', async () => {
    const secret = 'admin-stats-test-secret-0123456789abcdef';
    const server = await startTestServer({ auth: { jwtSecret: secret, apiKey: 'the-admin-key-0123456789' } });
    after(() => server.shutdown());
    const { SignJWT } = await import('jose');
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('ada').setExpirationTime('5m').sign(new TextEncoder().encode(secret));
    const answer = await httpJson(server, '/realtime/admin/stats', { bearer: token });
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error.code, 'FORBIDDEN');
  });
});

describe('admin stats rates', () => {
  it('averages the counters over the window since the oldest sample, and keeps the sample list bounded', async () => {
    let now = 0;
    let eventsIn = 0;
    let eventsOut = 0;
    const stats = createAdminStats({
      engine: {
        stats: () => ({ connections: 0, sessions: 0, onlineUsers: 0, channels: 0 }),
        adminView: () => ({ topChannels: [], nodes: new Map() }),
      },
      metrics: { eventsIn: { total: () => eventsIn }, eventsOut: { total: () => eventsOut } },
      now: () => now,
      rateWindowMs: 10_000,
    });
    assert.equal((await stats()).rates, null);
    for (let second = 1; second <= 30; second++) {
      now = second * 1000;
      eventsIn += 5;
      eventsOut += 50;
      const { rates } = await stats();
      assert.ok(rates);
      assert.equal(rates.eventsInPerSecond, 5);
      assert.equal(rates.eventsOutPerSecond, 50);
      assert.equal(rates.windowSeconds, Math.min(second, 10));
    }
    // Many calls within one instant neither divide by zero nor grow the list.
    for (let i = 0; i < 1000; i++) assert.equal((await stats()).rates?.eventsInPerSecond, 5);
  });
});

describe('admin stats: process figures and error totals', () => {
  it('reports this node\'s memory, unsent bytes and event-loop lag, and WebSocket errors by code as /metrics counts them', async () => {
    const server = await startTestServer();
    after(() => server.shutdown());
    const first = (await httpJson(server, '/realtime/admin/stats')).body;
    assert.equal(first.process.eventLoopLag, null, 'nothing measured before the first request');
    assert.ok(first.process.residentMemoryBytes > 10 * 1024 * 1024, `rss ${first.process.residentMemoryBytes}`);
    assert.ok(first.process.heapUsedBytes > 0 && first.process.heapUsedBytes <= first.process.heapTotalBytes);
    assert.equal(first.process.outboundBufferBytes, 0);
    assert.equal(first.process.outboundBufferMaxBytes, 0);
    assert.deepEqual(first.totals.errors, {});

    const client = await TestClient.connect(server, { userId: 'ada' });
    after(() => client.close());
    assert.equal((await client.request({ type: 'no-such-command' })).type, 'error');
    assert.equal((await client.request({ type: 'join', channel: 'bad channel' })).type, 'error');
    assert.equal((await client.request({ type: 'join', channel: 'bad channel' })).type, 'error');

    // A stall of 300 ms on this process's loop (the server runs in it), after enough samples for
    // a 99th percentile that is not the maximum (50 a second).
    await sleep(2500);
    const stalledAt = Date.now();
    while (Date.now() - stalledAt < 300);
    await sleep(50);
    const second = (await httpJson(server, '/realtime/admin/stats')).body;
    const lag = second.process.eventLoopLag;
    assert.ok(lag, 'measured since the first request');
    assert.ok(lag.maxMs >= 250 && lag.maxMs < 5000, `max ${lag.maxMs} ms`);
    assert.ok(lag.p99Ms < lag.maxMs - 100, `one stall moves the maximum, not the 99th percentile: ${JSON.stringify(lag)}`);
    assert.ok(lag.windowSeconds > 2 && lag.windowSeconds <= 10, `window ${lag.windowSeconds} s`);
    assert.deepEqual(second.totals.errors, { UNKNOWN_TYPE: 1, INVALID_CHANNEL: 2 });
    const exposition = (await httpJson(server, '/metrics')).text;
    assert.match(exposition, /^presence_errors_total\{code="UNKNOWN_TYPE"\} 1$/m);
    assert.match(exposition, /^presence_errors_total\{code="INVALID_CHANNEL"\} 2$/m);
  });

  it('passes through what its sources say, and zeros without them', async () => {
    const engine = {
      stats: () => ({ connections: 0, sessions: 0, onlineUsers: 0, channels: 0 }),
      adminView: () => ({ topChannels: [], nodes: new Map() }),
    };
    const counters = { eventsIn: { total: () => 0 }, eventsOut: { total: () => 0 } };
    const bare = await createAdminStats({ engine, metrics: counters })();
    assert.deepEqual(bare.process, { residentMemoryBytes: 0, heapUsedBytes: 0, heapTotalBytes: 0, outboundBufferBytes: 0, outboundBufferMaxBytes: 0, eventLoopLag: null });
    assert.deepEqual(bare.totals.errors, {});
    const full = await createAdminStats({
      engine,
      metrics: { ...counters, errors: { counts: () => ({ RATE_LIMITED: 7 }) } },
      process: {
        memory: () => ({ rss: 300, heapUsed: 100, heapTotal: 200 }),
        outbound: () => ({ totalBytes: 5000, maxBytes: 4000 }),
        eventLoopLag: () => ({ windowSeconds: 1, p99Ms: 3, maxMs: 9 }),
      },
    })();
    assert.deepEqual(full.process, {
      residentMemoryBytes: 300,
      heapUsedBytes: 100,
      heapTotalBytes: 200,
      outboundBufferBytes: 5000,
      outboundBufferMaxBytes: 4000,
      eventLoopLag: { windowSeconds: 1, p99Ms: 3, maxMs: 9 },
    });
    assert.deepEqual(full.totals.errors, { RATE_LIMITED: 7 });
  });
});

describe('EventLoopWindow', () => {
  it('forgets a stall once it is older than the window, and stops sampling when nobody reads', async () => {
    const window = new EventLoopWindow({ windowMs: 600, idleMs: 1000 });
    after(() => window.close());
    assert.equal(window.read(), null, 'the first read starts sampling');
    await sleep(100);
    const stalledAt = Date.now();
    while (Date.now() - stalledAt < 400);
    await sleep(50);
    const during = window.read();
    assert.ok(during && during.maxMs >= 300, `after the stall: ${JSON.stringify(during)}`);
    await sleep(300);
    assert.ok((window.read()?.maxMs ?? 0) >= 300, 'still in the window');
    // Read often enough to keep sampling, until the stall has left the window.
    for (let i = 0; i < 3; i++) {
      await sleep(300);
      window.read();
    }
    const later = window.read();
    assert.ok(later && later.maxMs < 300, `a window later: ${JSON.stringify(later)}`);
    assert.ok(later.windowSeconds <= 0.6);
    // Nobody reads for longer than idleMs: sampling stops, and the next read starts it afresh.
    await sleep(1300);
    assert.equal(window.read(), null);
    await sleep(100);
    assert.ok(window.read(), 'sampling again');
    window.close();
    assert.equal(window.read(), null, 'closed for good');
  });
});
