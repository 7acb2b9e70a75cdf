/**
 * Overload: past the event-loop lag or the outbound buffer limit, a node refuses new WebSocket
 * connections with OVERLOADED / 1013 and reports not ready, while the clients it already has keep
 * working; once the load is gone it accepts connections again. Real servers, real sockets, real
 * stalls (a busy loop in this process, which is the server's process too) and real unread sockets.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { OverloadGuard } from '../src/transport/overload-guard.js';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const servers: Server[] = [];
const clients: TestClient[] = [];

async function server(limits: Record<string, number>): Promise<Server> {
  const started = await startTestServer({ limits });
  servers.push(started);
  return started;
}

async function connect(target: Server, userId: string): Promise<TestClient> {
  const client = await TestClient.connect(target, { userId });
  clients.push(client);
  return client;
}

after(async () => {
  for (const client of clients.splice(0)) await client.close().catch(() => {});
  for (const s of servers.splice(0)) await s.shutdown();
});

async function metrics(target: Server): Promise<string> {
  return await fetch(`${target.url}/metrics`).then((r) => r.text());
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Holds this process's event loop (the server's too) for `blockMs` every `everyMs`, until stopped. */
function stallLoop(blockMs: number, everyMs: number): { stop(): void } {
  const timer = setInterval(() => {
    const end = performance.now() + blockMs;
    while (performance.now() < end) {
      // busy: this is the load
    }
  }, everyMs);
  return { stop: () => clearInterval(timer) };
}

/** Opens a connection and reports how it ended: refused (error + close) or welcomed. */
async function attempt(target: Server, userId: string): Promise<{ client: TestClient; error?: { code: string; message: string }; close?: number; ms: number }> {
  const started = performance.now();
  const client = await connect(target, userId);
  const first = client.messages[0];
  if (first?.type !== 'error') return { client, ms: performance.now() - started };
  const { code } = await client.closed;
  return { client, error: { code: first.code, message: first.message }, close: code, ms: performance.now() - started };
}

