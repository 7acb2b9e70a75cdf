/**
 * The HTTP API, metrics and the CLI process against real servers: real `ws` clients, `fetch` and
 * raw sockets over loopback, and the built CLI spawned as a child process.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { SignJWT, type JWTPayload } from 'jose';
import type { Member, ServerMessage, UserPresence } from '@presence/protocol';
import { HELP_TEXT } from '../src/config/env.js';
import { IMPOSSIBLE_EXPIRIES, MALFORMED_EXPIRIES, VALID_EXPIRIES } from './support/expiry-cases.js';
import { TestClient, httpJson, sleep, startTestServer, type HttpAnswer } from './support/harness.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
type Msg<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

const SECRET = 'http-integration-secret-of-at-least-32-bytes';
const API_KEY = 'http-integration-api-key-0123456789';

async function token(sub: string, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('10m')
    .sign(new TextEncoder().encode(SECRET));
}

/** HTTP API calls default to the API key; pass `bearer: ''` for none. */
function api(server: { url: string }, path: string, options: { method?: string; body?: unknown; bearer?: string } = {}): Promise<HttpAnswer> {
  return httpJson(server, path, { ...options, bearer: options.bearer === undefined ? API_KEY : options.bearer });
}

/** The value of one sample in a Prometheus exposition, or undefined when absent. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels);
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = new Map<string, string>();
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) present.set(key, value);
    if (present.size !== wanted.length || !wanted.every(([k, v]) => present.get(k) === v)) continue;
    return Number(match[3]);
  }
  return undefined;
}

async function scrape(server: { url: string }): Promise<string> {
  const response = await fetch(`${server.url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
  return response.text();
}

/** Replaces what must differ between two users (id, timestamps, seq) so the rest can be compared. */
function normalize(value: unknown, userIds: string[]): unknown {
  if (Array.isArray(value)) return value.map((v) => normalize(v, userIds));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) {
      if (key === 'seq') continue;
      if (['lastSeen', 'lastActive', 'joinedAt', 'serverTime'].includes(key) && typeof v === 'string') {
        assert.ok(!Number.isNaN(Date.parse(v)), `${key} is an ISO time`);
        out[key] = '<time>';
      } else {
        out[key] = normalize(v, userIds);
      }
    }
    return out;
  }
  if (typeof value === 'string' && userIds.includes(value)) return '<user>';
  return value;
}

/** Tracks clients and servers so `after` hooks can close whatever a test left open. */
class Resources {
  clients: TestClient[] = [];
  async connect(server: TestServer, query: Record<string, string>): Promise<TestClient> {
    const client = await TestClient.connect(server, query);
    this.clients.push(client);
    assert.equal(client.messages[0]?.type, 'welcome', `connect ${JSON.stringify(query)}: ${JSON.stringify(client.messages[0])}`);
    return client;
  }
  async closeAll(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}

describe('HTTP updates reach WebSocket clients', () => {
  let server: TestServer;
  const res = new Resources();
  const as = async (userId: string, extra: Record<string, string> = {}) => res.connect(server, { token: await token(userId), ...extra });

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, offlineDelayMs: 10_000 });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  test('an update over HTTP produces exactly the events of the same update over the socket', async () => {
    const observer = await as('upd-observer');
    const viaHttp = await as('upd-http', { device: 'web' });
    const viaWs = await as('upd-ws', { device: 'web' });
    await observer.request({ type: 'join', channel: 'upd-room' });
    await observer.request({ type: 'watch', users: ['upd-http', 'upd-ws'] });
    for (const c of [viaHttp, viaWs]) assert.equal((await c.request({ type: 'join', channel: 'upd-room' })).type, 'ack');
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'upd-ws');

    const meta = { name: 'Same Name', avatar: 'https://cdn.example/a.png', team: { id: 7 } };
    observer.drain();
    const response = await api(server, '/realtime/presence/update', {
      body: { userId: 'upd-http', status: 'busy', message: 'In a call 📞', meta },
    });
    assert.equal(response.status, 200);
    assert.equal(response.body.user.userId, 'upd-http');
    assert.equal(response.body.user.status, 'busy');
    assert.equal(response.body.user.message, 'In a call 📞');
    assert.deepEqual(response.body.user.meta, meta);
    await observer.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'upd-http' && m.member.meta.name === 'Same Name');
    await observer.waitFor((m) => m.type === 'user.update' && m.user.userId === 'upd-http' && m.user.meta.name === 'Same Name');
    await sleep(50);
    const fromHttp = observer.drain();

    assert.equal((await viaWs.request({ type: 'status', status: 'busy', message: 'In a call 📞' })).type, 'ack');
    assert.equal((await viaWs.request({ type: 'meta', meta })).type, 'ack');
    await observer.waitFor((m) => m.type === 'user.update' && m.user.userId === 'upd-ws' && m.user.meta.name === 'Same Name');
    await sleep(50);
    const fromWs = observer.drain();

