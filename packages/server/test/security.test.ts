/**
 * Attacks against a live server, each asserted by the code docs/errors.md documents for it: forged,
 * expired and misdirected tokens; one user acting as another; channel allowlist bypasses; foreign
 * origins; too many sessions; command floods; oversized and malformed handshakes; secrets leaking
 * into logs or metrics. docs/security.md maps every threat and limit to the test that covers it,
 * including the cases other test files already cover (protocol.test.ts, auth.test.ts,
 * auth-integration.test.ts, http-api.test.ts), which are not repeated here.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SignJWT, exportJWK, type JWTPayload } from 'jose';
import WebSocket from 'ws';
import type { ServerMessage } from '@presence/protocol';
import { resolveConfig } from '../src/config/config.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { ClusterNode, eventually } from './support/cluster-nodes.js';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
type Msg<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

const SECRET = 'security-test-secret-0123456789-abcdefghij';
const API_KEY = 'security-test-api-key-0123456789-abcdef';
const AUDIENCE = 'presence-security';
const ISSUER = 'https://auth.example.com';
const ORIGIN = 'https://app.example.com';

const nowS = (): number => Math.floor(Date.now() / 1000);
/**
 * An attacker's own key pair, made before any server starts: generating an RSA key blocks the
 * event loop long enough for a running server to refuse connections as OVERLOADED.
 */
const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A token the main server accepts, unless `claims` or `secret` say otherwise. */
async function token(sub: string, claims: JWTPayload = {}, secret = SECRET): Promise<string> {
  return new SignJWT({ aud: AUDIENCE, iss: ISSUER, exp: nowS() + 600, ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .sign(new TextEncoder().encode(secret));
}

const validClaims = (sub: string): JWTPayload => ({ sub, aud: AUDIENCE, iss: ISSUER, exp: nowS() + 600 });

/**
 * Expects a refused connection: one `error` frame with `code` (never a `welcome`), then a close
 * with `closeCode` and the code as its reason.
 */
async function refusedAtConnect(
  server: TestServer,
  query: Record<string, string>,
  code: string,
  closeCode: number,
  options?: WebSocket.ClientOptions,
): Promise<void> {
  const client = await TestClient.connect(server, query, options);
  const closed = await Promise.race([client.closed, sleep(3000).then(() => undefined)]);
  client.ws.terminate();
  const what = `connect ${JSON.stringify(query).slice(0, 120)} ${JSON.stringify(options?.headers ?? options?.origin ?? '')}`;
  assert.equal(client.ofType('welcome').length, 0, `${what}: must not be welcomed`);
  const first = client.messages[0] as Msg<'error'> | undefined;
  assert.equal(first?.type, 'error', `${what}: expected an error frame, got ${JSON.stringify(client.messages)}`);
  assert.equal(first.code, code, `${what}: ${first.message}`);
  assert.ok(closed, `${what}: the server did not close`);
  assert.equal(closed.code, closeCode, what);
  assert.equal(closed.reason, code, what);
}

async function connected(server: TestServer, query: Record<string, string>, options?: WebSocket.ClientOptions): Promise<TestClient> {
  const client = await TestClient.connect(server, query, options);
  assert.equal(client.messages[0]?.type, 'welcome', `expected a welcome, got ${JSON.stringify(client.messages[0])}`);
  return client;
}

async function httpError(answer: Promise<{ status: number; body: { error?: { code?: string } } }>, status: number, code: string, what: string): Promise<void> {
  const { status: got, body } = await answer;
  assert.equal(got, status, `${what}: HTTP status`);
  assert.equal(body?.error?.code, code, what);
}

async function refusedCommand(client: TestClient, command: Record<string, unknown>, code: string): Promise<void> {
  const answer = await client.request(command);
  assert.equal(answer.type, 'error', `${JSON.stringify(command)} must be refused with ${code}`);
  assert.equal((answer as Msg<'error'>).code, code, `${JSON.stringify(command)}: ${(answer as Msg<'error'>).message}`);
}

/** Writes raw bytes to the server and collects what comes back until it closes or `timeoutMs` passes. */
function rawExchange(port: number, bytes: string | Buffer, timeoutMs = 3000): Promise<{ response: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = tcpConnect(port, '127.0.0.1', () => socket.write(bytes));
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ response: Buffer.concat(chunks).toString('latin1'), closed, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
  });
}

