/**
 * HTTP sessions end to end: `POST /realtime/heartbeat` against real servers over loopback, watched
 * by real WebSocket clients; its error codes; and the unload beacon (`POST /realtime/disconnect`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import type { ServerMessage } from '@presence/protocol';
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