    const last = (messages: ServerMessage[], type: 'presence.update' | 'user.update') => messages.filter((m) => m.type === type).at(-1);
    const update = last(fromHttp, 'presence.update') as Msg<'presence.update'>;
    assert.equal(update.channel, 'upd-room');
    assert.equal(update.member.status, 'busy');
    assert.equal(update.member.message, 'In a call 📞');
    assert.deepEqual(update.member.meta, meta);
    assert.deepEqual(update.member.devices, ['web']);
    const watched = last(fromHttp, 'user.update') as Msg<'user.update'>;
    assert.equal(watched.user.status, 'busy');
    assert.deepEqual(watched.user.meta, meta);

    // Same final state, same kinds of events, same shapes: HTTP is just another way to say it.
    assert.deepEqual(normalize(last(fromHttp, 'presence.update'), ['upd-http']), normalize(last(fromWs, 'presence.update'), ['upd-ws']));
    assert.deepEqual(normalize(last(fromHttp, 'user.update'), ['upd-http']), normalize(last(fromWs, 'user.update'), ['upd-ws']));
    // The socket needs two commands (status, meta); the one HTTP request is announced as one update.
    assert.deepEqual(fromHttp.map((m) => m.type).sort(), ['presence.update', 'user.update']);
    assert.deepEqual([...new Set(fromWs.map((m) => m.type))].sort(), ['presence.update', 'user.update']);
    const h = await api(server, '/realtime/users/upd-http/presence');
    const w = await api(server, '/realtime/users/upd-ws/presence');
    assert.deepEqual(normalize(h.body, ['upd-http']), normalize(w.body, ['upd-ws']));
  });

  test("status 'offline' over HTTP logs the user out at once: sockets close 1000, members see the leave", async () => {
    const observer = await as('bye-observer');
    const tab1 = await as('bye-user');
    const tab2 = await as('bye-user');
    await observer.request({ type: 'join', channel: 'bye-room' });
    await observer.request({ type: 'watch', users: ['bye-user'] });
    await tab1.request({ type: 'join', channel: 'bye-room' });
    await tab2.request({ type: 'join', channel: 'bye-room' });
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'bye-user');
    observer.drain();

    const started = Date.now();
    const response = await api(server, '/realtime/presence/update', { body: { userId: 'bye-user', status: 'offline' } });
    assert.equal(response.status, 200);
    assert.equal(response.body.user.status, 'offline');

    const [c1, c2] = await withTimeout(Promise.all([tab1.closed, tab2.closed]), 2000, 'both tabs closed');
    assert.equal(c1.code, 1000);
    assert.equal(c2.code, 1000);
    const leave = (await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'bye-user', 1000)) as Msg<'presence.leave'>;
    assert.equal(leave.channel, 'bye-room');
    assert.equal(typeof leave.lastSeen, 'string');
    const offline = (await observer.waitFor((m) => m.type === 'user.update' && m.user.userId === 'bye-user', 1000)) as Msg<'user.update'>;
    assert.equal(offline.user.status, 'offline');
    // The offline delay is 10 s; this was immediate.
    assert.ok(Date.now() - started < 2000);

    const members = await api(server, '/realtime/channels/bye-room/presence');
    assert.deepEqual(members.body.members.map((m: Member) => m.userId), ['bye-observer']);
    assert.equal((await api(server, '/realtime/users/bye-user/presence')).body.user.status, 'offline');
    assert.equal(observer.messages.filter((m) => m.type === 'presence.leave' && m.userId === 'bye-user').length, 1, 'one leave per user');
  });
});

