/**
 * Wire protocol v1 end to end: a real server on a loopback port, driven by plain `ws` clients
 * through every message type and every bad-input case of the contract (docs: DESIGN.md,
 * packages/protocol/src). Timeouts are configured short so each test takes well under a second
 * or two; every test shuts its server down and closes its clients.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import type { Member, ServerMessage } from '@presence/protocol';
import { DEFAULT_STATES } from '../src/config/config.js';
import { IMPOSSIBLE_EXPIRIES, MALFORMED_EXPIRIES, VALID_EXPIRIES } from './support/expiry-cases.js';
import { TestClient, sleep, startTestServer, type Closed } from './support/harness.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
type Overrides = Parameters<typeof startTestServer>[0];
type Msg<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

interface Env {
  server: TestServer;
  /** Connects in development mode and waits for `welcome` (or a connect-time `error`). */
  connect(userId: string, query?: Record<string, string>, options?: WebSocket.ClientOptions): Promise<TestClient>;
}

/** Starts a server for one test; the test's `after` hook terminates its clients and shuts it down. */
async function setup(t: TestContext, overrides: Overrides = {}): Promise<Env> {
  const server = await startTestServer(overrides);
  const clients: TestClient[] = [];
  t.after(async () => {
    for (const client of clients) client.ws.terminate();
    await server.shutdown();
  });
  return {
    server,
    async connect(userId, query = {}, options) {
      const client = new TestClient(`${server.wsUrl}?${new URLSearchParams({ userId, device: 'web', ...query })}`, options);
      clients.push(client);
      await client.waitFor((m) => m.type === 'welcome' || m.type === 'error');
      return client;
    },
  };
}

/** Waits for a message matching `match` that arrives at index `from` or later. */
function waitFrom(client: TestClient, from: number, match: (m: ServerMessage) => boolean, timeoutMs = 2000): Promise<ServerMessage> {
  return client.waitFor((m) => client.messages.indexOf(m) >= from && match(m), timeoutMs);
}

/** Sends a command and asserts it is answered with an ack; returns the ack. */
async function ok(client: TestClient, command: Record<string, unknown>): Promise<Msg<'ack'>> {
  const answer = await client.request(command);
  assert.equal(answer.type, 'ack', `expected an ack for ${JSON.stringify(command).slice(0, 200)}, got ${JSON.stringify(answer)}`);
  return answer as Msg<'ack'>;
}

/** Sends a command and asserts it is refused with `code`, echoing the command's ref. */
async function refused(client: TestClient, command: Record<string, unknown>, code: string): Promise<Msg<'error'>> {
  const answer = await client.request(command);
  assert.equal(answer.type, 'error', `expected ${code} for ${JSON.stringify(command).slice(0, 200)}, got ${JSON.stringify(answer)}`);
  const error = answer as Msg<'error'>;
  assert.equal(error.code, code, `wrong code for ${JSON.stringify(command).slice(0, 200)}: ${error.message}`);
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
  return error;
}

let pingCounter = 0;
/** The connection still works: a ping is answered by a pong carrying its ref. */
async function assertAlive(client: TestClient): Promise<void> {
  assert.equal(client.ws.readyState, WebSocket.OPEN, 'socket should still be open');
  const ref = `alive-${++pingCounter}`;
  client.sendRaw(JSON.stringify({ type: 'ping', ref }));
  const pong = await client.waitFor((m) => m.type === 'pong' && m.ref === ref);
  assert.match((pong as Msg<'pong'>).serverTime, ISO);
}

/** Waits for the next error frame without a ref (frames that could not be parsed carry none). */
function nextError(client: TestClient, from: number): Promise<Msg<'error'>> {
  return waitFrom(client, from, (m) => m.type === 'error') as Promise<Msg<'error'>>;
}

function presenceEvents(client: TestClient, channel: string): ServerMessage[] {
  return client.messages.filter((m) => m.type.startsWith('presence.') && (m as { channel?: string }).channel === channel);
}

function memberOf(sync: Msg<'presence.sync'>, userId: string): Member | undefined {
  return sync.members.find((m) => m.userId === userId);
}

