/**
 * An overloaded server refuses new connections with OVERLOADED and close code 1013 (try again
 * later). The client must back off — at least `slowDownDelayMs`, spread at random so clients
 * refused together do not return together — and connect once the overload ends.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { PresenceClient, type ConnectionStatus } from '../src/index.js';
import { devClient } from './support/clients.js';
import { ManualClock } from './support/clocks.js';
import { fakeWebSocket } from './support/fake-socket.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { tracker } from './support/tracked.js';
import { until } from './support/wait.js';

describe('1013 on a manual clock', () => {
  function refusedWith1013(random: number) {
    const clock = new ManualClock();
    const fake = fakeWebSocket();
    const client = new PresenceClient({
      url: 'ws://presence.test/realtime',
      userId: 'ada',
      WebSocket: fake.WebSocket,
      clock,
      random: () => random,
      activity: false,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
      slowDownDelayMs: 4000,
    });
    fake.last().open();
    fake.last().deliver({ type: 'error', code: 'OVERLOADED', message: 'overloaded: event-loop lag of 900 ms, past the limit of 500 ms' });
    fake.last().serverClose(1013, 'OVERLOADED');
    return { clock, fake, client };
  }

  test('waits at least the slow-down delay, keeps trying, and is not an end', () => {
    const { clock, fake, client } = refusedWith1013(0);
    assert.equal(client.status, 'connecting');
    clock.advance(3999);
    assert.equal(fake.sockets.length, 1, 'not before the slow-down delay');
    clock.advance(1);
    assert.equal(fake.sockets.length, 2);
    fake.last().welcome();
    assert.equal(client.status, 'connected');
    client.close();
  });

  test('the floor is spread by up to as much again at random', () => {
    const { clock, fake, client } = refusedWith1013(0.5);
    clock.advance(5999);
    assert.equal(fake.sockets.length, 1);
    clock.advance(1);
    assert.equal(fake.sockets.length, 2, '4000 · (1 + 0.5)');
    client.close();
  });
});

describe('against an overloaded server', () => {
  let server: TestServer;
  const { track, closeAll } = tracker();
  /** When each upgrade of the test user arrived. */
  const upgrades: number[] = [];

  before(async () => {
    server = await startPresenceServer({ limits: { maxEventLoopLagMs: 150 } });
    server.httpServer.prependListener('upgrade', (request: IncomingMessage) => {
      if (request.url?.includes('userId=late')) upgrades.push(performance.now());
    });
  });
  after(async () => {
    await closeAll();
    await server.shutdown();
  });

  test('backs off by at least slowDownDelayMs while refused, then connects once the load is gone', async (t) => {
    // Stall this process's event loop (the server's too) for 300 ms every 350 ms.
    const load = setInterval(() => {
      const end = performance.now() + 300;
      while (performance.now() < end) {
        // busy
      }
    }, 350);
    let stoppedAt = 0;
    let client: PresenceClient | undefined;
    const statuses: ConnectionStatus[] = [];
    try {
      await until(async () => (await server.metrics.registry.metrics()).includes('\npresence_overloaded 1\n'), 'the server to be overloaded');
      client = track(devClient(server.wsUrl, 'late', { slowDownDelayMs: 400 }));
      client.on('status', (status) => statuses.push(status));
      await until(() => upgrades.length >= 4, 'four refused attempts', 15_000);
      assert.equal(client.status, 'connecting', 'still trying, never ended');
    } finally {
      clearInterval(load);
      stoppedAt = performance.now();
    }
    const gaps = upgrades.slice(1, 4).map((at, i) => Math.round(at - upgrades[i]));
    t.diagnostic(`gaps between refused attempts: ${gaps.join(', ')} ms (slowDownDelayMs 400; reconnect backoff alone would be 10–250 ms)`);
    for (const gap of gaps) assert.ok(gap >= 400, `waited at least the slow-down delay (${gap} ms)`);
    const refused = /presence_connections_refused_total\{reason="event_loop_lag"\} (\d+)/.exec(await server.metrics.registry.metrics());
    assert.ok(Number(refused?.[1]) >= 4, 'the server refused them for load');

    await until(() => client.status === 'connected', 'connected after the load', 10_000);
    t.diagnostic(`connected ${Math.round(performance.now() - stoppedAt)} ms after the last stall`);
    assert.equal(statuses.includes('disconnected'), false, 'never gave up');
    assert.equal(client.sessionId !== undefined, true);
  });
});
