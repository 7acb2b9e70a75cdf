/**
 * No leaks: after close(), and after the connection ends for good, the client has no timer and
 * no listener left, whatever it went through (channels, watches, typing, reconnects).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { devClient } from './support/clients.js';
import { CountingClock } from './support/clocks.js';
import { FakeDocument, FakeTarget } from './support/dom.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { nextEvent, until } from './support/wait.js';

let server: TestServer;
before(async () => {
  server = await startPresenceServer({ offlineDelayMs: 2000 });
});
after(() => server.shutdown());

function instrumented(userId: string) {
  const clock = new CountingClock();
  const target = new FakeTarget();
  const page = new FakeDocument();
  const client = devClient(server.wsUrl, userId, { clock, activity: { target, visibility: page }, reconnectOn: { online: target, visibility: page } });
  const leftovers = () => ({ timers: clock.outstanding, listeners: target.listenerCount + page.listenerCount });
  return { client, clock, target, page, leftovers };
}

describe('close() leaves nothing behind', () => {
  test('after channels, watches, typing, activity, a reconnect and a restart grace period', async () => {
    const { client, target, page, leftovers } = instrumented('leak-ada');
    const room = await client.join('room:leak', { mode: 'editing' });
    await client.watch(['leak-bob']);
    await client.setStatus('busy');
    room.typing.input(); // arms the pause timer
    target.dispatch('pointerdown');
    page.setVisibility('hidden');
    page.setVisibility('visible');
    assert.ok(leftovers().timers > 0 && leftovers().listeners > 0, 'the test exercises timers and listeners');

    // A flap: backoff and connect timers come and go.
    const back = nextEvent(client, 'connected');
    server.cutConnections('leak-ada');
    await back;
    room.typing.input();

    client.close();
    assert.deepEqual(leftovers(), { timers: 0, listeners: 0 });
    assert.equal(client.status, 'disconnected');
    await until(() => server.connectionsOf('leak-ada') === 0, 'the socket is closed');

    // connect() again resumes; close() again cleans again.
    client.connect();
    const [welcome] = await nextEvent(client, 'connected');
    assert.equal(welcome.resumed, true);
    await until(() => room.members.has('leak-ada'), 'the channel is back');
    client.close();
    assert.deepEqual(leftovers(), { timers: 0, listeners: 0 });
  });

  test('closing while a reconnect is waiting cancels it', async () => {
    const { client, leftovers } = instrumented('leak-carol');
    await nextEvent(client, 'connected');
    const reconnecting = nextEvent(client, 'status', (status) => status === 'reconnecting');
    server.cutConnections('leak-carol');
    await reconnecting;
    client.close();
    assert.deepEqual(leftovers(), { timers: 0, listeners: 0 });
  });

  test('after the connection ends for good (logout elsewhere) nothing is left either', async () => {
    const { client, leftovers } = instrumented('leak-dan');
    const other = devClient(server.wsUrl, 'leak-dan');
    const room = await client.join('room:leak2');
    const observer = await Observer.connect(server.wsUrl, 'leak-obs');
    try {
      await observer.request({ type: 'join', channel: 'room:leak2' });
      await until(() => room.members.has('leak-obs'), 'both are members');
      const ended = nextEvent(client, 'ended');
      await other.logout();
      await ended;
      assert.deepEqual(leftovers(), { timers: 0, listeners: 0 });
    } finally {
      other.close();
      client.close();
      await observer.close();
    }
  });
});
