/**
 * HTTP sessions end to end: `POST /realtime/heartbeat` against real servers over loopback, watched
 * by real WebSocket clients; its error codes; and the unload beacon (`POST /realtime/disconnect`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import type { ServerMessage } from '@presence/protocol';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SessionTokens } from '../src/auth/session-tokens.js';
import { resolveConfig } from '../src/config/config.js';
import { silentLogger } from '../src/log.js';
import { systemClock } from '../src/presence/clock.js';
import { PresenceNode } from '../src/presence-node.js';
import { WebSocketTransport } from '../src/transport/websocket.js';
import { TestClient, httpJson, sleep, startTestServer, type HttpAnswer } from './support/harness.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const SECRET = 'heartbeat-test-secret-of-at-least-32-bytes';
const API_KEY = 'heartbeat-test-api-key-0123456789';

async function token(sub: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setSubject(sub).setIssuedAt().setExpirationTime('10m').sign(new TextEncoder().encode(SECRET));
}

/** An HTTP client of one session: sends heartbeats, remembers the session id and acks. */
class HttpSession {
  sessionId: string | undefined;
  sessionToken: string | undefined;
  readonly acked: Record<string, number> = {};
  readonly received: ServerMessage[] = [];

  constructor(
    private readonly server: { url: string },
    private readonly auth: { bearer?: string; userId?: string },
  ) {}

  async beat(body: Record<string, unknown> = {}): Promise<HttpAnswer> {
    const path = this.auth.userId ? `/realtime/heartbeat?userId=${encodeURIComponent(this.auth.userId)}` : '/realtime/heartbeat';
    const answer = await httpJson(this.server, path, {
      body: { ...(this.sessionId ? { sessionId: this.sessionId } : {}), ack: { ...this.acked }, ...body },
      ...(this.auth.bearer ? { bearer: this.auth.bearer } : {}),
    });
    if (answer.status === 200) {
      this.sessionId = answer.body.sessionId;
      this.sessionToken = answer.body.sessionToken;
      for (const event of answer.body.events as ServerMessage[]) {
        this.received.push(event);
        if (event.type === 'presence.sync' || event.type === 'presence.join' || event.type === 'presence.leave' || event.type === 'presence.update') this.acked[event.channel] = event.seq;
      }
    }
    return answer;
  }

  /** Event types of the last answer. */
  static types(answer: HttpAnswer): string[] {
    return (answer.body.events as ServerMessage[]).map((e) => e.type);
  }
}

const membership = (messages: ServerMessage[], userId: string) =>
  messages.filter((m) => (m.type === 'presence.join' && m.member.userId === userId) || (m.type === 'presence.leave' && m.userId === userId)).map((m) => m.type);

