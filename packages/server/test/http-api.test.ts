import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import type { Member, SelfPresence, UserChannel, UserPresence } from '@presence/protocol';
import { createTokenVerifier } from '../src/auth/tokens.js';
import { resolveConfig, type ServerConfig, type ServerLimits, type AuthConfig } from '../src/config/config.js';
import { PresenceError } from '../src/errors.js';
import { createHttpApi } from '../src/http/api.js';
import { TokenBuckets, addressKey } from '../src/http/rate-limits.js';
import { createLogger } from '../src/log.js';
import { Counter, Registry } from 'prom-client';
import {
  LabelCounts,
  createPresenceMetrics,
  oncePerScrape,
  processMetrics,
  scrapedGauge,
  type PresenceMetrics,
} from '../src/metrics/index.js';
import type { ChannelPage, OnlineUsersPage, PresenceQueries, PresenceStats, UserPatch, ViewerId } from '../src/presence/service.js';

// ---------------------------------------------------------------------------------------------
// A minimal stand-in for the presence engine: records every call and answers with canned data.
// ---------------------------------------------------------------------------------------------

interface Call {
  method: keyof PresenceQueries;
  args: unknown[];
}

function presence(userId: string): UserPresence {
  return { userId, status: 'online', meta: {}, lastSeen: '2024-01-01T00:00:00.000Z', devices: ['web'] };
}

class FakeQueries implements PresenceQueries {
  calls: Call[] = [];
  /** Thrown by the next query call (then cleared), to test error mapping. */
  failWith: Error | undefined;

  loadUsers(): undefined {
    return undefined;
  }

  prepareConnect(): undefined {
    return undefined;
  }

  loadChannel(): undefined {
    return undefined;
  }

  loadUserChannels(): undefined {
    return undefined;
  }

  private check(method: keyof PresenceQueries, args: unknown[]): void {
    this.calls.push({ method, args });
    const error = this.failWith;
    if (error) {
      this.failWith = undefined;
      throw error;
    }
  }

  last(method: keyof PresenceQueries): Call | undefined {
    return this.calls.filter((c) => c.method === method).at(-1);
  }

  channelPresence(channel: string, page: { limit: number; cursor?: string }): ChannelPage {
    this.check('channelPresence', [channel, page]);
    if (channel !== 'room-1') return { channel, count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] };
    const member: Member = { ...presence('alice'), channelMeta: { mode: 'editing' }, joinedAt: '2024-01-01T00:00:00.000Z' };
    return { channel, count: 2, statuses: { online: 2, away: 0, busy: 0 }, members: [member], nextCursor: 'c1' };
  }

  userPresence(userId: string, viewer: ViewerId): UserPresence {
    this.check('userPresence', [userId, viewer]);
    return presence(userId);
  }

  queryUsers(userIds: string[], viewer: ViewerId): UserPresence[] {
    this.check('queryUsers', [userIds, viewer]);
    return userIds.map(presence);
  }

  userChannels(userId: string): UserChannel[] {
    this.check('userChannels', [userId]);
    return userId === 'alice' ? [{ channel: 'room-1', joinedAt: '2024-01-01T00:00:00.000Z', channelMeta: { mode: 'editing' } }] : [];
  }

  onlineUsers(page: { limit: number; cursor?: string }): OnlineUsersPage {
    this.check('onlineUsers', [page]);
    return { count: 2, users: [presence('alice')], nextCursor: 'alice' };
  }

  updateUser(userId: string, patch: UserPatch): SelfPresence {
    this.check('updateUser', [userId, patch]);
    const manual = patch.status === 'away' || patch.status === 'busy' || patch.status === 'invisible' ? patch.status : null;
    return {
      ...presence(userId),
      status: manual === 'away' || manual === 'busy' ? manual : 'online',
      manualStatus: manual,
      visibility: patch.visibility ?? 'everyone',
      meta: { ...(patch.meta ?? {}) },
    };
  }

  stats(): PresenceStats {
    return { connections: 3, sessions: 4, onlineUsers: 2, channels: 1 };
  }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

interface Harness {
  base: string;
  fake: FakeQueries;
  metrics: PresenceMetrics;
  logs: Array<Record<string, unknown>>;
  setReady(ready: boolean): void;
  close(): Promise<void>;
}