function upgradeRequest(port: number, path: string, extraHeaders: string[] = []): string {
  return [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...extraHeaders,
    '',
    '',
  ].join('\r\n');
}

/** A GET whose path goes out exactly as written (fetch would normalize `..` and encodings). */
function rawGet(port: number, path: string, bearer: string): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { authorization: `Bearer ${bearer}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(body) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, code });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------

describe('security: a server with tokens, an API key, an origin allowlist and default rate limits', () => {
  let server: TestServer;
  const clients: TestClient[] = [];
  const open = async (sub: string, claims: JWTPayload = {}, query: Record<string, string> = {}): Promise<TestClient> => {
    const client = await connected(server, { token: await token(sub, claims), ...query });
    clients.push(client);
    return client;
  };
  const presenceOf = async (userId: string) => {
    const { status, body } = await httpJson(server, `/realtime/users/${encodeURIComponent(userId)}/presence`, { bearer: API_KEY });
    assert.equal(status, 200);
    return body.user as { status: string; message?: string; meta: Record<string, unknown> };
  };

  before(async () => {
    server = await startTestServer({
      auth: { jwtSecret: SECRET, apiKey: API_KEY, jwtAudience: AUDIENCE, jwtIssuer: ISSUER },
      allowedOrigins: [ORIGIN],
      // Load shedding is overload.test.ts's subject; here a busy machine would turn refusals into OVERLOADED.
      limits: { maxSessionsPerUser: 3, maxEventLoopLagMs: 0 },
      heartbeatIntervalMs: 20_000,
    });
  });
  after(async () => {
    for (const client of clients) client.ws.terminate();
    await server.shutdown();
  });

  describe('tokens', () => {
    test('alg "none" in any spelling, with or without a signature, is UNAUTHORIZED (4001 / 401)', async () => {
      const real = await token('mallory');
      const realSignature = real.split('.')[2];
      const payload = b64(validClaims('mallory'));
      const forged = [
        `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`,
        `${b64({ alg: 'None' })}.${payload}.`,
        `${b64({ alg: 'nOnE' })}.${payload}.`,
        `${b64({ alg: 'none' })}.${payload}.${realSignature}`,
        `${b64({ typ: 'JWT' })}.${payload}.`,
        `${b64({ alg: 'HS256' })}.${payload}.`,
        `${b64({ alg: '' })}.${payload}.`,
      ];
      for (const jwt of forged) {
        await refusedAtConnect(server, { token: jwt }, 'UNAUTHORIZED', 4001);
        await httpError(httpJson(server, '/realtime/users/mallory/presence', { bearer: jwt }), 401, 'UNAUTHORIZED', `HTTP with ${jwt.slice(0, 40)}`);
        await httpError(
          httpJson(server, '/realtime/presence/update', { bearer: jwt, body: { status: 'busy' } }),
          401,
          'UNAUTHORIZED',
          'HTTP update',
        );
      }
      assert.equal((await presenceOf('mallory')).status, 'offline');
    });

    test('expired tokens are TOKEN_EXPIRED, not-yet-valid ones UNAUTHORIZED (4001 / 401)', async () => {
      const expired = await token('late', { exp: nowS() - 60 });
      await refusedAtConnect(server, { token: expired }, 'TOKEN_EXPIRED', 4001);
      await httpError(httpJson(server, '/realtime/users/late/presence', { bearer: expired }), 401, 'TOKEN_EXPIRED', 'HTTP expired');
      const early = await token('early', { nbf: nowS() + 600 });
      await refusedAtConnect(server, { token: early }, 'UNAUTHORIZED', 4001);
      await httpError(httpJson(server, '/realtime/users/early/presence', { bearer: early }), 401, 'UNAUTHORIZED', 'HTTP nbf');
    });

    test('wrongly signed and tampered tokens are UNAUTHORIZED (4001 / 401)', async () => {
      const good = await token('victim');
      const [header, , signature] = good.split('.');
      const tampered = `${header}.${b64(validClaims('admin'))}.${signature}`;
      const otherSecret = await token('victim', {}, 'a-different-secret-of-plenty-of-length');
      // The API key is a credential for backends, never a signing key for user tokens.
      const apiKeySigned = await token('victim', {}, API_KEY);
      // An attacker's own key embedded in the header (the "jwk" header injection).
      const embedded = await new SignJWT(validClaims('victim'))
        .setProtectedHeader({ alg: 'RS256', jwk: await exportJWK(attacker.publicKey) })
        .sign(attacker.privateKey);
      const kidTraversal = await new SignJWT(validClaims('victim'))
        .setProtectedHeader({ alg: 'HS256', kid: '../../../../dev/null' })
        .sign(new TextEncoder().encode(''.padEnd(32, '\0')));
      for (const [what, jwt] of Object.entries({ tampered, otherSecret, apiKeySigned, embedded, kidTraversal })) {
        await refusedAtConnect(server, { token: jwt }, 'UNAUTHORIZED', 4001);
        await httpError(httpJson(server, '/realtime/users/victim/presence', { bearer: jwt }), 401, 'UNAUTHORIZED', what);
      }
    });

    test('a wrong or missing audience or issuer is UNAUTHORIZED (4001 / 401)', async () => {
      const cases: Record<string, JWTPayload> = {
        'other audience': { aud: 'another-app' },
        'audience list without ours': { aud: ['another-app', `${AUDIENCE}x`] },
        'no audience': { aud: undefined },
        'audience differing in case': { aud: AUDIENCE.toUpperCase() },
        'other issuer': { iss: 'https://evil.example.com' },
        'issuer with a trailing slash': { iss: `${ISSUER}/` },
        'no issuer': { iss: undefined },
      };
      for (const [what, claims] of Object.entries(cases)) {
        const jwt = await token('misdirected', claims);
        await refusedAtConnect(server, { token: jwt }, 'UNAUTHORIZED', 4001);
        await httpError(httpJson(server, '/realtime/users/misdirected/presence', { bearer: jwt }), 401, 'UNAUTHORIZED', what);
      }
      // The audience in a list is accepted.
      const ok = await connected(server, { token: await token('listed', { aud: ['another-app', AUDIENCE] }) });
      clients.push(ok);
    });

    test('the token in the query is the one checked: a good Authorization header does not rescue a bad one', async () => {
      const good = await token('placement');
      await refusedAtConnect(server, { token: 'not-a-jwt' }, 'UNAUTHORIZED', 4001, { headers: { authorization: `Bearer ${good}` } });
      // Dev-mode ?userId= means nothing once auth is configured.
      await refusedAtConnect(server, { userId: 'placement' }, 'UNAUTHORIZED', 4001);
      const viaHeader = await connected(server, {}, { headers: { authorization: `Bearer ${good}` } });
      clients.push(viaHeader);
      assert.equal(viaHeader.welcome.userId, 'placement');
    });

    test('a user id like __proto__ or constructor is an ordinary, isolated user', async () => {
      const proto = await open('__proto__', { name: 'Proto' });
      const ctor = await open('constructor');
      assert.equal((await proto.request({ type: 'join', channel: '__proto__' })).type, 'ack');
      assert.equal((await ctor.request({ type: 'join', channel: '__proto__' })).type, 'ack');
      const sync = (await ctor.waitFor((m) => m.type === 'presence.sync' && m.channel === '__proto__')) as Msg<'presence.sync'>;
      assert.deepEqual(sync.members.map((m) => m.userId).sort(), ['__proto__', 'constructor']);
      assert.deepEqual((await presenceOf('__proto__')).meta, { name: 'Proto' });
      assert.equal((await presenceOf('toString')).status, 'offline', 'an unknown id named like an Object method is just unknown');
      assert.equal(({} as Record<string, unknown>).name, undefined);
    });
  });

  describe('one user acting as another', () => {
    test('WebSocket commands naming another user change only the sender; logout logs out only the sender', async () => {
      // See also auth-integration.test.ts ("a user can never change another user's presence").
      const victim = await open('ws-victim', { name: 'Victim' });
      const mallory = await open('ws-mallory');
      await victim.request({ type: 'join', channel: 'shared' });
      await mallory.request({ type: 'join', channel: 'shared' });
      victim.drain();
      for (const command of [
        { type: 'status', status: 'invisible', userId: 'ws-victim' },
        { type: 'meta', meta: { name: 'pwned' }, userId: 'ws-victim', user: 'ws-victim' },
        { type: 'channel.meta', channel: 'shared', meta: { role: 'owner' }, userId: 'ws-victim' },
        { type: 'leave', channel: 'shared', userId: 'ws-victim', sessionId: victim.welcome.sessionId },
      ]) {
        await mallory.request(command);
      }
      const seen = await presenceOf('ws-victim');
      assert.equal(seen.status, 'online');
      assert.deepEqual(seen.meta, { name: 'Victim' });
      const members = await httpJson(server, '/realtime/channels/shared/presence', { bearer: API_KEY });
      assert.deepEqual(members.body.members.map((m: { userId: string }) => m.userId), ['ws-victim'], 'only mallory left the channel');
      assert.ok(
        !victim.messages.some((m) => (m.type === 'presence.update' || m.type === 'presence.leave') && ('member' in m ? m.member.userId : m.userId) === 'ws-victim'),
        'nobody was told the victim changed',
      );
      const ack = await mallory.request({ type: 'logout', userId: 'ws-victim' });
      assert.equal(ack.type, 'ack');
      assert.equal((await mallory.closed).code, 1000);
      assert.equal(victim.ws.readyState, WebSocket.OPEN, 'the victim is still connected');
      assert.equal((await presenceOf('ws-victim')).status, 'online');
    });

    test("another user's sessionId is never resumed and does not close its owner", async () => {
      const owner = await open('session-owner');
      await owner.request({ type: 'join', channel: 'private-room' });
      const thief = await open('session-thief', {}, { sessionId: owner.welcome.sessionId });
      assert.equal(thief.welcome.resumed, false);
      assert.notEqual(thief.welcome.sessionId, owner.welcome.sessionId);
      assert.equal(thief.ofType('presence.sync').length, 0, "the owner's channels are not handed over");
      await sleep(50);
      assert.equal(owner.ws.readyState, WebSocket.OPEN, 'no SESSION_REPLACED for the owner');
    });

    test('HTTP updates with a user token naming anyone else are 403 FORBIDDEN and change nothing', async () => {
      const victim = await open('http-victim');
      const mallory = await token('http-mallory');
      for (const userId of ['http-victim', 'HTTP-VICTIM', 'http-victim ', ['http-victim'], { id: 'http-victim' }, null, 42, '']) {
        await httpError(
          httpJson(server, '/realtime/presence/update', { bearer: mallory, body: { userId, status: 'away', message: 'pwned' } }),
          403,
          'FORBIDDEN',
          `userId ${JSON.stringify(userId)}`,
        );
      }
      await httpError(
        httpJson(server, '/realtime/presence/update', { bearer: mallory, body: { userId: 'http-victim', status: 'offline' } }),
        403,
        'FORBIDDEN',
        'logging the victim out',
      );
      await httpError(httpJson(server, '/realtime/presence/update', { bearer: mallory, body: { contacts: ['http-victim'] } }), 403, 'FORBIDDEN', 'contacts');
      await sleep(50);
      assert.equal(victim.ws.readyState, WebSocket.OPEN);
      const seen = await presenceOf('http-victim');
      assert.equal(seen.status, 'online');
      assert.equal(seen.message, undefined);
    });
  });

  describe('channel allowlist', () => {
    test('encoded, look-alike and pattern-like names never pass the allowlist over WebSocket', async () => {
      const client = await open('limited', { channels: ['room:*', 'doc:42'] });
      for (const channel of ['room:1', 'room:', 'doc:42']) assert.equal((await client.request({ type: 'join', channel })).type, 'ack', channel);
      const forbidden = ['other:1', 'ROOM:1', 'Room:1', 'doc:4', 'doc:420', 'doc:42:x', 'xroom:1', 'roo', 'room', '.room:1', 'doc.42'];
      for (const channel of forbidden) await refusedCommand(client, { type: 'join', channel }, 'CHANNEL_FORBIDDEN');
      const invalid = [
        'room%3A1',
        'room%253A1',
        'other%3A1',
        'room:*',
        'doc:4*',
        'room:1/../other:1',
        '../other:1',
        'room：1', // a fullwidth colon
        'rοom:1', // a Greek omicron
        'room:1\n',
        'room:1\u0000',
        ' room:1',
        'room:1 ',
        '',
        `room:${'x'.repeat(124)}`,
      ];
      for (const channel of invalid) await refusedCommand(client, { type: 'join', channel }, 'INVALID_CHANNEL');
      for (const channel of [['room:1'], { name: 'room:1' }, 42, null]) await refusedCommand(client, { type: 'join', channel }, 'INVALID_MESSAGE');
      // Having failed to join, nothing reaches the channel's members either.
      await refusedCommand(client, { type: 'typing', channel: 'other:1', typing: true }, 'NOT_IN_CHANNEL');
      await refusedCommand(client, { type: 'channel.meta', channel: 'other:1', meta: { x: 1 } }, 'NOT_IN_CHANNEL');
      for (const channel of ['other:1', 'ROOM:1', 'doc:4']) {
        const { body } = await httpJson(server, `/realtime/channels/${encodeURIComponent(channel)}/presence`, { bearer: API_KEY });
        assert.equal(body.count, 0, channel);
      }
    });

    test('regex and glob syntax in the claim is literal; an empty claim admits nothing', async () => {
      const tricky = await open('tricky', { channels: ['team.*', 'room:[0-9]', '(.*)', 'a|b', '^admin$'] });
      assert.equal((await tricky.request({ type: 'join', channel: 'team.7' })).type, 'ack');
      for (const channel of ['teamX7', 'room:5', 'admin', 'a', 'b', 'anything']) await refusedCommand(tricky, { type: 'join', channel }, 'CHANNEL_FORBIDDEN');
      const none = await open('no-channels', { channels: [] });
      await refusedCommand(none, { type: 'join', channel: 'room:1' }, 'CHANNEL_FORBIDDEN');
      // A claim of the wrong type fails the whole token rather than allowing everything.
      await refusedAtConnect(server, { token: await token('bad-claim', { channels: 'room:*' }) }, 'UNAUTHORIZED', 4001);
      await refusedAtConnect(server, { token: await token('bad-claim', { channels: [null] }) }, 'UNAUTHORIZED', 4001);
    });

    test('over HTTP, names are decoded once and then checked like WebSocket names', async () => {
      const jwt = await token('limited-http', { channels: ['room:*'] });
      const cases: [string, number, string | undefined][] = [
        ['/realtime/channels/room:1/presence', 200, undefined],
        ['/realtime/channels/room%3A1/presence', 200, undefined],
        ['/realtime/channels/other:1/presence', 403, 'CHANNEL_FORBIDDEN'],
        ['/realtime/channels/other%3A1/presence', 403, 'CHANNEL_FORBIDDEN'],
        ['/realtime/channels/room%253A1/presence', 400, 'INVALID_CHANNEL'],
        ['/realtime/channels/room:1%2F..%2Fother:1/presence', 400, 'INVALID_CHANNEL'],
        ['/realtime/channels/room:1%00/presence', 400, 'INVALID_CHANNEL'],
        ['/realtime/channels/room%3A%E0%A4/presence', 400, 'INVALID_CHANNEL'],
        ['/realtime/channels/room:*/presence', 400, 'INVALID_CHANNEL'],
        ['/realtime/channels/room:1/../other:1/presence', 404, 'NOT_FOUND'],
        ['/realtime/channels/room:1/presence/../../other:1/presence', 404, 'NOT_FOUND'],
        ['/realtime/channels//presence', 404, 'NOT_FOUND'],
      ];
      for (const [path, status, code] of cases) {
        const answer = await rawGet(server.port, path, jwt);
        assert.equal(answer.status, status, path);
        assert.equal(answer.code, code, path);
      }
    });
  });

  describe('origin', () => {
    test('every foreign or malformed Origin is ORIGIN_FORBIDDEN (4003), checked before the token', async () => {
      const jwt = await token('origin-user');
      // See also auth-integration.test.ts (foreign, suffix, scheme and "null" origins).
      for (const origin of [
        'https://app.example.com.evil.example',
        'https://app.example.com:8443',
        'https://app.example.com/',
        'https://app.example.com/path',
        'https://evil.example/https://app.example.com',
        'https://app.example.com@evil.example',
        'https://evil.example#https://app.example.com',
        'wss://app.example.com',
        'https://app.example.co',
        'file://',
        '*',
      ]) {
        await refusedAtConnect(server, { token: jwt }, 'ORIGIN_FORBIDDEN', 4003, { origin });
      }
      // The order of checks: a foreign page learns nothing about tokens.
      await refusedAtConnect(server, { token: 'garbage' }, 'ORIGIN_FORBIDDEN', 4003, { origin: 'https://evil.example' });
      // Case does not matter to browsers, so it does not matter here.
      clients.push(await connected(server, { token: jwt }, { origin: 'HTTPS://APP.EXAMPLE.COM' }));
    });

    test('two Origin headers (allowed plus foreign) are refused', async () => {
      const jwt = await token('two-origins');
      const { response } = await rawExchange(
        server.port,
        upgradeRequest(server.port, `/realtime?token=${jwt}`, [`Origin: ${ORIGIN}`, 'Origin: https://evil.example']),
        1500,
      );
      assert.match(response, /^HTTP\/1\.1 101/);
      assert.match(response, /"code":"ORIGIN_FORBIDDEN"/);
      assert.doesNotMatch(response, /"welcome"/);
    });

    test('HTTP from a foreign origin is 403 ORIGIN_FORBIDDEN even with the API key', async () => {
      // See also http-api.test.ts (HTTP API CORS).
      const response = await fetch(`${server.url}/realtime/presence/update`, {
        method: 'POST',
        headers: { origin: 'https://evil.example', authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'csrf-target', status: 'busy' }),
      });
      assert.equal(response.status, 403);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'ORIGIN_FORBIDDEN');
      assert.equal(response.headers.get('access-control-allow-origin'), null);
    });
  });

  describe('limits', () => {
    test('too many sessions of one user: TOO_MANY_SESSIONS (4029); live sessions and other users are untouched', async () => {
      // See also protocol.test.ts (sessions per user in development mode, TOO_MANY_CONNECTIONS).
      const tabs = [await open('many-tabs'), await open('many-tabs'), await open('many-tabs')];
      await tabs[0].request({ type: 'join', channel: 'tabs' });
      tabs[0].drain();
      for (let i = 0; i < 5; i += 1) await refusedAtConnect(server, { token: await token('many-tabs') }, 'TOO_MANY_SESSIONS', 4029);
      for (const tab of tabs) assert.equal(tab.ws.readyState, WebSocket.OPEN);
      assert.equal((await tabs[0].request({ type: 'activity' })).type, 'ack');
      assert.deepEqual(tabs[0].drain().filter((m) => m.type.startsWith('presence.')), [], 'refusals announce nothing');
      clients.push(await connected(server, { token: await token('someone-else') }));
    });

    test('a command flood at the default limits: the burst runs, the excess is RATE_LIMITED, a continued flood is closed with 4008', async () => {
      // See also protocol.test.ts (rate limit with small configured limits).
      const { rateLimitBurst } = server.config.limits;
      const bystander = await open('flood-bystander');
      await bystander.request({ type: 'join', channel: 'flood-room' });
      const flooder = await open('flooder');
      await flooder.request({ type: 'join', channel: 'flood-room' });
      for (let i = 0; i < 1000; i += 1) flooder.sendRaw(JSON.stringify({ type: 'status', status: i % 2 ? 'away' : 'busy', ref: i }));
      const closed = await Promise.race([flooder.closed, sleep(5000).then(() => undefined)]);
      assert.ok(closed, 'the flooder was not closed');
      assert.equal(closed.code, 4008);
      assert.equal(closed.reason, 'RATE_LIMITED');
      const acks = flooder.ofType('ack').length;
      const limited = flooder.ofType('error').filter((m) => m.code === 'RATE_LIMITED');
      // The burst, plus what the bucket refilled (50/s) while the flood was being read.
      assert.ok(acks >= rateLimitBurst && acks < rateLimitBurst + 50, `${acks} commands ran`);
      assert.ok(limited.length > rateLimitBurst, `${limited.length} refusals`);
      assert.equal(limited.at(-1)?.ref, undefined, 'the closing RATE_LIMITED carries no ref');
      // The bystander saw at most one update per accepted command, and still works.
      const started = performance.now();
      assert.equal((await bystander.request({ type: 'activity' })).type, 'ack');
      assert.ok(performance.now() - started < 1000);
      assert.ok(bystander.ofType('presence.update').length <= acks);
    });

    test('invalid frames count against the rate limit too', async () => {
      const flooder = await open('garbage-flooder');
      for (let i = 0; i < 400; i += 1) flooder.sendRaw(i % 2 ? '{' : Buffer.from([1, 2, 3]), i % 2 === 0);
      const closed = await Promise.race([flooder.closed, sleep(5000).then(() => undefined)]);
      assert.equal(closed?.code, 4008);
      const codes = new Set(flooder.ofType('error').map((m) => m.code));
      assert.deepEqual([...codes].sort(), ['BINARY_NOT_SUPPORTED', 'INVALID_JSON', 'RATE_LIMITED']);
    });

    test('a refused connection whose client never answers the close is cut within about a second', async () => {
      // Regression: ws waits 30 s for the closing handshake by default, so refused (never
      // authenticated, never counted) sockets could be held open by the thousand.
      for (const [what, path, headers] of [
        ['bad token', '/realtime?token=garbage', []],
        ['foreign origin', `/realtime?token=${await token('linger')}`, ['Origin: https://evil.example']],
      ] as const) {
        const { response, closed, ms } = await rawExchange(server.port, upgradeRequest(server.port, path, [...headers]), 5000);
        assert.match(response, /^HTTP\/1\.1 101/, what);
        assert.ok(closed, `${what}: the server kept the socket open`);
        assert.ok(ms < 2500, `${what}: closed after ${ms} ms`);
      }
    });

    test('oversized handshakes are refused at the HTTP level with a bare 400; the server keeps serving', async () => {
      const cases: [string, string][] = [
        ['a 20 KiB URL', upgradeRequest(server.port, `/realtime?token=${'a'.repeat(20 * 1024)}`)],
        ['a 20 KiB header', upgradeRequest(server.port, '/realtime', [`Cookie: c=${'b'.repeat(20 * 1024)}`])],
        ['a 20 KiB Authorization header', upgradeRequest(server.port, '/realtime', [`Authorization: Bearer ${'c'.repeat(20 * 1024)}`])],
        ['2,000 headers', upgradeRequest(server.port, '/realtime', Array.from({ length: 2000 }, (_, i) => `X-Filler-${i}: ${'d'.repeat(8)}`))],
      ];
      for (const [what, request] of cases) {
        const { response, closed } = await rawExchange(server.port, request);
        assert.match(response, /^HTTP\/1\.1 400 /, what);
        assert.doesNotMatch(response, /101 Switching/, what);
        assert.ok(closed, `${what}: connection closed`);
      }
      // Under the header limit, a long token is simply not a valid token.
      await refusedAtConnect(server, { token: `${'e'.repeat(12 * 1024)}.x.y` }, 'UNAUTHORIZED', 4001);
      clients.push(await connected(server, { token: await token('after-oversized') }));
    });

    test('malformed upgrades are refused without a WebSocket', async () => {
      const bad = (headers: string[], path = '/realtime') =>
        [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${server.port}`, ...headers, '', ''].join('\r\n');
      const key = `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`;
      const cases: [string, string, RegExp][] = [
        ['wrong version', bad(['Upgrade: websocket', 'Connection: Upgrade', key, 'Sec-WebSocket-Version: 99']), /^HTTP\/1\.1 400 /],
        ['no key', bad(['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13']), /^HTTP\/1\.1 400 /],
        ['short key', bad(['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: c2hvcnQ=', 'Sec-WebSocket-Version: 13']), /^HTTP\/1\.1 400 /],
        ['another path', upgradeRequest(server.port, '/admin'), /^HTTP\/1\.1 404 /],
        ['a longer path', upgradeRequest(server.port, '/realtime/x'), /^HTTP\/1\.1 404 /],
        ['a path in another case', upgradeRequest(server.port, '/Realtime'), /^HTTP\/1\.1 404 /],
      ];
      for (const [what, request, status] of cases) {
        const { response } = await rawExchange(server.port, request, 1500);
        assert.match(response, status, `${what}: ${response.split('\r\n')[0]}`);
        assert.doesNotMatch(response, /101 Switching/, what);
      }
    });
  });
});