describe('POST /realtime/heartbeat (development mode)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ httpHeartbeatIntervalMs: 300, offlineDelayMs: 600 });
  });
  after(() => server.shutdown());

  test('a session over HTTP is a member others see join, update and leave; it sees theirs', async () => {
    const bob = await TestClient.connect(server, { userId: 'hb-bob' });
    await bob.request({ type: 'join', channel: 'hb:room' });
    const alice = new HttpSession(server, { userId: 'hb-alice' });
    const first = await alice.beat({ channels: ['hb:room'], device: 'web' });
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(HttpSession.types(first), ['welcome', 'presence.sync']);
    assert.equal(first.body.intervalMs, 300);
    assert.equal(typeof first.body.sessionToken, 'string');
    const join = await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'hb-alice');
    assert.ok(join.type === 'presence.join');
    assert.deepEqual(join.member.devices, ['web']);

    await bob.request({ type: 'status', status: 'busy' });
    const next = await alice.beat();
    assert.deepEqual(HttpSession.types(next), ['presence.update']);
    assert.deepEqual(HttpSession.types(await alice.beat()), [], 'acknowledged events are not repeated');

    await alice.beat({ activity: 'idle' });
    await bob.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'hb-alice' && m.member.status === 'away');
    await alice.beat({ typing: { 'hb:room': true } });
    await bob.waitFor((m) => m.type === 'typing' && m.userId === 'hb-alice' && m.typing);

    await alice.beat({ channels: [] });
    await bob.waitFor((m) => m.type === 'presence.leave' && m.userId === 'hb-alice');
    await bob.close();
  });

  test('heartbeats stop: detached after two intervals, then the offline delay, then the leave', async () => {
    const bob = await TestClient.connect(server, { userId: 'hb-bob2' });
    await bob.request({ type: 'join', channel: 'hb:gone' });
    const alice = new HttpSession(server, { userId: 'hb-alice2' });
    await alice.beat({ channels: ['hb:gone'] });
    await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'hb-alice2');
    const stoppedAt = Date.now();
    const leave = await bob.waitFor((m) => m.type === 'presence.leave' && m.userId === 'hb-alice2', 5000);
    const after = Date.now() - stoppedAt;
    assert.ok(leave.type === 'presence.leave');
    assert.ok(after >= 2 * 300 + 600 - 50, `left after ${after} ms: not before two intervals plus the offline delay`);
    await bob.close();
  });

  test('a heartbeat inside the offline delay resumes: welcome resumed, a sync, and no leave or join', async () => {
    const bob = await TestClient.connect(server, { userId: 'hb-bob3' });
    await bob.request({ type: 'join', channel: 'hb:resume' });
    const alice = new HttpSession(server, { userId: 'hb-alice3' });
    await alice.beat({ channels: ['hb:resume'] });
    await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'hb-alice3');
    await sleep(2 * 300 + 250); // detached, inside the 600 ms offline delay
    const resumed = await alice.beat();
    assert.deepEqual(HttpSession.types(resumed), ['welcome', 'presence.sync']);
    assert.equal(resumed.body.events[0].resumed, true);
    await sleep(700);
    await alice.beat();
    assert.deepEqual(membership(bob.messages, 'hb-alice3'), ['presence.join']);
    await bob.close();
  });

  test('answers 400 INVALID_MESSAGE naming the field, 415 without JSON, 401 without ?userId=', async () => {
    const alice = new HttpSession(server, { userId: 'hb-bad' });
    for (const [body, field] of [
      [{ channels: 'room' }, 'channels'],
      [{ channels: [{ meta: {} }] }, 'channels'],
      [{ ack: { room: 'x' } }, 'ack'],
      [{ activity: 'sleepy' }, 'activity'],
      [{ typing: { room: 1 } }, 'typing'],
    ] as const) {
      const answer = await alice.beat(body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(answer.body.error.code, 'INVALID_MESSAGE');
      assert.match(answer.body.error.message, new RegExp(`"${field}"`));
    }
    const notObject = await httpJson(server, '/realtime/heartbeat?userId=x', { body: [1] });
    assert.equal(notObject.body.error.code, 'INVALID_MESSAGE');
    const text = await fetch(`${server.url}/realtime/heartbeat?userId=x`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    assert.equal(text.status, 415);
    const anonymous = await httpJson(server, '/realtime/heartbeat', { body: {} });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.error.code, 'UNAUTHORIZED');
  });

  test('refused channels are reported per channel; too many channels refuse the heartbeat', async () => {
    const alice = new HttpSession(server, { userId: 'hb-errors' });
    const tooBig = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]));
    const answer = await alice.beat({ channels: ['ok', 'bad name', { name: 'meta', meta: tooBig }] });
    assert.equal(answer.status, 200);
    assert.deepEqual(
      answer.body.errors.map((e: { channel: string; code: string }) => [e.channel, e.code]),
      [['bad name', 'INVALID_CHANNEL'], ['meta', 'META_TOO_LARGE']],
    );
    const many = await alice.beat({ channels: Array.from({ length: server.config.limits.maxChannelsPerSession + 1 }, (_, i) => `c${i}`) });
    assert.equal(many.status, 429);
    assert.equal(many.body.error.code, 'TOO_MANY_CHANNELS');
  });

  test('HTTP sessions count towards the session limit: 429 TOO_MANY_SESSIONS', async () => {
    const limited = await startTestServer({ limits: { maxSessionsPerUser: 2 } });
    try {
      const socket = await TestClient.connect(limited, { userId: 'hb-many' });
      assert.equal((await new HttpSession(limited, { userId: 'hb-many' }).beat()).status, 200);
      const third = await new HttpSession(limited, { userId: 'hb-many' }).beat();
      assert.equal(third.status, 429);
      assert.equal(third.body.error.code, 'TOO_MANY_SESSIONS');
      await socket.close();
    } finally {
      await limited.shutdown();
    }
  });

  test('after a logout, the session\'s next heartbeat is 410 LOGGED_OUT', async () => {
    const alice = new HttpSession(server, { userId: 'hb-out' });
    await alice.beat({ channels: ['hb:out'] });
    assert.equal((await httpJson(server, '/realtime/presence/update', { body: { userId: 'hb-out', status: 'offline' } })).status, 200);
    const answer = await alice.beat();
    assert.equal(answer.status, 410);
    assert.equal(answer.body.error.code, 'LOGGED_OUT');
  });
});