describe('overload: event-loop lag', () => {
  it('refuses new connections with OVERLOADED/1013 and reports not ready while the loop stalls; existing clients keep working; accepts again after', async (t) => {
    const node = await server({ maxEventLoopLagMs: 150, maxTotalOutboundBytes: 0 });
    const ann = await connect(node, 'ann');
    const obs = await connect(node, 'obs');
    await ann.request({ type: 'join', channel: 'room' });
    await obs.request({ type: 'join', channel: 'room' });
    // Starting a server (and a busy shared machine) can itself stall the loop past this low limit.
    await until(async () => (await httpJson(node, '/readyz')).status === 200, 'ready before the load', 5000);

    const load = stallLoop(300, 350);
    try {
      await sleep(400); // at least one stall has happened
      const refusals: number[] = [];
      for (let i = 0; i < 3; i += 1) {
        const refused = await attempt(node, `late-${i}`);
        assert.equal(refused.error?.code, 'OVERLOADED', 'refused with the overload code');
        assert.match(refused.error!.message, /event-loop lag of \d+ ms, past the limit of 150 ms/);
        assert.equal(refused.close, 1013, 'close code 1013 (try again later)');
        assert.equal(refused.client.messages.some((m) => m.type === 'welcome'), false);
        refusals.push(Math.round(refused.ms));
      }
      t.diagnostic(`refusals under 300 ms stalls every 350 ms: ${refusals.join(', ')} ms from opening the socket to its close`);

      // The clients already connected are served, only more slowly.
      assert.equal((await ann.request({ type: 'status', status: 'busy' }, 5000)).type, 'ack');
      await obs.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'ann' && m.member.status === 'busy', 5000);

      const ready = await httpJson(node, '/readyz');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.error.code, 'OVERLOADED');
      assert.match(ready.body.error.message, /event-loop lag/);
      assert.equal(ready.headers.get('retry-after'), '1');

      const text = await metrics(node);
      assert.equal(metric(text, 'presence_overloaded'), 1);
      assert.ok(metric(text, 'presence_connections_refused_total{reason="event_loop_lag"}') >= 3);
      assert.ok(metric(text, 'presence_errors_total{code="OVERLOADED"}') >= 3);
      assert.ok(metric(text, 'presence_connections_closed_total{code="1013"}') >= 3);
      assert.ok(metric(text, 'presence_event_loop_lag_max_seconds') >= 0.15, 'the lag shows in the lag metric');
      assert.equal(metric(text, 'presence_connections'), 2, 'no refused connection became a session');
    } finally {
      load.stop();
    }

    // The stall holds the door shut for a second after it, then connections are welcome again.
    const stoppedAt = performance.now();
    await until(async () => (await httpJson(node, '/readyz')).status === 200, 'ready again', 5000);
    const back = await attempt(node, 'late-after');
    assert.equal(back.error, undefined, 'accepted once the load is gone');
    assert.equal(back.client.welcome.userId, 'late-after');
    t.diagnostic(`ready again ${Math.round(performance.now() - stoppedAt)} ms after the last stall`);
    assert.equal(metric(await metrics(node), 'presence_overloaded'), 0);
  });

  it('lets a client resuming its session in while refusing new ones, so a reconnect storm does not turn into leave/join', async () => {
    // An offline delay longer than the test: ann's session waits for her through every stall.
    const node = await startTestServer({ offlineDelayMs: 10_000, limits: { maxEventLoopLagMs: 150, maxTotalOutboundBytes: 0 } });
    servers.push(node);
    const ann = await connect(node, 'ann');
    const obs = await connect(node, 'obs');
    await ann.request({ type: 'join', channel: 'room' });
    await obs.request({ type: 'join', channel: 'room' });
    const sessionId = ann.welcome.sessionId;
    await until(async () => (await httpJson(node, '/readyz')).status === 200, 'ready before the load', 5000);
    ann.ws.terminate();

    const load = stallLoop(300, 350);
    try {
      await sleep(400);
      const fresh = await attempt(node, 'newcomer');
      assert.equal(fresh.error?.code, 'OVERLOADED', 'a new session is refused');
      const back = await TestClient.connect(node, { userId: 'ann', sessionId });
      clients.push(back);
      assert.equal(back.messages[0]?.type, 'welcome', `the resuming client is let in: ${JSON.stringify(back.messages[0])}`);
      assert.equal(back.welcome.resumed, true);
      // A made-up session id is no way past the door.
      const forged = await TestClient.connect(node, { userId: 'eve', sessionId: 'not-a-live-session-id' });
      clients.push(forged);
      assert.equal(forged.messages[0]?.type === 'error' && forged.messages[0].code, 'OVERLOADED');
    } finally {
      load.stop();
    }
    assert.equal(obs.messages.some((m) => (m.type === 'presence.leave' || m.type === 'presence.join') && 'userId' in m && m.userId === 'ann'), false);
    assert.equal(obs.messages.some((m) => m.type === 'presence.join'), false, 'the observer saw no join');
  });

  it('with the limit at 0 a stall refuses nothing', async () => {
    const node = await server({ maxEventLoopLagMs: 0, maxTotalOutboundBytes: 0 });
    const load = stallLoop(300, 350);
    try {
      await sleep(400);
      const result = await attempt(node, 'calm');
      assert.equal(result.error, undefined);
      assert.equal((await httpJson(node, '/readyz')).status, 200);
    } finally {
      load.stop();
    }
  });
});

describe('overload: a node without connections', () => {
  it('stops sampling the loop while idle, and the next upgrade starts it again without counting the idle time as lag', async () => {
    let idle = true;
    const guard = new OverloadGuard({ maxEventLoopLagMs: 100, maxTotalOutboundBytes: 0, outbound: () => ({ totalBytes: 0, maxBytes: 0 }), idle: () => idle });
    try {
      await until(() => !guard.sampling, 'the sampler to stop', 2000);
      await sleep(300); // three times the limit without a tick: not a stall
      assert.equal(guard.check(), undefined, 'the first upgrade after idling is let in');
      assert.equal(guard.sampling, true, 'an upgrade wakes the sampler');
      idle = false;
      const end = performance.now() + 250;
      while (performance.now() < end) {
        // busy: a real stall while a connection is open
      }
      await sleep(30);
      assert.equal(guard.check()?.reason, 'event_loop_lag', 'a stall after waking is caught');
      await sleep(100);
      assert.equal(guard.sampling, true, 'keeps sampling while not idle');
    } finally {
      guard.close();
    }
  });
});