describe('security: names like __proto__ across nodes', () => {
  test('members of channels named __proto__, constructor or toString on two nodes see each other', async () => {
    // Regression: a session snapshot assigned `channels['__proto__'] = …`, which set the snapshot's
    // prototype instead of adding the channel, so the channel never reached the other nodes.
    const hub = new MemoryHub();
    const nodes = [await ClusterNode.start({ service: new MemoryService(hub) }), await ClusterNode.start({ service: new MemoryService(hub) })];
    try {
      for (const channel of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
        const here = await nodes[0].connect(`here-${channel}`);
        const there = await nodes[1].connect(`there-${channel}`);
        await nodes[0].send(here, { type: 'join', channel });
        await nodes[1].send(there, { type: 'join', channel });
        const both = [`here-${channel}`, `there-${channel}`];
        for (const node of nodes) {
          await eventually(
            () => node.engine.channelPresence(channel, { limit: 10 }).members.length === 2,
            3000,
            `channel ${channel} on both nodes`,
          );
          assert.deepEqual(node.engine.channelPresence(channel, { limit: 10 }).members.map((m) => m.userId).sort(), both);
        }
      }
      assert.equal(({} as Record<string, unknown>).meta, undefined);
    } finally {
      for (const node of nodes) await node.stop();
    }
  });
});