describe('POST /realtime/heartbeat with auth', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(() => server.shutdown());

  test('takes the user from the token; refuses the API key (403) and a bad token (401)', async () => {
    const alice = new HttpSession(server, { bearer: await token('tok-alice') });
    const answer = await alice.beat({ channels: ['room'] });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.events[0].userId, 'tok-alice');
    const byKey = await httpJson(server, '/realtime/heartbeat', { body: {}, bearer: API_KEY });
    assert.equal(byKey.status, 403);
    assert.equal(byKey.body.error.code, 'FORBIDDEN');
    const forged = await httpJson(server, '/realtime/heartbeat', { body: {}, bearer: `${await token('tok-alice')}x` });
    assert.equal(forged.status, 401);
    assert.equal(forged.body.error.code, 'UNAUTHORIZED');
    const devStyle = await httpJson(server, '/realtime/heartbeat?userId=tok-alice', { body: {} });
    assert.equal(devStyle.status, 401, '?userId= is development mode only');
  });
});

/** A beacon as `navigator.sendBeacon` sends a string: text/plain, no Authorization. */
function beacon(server: { url: string }, body: string, contentType = 'text/plain;charset=UTF-8', origin?: string): Promise<Response> {
  return fetch(`${server.url}/realtime/disconnect`, { method: 'POST', headers: { 'content-type': contentType, ...(origin ? { origin } : {}) }, body });
}

async function beaconCount(server: { url: string }): Promise<number> {
  const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
  const match = /^presence_unload_beacons_total (\d+)$/m.exec(text);
  return match ? Number(match[1]) : NaN;
}