/** Resolves with the close, or rejects when the socket is still open after `timeoutMs`. */
async function closedWithin(client: TestClient, timeoutMs = 2000): Promise<Closed> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      client.closed,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`socket not closed within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(predicate: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Two users in one channel, both synced, with their message logs drained. */
async function pair(env: Env, channel = 'room-1'): Promise<{ alice: TestClient; bob: TestClient }> {
  const alice = await env.connect('alice');
  const bob = await env.connect('bob');
  await ok(alice, { type: 'join', channel });
  await ok(bob, { type: 'join', channel });
  await alice.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'bob');
  alice.drain();
  bob.drain();
  return { alice, bob };
}

// ---------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------

describe('welcome', () => {
  test('is the first message and carries identity, server time, timeouts, limits, states and self', async (t) => {
    const env = await setup(t, { idleTimeoutMs: 12_345, offlineDelayMs: 250, typingTimeoutMs: 400, heartbeatIntervalMs: 800 });
    const before = Date.now();
    const alice = await env.connect('alice');
    const after = Date.now();
    assert.equal(alice.messages[0].type, 'welcome', 'welcome must be the first message');
    const welcome = alice.welcome;
    assert.equal(welcome.userId, 'alice');
    assert.equal(typeof welcome.sessionId, 'string');
    assert.match(welcome.sessionId, /^[A-Za-z0-9_-]{8,64}$/);
    assert.equal(welcome.resumed, false);
    assert.match(welcome.serverTime, ISO);
    const serverTime = Date.parse(welcome.serverTime);
    assert.ok(serverTime >= before - 5 && serverTime <= after + 5, `serverTime ${welcome.serverTime} not between connect and welcome`);
    assert.deepEqual(welcome.timeouts, { heartbeatMs: 800, idleMs: 12_345, offlineDelayMs: 250, typingMs: 400 });
    const { limits } = env.server.config;
    assert.deepEqual(welcome.limits, {
      maxFrameBytes: limits.maxFrameBytes,
      maxMetaBytes: limits.maxMetaBytes,
      maxMetaDepth: limits.maxMetaDepth,
      maxMetaKeys: limits.maxMetaKeys,
      maxMessageLength: limits.maxMessageLength,
      maxChannelNameLength: limits.maxChannelNameLength,
      maxChannelsPerSession: limits.maxChannelsPerSession,
      maxSessionsPerUser: limits.maxSessionsPerUser,
      maxWatchedUsers: limits.maxWatchedUsers,
      rateLimitPerSecond: limits.rateLimitPerSecond,
      rateLimitBurst: limits.rateLimitBurst,
      maxOutboundBufferBytes: limits.maxOutboundBufferBytes,
    });
    assert.equal(welcome.limits.maxFrameBytes, 64 * 1024, 'the contract default frame limit');
    assert.deepEqual(welcome.states, DEFAULT_STATES);
    const self = welcome.self;
    assert.equal(self.userId, 'alice');
    assert.equal(self.status, 'online');
    assert.equal(self.manualStatus, null);
    assert.equal(self.visibility, 'everyone');
    assert.deepEqual(self.meta, {});
    assert.deepEqual(self.devices, ['web']);
    assert.match(self.lastSeen ?? '', ISO);
    assert.equal(self.state, undefined);
    assert.equal(self.message, undefined);
  });

  test('each connection gets its own session id; a second device shows in devices', async (t) => {
    const env = await setup(t);
    const web = await env.connect('alice');
    const ios = await env.connect('alice', { device: 'ios' });
    assert.notEqual(web.welcome.sessionId, ios.welcome.sessionId);
    assert.deepEqual(ios.welcome.self.devices, ['ios', 'web']);
    assert.equal(env.server.engine.stats().connections, 2);
    assert.equal(env.server.engine.stats().onlineUsers, 1);
  });

  test('development mode seeds name and avatar from the query, as token claims would', async (t) => {
    const env = await setup(t);
    const ada = await env.connect('ada', { name: 'Ada Lovelace', avatar: 'https://example.com/ada.png' });
    assert.deepEqual(ada.welcome.self.meta, { name: 'Ada Lovelace', avatar: 'https://example.com/ada.png' });
  });

  test('configured custom states are announced', async (t) => {
    const env = await setup(t, { states: { 'on-air': 'busy', brb: 'away' } });
    const alice = await env.connect('alice');
    assert.deepEqual(alice.welcome.states, { 'on-air': 'busy', brb: 'away' });
  });
});

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

describe('join and leave', () => {
  test('join: presence.sync then ack to the joiner, presence.join with seq to the others', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const bob = await env.connect('bob', { device: 'ios' });

    const aliceAck = await ok(alice, { type: 'join', channel: 'room-1', meta: { mode: 'viewing' } });
    assert.deepEqual(Object.keys(aliceAck).sort(), ['ref', 'type']);
    const aliceSync = alice.ofType('presence.sync')[0];
    assert.ok(aliceSync, 'the joiner gets presence.sync');
    assert.ok(alice.messages.indexOf(aliceSync) < alice.messages.indexOf(aliceAck), 'sync comes before the ack');
    assert.equal(aliceSync.channel, 'room-1');
    assert.equal(typeof aliceSync.seq, 'number');
    assert.equal(aliceSync.members.length, 1);
    const me = memberOf(aliceSync, 'alice')!;
    assert.equal(me.status, 'online');
    assert.deepEqual(me.channelMeta, { mode: 'viewing' });
    assert.match(me.joinedAt, ISO);
    assert.deepEqual(me.devices, ['web']);
    assert.equal(alice.ofType('presence.join').length, 0, 'the joiner is not told about itself');

    await ok(bob, { type: 'join', channel: 'room-1' });
    const bobSync = bob.ofType('presence.sync')[0];
    assert.equal(bobSync.seq, aliceSync.seq + 1, "bob's join is the channel's next event");
    assert.deepEqual(bobSync.members.map((m) => m.userId).sort(), ['alice', 'bob']);
    assert.deepEqual(memberOf(bobSync, 'alice')!.channelMeta, { mode: 'viewing' });

    const join = (await alice.waitFor((m) => m.type === 'presence.join')) as Msg<'presence.join'>;
    assert.equal(join.channel, 'room-1');
    assert.equal(join.member.userId, 'bob');
    assert.equal(join.member.status, 'online');
    assert.deepEqual(join.member.devices, ['ios']);
    assert.deepEqual(join.member.channelMeta, {});
    assert.match(join.member.joinedAt, ISO);
    assert.equal(join.seq, bobSync.seq, 'the join event and the sync that includes it share a seq');
    assert.equal(bob.ofType('presence.join').length, 0);
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 2);
  });

  test('a second session of a member joining the same channel is not a new join', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const alice2 = await env.connect('alice');
    await ok(alice2, { type: 'join', channel: 'room-1' });
    const sync = alice2.ofType('presence.sync')[0];
    assert.deepEqual(sync.members.map((m) => m.userId).sort(), ['alice', 'bob']);
    await assertAlive(bob);
    assert.deepEqual(
      bob.drain().filter((m) => m.type.startsWith('presence.')),
      [],
      'members are users: a second session joins silently',
    );
    // Leaving with one session keeps alice a member; leaving with the last one is the leave.
    await ok(alice, { type: 'leave', channel: 'room-1' });
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.leave'), []);
    await ok(alice2, { type: 'leave', channel: 'room-1' });
    const leave = (await bob.waitFor((m) => m.type === 'presence.leave')) as Msg<'presence.leave'>;
    assert.equal(leave.userId, 'alice');
  });

  test('leave: ack, presence.leave with lastSeen and seq to the others, no more events to the leaver', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const syncSeq = bob.ofType('presence.sync')[0].seq;
    const before = Date.now();
    const ack = await ok(bob, { type: 'leave', channel: 'room-1' });
    assert.equal(ack.type, 'ack');
    const leave = (await alice.waitFor((m) => m.type === 'presence.leave')) as Msg<'presence.leave'>;
    assert.equal(leave.channel, 'room-1');
    assert.equal(leave.userId, 'bob');
    assert.equal(leave.seq, syncSeq + 1);
    assert.match(leave.lastSeen ?? '', ISO);
    assert.ok(Math.abs(Date.parse(leave.lastSeen!) - before) < 200, 'a user still connected was seen just now');
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 1);

    // Alice's changes are no longer sent to bob in that channel.
    bob.drain();
    await ok(alice, { type: 'status', status: 'busy' });
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type.startsWith('presence.')), []);
    // Leaving again is NOT_IN_CHANNEL, and the session can rejoin.
    await refused(bob, { type: 'leave', channel: 'room-1' }, 'NOT_IN_CHANNEL');
    const from = bob.messages.length;
    await ok(bob, { type: 'join', channel: 'room-1' });
    const resync = (await waitFrom(bob, from, (m) => m.type === 'presence.sync')) as Msg<'presence.sync'>;
    assert.equal(memberOf(resync, 'alice')!.status, 'busy');
  });

  test('the server may batch: join answer arrives as one JSON array frame [presence.sync, ack]', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const frames: string[] = [];
    alice.ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'the server only sends text frames');
      frames.push(data.toString());
    });
    await ok(alice, { type: 'join', channel: 'room-1' });
    const arrays = frames.map((f) => JSON.parse(f) as unknown).filter(Array.isArray) as ServerMessage[][];
    assert.ok(arrays.length >= 1, `expected at least one array frame, got ${JSON.stringify(frames)}`);
    const batch = arrays.find((a) => a.some((m) => m.type === 'presence.sync'))!;
    assert.ok(batch, 'sync and ack travel in one frame');
    assert.deepEqual(
      batch.map((m) => m.type),
      ['presence.sync', 'ack'],
    );
    // A lone message is a plain object frame (clients must accept both shapes).
    frames.length = 0;
    await assertAlive(alice);
    assert.ok(frames.some((f) => !Array.isArray(JSON.parse(f))), 'a single message is sent as an object');
  });
});

// ---------------------------------------------------------------------------------------------
// Status, meta, channel meta
// ---------------------------------------------------------------------------------------------

describe('status', () => {
  test('away, busy, state, message, expiresAt and online reach co-members; the ack carries self', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const nextUpdate = (from: number) =>
      waitFrom(bob, from, (m) => m.type === 'presence.update' && m.member.userId === 'alice') as Promise<Msg<'presence.update'>>;

    let from = bob.messages.length;
    let ack = await ok(alice, { type: 'status', status: 'away' });
    let self = ack.self as Record<string, unknown>;
    assert.equal(self.status, 'away');
    assert.equal(self.manualStatus, 'away');
    let update = await nextUpdate(from);
    assert.equal(update.channel, 'room-1');
    assert.equal(update.member.status, 'away');
    assert.deepEqual(update.member.channelMeta, {});
    assert.match(update.member.joinedAt, ISO);

    from = bob.messages.length;
    ack = await ok(alice, { type: 'status', status: 'busy', message: 'In a call 📞' });
    self = ack.self as Record<string, unknown>;
    assert.equal(self.status, 'busy');
    assert.equal(self.message, 'In a call 📞');
    update = await nextUpdate(from);
    assert.equal(update.member.status, 'busy');
    assert.equal(update.member.message, 'In a call 📞');

    from = bob.messages.length;
    const expiresAt = new Date(Date.now() + 60 * 60_000).toISOString();
    ack = await ok(alice, { type: 'status', state: 'lunch', expiresAt });
    self = ack.self as Record<string, unknown>;
    assert.equal(self.state, 'lunch');
    assert.equal(self.status, 'away', 'lunch maps to away (and replaces busy)');
    assert.equal(self.manualStatus, null);
    assert.equal(self.expiresAt, expiresAt);
    update = await nextUpdate(from);
    assert.equal(update.member.state, 'lunch');
    assert.equal(update.member.status, 'away');
    assert.equal(update.member.message, 'In a call 📞', 'an omitted message is kept');
    assert.equal(update.member.expiresAt, expiresAt);

    from = bob.messages.length;
    ack = await ok(alice, { type: 'status', status: 'online', message: null });
    self = ack.self as Record<string, unknown>;
    assert.equal(self.status, 'online');
    assert.equal(self.manualStatus, null);
    assert.equal(self.state, undefined);
    assert.equal(self.message, undefined);
    assert.equal(self.expiresAt, undefined);
    update = await nextUpdate(from);
    assert.equal(update.member.status, 'online');
    assert.equal(update.member.state, undefined);
    assert.equal(update.member.message, undefined);
    assert.equal(update.member.expiresAt, undefined);

    // Setting the same thing again changes nothing and broadcasts nothing.
    bob.drain();
    await ok(alice, { type: 'status', status: 'online' });
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), []);
  });

  test('invisible looks like a leave to others, and coming back like a join', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    let from = bob.messages.length;
    const before = Date.now();
    const ack = await ok(alice, { type: 'status', status: 'invisible' });
    const self = ack.self as Record<string, unknown>;
    assert.equal(self.manualStatus, 'invisible');
    assert.equal(self.status, 'offline', 'the user sees how others see them');
    const leave = (await waitFrom(bob, from, (m) => m.type === 'presence.leave')) as Msg<'presence.leave'>;
    assert.equal(leave.userId, 'alice');
    assert.ok(Math.abs(Date.parse(leave.lastSeen!) - before) < 200, 'lastSeen frozen at the moment of going invisible');
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 1);
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'offline');

    // A newcomer does not see the invisible member either.
    const carol = await env.connect('carol');
    await ok(carol, { type: 'join', channel: 'room-1' });
    assert.deepEqual(carol.ofType('presence.sync')[0].members.map((m) => m.userId).sort(), ['bob', 'carol']);

    from = bob.messages.length;
    await ok(alice, { type: 'status', status: 'online' });
    const join = (await waitFrom(bob, from, (m) => m.type === 'presence.join')) as Msg<'presence.join'>;
    assert.equal(join.member.userId, 'alice');
    assert.equal(join.member.status, 'online');
    assert.equal(join.seq, leave.seq + 2, 'carol joined in between');
  });

  test('expiresAt clears status, state and message when it passes', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const expiresAt = new Date(Date.now() + 250).toISOString();
    const from = bob.messages.length;
    await ok(alice, { type: 'status', status: 'busy', state: 'in-call', message: 'brb', expiresAt });
    const set = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.equal(set.member.status, 'busy');
    assert.equal(set.member.state, 'in-call');
    const cleared = (await waitFrom(
      bob,
      from,
      (m) => m.type === 'presence.update' && m.member.status === 'online',
    )) as Msg<'presence.update'>;
    assert.ok(Date.now() >= Date.parse(expiresAt) - 5, 'not cleared before expiresAt');
    assert.equal(cleared.member.state, undefined);
    assert.equal(cleared.member.message, undefined);
    assert.equal(cleared.member.expiresAt, undefined);
    assert.equal(cleared.seq, set.seq + 1);
  });
});

describe('meta and channel.meta', () => {
  test('meta merges, null removes a key, the ack carries self, co-members get presence.update', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    let from = bob.messages.length;
    let ack = await ok(alice, { type: 'meta', meta: { name: 'Alice', avatar: 'a.png', prefs: { theme: 'dark' } } });
    assert.deepEqual((ack.self as { meta: unknown }).meta, { name: 'Alice', avatar: 'a.png', prefs: { theme: 'dark' } });
    let update = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.deepEqual(update.member.meta, { name: 'Alice', avatar: 'a.png', prefs: { theme: 'dark' } });

    from = bob.messages.length;
    ack = await ok(alice, { type: 'meta', meta: { avatar: null, title: 'CTO', prefs: { lang: 'en' } } });
    assert.deepEqual((ack.self as { meta: unknown }).meta, { name: 'Alice', title: 'CTO', prefs: { lang: 'en' } });
    update = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.deepEqual(update.member.meta, { name: 'Alice', title: 'CTO', prefs: { lang: 'en' } }, 'nested objects are replaced');
    // Alice's own sessions get the update too.
    await alice.waitFor((m) => m.type === 'presence.update' && m.member.meta.title === 'CTO');

    // Removing a key that does not exist is a no-op: acked, nothing broadcast.
    bob.drain();
    await ok(alice, { type: 'meta', meta: { nothing: null } });
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), []);
    // A newcomer sees the merged meta in the sync, and the welcome of a new session has it too.
    const alice2 = await env.connect('alice');
    assert.deepEqual(alice2.welcome.self.meta, { name: 'Alice', title: 'CTO', prefs: { lang: 'en' } });
  });

  test('channel.meta merges per channel; ack carries channelMeta; other channels are untouched', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    await ok(alice, { type: 'join', channel: 'room-2' });
    let from = bob.messages.length;
    let ack = await ok(alice, { type: 'channel.meta', channel: 'room-1', meta: { mode: 'editing', cursor: { x: 1, y: 2 } } });
    assert.deepEqual(ack.channelMeta, { mode: 'editing', cursor: { x: 1, y: 2 } });
    let update = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.equal(update.channel, 'room-1');
    assert.equal(update.member.userId, 'alice');
    assert.deepEqual(update.member.channelMeta, { mode: 'editing', cursor: { x: 1, y: 2 } });
    assert.deepEqual(update.member.meta, {}, 'user meta is separate');

    from = bob.messages.length;
    ack = await ok(alice, { type: 'channel.meta', channel: 'room-1', meta: { cursor: null } });
    assert.deepEqual(ack.channelMeta, { mode: 'editing' });
    update = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.deepEqual(update.member.channelMeta, { mode: 'editing' });
    assert.deepEqual(env.server.engine.channelPresence('room-2', { limit: 10 }).members[0].channelMeta, {});

    // Re-joining with meta merges into the member's channel meta and is an update for the others.
    from = bob.messages.length;
    const alice2 = await env.connect('alice');
    await ok(alice2, { type: 'join', channel: 'room-1', meta: { mode: 'viewing' } });
    update = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.deepEqual(update.member.channelMeta, { mode: 'viewing' });
  });
});

// ---------------------------------------------------------------------------------------------
// Activity, idle, typing
// ---------------------------------------------------------------------------------------------

describe('activity and idle', () => {
  test('no activity for idleTimeoutMs → away; activity → online again', async (t) => {
    const env = await setup(t, { idleTimeoutMs: 300 });
    const connectedAt = Date.now();
    const alice = await env.connect('alice');
    const bob = await env.connect('bob');
    await ok(alice, { type: 'join', channel: 'room-1' });
    await ok(bob, { type: 'join', channel: 'room-1' });
    // Bob keeps himself active so that only alice goes idle.
    const keepBobActive = setInterval(() => bob.sendRaw(JSON.stringify({ type: 'activity' })), 100);
    t.after(() => clearInterval(keepBobActive));

    const away = (await bob.waitFor(
      (m) => m.type === 'presence.update' && m.member.userId === 'alice' && m.member.status === 'away',
    )) as Msg<'presence.update'>;
    const elapsed = Date.now() - connectedAt;
    assert.ok(elapsed >= 290, `away after ${elapsed} ms, before the idle timeout`);
    assert.ok(elapsed < 1000, `away only after ${elapsed} ms`);
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'away');

    const from = bob.messages.length;
    await ok(alice, { type: 'activity' });
    const back = (await waitFrom(
      bob,
      from,
      (m) => m.type === 'presence.update' && m.member.userId === 'alice',
    )) as Msg<'presence.update'>;
    assert.equal(back.member.status, 'online');
    assert.equal(back.seq, away.seq + 1);
    clearInterval(keepBobActive);
  });

  test('idle reports the user away at once (all sessions idle) and activity ends it', async (t) => {
    const env = await setup(t, { idleTimeoutMs: 60_000 });
    const { alice, bob } = await pair(env);
    const alice2 = await env.connect('alice');
    let from = bob.messages.length;
    await ok(alice, { type: 'idle' });
    await assertAlive(bob);
    assert.deepEqual(
      bob.messages.slice(from).filter((m) => m.type === 'presence.update'),
      [],
      'one of two sessions idle: still online',
    );
    await ok(alice2, { type: 'idle' });
    const away = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.equal(away.member.status, 'away');
    from = bob.messages.length;
    await ok(alice2, { type: 'activity' });
    const online = (await waitFrom(bob, from, (m) => m.type === 'presence.update')) as Msg<'presence.update'>;
    assert.equal(online.member.status, 'online');
    assert.match(online.member.lastActive ?? '', ISO);
  });

  test('a manual status wins over idle', async (t) => {
    const env = await setup(t, { idleTimeoutMs: 60_000 });
    const { alice, bob } = await pair(env);
    await ok(alice, { type: 'status', status: 'busy' });
    await bob.waitFor((m) => m.type === 'presence.update' && m.member.status === 'busy');
    bob.drain();
    await ok(alice, { type: 'idle' });
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), []);
  });
});

describe('typing', () => {
  test('start, refresh and stop are broadcast as transitions to the others, never to the typer', async (t) => {
    const env = await setup(t, { typingTimeoutMs: 2000 });
    const { alice, bob } = await pair(env);
    const alice2 = await env.connect('alice');
    await ok(alice2, { type: 'join', channel: 'room-1' });

    await ok(alice, { type: 'typing', channel: 'room-1', typing: true });
    const start = (await bob.waitFor((m) => m.type === 'typing')) as Msg<'typing'>;
    assert.deepEqual(start, { type: 'typing', channel: 'room-1', userId: 'alice', typing: true });
    // A refresh is not a transition.
    await ok(alice, { type: 'typing', channel: 'room-1', typing: true });
    await ok(alice2, { type: 'typing', channel: 'room-1', typing: true });
    await assertAlive(bob);
    assert.equal(bob.ofType('typing').length, 1);

    await ok(alice, { type: 'typing', channel: 'room-1', typing: false });
    const stop = (await bob.waitFor((m) => m.type === 'typing' && !m.typing)) as Msg<'typing'>;
    assert.deepEqual(stop, { type: 'typing', channel: 'room-1', userId: 'alice', typing: false });
    // Stopping again is not a transition either.
    await ok(alice, { type: 'typing', channel: 'room-1', typing: false });
    await assertAlive(bob);
    assert.equal(bob.ofType('typing').length, 2);

    // Bob types: alice's sessions see it, bob does not.
    await ok(bob, { type: 'typing', channel: 'room-1', typing: true });
    await alice.waitFor((m) => m.type === 'typing' && m.userId === 'bob');
    await alice2.waitFor((m) => m.type === 'typing' && m.userId === 'bob');
    await assertAlive(bob);
    assert.deepEqual(alice.ofType('typing').map((m) => m.userId), ['bob']);
    assert.deepEqual(alice2.ofType('typing').map((m) => m.userId), ['bob']);
    assert.deepEqual(bob.ofType('typing').map((m) => m.userId), ['alice', 'alice']);
  });

  test('typing expires after typingTimeoutMs without refresh', async (t) => {
    const env = await setup(t, { typingTimeoutMs: 300 });
    const { alice, bob } = await pair(env);
    const startedAt = Date.now();
    await ok(alice, { type: 'typing', channel: 'room-1', typing: true });
    await bob.waitFor((m) => m.type === 'typing' && m.typing);
    await bob.waitFor((m) => m.type === 'typing' && !m.typing);
    const elapsed = Date.now() - startedAt;
    assert.ok(elapsed >= 280 && elapsed < 1000, `typing ended after ${elapsed} ms`);
    assert.equal(alice.ofType('typing').length, 0);
  });

  test('typing ends when the typer leaves the channel', async (t) => {
    const env = await setup(t, { typingTimeoutMs: 5000 });
    const { alice, bob } = await pair(env);
    await ok(alice, { type: 'typing', channel: 'room-1', typing: true });
    await bob.waitFor((m) => m.type === 'typing' && m.typing);
    await ok(alice, { type: 'leave', channel: 'room-1' });
    const stop = await bob.waitFor((m) => m.type === 'typing' && !m.typing);
    const leave = await bob.waitFor((m) => m.type === 'presence.leave');
    assert.ok(bob.messages.indexOf(stop) < bob.messages.indexOf(leave), 'typing stops before the leave');
  });
});

// ---------------------------------------------------------------------------------------------
// Watching users
// ---------------------------------------------------------------------------------------------

describe('watch and unwatch', () => {
  test('watch answers user.sync; changes arrive as user.update; unwatch stops them', async (t) => {
    const env = await setup(t, { offlineDelayMs: 100 });
    const carol = await env.connect('carol');
    const ack = await ok(carol, { type: 'watch', users: ['bob', 'dave', 'bob'] });
    assert.equal(ack.watching, 2, 'duplicates count once');
    const sync = carol.ofType('user.sync')[0];
    assert.ok(sync, 'watch is answered by user.sync');
    assert.ok(carol.messages.indexOf(sync) < carol.messages.indexOf(ack));
    assert.deepEqual(sync.users.map((u) => u.userId), ['bob', 'dave']);
    for (const user of sync.users) {
      assert.equal(user.status, 'offline');
      assert.equal(user.lastSeen, null, 'never seen');
      assert.deepEqual(user.devices, []);
    }

    let from = carol.messages.length;
    const bob = await env.connect('bob');
    let update = (await waitFrom(carol, from, (m) => m.type === 'user.update')) as Msg<'user.update'>;
    assert.equal(update.user.userId, 'bob');
    assert.equal(update.user.status, 'online');
    assert.deepEqual(update.user.devices, ['web']);

    from = carol.messages.length;
    await ok(bob, { type: 'status', status: 'busy', message: 'focus time' });
    update = (await waitFrom(carol, from, (m) => m.type === 'user.update')) as Msg<'user.update'>;
    assert.equal(update.user.status, 'busy');
    assert.equal(update.user.message, 'focus time');

    from = carol.messages.length;
    await ok(bob, { type: 'meta', meta: { name: 'Bob' } });
    update = (await waitFrom(carol, from, (m) => m.type === 'user.update')) as Msg<'user.update'>;
    assert.deepEqual(update.user.meta, { name: 'Bob' });

    // Watching someone already watched re-sends their current state.
    from = carol.messages.length;
    await ok(carol, { type: 'watch', users: ['bob'] });
    const resync = (await waitFrom(carol, from, (m) => m.type === 'user.sync')) as Msg<'user.sync'>;
    assert.equal(resync.users[0].status, 'busy');

    const unwatch = await ok(carol, { type: 'unwatch', users: ['bob', 'nobody-watched'] });
    assert.equal(unwatch.watching, 1);
    carol.drain();
    await ok(bob, { type: 'status', status: 'online' });
    // A logout is the strongest change there is, and still nothing reaches carol.
    await ok(bob, { type: 'logout' });
    await bob.closed;
    await sleep(150);
    await assertAlive(carol);
    assert.deepEqual(carol.drain().filter((m) => m.type === 'user.update'), []);
  });

  test('a watched user going offline arrives as user.update offline with lastSeen', async (t) => {
    const env = await setup(t, { offlineDelayMs: 100 });
    const carol = await env.connect('carol');
    const bob = await env.connect('bob');
    await ok(carol, { type: 'watch', users: ['bob'] });
    assert.equal(carol.ofType('user.sync')[0].users[0].status, 'online');
    const from = carol.messages.length;
    const droppedAt = Date.now();
    bob.ws.terminate();
    const update = (await waitFrom(carol, from, (m) => m.type === 'user.update')) as Msg<'user.update'>;
    assert.ok(Date.now() - droppedAt >= 90, 'after the offline delay');
    assert.equal(update.user.status, 'offline');
    assert.ok(Math.abs(Date.parse(update.user.lastSeen!) - droppedAt) <= 50);
  });
});

// ---------------------------------------------------------------------------------------------
// ping, logout
// ---------------------------------------------------------------------------------------------

describe('ping and logout', () => {
  test('ping is answered by pong with the ref (number or string) and server time; without ref, none', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    alice.sendRaw(JSON.stringify({ type: 'ping', ref: 42 }));
    const numbered = (await alice.waitFor((m) => m.type === 'pong' && m.ref === 42)) as Msg<'pong'>;
    assert.match(numbered.serverTime, ISO);
    assert.ok(Math.abs(Date.parse(numbered.serverTime) - Date.now()) < 1000);
    alice.sendRaw(JSON.stringify({ type: 'ping', ref: 'p-1' }));
    await alice.waitFor((m) => m.type === 'pong' && m.ref === 'p-1');
    const from = alice.messages.length;
    alice.sendRaw(JSON.stringify({ type: 'ping' }));
    const bare = (await waitFrom(alice, from, (m) => m.type === 'pong')) as Msg<'pong'>;
    assert.equal('ref' in bare, false);
    await assertAlive(alice);
    assert.equal(alice.ofType('ack').length, 0, 'ping is answered by pong, not ack');
  });

  test('logout: ack, close 1000, others see the leave at once (no offline delay)', async (t) => {
    const env = await setup(t, { offlineDelayMs: 5000 });
    const { alice, bob } = await pair(env);
    const alice2 = await env.connect('alice', { device: 'ios' });
    const from = bob.messages.length;
    const before = Date.now();
    const ack = await ok(alice, { type: 'logout' });
    assert.equal(ack.type, 'ack');
    const closed = await closedWithin(alice, 1000);
    assert.equal(closed.code, 1000);
    assert.equal((await closedWithin(alice2, 1000)).code, 1000, 'every session of the user ends');
    const leave = (await waitFrom(bob, from, (m) => m.type === 'presence.leave')) as Msg<'presence.leave'>;
    assert.ok(Date.now() - before < 1000, 'the leave does not wait for the offline delay');
    assert.equal(leave.userId, 'alice');
    assert.ok(Math.abs(Date.parse(leave.lastSeen!) - before) < 200);
    const stats = env.server.engine.stats();
    assert.equal(stats.sessions, 1, 'logged-out sessions do not linger');
    assert.equal(stats.connections, 1);
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'offline');
    // A logged-out session id cannot be resumed.
    const again = await env.connect('alice', { sessionId: alice.welcome.sessionId });
    assert.equal(again.welcome.resumed, false);
  });
});

// ---------------------------------------------------------------------------------------------
// seq
// ---------------------------------------------------------------------------------------------

describe('seq', () => {
  test('every receiver sees presence.* of a channel with seq strictly +1 from its sync', async (t) => {
    const env = await setup(t, { offlineDelayMs: 50, typingTimeoutMs: 100 });
    const alice = await env.connect('alice');
    const bob = await env.connect('bob');
    const carol = await env.connect('carol');
    await ok(alice, { type: 'join', channel: 'doc' });
    await ok(bob, { type: 'join', channel: 'doc' });
    await ok(alice, { type: 'join', channel: 'other' });
    await ok(alice, { type: 'status', status: 'away' });
    await ok(carol, { type: 'join', channel: 'doc', meta: { mode: 'viewing' } });
    await ok(bob, { type: 'meta', meta: { name: 'Bob' } });
    await ok(carol, { type: 'channel.meta', channel: 'doc', meta: { mode: 'editing' } });
    await ok(alice, { type: 'typing', channel: 'doc', typing: true });
    await ok(bob, { type: 'status', status: 'invisible' });
    await ok(alice, { type: 'channel.meta', channel: 'other', meta: { x: 1 } });
    await ok(bob, { type: 'status', status: 'online' });
    await ok(carol, { type: 'leave', channel: 'doc' });
    await ok(carol, { type: 'join', channel: 'doc' });
    const dave = await env.connect('dave');
    await ok(dave, { type: 'join', channel: 'doc' });
    dave.ws.terminate(); // leaves after the offline delay
    await ok(alice, { type: 'status', status: 'busy' });
    await ok(bob, { type: 'leave', channel: 'doc' });
    await alice.waitFor((m) => m.type === 'presence.leave' && m.userId === 'dave');
    await alice.waitFor((m) => m.type === 'presence.leave' && m.userId === 'bob');
    await carol.waitFor((m) => m.type === 'presence.leave' && m.userId === 'bob');

    let checked = 0;
    const receivers: [TestClient, string][] = [[alice, 'doc'], [bob, 'doc'], [carol, 'doc'], [alice, 'other']];
    for (const [client, channel] of receivers) {
      let expected: number | undefined;
      for (const event of presenceEvents(client, channel) as Msg<'presence.sync' | 'presence.join' | 'presence.leave' | 'presence.update'>[]) {
        if (event.type === 'presence.sync') {
          if (expected !== undefined) assert.ok(event.seq >= expected - 1, 'a resync never goes back in time');
          expected = event.seq + 1;
          continue;
        }
        assert.ok(expected !== undefined, 'no event before the sync');
        assert.equal(event.seq, expected, `${client.welcome.userId}: ${event.type} has seq ${event.seq}, expected ${expected}`);
        expected += 1;
        checked += 1;
      }
    }
    assert.ok(checked >= 20, `only ${checked} events checked`);
    // The other channel has its own counter, unaffected by the events of 'doc'.
    const otherSync = alice.ofType('presence.sync').find((m) => m.channel === 'other')!;
    const other = alice.ofType('presence.update').filter((m) => m.channel === 'other');
    assert.deepEqual(other.map((m) => m.seq), [1, 2, 3].map((i) => otherSync.seq + i));
  });
});

// ---------------------------------------------------------------------------------------------
// Offline delay, resume, takeover
// ---------------------------------------------------------------------------------------------

describe('offline delay over real sockets', () => {
  test('a dropped socket that reconnects with its sessionId inside the delay resumes; others see nothing', async (t) => {
    const env = await setup(t, { offlineDelayMs: 400 });
    const { alice, bob } = await pair(env);
    await ok(alice, { type: 'watch', users: ['bob'] });
    await ok(alice, { type: 'channel.meta', channel: 'room-1', meta: { cursor: 3 } });
    await bob.waitFor((m) => m.type === 'presence.update');
    bob.drain();
    const sessionId = alice.welcome.sessionId;

    alice.ws.terminate();
    await until(() => env.server.engine.stats().connections === 1, 1000, 'the server to notice the drop');
    // While alice is away, bob changes: the resumed session must get the current state.
    await ok(bob, { type: 'status', status: 'busy' });
    await bob.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'bob');
    await sleep(100);
    bob.drain();
    const resumed = await env.connect('alice', { sessionId });
    assert.equal(resumed.welcome.resumed, true);
    assert.equal(resumed.welcome.sessionId, sessionId);
    const sync = (await resumed.waitFor((m) => m.type === 'presence.sync')) as Msg<'presence.sync'>;
    assert.equal(sync.channel, 'room-1');
    assert.equal(memberOf(sync, 'bob')!.status, 'busy', 'the resync has what was missed');
    assert.deepEqual(memberOf(sync, 'alice')!.channelMeta, { cursor: 3 }, 'channel meta survives the resume');
    const users = (await resumed.waitFor((m) => m.type === 'user.sync')) as Msg<'user.sync'>;
    assert.equal(users.users[0].status, 'busy', 'watches survive the resume');
    assert.equal(env.server.engine.stats().sessions, 2);

    // Past the original offline delay, bob has still seen nothing of alice.
    await sleep(500);
    await assertAlive(bob);
    const seen = bob.drain().filter((m) => m.type !== 'pong' && m.type !== 'ack');
    assert.deepEqual(seen, [], `bob saw ${JSON.stringify(seen)}`);
    // The resumed session is fully live.
    await ok(resumed, { type: 'status', status: 'away' });
    await bob.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'alice' && m.member.status === 'away');
    assert.equal(resumed.ofType('presence.update').at(-1)!.seq, sync.seq + 1);
  });

  test('without a reconnect the leave comes only after the delay, with lastSeen = disconnect time', async (t) => {
    const env = await setup(t, { offlineDelayMs: 300 });
    const { alice, bob } = await pair(env);
    const droppedAt = Date.now();
    alice.ws.terminate();
    await sleep(150);
    assert.deepEqual(bob.drain().filter((m) => m.type.startsWith('presence.')), [], 'nothing inside the delay');
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 2, 'still present inside the delay');
    const leave = (await bob.waitFor((m) => m.type === 'presence.leave')) as Msg<'presence.leave'>;
    const leftAfter = Date.now() - droppedAt;
    assert.ok(leftAfter >= 290, `leave after ${leftAfter} ms, before the delay ran out`);
    assert.ok(leftAfter < 1000, `leave only after ${leftAfter} ms`);
    assert.equal(leave.userId, 'alice');
    assert.ok(
      Math.abs(Date.parse(leave.lastSeen!) - droppedAt) <= 50,
      `lastSeen ${leave.lastSeen} is not the disconnect time ${new Date(droppedAt).toISOString()}`,
    );
    assert.equal(env.server.engine.stats().sessions, 1);
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).lastSeen, leave.lastSeen);
    // A reconnect after the delay is a fresh session and a fresh join.
    const from = bob.messages.length;
    const again = await env.connect('alice', { sessionId: alice.welcome.sessionId });
    assert.equal(again.welcome.resumed, false);
    await ok(again, { type: 'join', channel: 'room-1' });
    await waitFrom(bob, from, (m) => m.type === 'presence.join' && m.member.userId === 'alice');
  });

  test('a second socket with the same sessionId takes the session over; the first is closed with 4000', async (t) => {
    const env = await setup(t, { offlineDelayMs: 300 });
    const { alice, bob } = await pair(env);
    const from = bob.messages.length;
    const second = await env.connect('alice', { sessionId: alice.welcome.sessionId });
    assert.equal(second.welcome.resumed, true);
    const closed = await closedWithin(alice, 1000);
    assert.equal(closed.code, 4000);
    assert.equal(closed.reason, 'SESSION_REPLACED');
    await second.waitFor((m) => m.type === 'presence.sync');
    assert.equal(env.server.engine.stats().connections, 2);
    assert.equal(env.server.engine.stats().sessions, 2);
    // The old socket's close must not start the offline delay of the live session.
    await sleep(450);
    await assertAlive(second);
    await assertAlive(bob);
    assert.deepEqual(bob.messages.slice(from).filter((m) => m.type.startsWith('presence.')), []);
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 2);
  });

  test('a session id of another user is not resumed', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const mallory = await env.connect('mallory', { sessionId: alice.welcome.sessionId });
    assert.equal(mallory.welcome.resumed, false);
    assert.notEqual(mallory.welcome.sessionId, alice.welcome.sessionId);
    await assertAlive(alice);
  });
});

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

describe('bad input', () => {
  test('invalid JSON → INVALID_JSON; the connection keeps working', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    for (const garbage of ['{', 'not json', '{"type":"ping",}', '']) {
      const from = alice.messages.length;
      alice.sendRaw(garbage);
      const error = await nextError(alice, from);
      assert.equal(error.code, 'INVALID_JSON');
      assert.equal(error.ref, undefined);
      await assertAlive(alice);
    }
    await ok(alice, { type: 'status', status: 'busy' });
    await bob.waitFor((m) => m.type === 'presence.update' && m.member.status === 'busy');
  });

  test('unknown type → UNKNOWN_TYPE with the ref echoed', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const error = await refused(alice, { type: 'subscribe', channel: 'x' }, 'UNKNOWN_TYPE');
    assert.ok(error.ref !== undefined);
    await refused(alice, { type: 'presence.sync' }, 'UNKNOWN_TYPE');
    await refused(alice, { type: 'PING' }, 'UNKNOWN_TYPE');
    const from = alice.messages.length;
    alice.sendRaw(JSON.stringify({ type: 'nope', ref: 'my-ref' }));
    const stringRef = await nextError(alice, from);
    assert.equal(stringRef.ref, 'my-ref');
    assert.equal(stringRef.code, 'UNKNOWN_TYPE');
    await assertAlive(alice);
  });

  test('missing or invalid fields → INVALID_MESSAGE, ref echoed, nothing changed', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const cases: Record<string, unknown>[] = [
      { type: 'join' },
      { type: 'join', channel: 42 },
      { type: 'join', channel: 'room-2', meta: 'x' },
      { type: 'join', channel: 'room-2', meta: [1, 2] },
      { type: 'leave' },
      { type: 'status', status: 'offline' },
      { type: 'status', status: 'sleeping' },
      { type: 'status', state: 5 },
      { type: 'status', message: { text: 'hi' } },
      { type: 'status', visibility: 'friends' },
      { type: 'meta' },
      { type: 'meta', meta: null },
      { type: 'meta', meta: ['a'] },
      { type: 'meta', meta: { ['__proto__']: 1 } },
      { type: 'channel.meta', channel: 'room-1' },
      { type: 'channel.meta', meta: {} },
      { type: 'typing', channel: 'room-1' },
      { type: 'typing', channel: 'room-1', typing: 'yes' },
      { type: 'watch' },
      { type: 'watch', users: 'bob' },
      { type: 'watch', users: ['bob', 7] },
      { type: 'unwatch', users: null },
      { type: 7 },
      {},
    ];
    for (const command of cases) {
      const error = await refused(alice, command, 'INVALID_MESSAGE');
      assert.equal(typeof error.ref, 'number', 'the ref is echoed');
    }
    // `__proto__` built with JSON.parse is a real own key; send it raw too.
    let from = alice.messages.length;
    alice.sendRaw('{"type":"meta","ref":"proto","meta":{"__proto__":{"polluted":true}}}');
    const proto = await nextError(alice, from);
    assert.equal(proto.code, 'INVALID_MESSAGE');
    assert.equal(proto.ref, 'proto');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    // Frames that are JSON but not objects.
    for (const frame of ['[1,2]', '42', '"ping"', 'null']) {
      from = alice.messages.length;
      alice.sendRaw(frame);
      const error = await nextError(alice, from);
      assert.equal(error.code, 'INVALID_MESSAGE', `frame ${frame}`);
    }
    // An unusable ref is itself invalid, and not echoed.
    for (const ref of [{ a: 1 }, 'r'.repeat(65), true]) {
      from = alice.messages.length;
      alice.sendRaw(JSON.stringify({ type: 'ping', ref }));
      const error = await nextError(alice, from);
      assert.equal(error.code, 'INVALID_MESSAGE');
      assert.equal(error.ref, undefined);
    }
    await assertAlive(alice);
    await assertAlive(bob);
    assert.deepEqual(
      bob.drain().filter((m) => m.type !== 'pong'),
      [],
      'refused commands broadcast nothing',
    );
    const self = env.server.engine.userPresence('alice', { trusted: true });
    assert.equal(self.status, 'online');
    assert.deepEqual(self.meta, {});
    assert.equal(env.server.engine.channelPresence('room-2', { limit: 10 }).count, 0);
  });

  test('binary frame → BINARY_NOT_SUPPORTED; the connection keeps working', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const from = alice.messages.length;
    alice.sendRaw(Buffer.from(JSON.stringify({ type: 'ping', ref: 1 })), true);
    const error = await nextError(alice, from);
    assert.equal(error.code, 'BINARY_NOT_SUPPORTED');
    assert.equal(alice.ofType('pong').length, 0, 'a binary frame is not run');
    await assertAlive(alice);
    await ok(alice, { type: 'join', channel: 'room-1' });
  });

  test('a frame larger than maxFrameBytes closes the connection with 1009; others are unaffected', async (t) => {
    const env = await setup(t, { limits: { maxFrameBytes: 1024 } });
    const { alice, bob } = await pair(env);
    // Just under the limit is fine.
    const small = JSON.stringify({ type: 'ping', ref: 'small', pad: '' });
    alice.sendRaw(JSON.stringify({ type: 'ping', ref: 'small', pad: 'x'.repeat(1024 - small.length) }));
    await alice.waitFor((m) => m.type === 'pong' && m.ref === 'small');
    alice.sendRaw(JSON.stringify({ type: 'meta', meta: { blob: 'x'.repeat(2000) } }));
    const closed = await closedWithin(alice, 1000);
    assert.equal(closed.code, 1009);
    await until(() => env.server.engine.stats().connections === 1, 1000, 'the server to drop the connection');
    await assertAlive(bob);
    assert.deepEqual(env.server.engine.userPresence('alice', { trusted: true }).meta, {});
  });

  test('meta over bytes, depth or keys → META_TOO_LARGE (user meta, channel meta, join meta, after merge)', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const { maxMetaBytes, maxMetaKeys } = env.server.config.limits;
    const deep = { a: { b: { c: { d: { e: 1 } } } } };
    const manyKeys = Object.fromEntries(Array.from({ length: maxMetaKeys + 1 }, (_, i) => [`k${i}`, i]));
    const nestedKeys = { outer: Object.fromEntries(Array.from({ length: maxMetaKeys }, (_, i) => [`k${i}`, i])) };
    const big = { blob: 'x'.repeat(maxMetaBytes) };
    for (const meta of [big, deep, manyKeys, nestedKeys, { list: [[[[[1]]]]] }]) {
      await refused(alice, { type: 'meta', meta }, 'META_TOO_LARGE');
      await refused(alice, { type: 'channel.meta', channel: 'room-1', meta }, 'META_TOO_LARGE');
      await refused(alice, { type: 'join', channel: 'room-2', meta }, 'META_TOO_LARGE');
    }
    // Each patch is small, but the merged result would pass the limit.
    const half = 'y'.repeat(Math.floor(maxMetaBytes / 2));
    await ok(alice, { type: 'meta', meta: { a: half } });
    await refused(alice, { type: 'meta', meta: { b: half } }, 'META_TOO_LARGE');
    // Within limits: depth 3 and exactly maxMetaKeys keys are accepted.
    await ok(alice, { type: 'channel.meta', channel: 'room-1', meta: { a: { b: { c: 1 } } } });
    await ok(alice, { type: 'meta', meta: { a: null, ...Object.fromEntries(Array.from({ length: maxMetaKeys }, (_, i) => [`k${i}`, i])) } });
    await assertAlive(alice);
    assert.equal(env.server.engine.channelPresence('room-2', { limit: 10 }).count, 0, 'a refused join leaves nothing behind');
    const meta = env.server.engine.userPresence('alice', { trusted: true }).meta;
    assert.equal(Object.keys(meta).length, maxMetaKeys);
    // Bob saw only the accepted changes (meta a, channel meta, meta keys), each once.
    await assertAlive(bob);
    assert.equal(bob.ofType('presence.update').length, 3);
  });

  test('message longer than maxMessageLength → MESSAGE_TOO_LONG (counted in characters)', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    await refused(alice, { type: 'status', status: 'busy', message: 'm'.repeat(257) }, 'MESSAGE_TOO_LONG');
    await refused(alice, { type: 'status', message: '😀'.repeat(257) }, 'MESSAGE_TOO_LONG');
    await assertAlive(alice);
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), [], 'a refused status changes nothing');
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'online');
    const emoji = '😀'.repeat(256);
    const ack = await ok(alice, { type: 'status', message: emoji });
    assert.equal((ack.self as { message: string }).message, emoji, '256 emoji are 256 characters');
  });

  test('unknown state → UNKNOWN_STATE; a bad expiresAt → INVALID_EXPIRY; nothing changes', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    await refused(alice, { type: 'status', state: 'napping' }, 'UNKNOWN_STATE');
    await refused(alice, { type: 'status', status: 'busy', state: 'toString' }, 'UNKNOWN_STATE');
    await refused(alice, { type: 'status', status: 'busy', expiresAt: 'tomorrow' }, 'INVALID_EXPIRY');
    await refused(alice, { type: 'status', status: 'busy', expiresAt: new Date(Date.now() - 1000).toISOString() }, 'INVALID_EXPIRY');
    await assertAlive(alice);
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), []);
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'online');
    const ack = await ok(alice, { type: 'status', state: 'in-call' });
    assert.equal((ack.self as { state: string }).state, 'in-call');
  });

  test('expiresAt naming no real time (30 February, 24:00, second 60, offset past ±14:00) → INVALID_EXPIRY; edge dates that exist work', async (t) => {
    // See also http-integration.test.ts (the same values over HTTP).
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    for (const [what, expiresAt] of [...IMPOSSIBLE_EXPIRIES, ...MALFORMED_EXPIRIES]) {
      const error = await refused(alice, { type: 'status', status: 'busy', expiresAt }, 'INVALID_EXPIRY');
      assert.doesNotMatch(error.message, /future/, `${what}: refused for the value, not for its time`);
    }
    await assertAlive(bob);
    assert.deepEqual(bob.drain().filter((m) => m.type === 'presence.update'), [], 'a refused status changes nothing');
    assert.equal(env.server.engine.userPresence('alice', { trusted: true }).status, 'online');
    for (const [what, expiresAt, utc] of VALID_EXPIRIES) {
      const ack = await ok(alice, { type: 'status', status: 'busy', expiresAt });
      assert.equal((ack.self as { expiresAt?: string }).expiresAt, utc, what);
    }
  });

  test('bad channel name → INVALID_CHANNEL on every command that names a channel', async (t) => {
    const env = await setup(t);
    const alice = await env.connect('alice');
    const { maxChannelNameLength } = env.server.config.limits;
    for (const channel of ['', 'has space', 'slash/es', 'ümlaut', 'x'.repeat(maxChannelNameLength + 1), 'a\nb', '#general']) {
      await refused(alice, { type: 'join', channel }, 'INVALID_CHANNEL');
      await refused(alice, { type: 'leave', channel }, 'INVALID_CHANNEL');
      await refused(alice, { type: 'channel.meta', channel, meta: {} }, 'INVALID_CHANNEL');
      await refused(alice, { type: 'typing', channel, typing: true }, 'INVALID_CHANNEL');
    }
    await assertAlive(alice);
    assert.equal(env.server.engine.stats().channels, 0);
    // Every allowed character, at the maximum length, is fine.
    const name = 'Az09_:.@-'.padEnd(maxChannelNameLength, 'z');
    await ok(alice, { type: 'join', channel: name });
    assert.equal(env.server.engine.channelPresence(name, { limit: 10 }).count, 1);
  });

  test('commands on a channel not joined → NOT_IN_CHANNEL', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const carol = await env.connect('carol');
    await refused(carol, { type: 'leave', channel: 'room-1' }, 'NOT_IN_CHANNEL');
    await refused(carol, { type: 'channel.meta', channel: 'room-1', meta: { x: 1 } }, 'NOT_IN_CHANNEL');
    await refused(carol, { type: 'typing', channel: 'room-1', typing: true }, 'NOT_IN_CHANNEL');
    await refused(carol, { type: 'typing', channel: 'nowhere', typing: false }, 'NOT_IN_CHANNEL');
    await assertAlive(carol);
    await assertAlive(alice);
    assert.deepEqual(alice.drain().filter((m) => m.type !== 'pong'), [], 'nothing leaked into the channel');
    assert.deepEqual(bob.drain(), []);
    assert.equal(env.server.engine.channelPresence('room-1', { limit: 10 }).count, 2);
  });

  test('too many channels → TOO_MANY_CHANNELS; rejoining a joined channel still works', async (t) => {
    const env = await setup(t, { limits: { maxChannelsPerSession: 3 } });
    const alice = await env.connect('alice');
    for (const channel of ['c1', 'c2', 'c3']) await ok(alice, { type: 'join', channel });
    await refused(alice, { type: 'join', channel: 'c4' }, 'TOO_MANY_CHANNELS');
    await assertAlive(alice);
    assert.equal(env.server.engine.stats().channels, 3);
    assert.equal(env.server.engine.channelPresence('c4', { limit: 10 }).count, 0);
    await ok(alice, { type: 'join', channel: 'c2' });
    // The limit is per session: another session of the same user has its own.
    const alice2 = await env.connect('alice');
    await ok(alice2, { type: 'join', channel: 'c4' });
    await ok(alice, { type: 'leave', channel: 'c1' });
    await ok(alice, { type: 'join', channel: 'c5' });
  });

  test('too many sessions per user → error TOO_MANY_SESSIONS and close 4029', async (t) => {
    const env = await setup(t, { limits: { maxSessionsPerUser: 2 } });
    const first = await env.connect('alice');
    await env.connect('alice');
    const third = await env.connect('alice');
    const error = third.messages[0] as Msg<'error'>;
    assert.equal(error.type, 'error', 'the refusal is an error frame, not a welcome');
    assert.equal(error.code, 'TOO_MANY_SESSIONS');
    assert.equal(third.ofType('welcome').length, 0);
    const closed = await closedWithin(third, 1000);
    assert.equal(closed.code, 4029);
    assert.equal(env.server.engine.stats().sessions, 2);
    await assertAlive(first);
    // Another user is not affected, and a dropped session makes room (it only lingered).
    const bob = await env.connect('bob');
    assert.equal(bob.welcome.userId, 'bob');
    first.ws.terminate();
    await until(() => env.server.engine.stats().connections === 2, 1000, 'the server to notice the drop');
    const again = await env.connect('alice');
    assert.equal(again.welcome.userId, 'alice');
  });

  test('too many watched users → TOO_MANY_WATCHES; nothing is added', async (t) => {
    const env = await setup(t, { limits: { maxWatchedUsers: 3 } });
    const alice = await env.connect('alice');
    await ok(alice, { type: 'watch', users: ['u1', 'u2'] });
    await refused(alice, { type: 'watch', users: ['u3', 'u4'] }, 'TOO_MANY_WATCHES');
    await refused(alice, { type: 'watch', users: ['a', 'b', 'c', 'd'] }, 'TOO_MANY_WATCHES');
    await assertAlive(alice);
    assert.equal(alice.ofType('user.sync').length, 1, 'a refused watch sends no user.sync');
    const ack = await ok(alice, { type: 'watch', users: ['u3', 'u1'] });
    assert.equal(ack.watching, 3);
    // An invalid user id is refused as such.
    await refused(alice, { type: 'watch', users: [''] }, 'INVALID_USER_ID');
    // Nothing from the refused watches leaks: u4 coming online is not reported.
    const from = alice.messages.length;
    await env.connect('u4');
    await env.connect('u3');
    await waitFrom(alice, from, (m) => m.type === 'user.update' && m.user.userId === 'u3');
    assert.deepEqual(alice.messages.slice(from).filter((m) => m.type === 'user.update').map((m) => (m as Msg<'user.update'>).user.userId), ['u3']);
  });

  test('too many connections → error TOO_MANY_CONNECTIONS and close 4029', async (t) => {
    const env = await setup(t, { limits: { maxConnections: 2 } });
    const alice = await env.connect('alice');
    await env.connect('bob');
    const carol = await env.connect('carol');
    const error = carol.messages[0] as Msg<'error'>;
    assert.equal(error.type, 'error');
    assert.equal(error.code, 'TOO_MANY_CONNECTIONS');
    assert.equal((await closedWithin(carol, 1000)).code, 4029);
    assert.equal(env.server.engine.stats().connections, 2);
    assert.equal(env.server.engine.userPresence('carol', { trusted: true }).status, 'offline');
    await assertAlive(alice);
    // When one leaves, there is room again.
    await alice.close();
    await until(() => env.server.engine.stats().connections === 1, 1000, 'the server to notice the close');
    const dave = await env.connect('dave');
    assert.equal(dave.welcome.userId, 'dave');
  });

  test('rate limit: RATE_LIMITED on the excess with the socket open; a continued flood closes with 4008', async (t) => {
    const env = await setup(t, { limits: { rateLimitPerSecond: 5, rateLimitBurst: 5 } });
    const alice = await env.connect('alice');
    const bob = await env.connect('bob');
    for (let i = 0; i < 8; i += 1) alice.sendRaw(JSON.stringify({ type: 'ping', ref: `burst-${i}` }));
    await alice.waitFor((m) => m.type === 'error' && m.ref === 'burst-7');
    const answers = alice.messages.filter(
      (m): m is Msg<'pong' | 'error'> => (m.type === 'pong' || m.type === 'error') && String((m as { ref?: unknown }).ref).startsWith('burst-'),
    );
    assert.deepEqual(
      answers.map((m) => (m.type === 'pong' ? `pong ${m.ref}` : `${m.code} ${m.ref}`)),
      [
        'pong burst-0',
        'pong burst-1',
        'pong burst-2',
        'pong burst-3',
        'pong burst-4',
        'RATE_LIMITED burst-5',
        'RATE_LIMITED burst-6',
        'RATE_LIMITED burst-7',
      ],
    );
    assert.equal(alice.ws.readyState, WebSocket.OPEN);
    await sleep(250); // one token back
    await assertAlive(alice);

    // A flood that goes on past the burst of refusals is cut.
    for (let i = 0; i < 30; i += 1) alice.sendRaw(JSON.stringify({ type: 'ping', ref: `flood-${i}` }));
    const closed = await closedWithin(alice, 1000);
    assert.equal(closed.code, 4008);
    assert.equal(closed.reason, 'RATE_LIMITED');
    const last = alice.messages.at(-1) as Msg<'error'>;
    assert.equal(last.type, 'error', 'the close is announced by an error frame');
    assert.equal(last.code, 'RATE_LIMITED');
    await until(() => env.server.engine.stats().connections === 1, 1000, 'the server to drop alice');
    await assertAlive(bob);
  });
  test('rate limit: a frame over the limit is RATE_LIMITED whatever it holds; a flood of junk ends in 4008 like a flood of commands', async (t) => {
    // 1 token a second: no token comes back while the flood is read, so the counts are exact.
    const burst = 20;
    const env = await setup(t, { limits: { rateLimitPerSecond: 1, rateLimitBurst: burst } });
    const junk = await env.connect('junk');
    const bystander = await env.connect('bystander');
    const frames = 300;
    for (let i = 0; i < frames; i += 1) {
      if (i % 2 === 0) junk.sendRaw('{"type":');
      else junk.sendRaw(Buffer.from([0xde, 0xad, 0xbe, 0xef]), true);
    }
    const closed = await closedWithin(junk, 2000);
    assert.equal(closed.code, 4008);
    assert.equal(closed.reason, 'RATE_LIMITED');
    const errors = junk.ofType('error');
    assert.equal(errors.length, junk.messages.length - 1, 'nothing but welcome and errors');
    // The burst is answered by content; every frame after it, junk or not, is RATE_LIMITED: the
    // burst's worth of refusals, then the one that closes.
    const expected = [
      ...Array.from({ length: burst }, (_, i) => (i % 2 === 0 ? 'INVALID_JSON' : 'BINARY_NOT_SUPPORTED')),
      ...Array.from({ length: burst + 1 }, () => 'RATE_LIMITED'),
    ];
    assert.deepEqual(errors.map((e) => e.code), expected);
    for (const error of errors) assert.equal(error.ref, undefined, 'junk has no ref to echo');
    assert.notEqual(errors.at(-1)!.message, errors.at(-2)!.message, 'the closing refusal says the connection is closed');
    await assertAlive(bystander);
  });
});

// ---------------------------------------------------------------------------------------------
// Slow consumers, heartbeats, shutdown
// ---------------------------------------------------------------------------------------------

describe('connection health', () => {
  test('a client that never reads is dropped; a normal reader gets every update in order', async (t) => {
    const maxOutboundBufferBytes = 64 * 1024;
    const env = await setup(t, {
      offlineDelayMs: 100,
      limits: { maxOutboundBufferBytes, maxMetaBytes: 16 * 1024, rateLimitPerSecond: 100_000, rateLimitBurst: 100_000 },
    });
    const spammer = await env.connect('spammer');
    const reader = await env.connect('reader');
    const slow = await env.connect('slow');
    await ok(spammer, { type: 'join', channel: 'busy' });
    await ok(reader, { type: 'join', channel: 'busy' });
    await ok(slow, { type: 'join', channel: 'busy' });
    await reader.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'slow');
    const slowClosedOnServer = new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (env.server.engine.stats().connections === 2) {
          clearInterval(check);
          resolve();
        }
      }, 5);
      t.after(() => clearInterval(check));
    });
    let slowGone = false;
    void slowClosedOnServer.then(() => (slowGone = true));
    // The slow client stops reading: the kernel buffers fill, then the server's.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();

    const blob = 'x'.repeat(15 * 1024);
    const startSeq = reader.ofType('presence.join').at(-1)!.seq;
    let sent = 0;
    const deadline = Date.now() + 15_000;
    // Spam in chunks, alternating channel meta and user meta, until the slow one is cut, then a bit more.
    let extra = 0;
    while (extra < 20) {
      if (Date.now() > deadline) throw new Error(`slow consumer not dropped after ${sent} updates`);
      for (let i = 0; i < 20; i += 1) {
        sent += 1;
        const command =
          sent % 2 === 0
            ? { type: 'channel.meta', channel: 'busy', meta: { n: sent, blob } }
            : { type: 'meta', meta: { n: sent, blob } };
        spammer.sendRaw(JSON.stringify(command));
      }
      const target = sent;
      await reader.waitFor((m) => m.type === 'presence.update' && m.seq === startSeq + target, 5000);
      if (slowGone) extra += 20;
    }
    await slowClosedOnServer;
    assert.equal(env.server.engine.stats().connections, 2);
    assert.match(
      await env.server.metrics.registry.metrics(),
      /presence_errors_total\{code="SLOW_CONSUMER"\} 1\b/,
      'exactly one connection was cut as a slow consumer',
    );
    assert.equal(reader.ws.readyState, WebSocket.OPEN, 'the normal reader is not cut');
    assert.equal(spammer.ws.readyState, WebSocket.OPEN);

    // The reader saw every update, in order, with no gap.
    const updates = reader.ofType('presence.update').filter((m) => m.member.userId === 'spammer');
    assert.equal(updates.length, sent);
    updates.forEach((update, i) => {
      assert.equal(update.seq, startSeq + i + 1);
      const n = i % 2 === 0 ? update.member.meta.n : update.member.channelMeta.n;
      assert.equal(n, i + 1, `update ${i + 1} out of order`);
    });
    // The slow user then goes through its offline delay like any dropped socket.
    await reader.waitFor((m) => m.type === 'presence.leave' && m.userId === 'slow', 2000);
    slow.ws.terminate();
  });

  test('the outbound limit bounds a backlog, not a frame: a 12 KB presence.sync reaches a reader at 4,096; a client that stops reading is cut (1006)', async (t) => {
    const maxOutboundBufferBytes = 4096;
    const env = await setup(t, {
      offlineDelayMs: 100,
      limits: { maxOutboundBufferBytes, maxMetaBytes: 16 * 1024, rateLimitPerSecond: 100_000, rateLimitBurst: 100_000 },
    });
    // Seven members with about 1.7 KB of meta each: the sync of the channel is about 12 KB.
    for (let i = 0; i < 7; i += 1) {
      const member = await env.connect(`member-${i}`);
      await ok(member, { type: 'meta', meta: { bio: `${i}`.repeat(1700) } });
      await ok(member, { type: 'join', channel: 'big' });
    }
    const reader = await env.connect('reader');
    const frames: string[] = [];
    reader.ws.on('message', (data) => frames.push(data.toString()));
    for (let round = 0; round < 3; round += 1) {
      frames.length = 0;
      await ok(reader, { type: 'join', channel: 'big' });
      const sync = reader.ofType('presence.sync').at(-1)!;
      assert.equal(sync.members.length, 8);
      const syncFrame = frames.find((f) => f.includes('"presence.sync"'));
      assert.ok(syncFrame !== undefined);
      const bytes = Buffer.byteLength(syncFrame);
      assert.ok(bytes > 3 * maxOutboundBufferBytes, `the sync frame is ${bytes} bytes, over the limit`);
      await assertAlive(reader);
      await ok(reader, { type: 'leave', channel: 'big' });
    }
    assert.doesNotMatch(await env.server.metrics.registry.metrics(), /presence_errors_total\{code="SLOW_CONSUMER"\}/);

    // A client that stops reading: the kernel buffers fill, then the server's backlog passes the limit.
    const spammer = await env.connect('spammer');
    const slow = await env.connect('slow');
    await ok(spammer, { type: 'join', channel: 'firehose' });
    await ok(slow, { type: 'join', channel: 'firehose' });
    const connections = env.server.engine.stats().connections;
    (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const blob = 'x'.repeat(15 * 1024);
    const deadline = Date.now() + 15_000;
    for (let n = 0; env.server.engine.stats().connections === connections; ) {
      if (Date.now() > deadline) throw new Error(`slow consumer not dropped after ${n} updates`);
      for (let i = 0; i < 20; i += 1) spammer.sendRaw(JSON.stringify({ type: 'channel.meta', channel: 'firehose', meta: { n: ++n, blob } }));
      await spammer.waitFor((m) => m.type === 'presence.update' && m.member.channelMeta.n === n, 5000);
    }
    assert.match(await env.server.metrics.registry.metrics(), /presence_errors_total\{code="SLOW_CONSUMER"\} 1\b/);
    // Cut, not closed: no close frame follows the unread data, so the client sees 1006.
    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const closed = await closedWithin(slow, 5000);
    assert.equal(closed.code, 1006);
    await assertAlive(reader);
    await assertAlive(spammer);
  });

  test('heartbeat: a client that never answers pings is cut after two intervals; a normal one stays', async (t) => {
    const interval = 100;
    const env = await setup(t, { heartbeatIntervalMs: interval, offlineDelayMs: 150 });
    const normal = await env.connect('normal');
    const silent = await env.connect('silent', {}, { autoPong: false });
    // Counted from before the join: a ping read in the same chunk as the join's ack would be
    // emitted before an await on that ack could attach a listener.
    let pings = 0;
    silent.ws.on('ping', () => (pings += 1));
    await ok(normal, { type: 'join', channel: 'room-1' });
    await ok(silent, { type: 'join', channel: 'room-1' });
    const connectedAt = Date.now();
    let cutAt = 0;
    const closed = silent.closed.then((c) => {
      cutAt = Date.now();
      return c;
    });
    // Silent also sends nothing else: only a pong or a frame would count as alive.
    await until(() => env.server.engine.stats().connections === 1, 3 * interval + 300, 'the silent client to be cut');
    const serverCutAfter = Date.now() - connectedAt;
    assert.ok(serverCutAfter >= 2 * interval - 20, `cut after ${serverCutAfter} ms, before two intervals`);
    assert.ok(pings >= 1, 'the server pinged');
    const close = await closedWithin(silent, 1000);
    await closed;
    // This client still reads (it only never pongs), so it receives the close; a half-open one would see 1006.
    assert.equal(close.code, 4002, 'closed with HEARTBEAT_TIMEOUT');
    assert.ok(cutAt - connectedAt <= 3 * interval + 300);
    // Then the offline delay runs, then the leave.
    const leave = (await normal.waitFor((m) => m.type === 'presence.leave' && m.userId === 'silent', 2000)) as Msg<'presence.leave'>;
    assert.ok(Date.now() - cutAt >= 100, 'the leave waits for the offline delay');
    assert.match(leave.lastSeen ?? '', ISO);
    // Meanwhile the normal client, which answers pings, stays connected.
    await sleep(4 * interval);
    assert.equal(normal.ws.readyState, WebSocket.OPEN);
    await assertAlive(normal);
    assert.equal(env.server.engine.stats().connections, 1);
  });

  test('heartbeat: a silent client is cut two intervals after its last sign of life, whatever the phase of the sweep', async (t) => {
    // Each connection's slice is visited once per interval; its last frame may land anywhere
    // between two visits. Three clients each send one frame at a different point after a ping
    // (right after it, a third and two thirds of an interval later), then never answer again.
    const interval = 1000;
    const tick = interval / 20;
    const env = await setup(t, { heartbeatIntervalMs: interval, offlineDelayMs: 0 });
    const phases = [0, interval / 3, (2 * interval) / 3];
    const measured = await Promise.all(
      phases.map(async (phase, i) => {
        const client = await env.connect(`silent-${i}`, {}, { autoPong: false });
        // The first ping marks this connection's place in the sweep.
        await new Promise<void>((resolve) => client.ws.once('ping', () => resolve()));
        await sleep(phase);
        const lastSignOfLife = Date.now();
        client.sendRaw(JSON.stringify({ type: 'ping' }));
        const closed = await closedWithin(client, 4 * interval);
        return { phase, silentFor: Date.now() - lastSignOfLife, code: closed.code };
      }),
    );
    for (const { phase, silentFor, code } of measured) {
      assert.equal(code, 4002, 'closed with HEARTBEAT_TIMEOUT');
      assert.ok(silentFor >= 2 * interval - 5, `phase ${phase} ms: cut after ${silentFor} ms of silence, before two intervals`);
      // One sweep tick late at most, plus room for a loaded machine; a sweep that only looked at
      // each connection once per interval cut these after 2.3–3 intervals.
      assert.ok(silentFor <= 2 * interval + tick + 250, `phase ${phase} ms: cut after ${silentFor} ms of silence, more than two intervals and a tick`);
    }
    t.diagnostic(`silence before the cut: ${measured.map((m) => `${m.silentFor} ms`).join(', ')}`);
  });

  test('graceful shutdown closes open clients with 1001 and refuses new ones', async (t) => {
    const env = await setup(t);
    const { alice, bob } = await pair(env);
    const shutdown = env.server.shutdown();
    const [a, b] = await Promise.all([closedWithin(alice, 3000), closedWithin(bob, 3000)]);
    assert.equal(a.code, 1001);
    assert.equal(b.code, 1001);
    assert.equal(a.reason, 'SHUTTING_DOWN');
    await shutdown;
    // Nothing listens any more.
    const late = new WebSocket(env.server.wsUrl + '?userId=late');
    const outcome = await new Promise<string>((resolve) => {
      late.on('open', () => resolve('open'));
      late.on('error', () => resolve('error'));
      late.on('close', () => resolve('close'));
    });
    late.terminate();
    assert.notEqual(outcome, 'open');
  });
});

describe('status restored at connect', () => {
  test('a server that forgot the user (restart) applies the hint before announcing: invisible never flashes online', async (t) => {
    const env = await setup(t);
    const bob = await env.connect('bob');
    assert.equal((await bob.request({ type: 'watch', users: ['ann'] })).type, 'ack');
    const ann = await env.connect('ann', { status: 'invisible', message: 'Heads down' });
    assert.equal(ann.welcome.self.manualStatus, 'invisible');
    assert.equal(ann.welcome.self.message, 'Heads down');
    await assertAlive(ann);
    await sleep(50);
    assert.deepEqual(bob.ofType('user.update'), [], 'watchers were never told ann is online');
  });

  test('a busy hint makes the first announcement busy (no online → busy flicker)', async (t) => {
    const env = await setup(t);
    const bob = await env.connect('bob');
    await bob.request({ type: 'watch', users: ['ann'] });
    await env.connect('ann', { status: 'busy', state: 'in-call' });
    const updates = [(await bob.waitFor((m) => m.type === 'user.update')) as Msg<'user.update'>];
    await sleep(50);
    assert.deepEqual(bob.ofType('user.update').map((u) => [u.user.status, u.user.state]), [['busy', 'in-call']]);
    assert.equal(updates.length, 1);
  });

  test('a server that knows the user ignores the hint; an invalid hint is dropped, not an error', async (t) => {
    const env = await setup(t);
    const first = await env.connect('ann');
    await first.request({ type: 'status', status: 'away' });
    const second = await env.connect('ann', { status: 'invisible' });
    assert.equal(second.welcome.self.manualStatus, 'away', 'what the server knows wins over an older client');
    const fresh = await env.connect('cat', { status: 'busy', state: 'no-such-state', expiresAt: 'yesterday' });
    assert.equal(fresh.welcome.type, 'welcome');
    assert.equal(fresh.welcome.self.manualStatus, null);
  });

  test('the expiresAt of a hint is read like the status command\'s: an impossible date drops the hint', async (t) => {
    const env = await setup(t);
    const [, impossible] = IMPOSSIBLE_EXPIRIES.find(([what]) => what === '30 February')!;
    const dropped = await env.connect('dee', { status: 'busy', expiresAt: impossible });
    assert.equal(dropped.welcome.type, 'welcome');
    assert.equal(dropped.welcome.self.manualStatus, null, `${impossible} is not rolled over to March`);
    assert.equal(dropped.welcome.self.expiresAt, undefined);
    const [, leapDay, utc] = VALID_EXPIRIES.find(([what]) => what === '29 February of a leap year')!;
    const kept = await env.connect('eve', { status: 'busy', expiresAt: leapDay });
    assert.equal(kept.welcome.self.manualStatus, 'busy');
    assert.equal(kept.welcome.self.expiresAt, utc);
  });
});