async function startApi(options: {
  auth?: AuthConfig;
  limits?: Partial<ServerLimits>;
  allowedOrigins?: string[];
  now?: () => number;
  trustProxyHops?: number;
} = {}): Promise<Harness> {
  const config: ServerConfig = resolveConfig({
    auth: options.auth ?? {},
    limits: options.limits ?? {},
    allowedOrigins: options.allowedOrigins ?? [],
    trustProxyHops: options.trustProxyHops ?? 0,
  });
  const fake = new FakeQueries();
  const metrics = createPresenceMetrics(new Registry(), () => fake.stats());
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
  let ready = true;
  const handler = createHttpApi({
    queries: fake,
    config,
    verifier: createTokenVerifier(config.auth),
    metrics,
    log,
    isReady: () => ready,
    now: options.now,
  });
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    fake,
    metrics,
    logs,
    setReady: (value) => {
      ready = value;
    },
    close: async () => {
      metrics.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface ErrorBody {
  error: { code: string; message: string };
}

async function json<T = Record<string, unknown>>(response: Response): Promise<T> {
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  return (await response.json()) as T;
}

async function expectError(response: Response, status: number, code: string): Promise<ErrorBody> {
  const body = await json<ErrorBody>(response);
  assert.equal(response.status, status, `expected ${status} ${code}, got ${response.status} ${JSON.stringify(body)}`);
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  return body;
}

function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const SECRET = 'test-secret-that-is-long-enough-for-hs256';
const API_KEY = 'backend-key-123';

async function userToken(sub: string, claims: Record<string, unknown> = {}, expiresAt?: number): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt();
  jwt.setExpirationTime(expiresAt ?? Math.floor(Date.now() / 1000) + 3600);
  return jwt.sign(new TextEncoder().encode(SECRET));
}

// ---------------------------------------------------------------------------------------------
// Development mode (no auth configured): the API is open and treated as trusted
// ---------------------------------------------------------------------------------------------

describe('HTTP API in development mode', () => {
  let h: Harness;
  before(async () => {
    h = await startApi();
  });
  after(() => h.close());

  test('GET channel presence returns the page with default limit', async () => {
    const response = await fetch(`${h.base}/realtime/channels/room-1/presence`);
    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.channel, 'room-1');
    assert.equal(body.count, 2);
    assert.deepEqual(body.statuses, { online: 2, away: 0, busy: 0 });
    assert.equal((body.members as Member[]).length, 1);
    assert.equal((body.members as Member[])[0].userId, 'alice');
    assert.equal(body.nextCursor, 'c1');
    assert.deepEqual(h.fake.last('channelPresence')?.args, ['room-1', { limit: 100 }]);
    assert.equal(response.headers.get('cache-control'), 'no-store');
  });

  test('unknown channel is 200 with count 0 and no nextCursor', async () => {
    const response = await fetch(`${h.base}/realtime/channels/nobody-here/presence`);
    assert.equal(response.status, 200);
    assert.deepEqual(await json(response), { channel: 'nobody-here', count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] });
  });

  test('limit and cursor are passed on; limit is capped at maxPageSize', async () => {
    let response = await fetch(`${h.base}/realtime/channels/room-1/presence?limit=5&cursor=abc`);
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('channelPresence')?.args, ['room-1', { limit: 5, cursor: 'abc' }]);
    response = await fetch(`${h.base}/realtime/channels/room-1/presence?limit=999999`);
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('channelPresence')?.args, ['room-1', { limit: 1000 }]);
  });

  test('invalid limit is 400 INVALID_MESSAGE', async () => {
    for (const limit of ['0', '-1', 'abc', '1.5']) {
      const response = await fetch(`${h.base}/realtime/channels/room-1/presence?limit=${limit}`);
      const body = await expectError(response, 400, 'INVALID_MESSAGE');
      assert.match(body.error.message, /limit/);
    }
  });

  test('channel names are URL-decoded and validated', async () => {
    let response = await fetch(`${h.base}/realtime/channels/doc%3A42%40team/presence`);
    assert.equal(response.status, 200);
    assert.equal(h.fake.last('channelPresence')?.args[0], 'doc:42@team');

    const before = h.fake.calls.length;
    for (const bad of ['has%20space', 'a%2Fb', '%E0%A4', 'x'.repeat(129), 'caf%C3%A9']) {
      response = await fetch(`${h.base}/realtime/channels/${bad}/presence`);
      await expectError(response, 400, 'INVALID_CHANNEL');
    }
    assert.equal(h.fake.calls.length, before, 'invalid channels never reach the presence model');
  });

  test('POST update requires userId for a trusted caller', async () => {
    const response = await postJson(`${h.base}/realtime/presence/update`, { status: 'away' });
    const body = await expectError(response, 400, 'INVALID_MESSAGE');
    assert.match(body.error.message, /userId/);
  });

  test('POST update applies the patch and returns the user', async () => {
    const patch = {
      userId: 'bob',
      status: 'busy',
      state: 'in-call',
      message: 'On a call 📞',
      expiresAt: null,
      meta: { name: 'Bob', avatar: null },
      visibility: 'contacts',
      contacts: ['alice'],
    };
    const response = await postJson(`${h.base}/realtime/presence/update`, patch, {
      'content-type': 'application/json; charset=UTF-8',
    });
    assert.equal(response.status, 200);
    const body = await json<{ user: SelfPresence }>(response);
    assert.equal(body.user.userId, 'bob');
    assert.equal(body.user.manualStatus, 'busy');
    const { userId, ...rest } = patch;
    assert.deepEqual(h.fake.last('updateUser')?.args, [userId, rest]);
  });

  test('POST update validates field types and names the field', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ userId: 'bob', status: 'sleeping' }, /status/],
      [{ userId: 'bob', status: 1 }, /status/],
      [{ userId: 'bob', state: 5 }, /state/],
      [{ userId: 'bob', message: { text: 'x' } }, /message/],
      [{ userId: 'bob', expiresAt: 123 }, /expiresAt/],
      [{ userId: 'bob', meta: ['a'] }, /meta/],
      [{ userId: 'bob', meta: null }, /meta/],
      [{ userId: 'bob', visibility: 'friends' }, /visibility/],
      [{ userId: 'bob', contacts: 'alice' }, /contacts/],
      [{ userId: 'bob', contacts: ['alice', 2] }, /contacts/],
      [{ userId: 'bob', stauts: 'away' }, /stauts/],
    ];
    const before = h.fake.calls.length;
    for (const [body, field] of cases) {
      const response = await postJson(`${h.base}/realtime/presence/update`, body);
      const error = await expectError(response, 400, 'INVALID_MESSAGE');
      assert.match(error.error.message, field, JSON.stringify(body));
    }
    for (const userId of ['', 42, 'u'.repeat(129)]) {
      const response = await postJson(`${h.base}/realtime/presence/update`, { userId });
      await expectError(response, 400, 'INVALID_USER_ID');
    }
    assert.equal(h.fake.calls.length, before);
  });

  test('body must be a JSON object', async () => {
    for (const body of ['[]', '"x"', 'null', '42']) {
      const response = await postJson(`${h.base}/realtime/presence/update`, body);
      await expectError(response, 400, 'INVALID_MESSAGE');
    }
  });

  test('PresenceError from the model maps to its status and code', async () => {
    h.fake.failWith = new PresenceError('META_TOO_LARGE', 'meta is 3000 bytes, max 2048');
    let response = await postJson(`${h.base}/realtime/presence/update`, { userId: 'bob', meta: { big: 'x' } });
    const body = await expectError(response, 400, 'META_TOO_LARGE');
    assert.equal(body.error.message, 'meta is 3000 bytes, max 2048');

    h.fake.failWith = new PresenceError('UNKNOWN_STATE');
    response = await postJson(`${h.base}/realtime/presence/update`, { userId: 'bob', state: 'dancing' });
    await expectError(response, 400, 'UNKNOWN_STATE');

    h.fake.failWith = new PresenceError('NOT_READY');
    response = await fetch(`${h.base}/realtime/users/bob/presence`);
    await expectError(response, 503, 'NOT_READY');
  });

  test('an unexpected throw is 500 INTERNAL, logged, and the server keeps serving', async () => {
    h.fake.failWith = new TypeError('boom: secret internals');
    const response = await fetch(`${h.base}/realtime/users/bob/presence`);
    const body = await expectError(response, 500, 'INTERNAL');
    assert.doesNotMatch(body.error.message, /secret internals/);
    const logged = h.logs.find((line) => line.level === 'error' && JSON.stringify(line).includes('boom: secret internals'));
    assert.ok(logged, 'the error is logged with its details');
    assert.equal(logged.route, '/realtime/users/:id/presence');
    assert.equal((await fetch(`${h.base}/healthz`)).status, 200);
  });

  test('GET user presence is trusted in dev mode and decodes the id', async () => {
    const response = await fetch(`${h.base}/realtime/users/user%40example.com/presence`);
    assert.equal(response.status, 200);
    const body = await json<{ user: UserPresence }>(response);
    assert.equal(body.user.userId, 'user@example.com');
    assert.deepEqual(h.fake.last('userPresence')?.args, ['user@example.com', { trusted: true }]);
  });

  test('POST query returns users; caps and validates userIds', async () => {
    let response = await postJson(`${h.base}/realtime/presence/query`, { userIds: ['a', 'b'] });
    assert.equal(response.status, 200);
    const body = await json<{ users: UserPresence[] }>(response);
    assert.deepEqual(
      body.users.map((u) => u.userId),
      ['a', 'b'],
    );
    assert.deepEqual(h.fake.last('queryUsers')?.args, [['a', 'b'], { trusted: true }]);

    const tooMany = Array.from({ length: 1001 }, (_, i) => `u${i}`);
    response = await postJson(`${h.base}/realtime/presence/query`, { userIds: tooMany });
    await expectError(response, 400, 'TOO_MANY_USERS');

    for (const bad of [{}, { userIds: 'a' }, { userIds: ['a', 1] }, { userIds: [null] }]) {
      response = await postJson(`${h.base}/realtime/presence/query`, bad);
      await expectError(response, 400, 'INVALID_MESSAGE');
    }
  });

  test('unknown path is 404, wrong method is 405 with Allow', async () => {
    let response = await fetch(`${h.base}/nope`);
    await expectError(response, 404, 'NOT_FOUND');
    response = await fetch(`${h.base}/realtime/users/a/presence/extra`);
    await expectError(response, 404, 'NOT_FOUND');
    response = await fetch(`${h.base}/realtime/channels//presence`);
    await expectError(response, 404, 'NOT_FOUND');

    response = await fetch(`${h.base}/realtime/presence/update`);
    await expectError(response, 405, 'METHOD_NOT_ALLOWED');
    assert.match(response.headers.get('allow') ?? '', /POST/);

    response = await fetch(`${h.base}/realtime/users/a/presence`, { method: 'DELETE' });
    await expectError(response, 405, 'METHOD_NOT_ALLOWED');
    assert.match(response.headers.get('allow') ?? '', /GET/);
  });

  test('POST without a JSON content type is 415', async () => {
    for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']) {
      const response = await fetch(`${h.base}/realtime/presence/update`, {
        method: 'POST',
        headers: { 'content-type': contentType },
        body: '{"userId":"bob"}',
      });
      await expectError(response, 415, 'UNSUPPORTED_MEDIA_TYPE');
    }
  });

  test('invalid JSON is 400 INVALID_JSON', async () => {
    for (const body of ['{"userId":', '', '{bad}']) {
      const response = await postJson(`${h.base}/realtime/presence/update`, body);
      await expectError(response, 400, 'INVALID_JSON');
    }
  });

  test('body over maxFrameBytes is 413 (declared length)', async () => {
    const big = JSON.stringify({ userId: 'bob', meta: { pad: 'x'.repeat(70 * 1024) } });
    const before = h.fake.calls.length;
    const response = await postJson(`${h.base}/realtime/presence/update`, big);
    await expectError(response, 413, 'FRAME_TOO_LARGE');
    assert.equal(h.fake.calls.length, before);
  });

  test('body over maxFrameBytes is 413 (chunked, no declared length)', async () => {
    const url = new URL(`${h.base}/realtime/presence/update`);
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          let data = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (data += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: data }));
        },
      );
      // The server may close while the tail is still being written; only the answer matters.
      req.on('error', (error) => reject(error));
      req.write('{"userId":"bob","meta":{"pad":"');
      req.write('x'.repeat(40 * 1024));
      req.write('x'.repeat(40 * 1024));
      req.end('"}}');
    });
    assert.equal(status, 413);
    assert.equal((JSON.parse(text) as ErrorBody).error.code, 'FRAME_TOO_LARGE');
  });

  test('health, readiness and metrics', async () => {
    let response = await fetch(`${h.base}/healthz`);
    assert.equal(response.status, 200);
    assert.deepEqual(await json(response), { status: 'ok' });

    response = await fetch(`${h.base}/readyz`);
    assert.equal(response.status, 200);
    assert.deepEqual(await json(response), { status: 'ready' });

    h.setReady(false);
    try {
      response = await fetch(`${h.base}/readyz`);
      await expectError(response, 503, 'NOT_READY');
      response = await fetch(`${h.base}/healthz`);
      assert.equal(response.status, 200, 'liveness does not depend on the store');
    } finally {
      h.setReady(true);
    }

    h.metrics.observeFanout(0.0003);
    await fetch(`${h.base}/realtime/users/carol/presence`);
    response = await fetch(`${h.base}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    for (const name of [
      'presence_connections 3',
      'presence_sessions 4',
      'presence_online_users 2',
      'presence_channels 1',
      '# TYPE presence_events_in_total counter',
      '# TYPE presence_events_out_total counter',
      '# TYPE presence_errors_total counter',
      'presence_connections_opened_total 0',
      '# TYPE presence_connections_closed_total counter',
      '# TYPE presence_fanout_latency_seconds histogram',
      'presence_fanout_latency_seconds_bucket{le="0.0001"} 0',
      'presence_fanout_latency_seconds_bucket{le="0.0005"} 1',
      'presence_fanout_latency_seconds_bucket{le="1"} 1',
      'presence_fanout_latency_seconds_bucket{le="+Inf"} 1',
      'presence_fanout_latency_seconds_count 1',
      'presence_process_resident_memory_bytes ',
      'presence_event_loop_lag_seconds ',
      'presence_http_requests_total{route="/realtime/users/:id/presence",status="200"}',
      'presence_http_requests_total{route="/readyz",status="503"} 1',
    ]) {
      assert.ok(text.includes(name), `metrics text should include ${name}`);
    }
    assert.ok(!text.includes('carol'), 'raw paths never become label values');
  });
});

// ---------------------------------------------------------------------------------------------
// Auth configured: API key for backends, HS256 JWT for users
// ---------------------------------------------------------------------------------------------

describe('HTTP API with auth', () => {
  let h: Harness;
  before(async () => {
    h = await startApi({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(() => h.close());

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  test('no credentials is 401 UNAUTHORIZED on every /realtime route', async () => {
    let response = await fetch(`${h.base}/realtime/channels/room-1/presence`);
    await expectError(response, 401, 'UNAUTHORIZED');
    assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer/);
    response = await fetch(`${h.base}/realtime/users/a/presence`);
    await expectError(response, 401, 'UNAUTHORIZED');
    response = await postJson(`${h.base}/realtime/presence/update`, { userId: 'a' });
    await expectError(response, 401, 'UNAUTHORIZED');
    response = await postJson(`${h.base}/realtime/presence/query`, { userIds: [] });
    await expectError(response, 401, 'UNAUTHORIZED');
    response = await fetch(`${h.base}/realtime/users/a/presence`, { headers: { authorization: `Basic ${API_KEY}` } });
    await expectError(response, 401, 'UNAUTHORIZED');
  });

  test('wrong API key is 401', async () => {
    const response = await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer('backend-key-124') });
    await expectError(response, 401, 'UNAUTHORIZED');
  });

  test('health, readiness and metrics need no auth', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      assert.equal((await fetch(`${h.base}${path}`)).status, 200, path);
    }
  });

  test('API key is trusted: reads any user, updates any user', async () => {
    let response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: bearer(API_KEY) });
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('userPresence')?.args, ['alice', { trusted: true }]);

    response = await postJson(
      `${h.base}/realtime/presence/update`,
      { userId: 'alice', status: 'offline', contacts: ['bob'] },
      bearer(API_KEY),
    );
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('updateUser')?.args, ['alice', { status: 'offline', contacts: ['bob'] }]);
  });

  test('user JWT reads with the user as viewer', async () => {
    const token = await userToken('alice');
    let response = await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(token) });
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('userPresence')?.args, ['bob', { trusted: false, userId: 'alice' }]);

    response = await postJson(`${h.base}/realtime/presence/query`, { userIds: ['bob'] }, bearer(token));
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('queryUsers')?.args, [['bob'], { trusted: false, userId: 'alice' }]);

    response = await fetch(`${h.base}/realtime/channels/room-1/presence`, { headers: bearer(token) });
    assert.equal(response.status, 200);
  });

  test("user JWT respects the token's channel allowlist", async () => {
    const token = await userToken('alice', { channels: ['doc:*'] });
    let response = await fetch(`${h.base}/realtime/channels/doc%3A1/presence`, { headers: bearer(token) });
    assert.equal(response.status, 200);
    response = await fetch(`${h.base}/realtime/channels/room-1/presence`, { headers: bearer(token) });
    await expectError(response, 403, 'CHANNEL_FORBIDDEN');
  });

  test('user JWT updates its own presence, with or without userId', async () => {
    const token = await userToken('alice');
    let response = await postJson(`${h.base}/realtime/presence/update`, { status: 'away' }, bearer(token));
    assert.equal(response.status, 200);
    assert.equal((await json<{ user: SelfPresence }>(response)).user.userId, 'alice');
    assert.deepEqual(h.fake.last('updateUser')?.args, ['alice', { status: 'away' }]);

    response = await postJson(
      `${h.base}/realtime/presence/update`,
      { userId: 'alice', visibility: 'nobody' },
      bearer(token),
    );
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('updateUser')?.args, ['alice', { visibility: 'nobody' }]);
  });

  test("user JWT cannot update another user's presence or set contacts", async () => {
    const token = await userToken('alice');
    const before = h.fake.calls.length;
    let response = await postJson(`${h.base}/realtime/presence/update`, { userId: 'bob', status: 'away' }, bearer(token));
    await expectError(response, 403, 'FORBIDDEN');
    response = await postJson(`${h.base}/realtime/presence/update`, { contacts: ['mallory'] }, bearer(token));
    await expectError(response, 403, 'FORBIDDEN');
    assert.equal(h.fake.calls.length, before);
  });

  test('expired JWT is 401 TOKEN_EXPIRED; bad signature is 401 UNAUTHORIZED', async () => {
    const expired = await userToken('alice', {}, Math.floor(Date.now() / 1000) - 600);
    let response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: bearer(expired) });
    await expectError(response, 401, 'TOKEN_EXPIRED');
    assert.match(response.headers.get('www-authenticate') ?? '', /invalid_token/);

    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .sign(new TextEncoder().encode('some-other-secret-of-enough-length'));
    response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: bearer(forged) });
    await expectError(response, 401, 'UNAUTHORIZED');
  });

  test('auth is checked before the body is read', async () => {
    const response = await fetch(`${h.base}/realtime/presence/update`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'not json',
    });
    await expectError(response, 401, 'UNAUTHORIZED');
  });
});

describe('HTTP API with only an API key', () => {
  let h: Harness;
  before(async () => {
    h = await startApi({ auth: { apiKey: API_KEY } });
  });
  after(() => h.close());

  test('a JWT is not accepted when no JWT key is configured', async () => {
    const token = await userToken('alice');
    const response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: { authorization: `Bearer ${token}` } });
    await expectError(response, 401, 'UNAUTHORIZED');
  });

  test('the API key works', async () => {
    const response = await fetch(`${h.base}/realtime/users/alice/presence`, {
      headers: { authorization: `bearer ${API_KEY}` },
    });
    assert.equal(response.status, 200);
  });
});

describe('HTTP API CORS', () => {
  let h: Harness;
  before(async () => {
    h = await startApi({ auth: { apiKey: API_KEY }, allowedOrigins: ['https://app.example.com'] });
  });
  after(() => h.close());

  test('preflight from an allowed origin is 204 with CORS headers', async () => {
    const response = await fetch(`${h.base}/realtime/presence/update`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
    assert.equal(response.status, 204);
    assert.equal(response.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(response.headers.get('vary') ?? '', /Origin/);
    assert.match(response.headers.get('access-control-allow-methods') ?? '', /GET/);
    assert.match(response.headers.get('access-control-allow-methods') ?? '', /POST/);
    const allowHeaders = (response.headers.get('access-control-allow-headers') ?? '').toLowerCase();
    assert.match(allowHeaders, /authorization/);
    assert.match(allowHeaders, /content-type/);
  });

  test('allowed origin is reflected on responses, errors included', async () => {
    let response = await fetch(`${h.base}/realtime/users/alice/presence`, {
      headers: { origin: 'https://app.example.com', authorization: `Bearer ${API_KEY}` },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(response.headers.get('vary') ?? '', /Origin/);

    response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: { origin: 'https://app.example.com' } });
    await expectError(response, 401, 'UNAUTHORIZED');
    assert.equal(response.headers.get('access-control-allow-origin'), 'https://app.example.com');
  });

  test('a foreign origin gets no CORS headers and is refused on /realtime', async () => {
    let response = await fetch(`${h.base}/realtime/users/alice/presence`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' },
    });
    await expectError(response, 403, 'ORIGIN_FORBIDDEN');
    assert.equal(response.headers.get('access-control-allow-origin'), null);

    response = await fetch(`${h.base}/realtime/users/alice/presence`, {
      headers: { origin: 'https://evil.example', authorization: `Bearer ${API_KEY}` },
    });
    await expectError(response, 403, 'ORIGIN_FORBIDDEN');
    assert.equal(response.headers.get('access-control-allow-origin'), null);

    // Backends send no Origin at all and are unaffected.
    response = await fetch(`${h.base}/realtime/users/alice/presence`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(response.status, 200);
  });

  test('preflight on an unknown path is 404', async () => {
    const response = await fetch(`${h.base}/nope`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'GET' },
    });
    await expectError(response, 404, 'NOT_FOUND');
  });
});

describe("the lists: a user's channels and the online list", () => {
  let h: Harness;
  before(async () => {
    h = await startApi({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(() => h.close());

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  test("GET a user's channels: the API key for anyone, a user token for its own id only", async () => {
    let response = await fetch(`${h.base}/realtime/users/alice/channels`, { headers: bearer(API_KEY) });
    assert.equal(response.status, 200);
    assert.deepEqual(await json(response), {
      userId: 'alice',
      channels: [{ channel: 'room-1', joinedAt: '2024-01-01T00:00:00.000Z', channelMeta: { mode: 'editing' } }],
    });
    assert.deepEqual(h.fake.last('userChannels')?.args, ['alice']);

    response = await fetch(`${h.base}/realtime/users/al%20ice/channels`, { headers: bearer(await userToken('al ice')) });
    assert.equal(response.status, 200, 'the own id, percent-decoded');
    assert.deepEqual(h.fake.last('userChannels')?.args, ['al ice']);

    const calls = h.fake.calls.length;
    response = await fetch(`${h.base}/realtime/users/alice/channels`, { headers: bearer(await userToken('bob')) });
    await expectError(response, 403, 'FORBIDDEN');
    assert.equal(h.fake.calls.length, calls, 'refused before the model is asked');
    await expectError(await fetch(`${h.base}/realtime/users/alice/channels`), 401, 'UNAUTHORIZED');
    await expectError(await fetch(`${h.base}/realtime/users/${'u'.repeat(129)}/channels`, { headers: bearer(API_KEY) }), 400, 'INVALID_USER_ID');
    await expectError(await postJson(`${h.base}/realtime/users/alice/channels`, {}, bearer(API_KEY)), 405, 'METHOD_NOT_ALLOWED');
  });

  test('GET the online list: the API key only, limit and cursor passed on, limit capped', async () => {
    let response = await fetch(`${h.base}/realtime/presence/online`, { headers: bearer(API_KEY) });
    assert.equal(response.status, 200);
    assert.deepEqual(await json(response), { count: 2, users: [presence('alice')], nextCursor: 'alice' });
    assert.deepEqual(h.fake.last('onlineUsers')?.args, [{ limit: 100 }]);

    response = await fetch(`${h.base}/realtime/presence/online?limit=5000&cursor=alice`, { headers: bearer(API_KEY) });
    assert.equal(response.status, 200);
    assert.deepEqual(h.fake.last('onlineUsers')?.args, [{ limit: 1000, cursor: 'alice' }]);

    for (const limit of ['0', '-1', 'abc']) {
      await expectError(await fetch(`${h.base}/realtime/presence/online?limit=${limit}`, { headers: bearer(API_KEY) }), 400, 'INVALID_MESSAGE');
    }
    const calls = h.fake.calls.length;
    await expectError(await fetch(`${h.base}/realtime/presence/online`, { headers: bearer(await userToken('alice')) }), 403, 'FORBIDDEN');
    assert.equal(h.fake.calls.length, calls, 'a user token never reaches the model');
    await expectError(await fetch(`${h.base}/realtime/presence/online`), 401, 'UNAUTHORIZED');
  });
});

describe('HTTP rate limits', () => {
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const small = { httpKeyRateLimit: 10, httpKeyRateBurst: 5, httpUserRateLimit: 2, httpUserRateBurst: 3, httpIpRateLimit: 1, httpIpRateBurst: 2 };

  async function expectRateLimited(response: Response, retryAfter: number): Promise<void> {
    const body = await expectError(response, 429, 'RATE_LIMITED');
    assert.equal(response.headers.get('retry-after'), String(retryAfter));
    assert.match(body.error.message, /retry after \d+ s/);
  }

  test('a user token gets its burst, then 429 RATE_LIMITED with Retry-After; time refills the bucket', async () => {
    let now = 1_000_000;
    const h = await startApi({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, limits: small, now: () => now });
    try {
      const alice = await userToken('alice');
      for (let i = 0; i < 3; i += 1) assert.equal((await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(alice) })).status, 200);
      const calls = h.fake.calls.length;
      await expectRateLimited(await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(alice) }), 1);
      // Every route that needs credentials, POSTs too (refused before the body is read).
      await expectRateLimited(await postJson(`${h.base}/realtime/presence/update`, { status: 'away' }, bearer(alice)), 1);
      await expectRateLimited(await postJson(`${h.base}/realtime/presence/update`, '{not json', bearer(alice)), 1);
      assert.equal(h.fake.calls.length, calls, 'a refused request changes nothing');

      // Another token of the same user shares the bucket; another user and the API key do not.
      await expectRateLimited(await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(await userToken('alice', { channels: ['x'] })) }), 1);
      assert.equal((await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(await userToken('carol')) })).status, 200);
      assert.equal((await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(API_KEY) })).status, 200);

      // 2 tokens a second: half a second brings one back, and only one.
      now += 500;
      assert.equal((await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(alice) })).status, 200);
      await expectRateLimited(await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(alice) }), 1);
      now += 10_000;
      for (let i = 0; i < 3; i += 1) assert.equal((await fetch(`${h.base}/realtime/users/bob/presence`, { headers: bearer(alice) })).status, 200);
    } finally {
      await h.close();
    }
  });

  test('Retry-After is the whole seconds until a token is back', async () => {
    let now = 0;
    const h = await startApi({ auth: { apiKey: API_KEY }, limits: { ...small, httpKeyRateLimit: 0.25 as number, httpKeyRateBurst: 1 }, now: () => now });
    try {
      assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(API_KEY) })).status, 200);
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(API_KEY) }), 4);
      now += 2500;
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(API_KEY) }), 2);
      now += 1500;
      assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(API_KEY) })).status, 200);
    } finally {
      await h.close();
    }
  });

  test('failed credentials cost the client address: 401 until its bucket is empty, then 429; valid callers are not held back', async () => {
    const h = await startApi({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, limits: small, now: () => 0 });
    try {
      await expectError(await fetch(`${h.base}/realtime/users/a/presence`), 401, 'UNAUTHORIZED');
      await expectError(await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer('wrong-key') }), 401, 'UNAUTHORIZED');
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer('another-guess') }), 1);
      const expired = await userToken('alice', {}, Math.floor(Date.now() / 1000) - 60);
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(expired) }), 1);
      // The same address with valid credentials: its own buckets.
      assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(API_KEY) })).status, 200);
      assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers: bearer(await userToken('alice')) })).status, 200);
    } finally {
      await h.close();
    }
  });

  test('health, readiness, metrics, the OpenAPI document, preflights and unknown paths are exempt', async () => {
    const h = await startApi({ auth: { apiKey: API_KEY }, limits: small, now: () => 0 });
    try {
      for (let i = 0; i < 2; i += 1) await fetch(`${h.base}/realtime/users/a/presence`);
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`), 1);
      for (let i = 0; i < 5; i += 1) {
        for (const path of ['/healthz', '/readyz', '/metrics', '/realtime/openapi.json']) {
          assert.equal((await fetch(`${h.base}${path}`)).status, 200, path);
        }
        assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { method: 'OPTIONS' })).status, 204);
        await expectError(await fetch(`${h.base}/realtime/nope`), 404, 'NOT_FOUND');
      }
      const metrics = await (await fetch(`${h.base}/metrics`)).text();
      assert.match(metrics, /presence_http_requests_total\{route="\/realtime\/users\/:id\/presence",status="429"\} 1/);
    } finally {
      await h.close();
    }
  });

  test('development mode counts per client address at the API key rates; X-Forwarded-For only with trusted proxy hops', async () => {
    const h = await startApi({ limits: { ...small, httpKeyRateBurst: 2 }, now: () => 0 });
    try {
      const from = (xff: string) => ({ 'x-forwarded-for': xff });
      for (let i = 0; i < 2; i += 1) assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers: from(`10.0.0.${i}`) })).status, 200);
      // Without trusted hops the header is the client's own claim: ignored.
      await expectRateLimited(await fetch(`${h.base}/realtime/users/a/presence`, { headers: from('10.0.0.9') }), 1);
    } finally {
      await h.close();
    }
    const proxied = await startApi({ limits: { ...small, httpKeyRateBurst: 2 }, now: () => 0, trustProxyHops: 1 });
    try {
      const from = (xff: string) => ({ 'x-forwarded-for': xff });
      for (let i = 0; i < 2; i += 1) assert.equal((await fetch(`${proxied.base}/realtime/users/a/presence`, { headers: from('198.51.100.7') })).status, 200);
      await expectRateLimited(await fetch(`${proxied.base}/realtime/users/a/presence`, { headers: from('198.51.100.7') }), 1);
      // One hop: the proxy's entry (rightmost) counts, whatever the client wrote before it.
      await expectRateLimited(await fetch(`${proxied.base}/realtime/users/a/presence`, { headers: from('203.0.113.1, 198.51.100.7') }), 1);
      assert.equal((await fetch(`${proxied.base}/realtime/users/a/presence`, { headers: from('198.51.100.8') })).status, 200);
    } finally {
      await proxied.close();
    }
  });

  test('a 429 to an allowed origin exposes Retry-After to the page', async () => {
    const h = await startApi({ auth: { apiKey: API_KEY }, limits: { ...small, httpKeyRateBurst: 1 }, allowedOrigins: ['https://app.example.com'], now: () => 0 });
    try {
      const headers = { ...bearer(API_KEY), origin: 'https://app.example.com' };
      assert.equal((await fetch(`${h.base}/realtime/users/a/presence`, { headers })).status, 200);
      const response = await fetch(`${h.base}/realtime/users/a/presence`, { headers });
      await expectRateLimited(response, 1);
      assert.equal(response.headers.get('access-control-allow-origin'), 'https://app.example.com');
      assert.equal(response.headers.get('access-control-expose-headers'), 'Retry-After');
    } finally {
      await h.close();
    }
  });
});