describe('expiresAt over HTTP', () => {
  let server: TestServer;
  const res = new Resources();

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  test('a time that does not exist (30 February, 24:00, second 60, offset past ±14:00) is 400 INVALID_EXPIRY; edge dates that exist work', async () => {
    // See also protocol.test.ts (the same values over the socket).
    const watcher = await res.connect(server, { token: await token('exp-watcher') });
    assert.equal((await watcher.request({ type: 'watch', users: ['exp-user'] })).type, 'ack');
    await res.connect(server, { token: await token('exp-user') });
    await watcher.waitFor((m) => m.type === 'user.update' && m.user.userId === 'exp-user' && m.user.status === 'online');
    watcher.drain();
    for (const [what, expiresAt] of [...IMPOSSIBLE_EXPIRIES, ...MALFORMED_EXPIRIES]) {
      const { status, body } = await api(server, '/realtime/presence/update', { body: { userId: 'exp-user', status: 'busy', expiresAt } });
      assert.equal(status, 400, `${what} (${expiresAt}): ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'INVALID_EXPIRY', what);
      assert.doesNotMatch(body.error.message, /future/, `${what}: refused for the value, not for its time`);
    }
    const unchanged = await api(server, '/realtime/users/exp-user/presence');
    assert.equal(unchanged.body.user.status, 'online', 'a refused update changes nothing');
    assert.deepEqual(watcher.drain(), [], 'and announces nothing');
    for (const [what, expiresAt, utc] of VALID_EXPIRIES) {
      const { status, body } = await api(server, '/realtime/presence/update', { body: { userId: 'exp-user', status: 'busy', expiresAt } });
      assert.equal(status, 200, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.user.expiresAt, utc, what);
    }
  });
});

describe('HTTP reads against live clients', () => {
  let server: TestServer;
  const res = new Resources();
  const as = async (userId: string, extra: Record<string, string> = {}) => res.connect(server, { token: await token(userId), ...extra });

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, offlineDelayMs: 150 });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  test('GET channel presence pages through 5 members with limit and nextCursor', async () => {
    const ids = ['pg-c', 'pg-a', 'pg-e', 'pg-b', 'pg-d'];
    for (const id of ids) {
      const client = await as(id);
      assert.equal((await client.request({ type: 'join', channel: 'page-room', meta: { seat: id } })).type, 'ack');
    }
    const seen: Member[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const query = new URLSearchParams({ limit: '2', ...(cursor ? { cursor } : {}) });
      const { status, body } = await api(server, `/realtime/channels/page-room/presence?${query}`);
      assert.equal(status, 200);
      assert.equal(body.channel, 'page-room');
      assert.equal(body.count, 5, 'count is the whole channel, not the page');
      assert.ok(body.members.length <= 2);
      seen.push(...body.members);
      cursor = body.nextCursor;
      pages += 1;
      assert.ok(pages <= 5, 'pagination must terminate');
    } while (cursor !== undefined);
    assert.equal(pages, 3);
    assert.deepEqual(seen.map((m) => m.userId), [...ids].sort());
    for (const member of seen) {
      assert.equal(member.status, 'online');
      assert.deepEqual(member.channelMeta, { seat: member.userId });
      assert.ok(!Number.isNaN(Date.parse(member.joinedAt)));
    }

    const unknown = await api(server, '/realtime/channels/no-such-room/presence');
    assert.equal(unknown.status, 200);
    assert.deepEqual(unknown.body, { channel: 'no-such-room', count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] });
  });

  test('GET user presence is live while connected and keeps lastSeen after the disconnect', async () => {
    const before = Date.now();
    const client = await as('seen-user', { device: 'ios' });
    const live = await api(server, '/realtime/users/seen-user/presence');
    assert.equal(live.status, 200);
    assert.equal(live.body.user.status, 'online');
    assert.deepEqual(live.body.user.devices, ['ios']);

    await client.close();
    const closedAt = Date.now();
    // Inside the offline delay the user is still present.
    assert.equal((await api(server, '/realtime/users/seen-user/presence')).body.user.status, 'online');
    await sleep(350);
    const { status, body } = await api(server, '/realtime/users/seen-user/presence');
    assert.equal(status, 200);
    assert.equal(body.user.userId, 'seen-user');
    assert.equal(body.user.status, 'offline');
    assert.deepEqual(body.user.devices, []);
    const lastSeen = Date.parse(body.user.lastSeen);
    assert.ok(/Z$/.test(body.user.lastSeen), 'UTC ISO 8601');
    assert.ok(lastSeen >= before - 5 && lastSeen <= closedAt + 50, `lastSeen ${body.user.lastSeen} is the disconnect time`);
  });

  test('POST query answers in order, for online, offline and unknown users', async () => {
    await as('q-online');
    const gone = await as('q-gone');
    await gone.close();
    await sleep(350);
    const { status, body } = await api(server, '/realtime/presence/query', { body: { userIds: ['q-online', 'q-gone', 'q-never'] } });
    assert.equal(status, 200);
    assert.deepEqual(body.users.map((u: UserPresence) => [u.userId, u.status]), [
      ['q-online', 'online'],
      ['q-gone', 'offline'],
      ['q-never', 'offline'],
    ]);
    assert.equal(typeof body.users[1].lastSeen, 'string');
    assert.equal(body.users[2].lastSeen, null);
  });

  test('/healthz and /readyz answer without auth', async () => {
    const health = await api(server, '/healthz', { bearer: '' });
    assert.equal(health.status, 200);
    assert.deepEqual(health.body, { status: 'ok' });
    const ready = await api(server, '/readyz', { bearer: '' });
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: 'ready' });
  });
});

describe('metrics with live clients', () => {
  let server: TestServer;
  const res = new Resources();

  before(async () => {
    server = await startTestServer({ offlineDelayMs: 100 });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  test('gauges and counters reflect what the clients did', async () => {
    let text = await scrape(server);
    assert.equal(metric(text, 'presence_connections'), 0);
    assert.equal(metric(text, 'presence_online_users'), 0);
    assert.equal(metric(text, 'presence_channels'), 0);

    const m1 = await res.connect(server, { userId: 'm1' });
    const m2 = await res.connect(server, { userId: 'm2' });
    const m3 = await res.connect(server, { userId: 'm3' });
    const m1b = await res.connect(server, { userId: 'm1' }); // a second tab: one user, two connections
    assert.equal((await m1.request({ type: 'join', channel: 'metrics-a' })).type, 'ack');
    assert.equal((await m2.request({ type: 'join', channel: 'metrics-a' })).type, 'ack');
    assert.equal((await m3.request({ type: 'join', channel: 'metrics-b' })).type, 'ack');
    assert.equal((await m1.request({ type: 'status', status: 'busy' })).type, 'ack');
    assert.equal((await m2.request({ type: 'join', channel: 'bad name!' })).type, 'error');
    await m2.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'm1');

    text = await scrape(server);
    assert.equal(metric(text, 'presence_connections'), 4);
    assert.equal(metric(text, 'presence_online_users'), 3);
    assert.equal(metric(text, 'presence_channels'), 2);
    assert.equal(metric(text, 'presence_events_in_total', { type: 'join' }), 4);
    assert.equal(metric(text, 'presence_events_in_total', { type: 'status' }), 1);
    assert.equal(metric(text, 'presence_events_out_total', { type: 'welcome' }), 4);
    assert.equal(metric(text, 'presence_events_out_total', { type: 'presence.sync' }), 3);
    // m2 joining is announced to m1's one joined connection.
    assert.equal(metric(text, 'presence_events_out_total', { type: 'presence.join' }), 1);
    // m1 going busy reaches both members' joined connections (m1 and m2).
    assert.equal(metric(text, 'presence_events_out_total', { type: 'presence.update' }), 2);
    assert.equal(metric(text, 'presence_events_out_total', { type: 'ack' }), 4);
    assert.equal(metric(text, 'presence_events_out_total', { type: 'error' }), 1);
    // Successful commands are timed: 4 of the 5.
    assert.equal(metric(text, 'presence_fanout_latency_seconds_bucket', { le: '+Inf' }), 4);
    assert.equal(metric(text, 'presence_fanout_latency_seconds_count'), 4);
    const sum = metric(text, 'presence_fanout_latency_seconds_sum');
    assert.ok(sum !== undefined && sum > 0 && sum < 1, `fan-out sum ${sum}`);

    await m3.close();
    await m1b.close();
    await sleep(300);
    text = await scrape(server);
    assert.equal(metric(text, 'presence_connections'), 2);
    assert.equal(metric(text, 'presence_online_users'), 2);
    assert.equal(metric(text, 'presence_channels'), 1);
  });
});

describe('invisible leaks nothing over HTTP and metrics', () => {
  let server: TestServer;
  const res = new Resources();
  const as = async (userId: string) => res.connect(server, { token: await token(userId), device: 'web' });

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, offlineDelayMs: 150 });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  test('an invisible user and an offline user look the same everywhere', async () => {
    const observer = await as('inv-observer');
    await observer.request({ type: 'join', channel: 'inv-room' });
    await observer.request({ type: 'watch', users: ['ghost-user', 'gone-user'] });

    const ghost = await as('ghost-user');
    const gone = await as('gone-user');
    for (const c of [ghost, gone]) {
      assert.equal((await c.request({ type: 'meta', meta: { name: 'Twin' } })).type, 'ack');
      assert.equal((await c.request({ type: 'status', status: 'busy', message: 'secret', state: 'in-call' })).type, 'ack');
      assert.equal((await c.request({ type: 'join', channel: 'inv-room', meta: { cursor: 1 } })).type, 'ack');
    }
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'gone-user');

    assert.equal((await ghost.request({ type: 'status', status: 'invisible' })).type, 'ack');
    const invisibleAt = Date.now();
    await gone.close();
    await sleep(400); // past the offline delay
    // The invisible user keeps using the app.
    assert.equal((await ghost.request({ type: 'activity' })).type, 'ack');
    assert.equal((await ghost.request({ type: 'channel.meta', channel: 'inv-room', meta: { cursor: 2 } })).type, 'ack');
    assert.equal((await ghost.request({ type: 'typing', channel: 'inv-room', typing: true })).type, 'ack');
    await sleep(100);

    const ids = ['ghost-user', 'gone-user'];
    const same = (a: unknown, b: unknown, what: string) => assert.deepEqual(normalize(a, ids), normalize(b, ids), what);

    // GET user presence, with the API key and with another user's JWT.
    for (const bearer of [API_KEY, await token('inv-observer')]) {
      const ghostView = await api(server, '/realtime/users/ghost-user/presence', { bearer });
      const goneView = await api(server, '/realtime/users/gone-user/presence', { bearer });
      assert.equal(ghostView.status, 200);
      assert.equal(ghostView.body.user.status, 'offline');
      assert.equal(typeof ghostView.body.user.lastSeen, 'string', 'lastSeen is frozen, not hidden');
      for (const hidden of ['state', 'message', 'expiresAt'] as const) assert.equal(ghostView.body.user[hidden], undefined, hidden);
      assert.deepEqual(ghostView.body.user.devices, []);
      same(ghostView.body, goneView.body, 'GET user presence');
      // Activity after going invisible moves nothing others can see.
      assert.ok(Date.parse(ghostView.body.user.lastSeen) <= invisibleAt, 'lastSeen is frozen at the switch');
      assert.ok(Date.parse(ghostView.body.user.lastActive) <= invisibleAt, 'lastActive is frozen at the switch');
      assert.deepEqual(Object.keys(ghostView.body.user).sort(), Object.keys(goneView.body.user).sort());
    }

    // POST query.
    const query = await api(server, '/realtime/presence/query', { body: { userIds: ids } });
    assert.equal(query.status, 200);
    same(query.body.users[0], query.body.users[1], 'POST query');

    // Channel presence: neither is a member.
    const channel = await api(server, '/realtime/channels/inv-room/presence');
    assert.equal(channel.body.count, 1);
    assert.deepEqual(channel.body.members.map((m: Member) => m.userId), ['inv-observer']);

    // A user's channels: none for either, to the API key and to the user's own token alike.
    for (const [id, bearer] of [['ghost-user', API_KEY], ['gone-user', API_KEY], ['ghost-user', await token('ghost-user')]]) {
      const channels = await api(server, `/realtime/users/${id}/channels`, { bearer });
      assert.equal(channels.status, 200);
      assert.deepEqual(channels.body, { userId: id, channels: [] }, `${id}'s channels`);
    }

    // The online list: neither is listed or counted.
    const online = await api(server, '/realtime/presence/online');
    assert.deepEqual(online.body.users.map((u: UserPresence) => u.userId), ['inv-observer']);
    assert.equal(online.body.count, 1);

    // Metrics: neither is counted, and no label names either.
    const text = await scrape(server);
    assert.equal(metric(text, 'presence_online_users'), 1);
    assert.equal(metric(text, 'presence_channels'), 1);
    assert.ok(!text.includes('ghost-user') && !text.includes('gone-user'), 'no user ids in metrics');

    // And what the co-member saw over the socket is the same for both.
    const leaves = ids.map((id) => observer.messages.find((m) => m.type === 'presence.leave' && m.userId === id));
    assert.ok(leaves[0] && leaves[1], 'both left the channel');
    same(leaves[0], leaves[1], 'presence.leave');
    const lastUpdate = (id: string) => observer.messages.filter((m) => m.type === 'user.update' && m.user.userId === id).at(-1);
    same(lastUpdate('ghost-user'), lastUpdate('gone-user'), 'user.update');
    assert.ok(!observer.messages.some((m) => m.type === 'typing' && m.userId === 'ghost-user'), 'no typing from the invisible user');
    assert.ok(
      !observer.messages.some((m) => m.type === 'presence.update' && m.member.userId === 'ghost-user' && m.member.channelMeta.cursor === 2),
      'no channel meta from the invisible user',
    );
  });
});

describe('the lists against live clients', () => {
  let server: TestServer;
  const res = new Resources();
  const as = async (userId: string, device = 'web') => res.connect(server, { token: await token(userId), device });

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, offlineDelayMs: 150 });
  });
  after(async () => {
    await res.closeAll();
    await server.shutdown();
  });

  const channelsOf = async (userId: string, bearer = API_KEY) => {
    const answer = await api(server, `/realtime/users/${encodeURIComponent(userId)}/channels`, { bearer });
    assert.equal(answer.status, 200, answer.text);
    return answer.body as { userId: string; channels: { channel: string; joinedAt: string; channelMeta: Record<string, unknown> }[] };
  };
  const onlineIds = async (limit = 100) => {
    const ids: string[] = [];
    let cursor: string | undefined;
    let count: number | undefined;
    do {
      const answer = await api(server, `/realtime/presence/online?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(answer.status, 200, answer.text);
      assert.ok(answer.body.users.length <= limit);
      count ??= answer.body.count;
      assert.equal(answer.body.count, count, 'count is the whole list on every page');
      ids.push(...answer.body.users.map((u: UserPresence) => u.userId));
      cursor = answer.body.nextCursor;
    } while (cursor !== undefined);
    assert.equal(ids.length, count);
    return ids;
  };

  test("a user's channels follow joins, leaves, tabs and invisibility; the own token reads them, another user's does not", async () => {
    const tab1 = await as('lists-alice');
    const tab2 = await as('lists-alice', 'ios');
    await tab1.request({ type: 'join', channel: 'lists:doc', meta: { mode: 'editing' } });
    await tab2.request({ type: 'join', channel: 'lists:room' });
    await tab1.request({ type: 'join', channel: 'lists:room' });

    const listed = await channelsOf('lists-alice');
    assert.deepEqual(listed.channels.map((c) => [c.channel, c.channelMeta]), [['lists:doc', { mode: 'editing' }], ['lists:room', {}]]);
    // The same joinedAt as the channel's member list.
    const members = await api(server, '/realtime/channels/lists:doc/presence');
    assert.equal(listed.channels[0].joinedAt, members.body.members.find((m: Member) => m.userId === 'lists-alice').joinedAt);
    assert.deepEqual(await channelsOf('lists-alice', await token('lists-alice')), listed, 'the own token');
    const other = await api(server, '/realtime/users/lists-alice/channels', { bearer: await token('lists-bob') });
    assert.equal(other.status, 403);
    assert.equal(other.body.error.code, 'FORBIDDEN');

    // A member while any tab is in the channel.
    await tab2.request({ type: 'leave', channel: 'lists:room' });
    assert.deepEqual((await channelsOf('lists-alice')).channels.map((c) => c.channel), ['lists:doc', 'lists:room']);
    await tab1.request({ type: 'leave', channel: 'lists:room' });
    assert.deepEqual((await channelsOf('lists-alice')).channels.map((c) => c.channel), ['lists:doc']);

    // Invisible: in no channel, as if offline, for the user's own token too; back, with the channel meta.
    await tab1.request({ type: 'status', status: 'invisible' });
    assert.deepEqual(await channelsOf('lists-alice'), { userId: 'lists-alice', channels: [] });
    assert.deepEqual(await channelsOf('lists-alice', await token('lists-alice')), { userId: 'lists-alice', channels: [] });
    await tab1.request({ type: 'status', status: 'online' });
    assert.deepEqual((await channelsOf('lists-alice')).channels.map((c) => [c.channel, c.channelMeta]), [['lists:doc', { mode: 'editing' }]]);

    // Gone after the offline delay; an unknown user is in nothing.
    await tab1.close();
    await tab2.close();
    await sleep(400);
    assert.deepEqual(await channelsOf('lists-alice'), { userId: 'lists-alice', channels: [] });
    assert.deepEqual(await channelsOf('never seen'), { userId: 'never seen', channels: [] });
  });

  test('the online list pages through everyone present, without invisible users, with the view others see', async () => {
    const ids = Array.from({ length: 7 }, (_, i) => `online-${i}`);
    const clients = await Promise.all(ids.map((id) => as(id)));
    await clients[2].request({ type: 'status', status: 'busy', message: 'In a call' });
    await clients[5].request({ type: 'status', status: 'invisible' });
    const visible = ids.filter((id) => id !== 'online-5');

    assert.deepEqual(await onlineIds(3), visible, 'pages of 3, sorted, nobody twice or missing');
    assert.deepEqual(await onlineIds(), visible);
    const page = await api(server, '/realtime/presence/online?limit=3');
    assert.deepEqual(
      page.body.users.find((u: UserPresence) => u.userId === 'online-2'),
      (await api(server, '/realtime/users/online-2/presence')).body.user,
      'the same view as the user route',
    );
    assert.equal(page.body.nextCursor, 'online-2');

    // A cursor past a user who left does not shift the rest.
    await clients[3].close();
    await sleep(400);
    const rest = await api(server, '/realtime/presence/online?limit=10&cursor=online-2');
    assert.deepEqual(rest.body.users.map((u: UserPresence) => u.userId), ['online-4', 'online-6']);
    assert.equal(rest.body.count, 5);
    assert.equal(rest.body.nextCursor, undefined);

    // User tokens are refused.
    const refused = await api(server, '/realtime/presence/online', { bearer: await token('online-0') });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'FORBIDDEN');
  });
});

describe('HTTP rate limits at the defaults', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(() => server.shutdown());

  /** Sends `total` GETs, `parallel` at a time; counts the answers by status. */
  async function burst(bearer: string, total: number, parallel = 50): Promise<{ ok: number; limited: HttpAnswer[]; seconds: number }> {
    let sent = 0;
    let ok = 0;
    const limited: HttpAnswer[] = [];
    const started = performance.now();
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (sent < total) {
          sent += 1;
          const answer = await api(server, '/realtime/users/someone/presence', { bearer });
          if (answer.status === 200) ok += 1;
          else if (answer.status === 429) limited.push(answer);
          else assert.fail(`unexpected ${answer.status}: ${answer.text}`);
        }
      }),
    );
    return { ok, limited, seconds: (performance.now() - started) / 1000 };
  }

  test('a burst of 2,000 requests from one user token is limited (429, Retry-After, RATE_LIMITED); the API key is not', async () => {
    const { limits } = server.config;
    const user = await burst(await token('bursty'), 2000);
    assert.ok(user.limited.length > 0, 'the burst was limited');
    // At most the burst plus what refilled while it ran (and a second of slack).
    assert.ok(
      user.ok <= limits.httpUserRateBurst + limits.httpUserRateLimit * (user.seconds + 1),
      `${user.ok} requests passed in ${user.seconds.toFixed(1)} s`,
    );
    assert.ok(user.ok >= limits.httpUserRateBurst, `the burst itself passed (${user.ok})`);
    for (const answer of user.limited) {
      assert.equal(answer.body.error.code, 'RATE_LIMITED');
      const retryAfter = Number(answer.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${answer.headers.get('retry-after')}`);
    }

    // Another user is not affected by the first one's burst.
    assert.equal((await api(server, '/realtime/users/someone/presence', { bearer: await token('calm') })).status, 200);

    // A backend's burst of the same size passes whole.
    const backend = await burst(API_KEY, 2000);
    assert.equal(backend.limited.length, 0, `the API key was refused ${backend.limited.length} times`);
    assert.equal(backend.ok, 2000);
  });
});