describe('POST /realtime/disconnect (the unload beacon)', () => {
  const GRACE_MS = 400;
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      auth: { jwtSecret: SECRET, apiKey: API_KEY },
      offlineDelayMs: 30_000,
      unloadGraceMs: GRACE_MS,
      httpHeartbeatIntervalMs: 5000,
      allowedOrigins: ['https://app.example.com'],
    });
  });
  after(() => server.shutdown());

  async function tab(userId: string, channel: string): Promise<TestClient> {
    const client = await TestClient.connect(server, { token: await token(userId) });
    assert.equal((await client.request({ type: 'join', channel })).type, 'ack');
    return client;
  }

  test('a closed tab (beacon, then its socket closes): the others see the leave within the grace, not the 30 s offline delay; the counter rises', async () => {
    const bob = await tab('b-bob', 'b:room');
    const alice = await tab('b-alice', 'b:room');
    await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'b-alice');
    const before = await beaconCount(server);
    const sessionToken = alice.welcome.sessionToken;
    assert.equal(typeof sessionToken, 'string');
    const sentAt = Date.now();
    const answer = await beacon(server, JSON.stringify({ sessionToken }));
    assert.equal(answer.status, 204);
    await alice.close();
    await bob.waitFor((m) => m.type === 'presence.leave' && m.userId === 'b-alice', GRACE_MS + 2000);
    const took = Date.now() - sentAt;
    assert.ok(took >= GRACE_MS - 20 && took < GRACE_MS + 1000, `left ${took} ms after the beacon`);
    assert.equal(await beaconCount(server), before + 1);
    await bob.close();
  });

  test('application/json is read too; one of two tabs closing is no event; a reload that resumes cancels the grace', async () => {
    const bob = await tab('b-bob2', 'b:two');
    const tab1 = await tab('b-carol', 'b:two');
    const tab2 = await tab('b-carol', 'b:two');
    assert.equal((await beacon(server, JSON.stringify({ sessionToken: tab1.welcome.sessionToken }), 'application/json')).status, 204);
    await tab1.close();
    assert.equal((await beacon(server, JSON.stringify({ sessionToken: tab2.welcome.sessionToken }))).status, 204);
    await tab2.close();
    await sleep(GRACE_MS / 2);
    const reloaded = await TestClient.connect(server, { token: await token('b-carol'), sessionId: tab2.welcome.sessionId });
    assert.equal(reloaded.welcome.resumed, true);
    await sleep(GRACE_MS + 500);
    assert.deepEqual(membership(bob.messages, 'b-carol'), ['presence.join'], 'no leave, no join');
    assert.equal((await httpJson(server, '/realtime/channels/b:two/presence', { bearer: API_KEY })).body.count, 2);
    await reloaded.close();
    await bob.close();
  });

  test('an HTTP session\'s beacon ends it after the grace, though its heartbeats would have kept it 10 s', async () => {
    const bob = await tab('b-bob3', 'b:http');
    const alice = new HttpSession(server, { bearer: await token('b-dave') });
    await alice.beat({ channels: ['b:http'] });
    await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'b-dave');
    assert.equal((await beacon(server, JSON.stringify({ sessionToken: alice.sessionToken }))).status, 204);
    await bob.waitFor((m) => m.type === 'presence.leave' && m.userId === 'b-dave', GRACE_MS + 1500);
    await bob.close();
  });

  test('refuses a forged token (401 UNAUTHORIZED), an expired one (401 TOKEN_EXPIRED), a bad body (400), a large one (413), a foreign Origin (403); needs no header', async () => {
    const alice = await tab('b-erin', 'b:err');
    const sessionToken = alice.welcome.sessionToken!;
    const before = await beaconCount(server);
    const forged = await beacon(server, JSON.stringify({ sessionToken: `${sessionToken}A` }));
    assert.equal(forged.status, 401);
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
    const old = new SessionTokens(server.config.auth, server.config.offlineDelayMs).issue(alice.welcome.sessionId, 'b-erin', Date.now() - 3 * 60 * 60_000).token;
    const expired = await beacon(server, JSON.stringify({ sessionToken: old }));
    assert.equal(expired.status, 401);
    assert.equal(((await expired.json()) as { error: { code: string } }).error.code, 'TOKEN_EXPIRED');
    for (const body of ['{"token":"x"}', '{"sessionToken":7}', '[]']) {
      const answer = await beacon(server, body);
      assert.equal(answer.status, 400, body);
      assert.equal(((await answer.json()) as { error: { code: string } }).error.code, 'INVALID_MESSAGE');
    }
    const notJson = await beacon(server, 'sessionToken=x');
    assert.equal(((await notJson.json()) as { error: { code: string } }).error.code, 'INVALID_JSON');
    const large = await beacon(server, JSON.stringify({ sessionToken: 'x'.repeat(5000) }));
    assert.equal(large.status, 413);
    const foreign = await beacon(server, JSON.stringify({ sessionToken }), 'text/plain', 'https://evil.example.com');
    assert.equal(foreign.status, 403);
    assert.equal(await beaconCount(server), before, 'refused beacons are not counted');
    const allowed = await beacon(server, JSON.stringify({ sessionToken }), 'text/plain', 'https://app.example.com');
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.equal(await beaconCount(server), before + 1);
    await alice.close();
  });
});

test('a WebSocket session gets a renewed token (`session.token`) before the one of welcome expires', async () => {
  const config = resolveConfig({ heartbeatIntervalMs: 100, limits: { maxEventLoopLagMs: 0 } });
  const node = new PresenceNode({ config, clock: systemClock });
  const transport = new WebSocketTransport({ config, engine: node, log: silentLogger, sessionTokenRenewMs: 300 });
  const http = createServer();
  http.on('upgrade', (request, socket, head) => transport.handleUpgrade(request, socket, head));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const wsUrl = `ws://127.0.0.1:${(http.address() as AddressInfo).port}/realtime`;
  try {
    const client = await TestClient.connect({ wsUrl }, { userId: 'renewed' });
    const first = client.welcome.sessionToken!;
    const renewal = await client.waitFor((m) => m.type === 'session.token', 3000);
    assert.ok(renewal.type === 'session.token');
    assert.notEqual(renewal.sessionToken, first);
    const claims = node.sessionTokens.verify(renewal.sessionToken, Date.now());
    assert.equal(claims.sessionId, client.welcome.sessionId);
    assert.equal(new Date(claims.expiresAt).toISOString(), renewal.expiresAt);
    assert.ok(Date.parse(renewal.expiresAt) > Date.parse(new Date(node.sessionTokens.verify(first, Date.now()).expiresAt).toISOString()));
    await client.close();
  } finally {
    await transport.shutdown(100);
    http.close();
    node.dispose();
  }
});
