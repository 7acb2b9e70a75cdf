/**
 * The client against a real server over loopback: connecting, channels, own presence, watches,
 * command answers and close codes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ConnectionStatus, Member } from '../src/index.js';
import { PresenceClient, PresenceError } from '../src/index.js';
import WebSocket from 'ws';
import { decodeFrame } from '../src/socket.js';
import { devClient } from './support/clients.js';
import { Observer, presenceEventsAbout } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { nextEvent, record, until } from './support/wait.js';
import { tracker } from './support/tracked.js';

let server: TestServer;
const { track, closeAll } = tracker();

before(async () => {
  server = await startPresenceServer();
});
after(async () => {
  await closeAll();
  await server.shutdown();
});

describe('connecting', () => {
  test('goes connecting → connected and learns its session from welcome', async () => {
    const seen: ConnectionStatus[] = [];
    const client = track(devClient(server.wsUrl, 'conn-ada', { autoConnect: false }));
    client.on('status', (status) => seen.push(status));
    assert.equal(client.status, 'disconnected');
    client.connect();
    const [welcome] = await nextEvent(client, 'connected');
    assert.deepEqual(seen, ['connecting', 'connected']);
    assert.equal(client.userId, 'conn-ada');
    assert.equal(client.sessionId, welcome.sessionId);
    assert.equal(welcome.resumed, false);
    assert.equal(client.self?.status, 'online');
    client.close();
    assert.equal(client.status, 'disconnected');
  });

  test('rejects bad options at construction with a stable code and an exact message', () => {
    assert.throws(
      () => new PresenceClient({ url: 'http://localhost/realtime', WebSocket: class {} as never }),
      (error: unknown) => error instanceof PresenceError && error.code === 'INVALID_OPTION' && error.message === 'url must be a ws:// or wss:// URL (got "http://localhost/realtime")',
    );
    const saved = (globalThis as { WebSocket?: unknown }).WebSocket;
    (globalThis as { WebSocket?: unknown }).WebSocket = undefined;
    try {
      assert.throws(
        () => new PresenceClient({ url: 'ws://localhost/realtime' }),
        (error: unknown) => error instanceof PresenceError && error.code === 'NO_WEBSOCKET',
      );
    } finally {
      (globalThis as { WebSocket?: unknown }).WebSocket = saved;
    }
  });

  test('accepts a single message or a batch (JSON array) per frame', () => {
    assert.deepEqual(decodeFrame('{"type":"pong","serverTime":"x"}'), [{ type: 'pong', serverTime: 'x' }]);
    assert.deepEqual(decodeFrame('[{"type":"pong","serverTime":"x"},{"type":"ack","ref":1}]')?.map((m) => m.type), ['pong', 'ack']);
    assert.deepEqual(decodeFrame(new TextEncoder().encode('{"type":"ack","ref":2}'))?.[0], { type: 'ack', ref: 2 });
    assert.equal(decodeFrame('not json'), undefined);
    assert.equal(decodeFrame('[1,2]'), undefined);
  });
});

describe('channels', () => {
  test('join gives the member list; others joining, updating and leaving become events', async () => {
    const ada = track(devClient(server.wsUrl, 'ch-ada'));
    const room = await ada.join('room:events', { mode: 'viewing' });
    assert.equal(room.state, 'joined');
    assert.deepEqual([...room.members.keys()], ['ch-ada']);
    assert.deepEqual(room.members.get('ch-ada')?.channelMeta, { mode: 'viewing' });

    const events = record(room, ['join', 'leave', 'update']);
    const bob = track(devClient(server.wsUrl, 'ch-bob'));
    const joined = nextEvent(room, 'join');
    await bob.join('room:events');
    const [member] = await joined;
    assert.equal(member.userId, 'ch-bob');
    assert.ok(room.members.has('ch-bob'));

    const updated = nextEvent(room, 'update', (m: Member) => m.userId === 'ch-bob');
    await bob.setStatus({ status: 'busy', message: 'In a call' });
    const [after, previous] = await updated;
    assert.equal(after.status, 'busy');
    assert.equal(after.message, 'In a call');
    assert.equal(previous.status, 'online');
    assert.equal(room.members.get('ch-bob')?.status, 'busy');

    const metaUpdated = nextEvent(room, 'update', (m: Member) => m.userId === 'ch-bob' && m.channelMeta.cursor === 3);
    const merged = await bob.channel('room:events').setMeta({ cursor: 3 });
    assert.deepEqual(merged, { cursor: 3 });
    await metaUpdated;

    const left = nextEvent(room, 'leave');
    await bob.channel('room:events').leave();
    const [gone, lastSeen] = await left;
    assert.equal(gone.userId, 'ch-bob');
    assert.equal(typeof lastSeen, 'string');
    assert.ok(!room.members.has('ch-bob'));
    assert.equal(bob.channel('room:events').members.size, 0);
    assert.deepEqual(
      events.log.map((e) => e.event),
      ['join', 'update', 'update', 'leave'],
    );
  });

  test('members and typingUsers are replaced on change, never mutated (usable as snapshots)', async () => {
    const ada = track(devClient(server.wsUrl, 'snap-ada'));
    const room = await ada.join('room:snap');
    const before = room.members;
    const bob = track(devClient(server.wsUrl, 'snap-bob'));
    const joined = nextEvent(room, 'join');
    await bob.join('room:snap');
    await joined;
    assert.notEqual(room.members, before);
    assert.equal(before.size, 1);
    assert.equal(room.members.size, 2);
  });

  test('a refused command rejects with a PresenceError carrying the server code', async () => {
    const ada = track(devClient(server.wsUrl, 'err-ada'));
    await assert.rejects(ada.join('bad channel!'), (error: unknown) => error instanceof PresenceError && error.code === 'INVALID_CHANNEL' && !error.retryable);
    assert.equal(ada.channel('bad channel!').state, 'idle');
    await assert.rejects(ada.setStatus({ state: 'no-such-state' }), (error: unknown) => error instanceof PresenceError && error.code === 'UNKNOWN_STATE');
    await assert.rejects(ada.channel('room:never').setMeta({ a: 1 }), (error: unknown) => error instanceof PresenceError && error.code === 'NOT_IN_CHANNEL');
  });
});

describe('own presence', () => {
  test('status, custom state, message with expiry and meta reach others and come back as self', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'own-obs'));
    await observer.request({ type: 'join', channel: 'room:own' });
    const ada = track(devClient(server.wsUrl, 'own-ada'));
    await ada.join('room:own');
    const expiresAt = new Date(Date.now() + 60 * 60 * 1000);
    const self = await ada.setStatus({ state: 'in-call', message: 'Standup 📞', expiresAt });
    assert.equal(self.status, 'busy');
    assert.equal(self.state, 'in-call');
    assert.equal(self.message, 'Standup 📞');
    assert.equal(self.expiresAt, expiresAt.toISOString());
    assert.equal(ada.self?.state, 'in-call');
    const update = await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'own-ada' && m.member.state === 'in-call');
    assert.equal(update.type === 'presence.update' && update.member.message, 'Standup 📞');

    const withMeta = await ada.setMeta({ name: 'Ada', avatar: null });
    assert.equal(withMeta.meta.name, 'Ada');
    await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'own-ada' && m.member.meta.name === 'Ada');

    const invisible = await ada.setStatus('invisible');
    assert.equal(invisible.manualStatus, 'invisible');
    await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'own-ada');
    const back = await ada.setStatus('online');
    assert.equal(back.manualStatus, null);
    assert.equal(back.state, undefined);
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'own-ada');
  });

  test('logout makes the user offline at once for others and does not reconnect', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'out-obs'));
    await observer.request({ type: 'join', channel: 'room:logout' });
    const ada = track(devClient(server.wsUrl, 'out-ada'));
    await ada.join('room:logout');
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'out-ada');
    const ended = record(ada, ['ended']);
    await ada.logout();
    assert.deepEqual(ended.log.map((e) => (e.args[0] as PresenceError).code), ['LOGGED_OUT'], 'one ended event, whoever closed first');
    await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'out-ada');
    assert.equal(ada.status, 'disconnected');
    assert.equal(ada.channel('room:logout').state, 'idle');
    assert.equal(ada.self, null);
    await until(() => server.connectionsOf('out-ada') === 0, 'the socket is closed');
  });

  test('a logout on another device ends this client too, with LOGGED_OUT, and it stays offline', async () => {
    const phone = track(devClient(server.wsUrl, 'out2-ada'));
    const laptop = track(devClient(server.wsUrl, 'out2-ada'));
    await Promise.all([nextEvent(phone, 'connected'), nextEvent(laptop, 'connected')]);
    const ended = nextEvent(laptop, 'ended');
    await phone.logout();
    const [reason] = await ended;
    assert.equal(reason.code, 'LOGGED_OUT');
    assert.equal(reason.closeCode, 1000);
    assert.equal(laptop.status, 'disconnected');
  });
});

describe('watching users', () => {
  test('watch answers with current presence; changes arrive as user events; unwatch stops them', async () => {
    const ada = track(devClient(server.wsUrl, 'w-ada'));
    const initial = await ada.watch(['w-bob', 'w-carol']);
    assert.deepEqual(initial.map((u) => [u.userId, u.status]), [['w-bob', 'offline'], ['w-carol', 'offline']]);
    assert.equal(ada.users.get('w-bob')?.status, 'offline');

    const online = nextEvent(ada, 'user', (user) => user.userId === 'w-bob' && user.status === 'online');
    const bob = track(devClient(server.wsUrl, 'w-bob'));
    const [user, previous] = await online;
    assert.equal(user.status, 'online');
    assert.equal(previous.status, 'offline');

    await ada.unwatch(['w-bob']);
    assert.equal(ada.users.has('w-bob'), false);
    const events = record(ada, ['user']);
    await bob.setStatus('busy');
    const carolOnline = nextEvent(ada, 'user', (u) => u.userId === 'w-carol');
    track(devClient(server.wsUrl, 'w-carol'));
    await carolOnline;
    assert.deepEqual(events.log.map((e) => (e.args[0] as { userId: string }).userId), ['w-carol']);
  });
});

describe('commands while disconnected', () => {
  test('are queued and sent in order once connected', async () => {
    const ada = track(devClient(server.wsUrl, 'q-ada', { autoConnect: false }));
    const joined = ada.join('room:queued', { seat: 4 });
    const status = ada.setStatus('away');
    const watched = ada.watch(['q-bob']);
    ada.connect();
    const room = await joined;
    assert.equal(room.members.get('q-ada')?.channelMeta.seat, 4);
    assert.equal((await status).manualStatus, 'away');
    assert.equal((await watched)[0].userId, 'q-bob');
  });

  test('ephemeral signals fail with NOT_CONNECTED instead of piling up', async () => {
    const ada = track(devClient(server.wsUrl, 'q2-ada', { autoConnect: false }));
    const errors = record(ada, ['error']);
    ada.reportActivity();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(errors.log.length, 0, 'a dropped signal is not an application error');
  });

  test('close() rejects pending commands with CLIENT_CLOSED', async () => {
    const ada = track(devClient(server.wsUrl, 'q3-ada', { autoConnect: false }));
    const joined = ada.join('room:closed');
    ada.close();
    await assert.rejects(joined, (error: unknown) => error instanceof PresenceError && error.code === 'CLIENT_CLOSED');
    assert.equal(ada.channel('room:closed').state, 'idle');
  });
});

describe('close codes', () => {
  test('4000 SESSION_REPLACED ends the client without reconnecting', async () => {
    const first = track(devClient(server.wsUrl, 'rep-ada'));
    const [welcome] = await nextEvent(first, 'connected');
    const ended = nextEvent(first, 'ended');
    const statuses = record(first, ['status']);
    // Another connection takes the same session id, as a duplicated tab might.
    const second = track(devClient(server.wsUrl, 'rep-ada', { params: { sessionId: welcome.sessionId } }));
    const [secondWelcome] = await nextEvent(second, 'connected');
    assert.equal(secondWelcome.resumed, true);
    const [reason] = await ended;
    assert.equal(reason.code, 'SESSION_REPLACED');
    assert.equal(reason.closeCode, 4000);
    assert.deepEqual(statuses.log.map((e) => e.args[0]), ['disconnected']);
    assert.equal(first.sessionId, undefined, 'a replaced session id is not reused');
  });

  test('4003 ORIGIN_FORBIDDEN ends the client; nothing is retried', async () => {
    const guarded = await startPresenceServer({ allowedOrigins: ['https://app.example'] });
    try {
      // A browser on another site: ws sends no Origin unless told to.
      class FromOtherSite extends WebSocket {
        constructor(url: string) {
          super(url, { origin: 'https://other.example' });
        }
      }
      const statuses: string[] = [];
      const client = devClient(guarded.wsUrl, 'origin-ada', { WebSocket: FromOtherSite, autoConnect: false });
      client.on('status', (status) => statuses.push(status));
      client.connect();
      const [reason] = await nextEvent(client, 'ended');
      assert.equal(reason.code, 'ORIGIN_FORBIDDEN');
      assert.equal(reason.closeCode, 4003);
      assert.equal(client.status, 'disconnected');
      assert.deepEqual(statuses, ['connecting', 'disconnected']);
      client.close();
    } finally {
      await guarded.shutdown();
    }
  });

  test('presence events from the server never carry anything about a closed client but its leave', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'cc-obs'));
    await observer.request({ type: 'join', channel: 'room:cc' });
    const ada = devClient(server.wsUrl, 'cc-ada');
    await ada.join('room:cc');
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'cc-ada');
    observer.drain();
    ada.close();
    // close() is a disconnect, not a logout: the user lingers for the offline delay (5 s here).
    await observer.barrier();
    assert.deepEqual(presenceEventsAbout(observer.drain(), 'cc-ada'), []);
    await until(() => server.connectionsOf('cc-ada') === 0, 'the socket is gone');
  });
});