describe('readiness during shutdown', () => {
  test('/readyz answers 503 NOT_READY once shutdown has started; clients are closed with 1001', async () => {
    const server = await startTestServer();
    const sockets: Socket[] = [];
    const client = await TestClient.connect(server, { userId: 'leaving' });
    try {
      // A WebSocket peer that never answers the close handshake keeps the drain going (up to its grace period).
      const stalled = netConnect(server.port, '127.0.0.1');
      sockets.push(stalled);
      stalled.on('error', () => {});
      const upgraded = new Promise<void>((resolve) => stalled.once('data', () => resolve()));
      stalled.write(
        'GET /realtime?userId=stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      await upgraded;

      // A request already in progress (headers not finished) when shutdown starts.
      const probe = netConnect(server.port, '127.0.0.1');
      sockets.push(probe);
      probe.on('error', () => {});
      await new Promise<void>((resolve) => probe.once('connect', () => resolve()));
      probe.write('GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      let answer = '';
      probe.on('data', (chunk) => (answer += chunk.toString()));
      const probeEnded = new Promise<void>((resolve) => probe.once('close', () => resolve()));
      await sleep(50);

      const shutdown = server.shutdown('test');
      const closed = await withTimeout(client.closed, 3000, 'client closed by shutdown');
      assert.equal(closed.code, 1001);
      probe.write('Connection: close\r\n\r\n');
      await withTimeout(probeEnded, 3000, 'readiness answer');
      assert.match(answer, /^HTTP\/1\.1 503 /);
      assert.match(answer, /"code":"NOT_READY"/);
      assert.match(answer, /retry-after: 1/i);
      await shutdown;
    } finally {
      await client.close();
      for (const s of sockets) s.destroy();
      await server.shutdown();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The built CLI as a process
// ---------------------------------------------------------------------------------------------

const CLI = fileURLToPath(new URL('../dist/bin/presence.js', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The test runner's environment minus anything that configures the server. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^PRESENCE_/.test(key) || ['PORT', 'HOST', 'NODE_ENV', 'REDIS_URL', 'LOG_LEVEL', 'NODE_OPTIONS'].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

interface Run {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runCli(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const run: Run = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.on('data', (chunk) => (run.stdout += chunk.toString()));
  child.stderr!.on('data', (chunk) => (run.stderr += chunk.toString()));
  return run;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('the built CLI', () => {
  const running: Run[] = [];

  before(() => {
    // `npm test` builds first (pretest); a direct run of this file builds here if needed.
    if (!existsSync(CLI)) execFileSync('npx', ['tsc', '-b', 'packages/server'], { cwd: REPO_ROOT, stdio: 'inherit' });
  });
  after(async () => {
    for (const run of running) if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
    await Promise.all(running.map((r) => r.exited));
  });
  const start = (args: string[], env: Record<string, string>): Run => {
    const run = runCli(args, env);
    running.push(run);
    return run;
  };

  test('--help prints the variables and exits 0', async () => {
    const run = start(['--help'], {});
    const { code } = await withTimeout(run.exited, 10_000, '--help');
    assert.equal(code, 0);
    for (const name of ['PORT', 'HOST', 'PRESENCE_OFFLINE_DELAY_MS', 'PRESENCE_IDLE_TIMEOUT_MS', 'PRESENCE_JWT_SECRET', 'PRESENCE_API_KEY', 'PRESENCE_ALLOWED_ORIGINS', 'REDIS_URL', 'LOG_LEVEL']) {
      assert.ok(run.stdout.includes(name), `help mentions ${name}`);
    }
  });

  test('--help prints HELP_TEXT as it is; --version prints the package version; both exit 0 at once', async () => {
    const help = start(['--port', 'abc', '--help'], {});
    assert.equal((await withTimeout(help.exited, 10_000, '--help')).code, 0);
    assert.equal(help.stdout, HELP_TEXT, 'the help wins over an invalid flag');
    const version = start(['--version'], {});
    assert.equal((await withTimeout(version.exited, 10_000, '--version')).code, 0);
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(version.stdout, `${pkg.version}\n`);
    assert.equal(version.stderr, '');
  });

  test('a bad flag exits 2 with one line naming the flag', async () => {
    for (const [args, message] of [
      [['--bogus'], 'presence: unknown option --bogus (see --help)\n'],
      [['--port'], 'presence: --port needs a value (--port N)\n'],
      [['--log-level=loud'], 'presence: --log-level must be one of debug, info, warn, error, silent (got "loud")\n'],
      [['--version=2'], 'presence: --version takes no value\n'],
      [['serve'], 'presence: unexpected argument "serve" (see --help)\n'],
    ] as const) {
      const run = start([...args], { PORT: '0', HOST: '127.0.0.1' });
      assert.equal((await withTimeout(run.exited, 10_000, args.join(' '))).code, 2, args.join(' '));
      assert.equal(run.stderr, message);
      assert.equal(run.stdout, '');
    }
  });

  test('a start-up warning is logged once', async () => {
    const run = start([], { PORT: '0', HOST: '127.0.0.1', PRESENCE_JWT_SECRET: 'short', LOG_LEVEL: 'warn' });
    await withTimeout(
      (async () => {
        // The secret makes it leave development mode; the warning comes before the server listens.
        while (!/shorter than 32 bytes/.test(run.stdout)) {
          if (run.child.exitCode !== null) throw new Error(`exited early: ${run.stderr}`);
          await sleep(20);
        }
      })(),
      10_000,
      'the warning',
    );
    await sleep(300);
    run.child.kill('SIGTERM');
    await withTimeout(run.exited, 10_000, 'exit after SIGTERM');
    const warnings = run.stdout.split('\n').filter((l) => /PRESENCE_JWT_SECRET is shorter than 32 bytes/.test(l));
    assert.equal(warnings.length, 1, run.stdout);
  });

  test('an invalid value exits 2 naming the variable', async () => {
    const run = start([], { PORT: '0', HOST: '127.0.0.1', PRESENCE_OFFLINE_DELAY_MS: 'abc' });
    const { code } = await withTimeout(run.exited, 10_000, 'invalid config');
    assert.equal(code, 2);
    assert.match(run.stderr, /PRESENCE_OFFLINE_DELAY_MS/);
    assert.match(run.stderr, /abc/);
    assert.doesNotMatch(run.stdout, /listening/);
  });

  test('NODE_ENV=production without auth refuses to start, naming PRESENCE_JWT_SECRET', async () => {
    const run = start([], { PORT: '0', HOST: '127.0.0.1', NODE_ENV: 'production' });
    const { code } = await withTimeout(run.exited, 10_000, 'production without auth');
    assert.notEqual(code, 0);
    assert.notEqual(code, null);
    assert.match(run.stderr, /PRESENCE_JWT_SECRET/);
    assert.doesNotMatch(run.stdout, /listening/);
  });

  test('logs JSON lines with the listening URL; SIGTERM closes clients with 1001 and exits 0', async () => {
    const run = start([], { PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', PRESENCE_OFFLINE_DELAY_MS: '1000' });
    const listening = await withTimeout(
      (async () => {
        for (;;) {
          const line = run.stdout.split('\n').find((l) => l.includes('"presence server listening"'));
          if (line) return JSON.parse(line) as { url: string; websocket: string; level: string; time: string };
          if (run.child.exitCode !== null) throw new Error(`exited early: ${run.stderr}`);
          await sleep(20);
        }
      })(),
      10_000,
      'listening line',
    );
    assert.equal(listening.level, 'info');
    assert.ok(!Number.isNaN(Date.parse(listening.time)));
    const url = new URL(listening.url);
    assert.equal(url.hostname, '127.0.0.1');
    assert.ok(Number(url.port) > 0, 'PORT=0 reports the real port');
    assert.equal(listening.websocket, `ws://127.0.0.1:${url.port}/realtime`);

    assert.equal((await fetch(`${listening.url}/healthz`)).status, 200);
    const client = await TestClient.connect({ wsUrl: listening.websocket }, { userId: 'cli-user' });
    assert.equal(client.welcome.userId, 'cli-user');
    assert.equal(client.welcome.timeouts.offlineDelayMs, 1000, 'the environment reached the server');

    run.child.kill('SIGTERM');
    const closed = await withTimeout(client.closed, 5000, 'client close');
    assert.equal(closed.code, 1001);
    const { code, signal } = await withTimeout(run.exited, 10_000, 'exit after SIGTERM');
    assert.equal(signal, null);
    assert.equal(code, 0);

    // Every stdout line is one JSON object with time, level and msg.
    const lines = run.stdout.split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length >= 2);
    for (const line of lines) {
      const record = JSON.parse(line) as Record<string, unknown>;
      assert.equal(typeof record.time, 'string');
      assert.ok(['debug', 'info', 'warn', 'error'].includes(record.level as string));
      assert.equal(typeof record.msg, 'string');
    }
    assert.ok(lines.some((l) => /insecure development mode/.test(l)), 'dev mode is logged as a warning');
    assert.ok(lines.some((l) => /"shutting down"/.test(l)));
  });
});