describe('overload: outbound buffers', () => {
  it('refuses new connections while unread bytes pile up past the limit, and accepts again once they drain', async (t) => {
    const limit = 256 * 1024;
    const node = await startTestServer({
      limits: {
        maxEventLoopLagMs: 0,
        maxTotalOutboundBytes: limit,
        // Each unread socket may hold a lot: the node-wide limit is the one under test.
        maxOutboundBufferBytes: 256 * 1024 * 1024,
        maxMetaBytes: 60_000,
        rateLimitPerSecond: 100_000,
        rateLimitBurst: 100_000,
      },
    });
    servers.push(node);
    // obs shares only the lobby with ann; the flood goes to the room, where the sleepers are.
    const obs = await connect(node, 'obs');
    await obs.request({ type: 'join', channel: 'lobby' });
    const sleepers: TestClient[] = [];
    for (const userId of ['s1', 's2']) {
      const sleeper = await connect(node, userId);
      await sleeper.request({ type: 'join', channel: 'room' });
      // Stop reading: the kernel buffers fill, then the server's socket buffers.
      (sleeper.ws as WebSocket & { _socket: { pause(): void } })._socket.pause();
      sleepers.push(sleeper);
    }
    const ann = await connect(node, 'ann');
    await ann.request({ type: 'join', channel: 'room' });
    await ann.request({ type: 'join', channel: 'lobby' });

    // Large channel-meta updates to the room, until the unread bytes pass the limit, and
    // on while the test looks: TCP autotuning keeps growing the kernel buffers for a while, which
    // would otherwise drain the server's backlog into them.
    let sent = 0;
    let filled = false;
    const pump = setInterval(() => {
      const burst = filled ? 1 : 10;
      for (let i = 0; i < burst; i += 1) ann.sendRaw(JSON.stringify({ type: 'channel.meta', channel: 'room', meta: { blob: `${sent++}`.padEnd(50_000, 'x') } }));
    }, 25);
    try {
      await until(async () => metric(await metrics(node), 'presence_outbound_buffer_bytes') > 2 * limit, 'the outbound buffers to pass the limit', 20_000);
      filled = true;
      // The guard scans the buffers four times a second.
      await until(async () => metric(await metrics(node), 'presence_overloaded') === 1, 'the guard to see it', 5000);
      const text = await metrics(node);
      const total = metric(text, 'presence_outbound_buffer_bytes');
      const largest = metric(text, 'presence_outbound_buffer_max_bytes');
      t.diagnostic(`${sent} updates of 50 kB: ${total} bytes unsent, ${largest} on the largest connection`);
      assert.ok(largest > 0 && largest <= total);

      const refused = await attempt(node, 'late');
      assert.equal(refused.error?.code, 'OVERLOADED');
      assert.match(refused.error!.message, /bytes wait to be sent, past the limit of 262144/);
      assert.equal(refused.close, 1013);
      const ready = await httpJson(node, '/readyz');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.error.code, 'OVERLOADED');
      assert.equal(metric(await metrics(node), 'presence_connections_refused_total{reason="outbound_buffer"}'), 1);

      // The client that reads is still served: it sees ann's next update in the lobby.
      assert.equal((await ann.request({ type: 'status', status: 'away' }, 5000)).type, 'ack');
      await obs.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'ann' && m.member.status === 'away', 5000);
    } finally {
      clearInterval(pump);
    }

    for (const sleeper of sleepers) (sleeper.ws as WebSocket & { _socket: { resume(): void } })._socket.resume();
    await until(async () => metric(await metrics(node), 'presence_outbound_buffer_bytes') === 0, 'the buffers to drain', 20_000);
    await until(async () => (await httpJson(node, '/readyz')).status === 200, 'ready again', 5000);
    const back = await attempt(node, 'late-after');
    assert.equal(back.error, undefined, 'accepted once the buffers drained');
    for (const sleeper of sleepers) assert.equal(sleeper.ws.readyState, sleeper.ws.OPEN, 'the slow readers were not cut');
  });
});
