/**
 * The connection state machine on a manual clock with a scripted socket: every transition,
 * timeout and close-code decision, without sleeping. (Behaviour against the real server is
 * covered by the other test files.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PresenceClient, PresenceError, type ConnectionStatus, type PresenceClientOptions } from '../src/index.js';
import { ManualClock } from './support/clocks.js';
import { FakeDocument, FakeTarget } from './support/dom.js';
import { fakeWebSocket } from './support/fake-socket.js';

function setup(options: Partial<PresenceClientOptions> = {}) {
  const clock = new ManualClock();
  const fake = fakeWebSocket();
  const statuses: ConnectionStatus[] = [];
  const client = new PresenceClient({
    url: 'ws://presence.test/realtime',
    userId: 'ada',
    WebSocket: fake.WebSocket,
    clock,
    random: () => 0, // no jitter: delays are exact
    activity: false,
    reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
    connectTimeoutMs: 5000,
    pingAfterMs: 20_000,
    pongTimeoutMs: 10_000,
    slowDownDelayMs: 4000,
    autoConnect: false,
    ...options,
  });
  client.on('status', (status) => statuses.push(status));
  return { clock, fake, client, statuses };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('connection state machine', () => {
  test('statuses: connecting → connected → reconnecting → connected → disconnected', () => {
    const { fake, client, clock, statuses } = setup();
    client.connect();
    fake.last().welcome('session-0001');
    fake.last().serverClose(1006);
    clock.advance(100);
    fake.last().welcome('session-0001', true);
    client.close();
    assert.deepEqual(statuses, ['connecting', 'connected', 'reconnecting', 'connected', 'disconnected']);
    assert.equal(clock.pending, 0);
  });

  test('reconnects resume the session id and ask getToken every time', async () => {
    let issued = 0;
    const { fake, client, clock } = setup({ userId: undefined, getToken: () => `token-${++issued}` });
    client.connect();
    await flush();
    assert.equal(new URL(fake.last().url).searchParams.get('token'), 'token-1');
    assert.equal(new URL(fake.last().url).searchParams.get('sessionId'), null);
    fake.last().welcome('session-abcdef');
    fake.last().serverClose(4001, 'TOKEN_EXPIRED');
    clock.advance(100);
    await flush();
    const url = new URL(fake.last().url);
    assert.equal(url.searchParams.get('token'), 'token-2');
    assert.equal(url.searchParams.get('sessionId'), 'session-abcdef');
    client.close();
  });

  test('backoff grows while attempts fail and resets after a welcome', () => {
    const { fake, client, clock } = setup();
    client.connect();
    const delays: number[] = [];
    for (let i = 0; i < 6; i += 1) {
      const count = fake.sockets.length;
      fake.last().serverClose(1006);
      let waited = 0;
      while (fake.sockets.length === count) {
        clock.advance(10);
        waited += 10;
      }
      delays.push(waited);
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    fake.last().welcome();
    const count = fake.sockets.length;
    fake.last().serverClose(1001, 'SHUTTING_DOWN');
    clock.advance(99);
    assert.equal(fake.sockets.length, count);
    clock.advance(1);
    assert.equal(fake.sockets.length, count + 1, 'back to the first delay');
    client.close();
  });

  test('an attempt that is not welcomed in time is abandoned and retried', () => {
    const { fake, client, clock } = setup();
    client.connect();
    const first = fake.last();
    clock.advance(4999);
    assert.equal(fake.sockets.length, 1);
    clock.advance(1);
    assert.ok(first.closedByClient, 'the stuck socket is closed');
    clock.advance(100);
    assert.equal(fake.sockets.length, 2);
    // A late event of the abandoned socket changes nothing.
    first.serverClose(1006);
    assert.equal(client.status, 'connecting');
    client.close();
  });

  test('a ping after silence; no answer within the deadline means a dead socket', () => {
    const { fake, client, clock, statuses } = setup();
    client.connect();
    const socket = fake.last();
    socket.welcome();
    clock.advance(19_999);
    assert.deepEqual(socket.sent.filter((m) => m.type === 'ping'), []);
    clock.advance(1);
    assert.deepEqual(socket.sent.filter((m) => m.type === 'ping'), [{ type: 'ping' }]);
    // Any traffic counts as an answer.
    clock.advance(5000);
    socket.deliver({ type: 'pong', serverTime: 'x' });
    clock.advance(20_000);
    assert.equal(socket.sent.filter((m) => m.type === 'ping').length, 2, 'the next ping comes after another silence');
    clock.advance(10_000);
    assert.ok(socket.closedByClient, 'no answer: the socket is given up');
    assert.equal(client.status, 'reconnecting');
    clock.advance(100);
    assert.equal(fake.sockets.length, 2);
    assert.deepEqual(statuses, ['connecting', 'connected', 'reconnecting']);
    client.close();
  });

  for (const [code, reason] of [
    [1000, 'LOGGED_OUT'],
    [4000, 'SESSION_REPLACED'],
    [4003, 'ORIGIN_FORBIDDEN'],
    [1008, ''],
    [1009, ''],
  ] as const) {
    test(`close ${code} ends the client: no reconnect`, () => {
      const { fake, client, clock } = setup();
      const ended: string[] = [];
      client.on('ended', (error) => ended.push(`${error.code}/${error.closeCode}`));
      client.connect();
      fake.last().welcome();
      if (code === 1008) fake.last().deliver({ type: 'error', code: 'META_TOO_LARGE', message: 'claims too large' });
      fake.last().serverClose(code, reason);
      clock.advance(60_000);
      assert.equal(fake.sockets.length, 1);
      assert.equal(client.status, 'disconnected');
      const expected = code === 1008 ? 'META_TOO_LARGE' : code === 1009 ? 'CONNECTION_ENDED' : reason;
      assert.deepEqual(ended, [`${expected}/${code}`]);
      assert.equal(clock.pending, 0);
    });
  }

  for (const code of [1001, 1006, 1011, 4002, 4009]) {
    test(`close ${code} reconnects after the backoff`, () => {
      const { fake, client, clock } = setup();
      client.connect();
      fake.last().welcome();
      fake.last().serverClose(code);
      clock.advance(100);
      assert.equal(fake.sockets.length, 2);
      client.close();
    });
  }

  test('4008 and 4029 wait at least the slow-down delay', () => {
    for (const code of [4008, 4029]) {
      const { fake, client, clock } = setup();
      client.connect();
      fake.last().open();
      fake.last().deliver({ type: 'error', code: code === 4008 ? 'RATE_LIMITED' : 'TOO_MANY_SESSIONS', message: '' });
      fake.last().serverClose(code);
      clock.advance(3999);
      assert.equal(fake.sockets.length, 1, `${code}: not before the slow-down delay`);
      clock.advance(1);
      assert.equal(fake.sockets.length, 2);
      client.close();
    }
  });

  test('commands sent but unanswered when the socket drops are sent again after the welcome, in order', async () => {
    const { fake, client, clock } = setup();
    client.connect();
    const first = fake.last();
    first.welcome();
    const joined = client.join('room:a');
    const status = client.setStatus('busy');
    assert.deepEqual(first.sent.map((m) => m.type), ['join', 'status']);
    first.serverClose(1006);
    const queued = client.setMeta({ name: 'Ada' });
    clock.advance(100);
    const second = fake.last();
    second.welcome('session-0001', true);
    assert.deepEqual(second.sent.map((m) => m.type), ['join', 'status', 'meta']);
    const [join, set, meta] = second.sent;
    second.deliver([
      { type: 'presence.sync', channel: 'room:a', members: [], seq: 0 },
      { type: 'ack', ref: join.ref },
      { type: 'ack', ref: set.ref, self: { userId: 'ada', status: 'busy', meta: {}, lastSeen: null, devices: [], manualStatus: 'busy', visibility: 'everyone' } },
      { type: 'ack', ref: meta.ref, self: { userId: 'ada', status: 'busy', meta: { name: 'Ada' }, lastSeen: null, devices: [], manualStatus: 'busy', visibility: 'everyone' } },
    ]);
    assert.equal((await joined).state, 'joined');
    assert.equal((await status).manualStatus, 'busy');
    assert.equal((await queued).meta.name, 'Ada');
    client.close();
  });

  test('a refusal with a code this client does not know yet keeps the code', async () => {
    const { fake, client } = setup();
    client.connect();
    fake.last().welcome();
    const joined = client.join('room:new');
    const [join] = fake.last().sent;
    fake.last().deliver({ type: 'error', ref: join.ref, code: 'SOMETHING_NEWER', message: 'from a newer server' });
    await assert.rejects(joined, (error: unknown) => error instanceof PresenceError && error.code === ('SOMETHING_NEWER' as string) && !error.retryable && error.refusedByServer);
    client.close();
  });

  test('a frame that is not protocol JSON is reported and skipped', () => {
    const { fake, client } = setup();
    const errors: string[] = [];
    client.on('error', (error) => errors.push(error.code));
    client.connect();
    fake.last().welcome();
    (fake.last().onmessage as ((event: unknown) => void) | null)?.({ data: '{oops' });
    assert.deepEqual(errors, ['PROTOCOL_ERROR']);
    assert.equal(client.status, 'connected');
    client.close();
  });
});

describe('reconciliation after a server restart (scripted, deterministic order)', () => {
  const member = (userId: string, status = 'online') => ({
    userId,
    status,
    meta: {},
    lastSeen: null,
    devices: ['web'],
    channelMeta: {},
    joinedAt: new Date(0).toISOString(),
  });
  const user = (userId: string, status = 'online') => ({ userId, status, meta: {}, lastSeen: null, devices: status === 'offline' ? [] : ['web'] });

  test('members and watched users missing from the new server get the offline delay to come back', async () => {
    const { fake, client, clock } = setup();
    client.connect();
    fake.last().welcome('session-0001');
    const room = client.join('room:r');
    const watched = client.watch(['bob', 'dan']);
    const [join, watch] = fake.last().sent;
    fake.last().deliver([
      { type: 'presence.sync', channel: 'room:r', members: [member('ada'), member('bob'), member('dan')], seq: 3 },
      { type: 'ack', ref: join.ref },
      { type: 'user.sync', users: [user('bob'), user('dan')] },
      { type: 'ack', ref: watch.ref, watching: 2 },
    ]);
    const channel = await room;
    await watched;
    const events: string[] = [];
    channel.on('join', (m) => events.push(`join ${m.userId}`));
    channel.on('leave', (m) => events.push(`leave ${m.userId}`));
    channel.on('update', (m) => events.push(`update ${m.userId}`));
    client.on('user', (u) => events.push(`user ${u.userId} ${u.status}`));

    // The server restarts: a new session, and nobody else is back yet.
    fake.last().serverClose(1001, 'SHUTTING_DOWN');
    clock.advance(100);
    const socket = fake.last();
    socket.welcome('session-0001', false);
    const [rejoin, rewatch] = socket.sent;
    assert.deepEqual([rejoin.type, rewatch.type], ['join', 'watch']);
    socket.deliver([
      { type: 'presence.sync', channel: 'room:r', members: [member('ada')], seq: 0 },
      { type: 'ack', ref: rejoin.ref },
      { type: 'user.sync', users: [user('bob', 'offline'), user('dan', 'offline')] },
      { type: 'ack', ref: rewatch.ref, watching: 2 },
    ]);
    assert.deepEqual(events, [], 'nobody is reported gone yet');
    assert.deepEqual([...channel.members.keys()], ['ada', 'bob', 'dan']);
    assert.equal(client.users.get('bob')?.status, 'online');

    // Bob's client comes back; Dan's never does.
    socket.deliver([
      { type: 'user.update', user: user('bob') },
      { type: 'presence.join', channel: 'room:r', member: member('bob'), seq: 1 },
    ]);
    assert.deepEqual(events, [], 'bob came back unchanged: no event');
    clock.advance(29_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events.sort(), ['leave dan', 'user dan offline']);
    assert.deepEqual([...channel.members.keys()], ['ada', 'bob']);
    client.close();
  });

  test('a resumed session gets no grace: whoever is missing has really left', async () => {
    const { fake, client, clock } = setup();
    client.connect();
    fake.last().welcome('session-0001');
    const room = client.join('room:r');
    const [join] = fake.last().sent;
    fake.last().deliver([
      { type: 'presence.sync', channel: 'room:r', members: [member('ada'), member('bob')], seq: 1 },
      { type: 'ack', ref: join.ref },
    ]);
    const channel = await room;
    const left: string[] = [];
    channel.on('leave', (m) => left.push(m.userId));
    fake.last().serverClose(1006);
    clock.advance(100);
    fake.last().welcome('session-0001', true);
    fake.last().deliver({ type: 'presence.sync', channel: 'room:r', members: [member('ada')], seq: 2 });
    assert.deepEqual(left, ['bob']);
    client.close();
  });
});

describe('reconnect triggers: online and visibilitychange', () => {
  function triggered(options: Partial<PresenceClientOptions> = {}) {
    const window = new FakeTarget();
    const page = new FakeDocument();
    // A long backoff, so that an attempt before it ends can only be the trigger's.
    const setup_ = setup({ reconnect: { initialDelayMs: 10_000, maxDelayMs: 30_000 }, reconnectOn: { online: window, visibility: page }, ...options });
    return { ...setup_, window, page };
  }

  test('online ends the backoff wait at once; the attempt resumes the session', () => {
    const { fake, client, clock, window } = triggered();
    client.connect();
    fake.last().welcome('session-online');
    fake.last().serverClose(1006);
    assert.equal(client.status, 'reconnecting');
    clock.advance(1000);
    assert.equal(fake.sockets.length, 1, 'still waiting out the backoff');
    window.dispatch('online');
    assert.equal(fake.sockets.length, 2, 'a new attempt without waiting');
    assert.equal(new URL(fake.last().url).searchParams.get('sessionId'), 'session-online');
    fake.last().welcome('session-online', true);
    assert.equal(client.status, 'connected');
    // The backoff timer was replaced, not left to fire a second attempt.
    clock.advance(30_000);
    assert.equal(fake.sockets.length, 2);
    client.close();
  });

  test('the page becoming visible ends the wait; becoming hidden does not', () => {
    const { fake, client, clock, page } = triggered();
    client.connect();
    fake.last().welcome();
    fake.last().serverClose(1006);
    page.setVisibility('hidden');
    clock.advance(1000);
    assert.equal(fake.sockets.length, 1, 'hidden: keep waiting');
    page.setVisibility('visible');
    assert.equal(fake.sockets.length, 2, 'visible: try now');
    client.close();
  });

  test('also before the first welcome (connecting), and after a failed attempt the backoff goes on', () => {
    const { fake, client, clock, window } = triggered();
    client.connect();
    fake.last().serverClose(1006);
    assert.equal(client.status, 'connecting');
    window.dispatch('online');
    assert.equal(fake.sockets.length, 2);
    // That attempt fails too: the next wait is the second step of the backoff (20 s).
    fake.last().serverClose(1006);
    clock.advance(19_999);
    assert.equal(fake.sockets.length, 2);
    clock.advance(1);
    assert.equal(fake.sockets.length, 3);
    client.close();
  });

  test('nothing happens while connected, while an attempt is under way, or after close()', () => {
    const { fake, client, window, page } = triggered();
    client.connect();
    window.dispatch('online');
    assert.equal(fake.sockets.length, 1, 'an attempt is under way: no second one');
    fake.last().welcome();
    window.dispatch('online');
    page.setVisibility('hidden');
    page.setVisibility('visible');
    assert.equal(fake.sockets.length, 1, 'connected: nothing to do');
    client.close();
    assert.equal(window.listenerCount + page.listenerCount, 0, 'close() removes the listeners');
    window.dispatch('online');
    assert.equal(fake.sockets.length, 1);
    assert.equal(client.status, 'disconnected');
  });

  test('a wait the server asked for (4029, overloaded) is kept', () => {
    const { fake, client, clock, window } = triggered({ reconnect: { initialDelayMs: 100, maxDelayMs: 1000 } });
    client.connect();
    fake.last().welcome();
    fake.last().serverClose(4029);
    window.dispatch('online');
    assert.equal(fake.sockets.length, 1, 'inside the slow-down delay: no early attempt');
    clock.advance(4000);
    assert.equal(fake.sockets.length, 2, 'the slow-down delay (random 0: exactly 4 s)');
    fake.last().serverClose(1006);
    window.dispatch('online');
    assert.equal(fake.sockets.length, 3, 'an ordinary backoff after it is cut short again');
    client.close();
  });

  test('listening starts with connect(); reconnectOn: false listens to nothing', () => {
    const { client, window, page } = triggered({ autoConnect: false });
    assert.equal(window.listenerCount + page.listenerCount, 0);
    client.connect();
    assert.equal(window.listenerCount, 1);
    assert.equal(page.listenerCount, 1);
    client.close();

    const off = triggered({ reconnectOn: false });
    off.client.connect();
    off.fake.last().serverClose(1006);
    off.window.dispatch('online');
    off.page.setVisibility('visible');
    assert.equal(off.fake.sockets.length, 1);
    assert.equal(off.window.listenerCount + off.page.listenerCount, 0);
    off.client.close();
  });
});
