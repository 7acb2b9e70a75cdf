/**
 * `@presence/client/http` against a real server: the PresenceClient API over HTTP heartbeats, with
 * a raw WebSocket observer as the witness of what other users see.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PresenceHttpClient, type FetchLike, type PresenceHttpClientOptions } from '../src/http.js';
import { CountingClock } from './support/clocks.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { nextEvent, until } from './support/wait.js';

const INTERVAL_MS = 200;

let server: TestServer;
before(async () => {
  server = await startPresenceServer({ httpHeartbeatIntervalMs: INTERVAL_MS, offlineDelayMs: 3000 });
});
after(() => server.shutdown());

const httpUrl = () => `http://127.0.0.1:${server.port}/realtime`;

function httpClient(userId: string, options: Partial<PresenceHttpClientOptions> = {}): PresenceHttpClient {
  return new PresenceHttpClient({ url: httpUrl(), userId, activity: false, reconnect: { initialDelayMs: 20, maxDelayMs: 250 }, ...options });
}

const aboutUser = (observer: Observer, userId: string) =>
  observer.messages
    .filter((m) => (m.type === 'presence.join' || m.type === 'presence.update' ? m.member.userId === userId : m.type === 'presence.leave' && m.userId === userId))
    .map((m) => m.type);

describe('PresenceHttpClient', () => {
  test('joins, and sees the others join, change and leave; the others see it like any member', async () => {
    const observer = await Observer.connect(server.wsUrl, 'h-obs');
    const client = httpClient('h-ada', { device: 'web' });
    try {
      await observer.request({ type: 'join', channel: 'h:room' });
      const [welcome] = await nextEvent(client, 'connected');
      assert.equal(welcome.userId, 'h-ada');
      assert.equal(typeof welcome.sessionToken, 'string');
      assert.equal(client.status, 'connected');
      const room = await client.join('h:room', { mode: 'viewing' });
      assert.deepEqual([...room.members.keys()].sort(), ['h-ada', 'h-obs']);
      const joined = await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'h-ada');
      assert.ok(joined.type === 'presence.join');
      assert.deepEqual(joined.member.devices, ['web']);
      assert.deepEqual(joined.member.channelMeta, { mode: 'viewing' });

      const updated = nextEvent(room, 'update', (member) => member.userId === 'h-obs' && member.status === 'busy');
      await observer.request({ type: 'status', status: 'busy' });
      await updated;

      const carol = await Observer.connect(server.wsUrl, 'h-carol');
      const carolJoined = nextEvent(room, 'join', (member) => member.userId === 'h-carol');
      await carol.request({ type: 'join', channel: 'h:room' });
      await carolJoined;
      const carolLeft = nextEvent(room, 'leave', (member) => member.userId === 'h-carol');
      await carol.request({ type: 'leave', channel: 'h:room' });
      await carolLeft;
      await carol.close();

      const self = await client.setStatus({ status: 'away', message: 'on HTTP' });
      assert.equal(self.manualStatus, 'away');
      await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'h-ada' && m.member.message === 'on HTTP');
      assert.deepEqual(await room.setMeta({ mode: 'editing' }), { mode: 'editing' });
      await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'h-ada' && m.member.channelMeta.mode === 'editing');

      room.typing.input();
      await observer.waitFor((m) => m.type === 'typing' && m.userId === 'h-ada' && m.typing);

      await room.leave();
      await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'h-ada');
    } finally {
      client.close();
      await observer.close();
    }
  });

  test('watches users by polling, and reports their changes', async () => {
    const client = httpClient('h-watcher');
    const grace = await Observer.connect(server.wsUrl, 'h-grace');
    try {
      const [presence] = await client.watch(['h-grace']);
      assert.equal(presence.status, 'online');
      const changed = nextEvent(client, 'user', (user) => user.userId === 'h-grace' && user.status === 'busy');
      await grace.request({ type: 'status', status: 'busy' });
      await changed;
      await client.unwatch(['h-grace']);
      assert.equal(client.users.size, 0);
    } finally {
      client.close();
      await grace.close();
    }
  });

  test('a network failure: it reconnects and resumes the session, and others see nothing', async () => {
    let down = false;
    const flaky: FetchLike = (url, init) => (down ? Promise.reject(new TypeError('network down')) : fetch(url, init));
    const observer = await Observer.connect(server.wsUrl, 'h-obs2');
    const client = httpClient('h-flaky', { fetch: flaky, device: 'web' });
    try {
      await observer.request({ type: 'join', channel: 'h:flaky' });
      await client.join('h:flaky');
      await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'h-flaky');
      const sessionId = client.sessionId;
      down = true;
      await nextEvent(client, 'status', (status) => status === 'reconnecting');
      await new Promise((resolve) => setTimeout(resolve, 3 * INTERVAL_MS)); // detached on the server, inside its offline delay
      down = false;
      const [welcome] = await nextEvent(client, 'connected');
      assert.equal(welcome.resumed, true);
      assert.equal(client.sessionId, sessionId);
      await new Promise((resolve) => setTimeout(resolve, 3 * INTERVAL_MS));
      assert.deepEqual(aboutUser(observer, 'h-flaky'), ['presence.join'], 'no leave, no join, no update');
      assert.ok(client.channel('h:flaky').members.has('h-obs2'));
    } finally {
      client.close();
      await observer.close();
    }
  });

  test('logout ends it with LOGGED_OUT, and others see the user offline at once', async () => {
    const observer = await Observer.connect(server.wsUrl, 'h-obs3');
    const client = httpClient('h-leaving');
    try {
      await observer.request({ type: 'join', channel: 'h:out' });
      await client.join('h:out');
      await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'h-leaving');
      const ended = nextEvent(client, 'ended');
      await client.logout();
      const [reason] = await ended;
      assert.equal(reason.code, 'LOGGED_OUT');
      await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'h-leaving', 2000);
    } finally {
      client.close();
      await observer.close();
    }
  });

  test('close() leaves no timer behind', async () => {
    const clock = new CountingClock();
    const client = httpClient('h-timers', { clock });
    await nextEvent(client, 'connected');
    await client.join('h:timers');
    assert.ok(clock.outstanding > 0);
    client.close();
    assert.equal(clock.outstanding, 0);
    await until(() => true, 'nothing');
  });
});