describe('token buckets', () => {
  test('a bucket gives its burst, then refills at its rate, never above the burst', () => {
    let now = 0;
    const buckets = new TokenBuckets(10, 3, () => now);
    assert.deepEqual([buckets.take('a'), buckets.take('a'), buckets.take('a')], [0, 0, 0]);
    assert.equal(buckets.take('a'), 100, 'one token comes back in 100 ms');
    now += 50;
    assert.equal(buckets.take('a'), 50);
    now += 10_000;
    assert.deepEqual([buckets.take('a'), buckets.take('a'), buckets.take('a')], [0, 0, 0]);
    assert.ok(buckets.take('a') > 0, 'never more than the burst');
    assert.equal(new TokenBuckets(0, 1, () => now).take('x'), 0, 'a rate of 0 is no limit');
  });

  test('memory stays bounded: refilled buckets are swept, and past maxKeys the least recently used goes', () => {
    let now = 0;
    const buckets = new TokenBuckets(10, 5, () => now, 1000);
    for (let i = 0; i < 500; i += 1) buckets.take(`k${i}`);
    assert.equal(buckets.size, 500);
    now += 9_999; // every bucket has refilled (1 token used, 10/s), but no sweep is due yet
    buckets.take('fresh');
    assert.equal(buckets.size, 501);
    now += 1; // the sweep runs at most every 10 s
    buckets.take('fresh');
    assert.equal(buckets.size, 1, 'the sweep dropped the refilled buckets');

    // 2,000 keys inside one sweep interval: never more than maxKeys held.
    for (let i = 0; i < 2000; i += 1) {
      for (let j = 0; j < 5; j += 1) buckets.take(`flood${i}`);
      assert.ok(buckets.size <= 1000);
    }
    // The most recently used survive; an evicted key starts full again.
    assert.ok(buckets.take('flood1999') > 0, 'a recent, empty bucket is kept');
    assert.equal(buckets.take('flood0'), 0, 'the oldest was evicted');
  });

  test('client addresses: IPv4-mapped as IPv4, IPv6 by /64', () => {
    assert.equal(addressKey('127.0.0.1'), '127.0.0.1');
    assert.equal(addressKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:DB8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
    assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
  });
});

// ---------------------------------------------------------------------------------------------
// metrics.ts
// ---------------------------------------------------------------------------------------------

describe('metrics on prom-client', () => {
  test('LabelCounts: plain numbers per label value, rendered as a counter; values outside the set count as the fallback', async () => {
    const registry = new Registry();
    const counts = new LabelCounts(registry, { name: 'x_total', help: 'Help with \\ and\nnewline', label: 'type', values: ['a', 'b'], fallback: 'other' });
    let text = await registry.metrics();
    assert.match(text, /^# HELP x_total Help with \\\\ and\\nnewline$/m);
    assert.match(text, /^# TYPE x_total counter$/m);
    assert.doesNotMatch(text, /^x_total/m, 'labelled series have no sample before the first count');
    counts.add('a');
    counts.add('a', 2);
    counts.add('user-alice');
    counts.add({ type: 'a' });
    counts.add('b', 0);
    counts.add('b', -1);
    counts.add('b', NaN);
    for (let scrape = 0; scrape < 2; scrape++) {
      text = await registry.metrics();
      assert.match(text, /^x_total\{type="a"\} 3$/m);
      assert.match(text, /^x_total\{type="other"\} 2$/m);
      assert.doesNotMatch(text, /type="b"|alice/, 'no sample for 0, a negative or NaN amount; no foreign label value');
    }
    assert.equal(counts.get('a'), 3);
    assert.equal(counts.total(), 5);
  });

  test('scraped gauges are read at scrape time; a throwing or non-finite read skips the sample, not the scrape', async () => {
    const registry = new Registry();
    let value = 1;
    scrapedGauge(registry, 'collected', 'c', () => value);
    scrapedGauge(registry, 'broken', 'b', () => {
      throw new Error('nope');
    });
    scrapedGauge(registry, 'nan', 'n', () => NaN);
    let text = await registry.metrics();
    assert.match(text, /^collected 1$/m);
    assert.doesNotMatch(text, /^broken /m);
    assert.match(text, /^# TYPE broken gauge$/m);
    assert.doesNotMatch(text, /^nan /m);
    value = 7;
    text = await registry.metrics();
    assert.match(text, /^collected 7$/m);
    value = Infinity;
    assert.doesNotMatch(await registry.metrics(), /^collected /m);
    value = 2;
    assert.match(await registry.metrics(), /^collected 2$/m, 'a gauge that skipped a scrape comes back');
  });

  test('oncePerScrape reads once per synchronous pass', async () => {
    let reads = 0;
    const read = oncePerScrape(() => ++reads);
    assert.equal(read() + read(), 2);
    await Promise.resolve();
    assert.equal(read(), 2);
  });

  test('a label the metric does not declare is refused (no user id can become a label)', () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'z_total', help: 'z', labelNames: ['type'] as const, registers: [registry] });
    assert.throws(() => counter.inc({ type: 'a', userId: 'alice' } as never), /userId/);
    assert.throws(() => new Counter({ name: 'z_total', help: 'dup', registers: [registry] }), /already been registered/);
  });

  test('the process metrics are the standard process_* and nodejs_* ones, collected once per process', async () => {
    assert.equal(processMetrics(), processMetrics());
    const text = await processMetrics().metrics();
    assert.match(text, /^process_cpu_seconds_total [\d.e+-]+$/m);
    assert.match(text, /^process_resident_memory_bytes \d+$/m);
    assert.match(text, /^nodejs_eventloop_lag_seconds [\d.e+-]+$/m);
    assert.match(text, /^nodejs_heap_size_used_bytes \d+$/m);
    assert.doesNotMatch(text, /^presence_/m);
  });

  test('presence metrics bound client-supplied label values and close cleanly', async () => {
    const registry = new Registry();
    let calls = 0;
    const metrics = createPresenceMetrics(registry, () => {
      calls++;
      return { connections: 10, sessions: 12, onlineUsers: 7, channels: 2 };
    });
    try {
      metrics.commandReceived('join');
      metrics.commandReceived('alice-secret-type');
      metrics.commandReceived({ type: 'x' });
      metrics.messageSent('presence.update', 3);
      metrics.messageSent('presence.update', 0);
      metrics.errorSent('RATE_LIMITED');
      metrics.errorSent('made-up');
      metrics.connectionOpened();
      metrics.connectionClosed(4001);
      metrics.connectionClosed(3999);
      metrics.observeFanout(0.002);
      metrics.observeFanout(NaN);
      const text = await registry.metrics();
      assert.equal(calls, 1, 'one stats() snapshot per scrape');
      for (const line of [
        'presence_connections 10',
        'presence_sessions 12',
        'presence_online_users 7',
        'presence_channels 2',
        'presence_events_in_total{type="join"} 1',
        'presence_events_in_total{type="unknown"} 2',
        'presence_events_out_total{type="presence.update"} 3',
        'presence_errors_total{code="RATE_LIMITED"} 1',
        'presence_errors_total{code="INTERNAL"} 1',
        'presence_connections_opened_total 1',
        'presence_connections_closed_total{code="4001"} 1',
        'presence_connections_closed_total{code="other"} 1',
        'presence_fanout_latency_seconds_bucket{le="0.001"} 0',
        'presence_fanout_latency_seconds_bucket{le="0.0025"} 1',
        'presence_fanout_latency_seconds_count 1',
      ]) {
        assert.ok(text.includes(`${line}\n`), `expected ${line}`);
      }
      assert.ok(!text.includes('alice'));
      assert.match(text, /^presence_process_resident_memory_bytes \d+$/m);
      assert.match(text, /^presence_event_loop_lag_seconds [\d.e-]+$/m);
      assert.equal(metrics.eventsIn.total(), 3);
      assert.equal(metrics.eventsOut.total(), 3);
    } finally {
      metrics.close();
      metrics.close();
    }
  });
});