describe('security: secrets stay out of logs, metrics and error messages', () => {
  test('tokens, the API key and the JWT secret never appear in any log line or in /metrics', async () => {
    const lines: string[] = [];
    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      offlineDelayMs: 100,
      auth: { jwtSecret: SECRET, apiKey: API_KEY },
      logLevel: 'debug',
    });
    const running = await startServer(config, { log: createLogger('debug', (line) => lines.push(line)) });
    const server = { ...running, config, wsUrl: `ws://127.0.0.1:${running.port}/realtime` };
    const good = await new SignJWT({ exp: nowS() + 600 }).setProtectedHeader({ alg: 'HS256' }).setSubject('secret-keeper').sign(new TextEncoder().encode(SECRET));
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('forger').sign(new TextEncoder().encode('not-the-secret-but-long-enough-000'));
    const expired = await new SignJWT({ exp: nowS() - 60 }).setProtectedHeader({ alg: 'HS256' }).setSubject('late').sign(new TextEncoder().encode(SECRET));
    try {
      const client = await connected(server, { token: good });
      await client.request({ type: 'join', channel: 'logs' });
      await client.request({ type: 'status', status: 'sleeping' });
      client.sendRaw('{not json');
      for (const jwt of [forged, expired, 'garbage.token.value']) {
        const refused = await TestClient.connect(server, { token: jwt });
        await refused.closed;
      }
      const answers = [
        await httpJson(server, '/realtime/users/secret-keeper/presence', { bearer: good }),
        await httpJson(server, '/realtime/users/secret-keeper/presence', { bearer: forged }),
        await httpJson(server, '/realtime/users/secret-keeper/presence', { bearer: expired }),
        await httpJson(server, '/realtime/users/secret-keeper/presence', { bearer: API_KEY }),
        await httpJson(server, '/realtime/users/secret-keeper/presence', { bearer: `${API_KEY}x` }),
        await httpJson(server, '/realtime/presence/update', { bearer: API_KEY, body: { userId: 'secret-keeper', bogus: 1 } }),
      ];
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      await client.close();
      await running.shutdown();
      assert.ok(lines.length > 0, 'the server logged something');
      const exposed = [...lines, metrics, ...answers.map((a) => a.text)].join('\n');
      for (const [what, secret] of Object.entries({ good, forged, expired, apiKey: API_KEY, jwtSecret: SECRET })) {
        assert.ok(!exposed.includes(secret), `${what} leaked`);
        // Not even a recognizable piece of it (a token's signature, the key's tail).
        assert.ok(!exposed.includes(secret.slice(-16)), `a piece of ${what} leaked`);
      }
      assert.ok(!metrics.includes('secret-keeper'), 'user ids are not metric labels');
    } finally {
      await running.shutdown();
    }
  });
});
