/**
 * Reconnecting against a real server: a network flap must be invisible to everyone, a server
 * restart must reconcile without false leave/join, seq gaps resync, dead sockets are detected.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Member } from '../src/index.js';
import { Backoff } from '../src/index.js';
import { devClient } from './support/clients.js';
import { Observer, presenceEventsAbout } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { newTap, tappedWebSocket } from './support/sockets.js';
import { nextEvent, record, until } from './support/wait.js';
import { tracker } from './support/tracked.js';

let server: TestServer;
const { track, closeAll } = tracker();

before(async () => {
  server = await startPresenceServer({ offlineDelayMs: 5000 });
});
after(async () => {
  await closeAll();
  await server.shutdown();
});

describe('backoff', () => {
  test('grows exponentially up to the cap, with the configured share of jitter', () => {
    const fixed = (value: number) => () => value;
    const noJitter = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 }, fixed(0));
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => noJitter.next()), [100, 200, 400, 800, 1000, 1000]);
    const fullJitter = new Backoff({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 }, fixed(1));
    assert.deepEqual([1, 2, 3].map(() => fullJitter.next()), [50, 100, 200]);
    fullJitter.reset();
    assert.equal(fullJitter.attempts, 0);
    assert.throws(() => new Backoff({ jitter: 2 }), RangeError);
  });
});

describe('a network flap', () => {
  test('resumes the session: no event at anyone, in the raw protocol or in the application', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'flap-obs'));
    await observer.request({ type: 'join', channel: 'room:flap' });
    await observer.request({ type: 'watch', users: ['flap-ada'] });
    const ada = track(devClient(server.wsUrl, 'flap-ada', { device: 'web' }));
    const room = await ada.join('room:flap', { mode: 'editing' });
    await ada.setStatus({ status: 'busy', message: 'Deep work' });
    await ada.watch(['flap-obs']);
    await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'flap-ada' && m.member.status === 'busy');
    await observer.barrier();
    observer.drain();

    const roomEvents = record(room, ['join', 'leave', 'update']);
    const userEvents = record(ada, ['user']);
    const statuses = record(ada, ['status']);
    const sessionBefore = ada.sessionId;
    const reconnected = nextEvent(ada, 'connected');
    assert.equal(server.cutConnections('flap-ada'), 1);
    const [welcome] = await reconnected;
    assert.equal(welcome.resumed, true);
    assert.equal(welcome.sessionId, sessionBefore);
    // Joining again queues behind everything the client sent to restore itself: once it is
    // answered, the restore is complete; the barrier then flushes whatever the server sent others.
    await room.join();
    await observer.barrier();

    assert.deepEqual(presenceEventsAbout(observer.drain(), 'flap-ada'), [], 'others saw nothing of the flap');
    assert.deepEqual(roomEvents.log, [], 'the application saw no leave/join/update');
    assert.deepEqual(userEvents.log, []);
    assert.deepEqual(statuses.log.map((e) => e.args[0]), ['reconnecting', 'connected']);
    assert.deepEqual([...room.members.keys()].sort(), ['flap-ada', 'flap-obs']);
    assert.equal(room.members.get('flap-ada')?.channelMeta.mode, 'editing');
    assert.equal(ada.users.get('flap-obs')?.status, 'online');
    assert.equal(ada.self?.message, 'Deep work');
  });

  test('commands whose answer was lost with the socket are sent again on the next connection', async () => {
    const ada = track(devClient(server.wsUrl, 'inflight-ada'));
    await nextEvent(ada, 'connected');
    // The server stops reading: the command is written but never read, and so never answered.
    server.freezeConnections('inflight-ada');
    const status = ada.setStatus({ message: 'sent into the void' });
    await new Promise((resolve) => setImmediate(resolve));
    server.cutConnections('inflight-ada');
    const self = await status;
    assert.equal(self.message, 'sent into the void');
    assert.equal(server.engine.userPresence('inflight-ada', { trusted: true }).message, 'sent into the void');
  });

  test('a silent connection is detected by the client\'s own ping and replaced', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'live-obs'));
    await observer.request({ type: 'join', channel: 'room:live' });
    const tap = newTap();
    const ada = track(devClient(server.wsUrl, 'live-ada', { WebSocket: tappedWebSocket(tap), pingAfterMs: 200, pongTimeoutMs: 500 }));
    await ada.join('room:live');
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'live-ada');
    await observer.barrier();
    observer.drain();
    const reconnected = nextEvent(ada, 'connected');
    // A hung path: the server neither reads the pings nor answers them, and nothing is closed.
    server.freezeConnections('live-ada');
    const [welcome] = await reconnected;
    assert.equal(welcome.resumed, true);
    assert.ok(tap.sent.some((m) => m.type === 'ping'), 'the client pinged before giving up');
    await ada.channel('room:live').join();
    await observer.barrier();
    assert.deepEqual(presenceEventsAbout(observer.drain(), 'live-ada'), []);
  });
});

describe('seq gaps', () => {
  test('a lost event is noticed at the next one and the channel is resynced', async () => {
    const tap = newTap();
    const ada = track(devClient(server.wsUrl, 'gap-ada', { WebSocket: tappedWebSocket(tap) }));
    const room = await ada.join('room:gap');
    let armed = true;
    tap.drop = (frame) => {
      if (!armed || !frame.includes('"presence.join"')) return false;
      armed = false;
      return true;
    };
    const bob = track(await Observer.connect(server.wsUrl, 'gap-bob'));
    await bob.request({ type: 'join', channel: 'room:gap' });
    await until(() => tap.dropped.length === 1, 'the join of gap-bob is lost');
    assert.equal(room.members.has('gap-bob'), false);

    const joins: string[] = [];
    room.on('join', (member: Member) => joins.push(member.userId));
    const carol = track(await Observer.connect(server.wsUrl, 'gap-carol'));
    await carol.request({ type: 'join', channel: 'room:gap' });
    await until(() => room.members.has('gap-bob') && room.members.has('gap-carol'), 'the resync brings both');
    assert.equal(tap.sent.filter((m) => m.type === 'join' && m.channel === 'room:gap').length, 2, 'one resync join');
    assert.deepEqual(joins.sort(), ['gap-bob', 'gap-carol']);
  });
});

describe('a server restart', () => {
  test('an invisible user stays invisible: the new server learns it at connect, before anyone is told', async () => {
    const first = await startPresenceServer({ offlineDelayMs: 3000 });
    const port = first.port;
    const ghost = track(devClient(first.wsUrl, 'rs-ghost'));
    await ghost.join('room:ghost');
    await ghost.setStatus({ status: 'invisible' });
    const back = nextEvent(ghost, 'connected');
    await first.shutdown();
    const second = await startPresenceServer({ port, offlineDelayMs: 3000 });
    try {
      // A watcher that is there before the invisible user's client comes back.
      const observer = track(await Observer.connect(second.wsUrl, 'rs-watcher'));
      await observer.request({ type: 'watch', users: ['rs-ghost'] });
      await observer.request({ type: 'join', channel: 'room:ghost' });
      const [welcome] = await back;
      assert.equal(welcome.resumed, false);
      assert.equal(welcome.self.manualStatus, 'invisible', 'the server knew before its welcome');
      await until(() => second.engine.channelPresence('room:ghost', { limit: 10 }).count === 1, 'the room as others see it');
      await observer.barrier();
      assert.deepEqual(presenceEventsAbout(observer.drain(), 'rs-ghost'), [], 'never shown online');
      assert.equal(second.engine.userPresence('rs-ghost', { trusted: true }).status, 'offline');
    } finally {
      ghost.close();
      await second.shutdown();
    }
  });

  test('reconciles: no false leave/join, restored status, real changes still appear', async () => {
    const first = await startPresenceServer({ offlineDelayMs: 3000 });
    const port = first.port;
    const alice = track(devClient(first.wsUrl, 'rs-alice'));
    const bob = track(devClient(first.wsUrl, 'rs-bob'));
    const dave = devClient(first.wsUrl, 'rs-dave');
    await alice.join('room:restart', { cursor: 7 });
    await alice.setStatus({ status: 'busy', message: 'Presenting' });
    await alice.setMeta({ name: 'Alice' });
    await dave.join('room:restart');
    const bobRoom = await bob.join('room:restart');
    await bob.watch(['rs-alice']);
    assert.deepEqual([...bobRoom.members.keys()].sort(), ['rs-alice', 'rs-bob', 'rs-dave']);
    assert.equal(bob.users.get('rs-alice')?.status, 'busy');

    const roomEvents = record(bobRoom, ['join', 'leave', 'update']);
    const userEvents = record(bob, ['user']);
    // Dave's client will not come back.
    dave.close();
    const bobBack = nextEvent(bob, 'connected');
    const aliceBack = nextEvent(alice, 'connected');
    await first.shutdown();
    const second = await startPresenceServer({ port, offlineDelayMs: 3000 });
    try {
      const [[bobWelcome], [aliceWelcome]] = await Promise.all([bobBack, aliceBack]);
      assert.equal(bobWelcome.resumed, false);
      assert.equal(aliceWelcome.resumed, false);
      // Alice's client put back what the new server did not know.
      await until(() => second.engine.userPresence('rs-alice', { trusted: true }).status === 'busy', 'alice is busy again');
      await until(() => bobRoom.members.get('rs-alice')?.status === 'busy' && second.engine.channelPresence('room:restart', { limit: 10 }).count === 2, 'both are back');

      const carol = track(devClient(second.wsUrl, 'rs-carol'));
      const carolJoined = nextEvent(bobRoom, 'join', (m: Member) => m.userId === 'rs-carol');
      await carol.join('room:restart');
      await carolJoined;
      const [daveLeft] = await nextEvent(bobRoom, 'leave', (m: Member) => m.userId === 'rs-dave');
      assert.equal(daveLeft.userId, 'rs-dave');

      const membership = roomEvents.log
        .filter((e) => e.event !== 'update')
        .map((e) => `${e.event} ${(e.args[0] as Member).userId}`);
      assert.deepEqual(membership, ['join rs-carol', 'leave rs-dave'], 'only the real changes');
      assert.deepEqual(roomEvents.log.filter((e) => e.event === 'update' && (e.args[0] as Member).userId === 'rs-alice'), [], 'alice looks unchanged in the room');
      const aliceNow = bobRoom.members.get('rs-alice')!;
      assert.equal(aliceNow.message, 'Presenting');
      assert.equal(aliceNow.meta.name, 'Alice');
      assert.equal(aliceNow.channelMeta.cursor, 7);
      assert.ok(
        !userEvents.log.some((e) => (e.args[0] as Member).status === 'offline'),
        'the watch list never showed alice offline',
      );
      assert.equal(bob.users.get('rs-alice')?.status, 'busy');
    } finally {
      for (const client of [alice, bob]) client.close();
      await second.shutdown();
    }
  });
});
