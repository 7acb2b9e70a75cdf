/**
 * Authentication, authorization and privacy against a real server: real `ws` clients and `fetch`
 * over loopback, real JWTs (HS256, RS256, ES256) minted with jose.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SignJWT, type JWTPayload } from 'jose';
import type { ServerMessage, UserPresence } from '@presence/protocol';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const SECRET = 'auth-integration-secret-of-at-least-32-bytes';
const API_KEY = 'auth-integration-api-key-0123456789';
const AUDIENCE = 'presence-integration';

const nowS = (): number => Math.floor(Date.now() / 1000);

/** HS256 token for `sub` with an `aud` the main server accepts and a 10-minute life by default. */
async function hsToken(sub: string, claims: JWTPayload = {}, secret = SECRET): Promise<string> {
  return new SignJWT({ aud: AUDIENCE, exp: nowS() + 600, ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .sign(new TextEncoder().encode(secret));
}

async function asymToken(sub: string, alg: 'RS256' | 'ES256', key: KeyObject, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ exp: nowS() + 600, ...claims })
    .setProtectedHeader({ alg, typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .sign(key);
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An unsigned token: what an attacker sends hoping the server honours `alg: none`. */
function noneToken(sub: string): string {
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub, aud: AUDIENCE, exp: nowS() + 600 })}.`;
}

const api = httpJson;

const userPresence = async (server: TestServer, userId: string): Promise<UserPresence> => {
  const { status, body } = await api(server, `/realtime/users/${encodeURIComponent(userId)}/presence`, { bearer: API_KEY });
  assert.equal(status, 200);
  return body.user as UserPresence;
};

/**
 * Connects and expects the server to refuse: an `error` frame with `code`, never a `welcome`,
 * then a close with `closeCode`.
 */
async function expectRefused(
  server: TestServer,
  query: Record<string, string>,
  code: string,
  closeCode: number,
  wsOptions?: ConstructorParameters<typeof TestClient>[1],
): Promise<void> {
  const client = await TestClient.connect(server, query, wsOptions);
  if (client.messages[0]?.type !== 'error') {
    await client.close();
    assert.fail(`expected the connection to be refused with ${code}, got ${JSON.stringify(client.messages[0])}`);
  }
  const closed = await Promise.race([
    client.closed,
    sleep(2000).then(() => {
      client.ws.terminate();
      throw new Error(`the server did not close after ${code}`);
    }),
  ]);
  const first = client.messages[0];
  assert.ok(first, 'expected an error frame before the close');
  assert.equal(first.type, 'error', `expected an error frame, got ${JSON.stringify(client.messages)}`);
  assert.equal((first as Extract<ServerMessage, { type: 'error' }>).code, code);
  assert.equal(client.ofType('welcome').length, 0, 'a refused connection must not be welcomed');
  assert.equal(closed.code, closeCode);
  assert.equal(closed.reason, code);
}

const hiddenView = (userId: string): UserPresence => ({ userId, status: 'offline', meta: {}, lastSeen: null, devices: [] });

describe('WebSocket authentication with HS256 tokens', () => {
  let server: TestServer;
  const clients: TestClient[] = [];
  const connect = async (...args: Parameters<typeof TestClient.connect>): Promise<TestClient> => {
    const client = await TestClient.connect(...args);
    clients.push(client);
    return client;
  };

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY, jwtAudience: AUDIENCE } });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.shutdown();
  });

  test('token in ?token= and in an Authorization header; name/avatar claims reach other members', async () => {
    const alice = await connect(server, {
      token: await hsToken('alice-hs', { name: 'Alice', avatar: 'https://cdn.example/alice.png' }),
    });
    assert.equal(alice.welcome.userId, 'alice-hs');
    assert.equal(alice.welcome.self.meta.name, 'Alice');

    const bob = await connect(server, {}, { headers: { Authorization: `Bearer ${await hsToken('bob-hs', { name: 'Bob' })}` } });
    assert.equal(bob.welcome.userId, 'bob-hs');

    assert.equal((await alice.request({ type: 'join', channel: 'hs-room' })).type, 'ack');
    assert.equal((await bob.request({ type: 'join', channel: 'hs-room' })).type, 'ack');
    const sync = (await bob.waitFor((m) => m.type === 'presence.sync' && m.channel === 'hs-room')) as Extract<
      ServerMessage,
      { type: 'presence.sync' }
    >;
    const seenAlice = sync.members.find((m) => m.userId === 'alice-hs');
    assert.ok(seenAlice, 'bob sees alice in the channel');
    assert.deepEqual(seenAlice.meta, { name: 'Alice', avatar: 'https://cdn.example/alice.png' });
    assert.equal(seenAlice.status, 'online');

    const join = (await alice.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'bob-hs')) as Extract<
      ServerMessage,
      { type: 'presence.join' }
    >;
    assert.deepEqual(join.member.meta, { name: 'Bob' });
  });

  test('bad tokens are refused with UNAUTHORIZED and close 4001', async () => {
    // Signed with another secret.
    await expectRefused(server, { token: await hsToken('mallory', {}, 'another-secret-that-is-long-enough-xx') }, 'UNAUTHORIZED', 4001);
    // alg: none.
    await expectRefused(server, { token: noneToken('mallory') }, 'UNAUTHORIZED', 4001);
    // Garbage, in the query and in the header.
    await expectRefused(server, { token: 'not-a-jwt' }, 'UNAUTHORIZED', 4001);
    await expectRefused(server, { token: 'a.b.c' }, 'UNAUTHORIZED', 4001);
    await expectRefused(server, {}, 'UNAUTHORIZED', 4001, { headers: { Authorization: 'Bearer ey.garbage.x' } });
    // Wrong and missing audience.
    await expectRefused(server, { token: await hsToken('mallory', { aud: 'some-other-app' }) }, 'UNAUTHORIZED', 4001);
    await expectRefused(server, { token: await hsToken('mallory', { aud: undefined }) }, 'UNAUTHORIZED', 4001);
    // None of these made anyone present.
    assert.equal((await userPresence(server, 'mallory')).status, 'offline');
  });

  test('an expired token is refused with TOKEN_EXPIRED and close 4001', async () => {
    await expectRefused(server, { token: await hsToken('late-user', { exp: nowS() - 60 }) }, 'TOKEN_EXPIRED', 4001);
  });

  test('a token just past exp (inside the verifier clock tolerance) is refused, never welcomed and cut', async () => {
    const watcher = await connect(server, { token: await hsToken('skew-watcher') });
    await watcher.request({ type: 'watch', users: ['skew-user'] });
    watcher.drain();
    await expectRefused(server, { token: await hsToken('skew-user', { exp: nowS() - 2 }) }, 'TOKEN_EXPIRED', 4001);
    await sleep(100);
    assert.deepEqual(watcher.drain(), [], 'watchers must not see an online flap');
    assert.equal((await userPresence(server, 'skew-user')).status, 'offline');
  });

  test('no credentials, and ?userId= when auth is configured, are UNAUTHORIZED 4001', async () => {
    await expectRefused(server, {}, 'UNAUTHORIZED', 4001);
    await expectRefused(server, { userId: 'alice-hs' }, 'UNAUTHORIZED', 4001);
    await expectRefused(server, { userId: 'impostor' }, 'UNAUTHORIZED', 4001);
    assert.equal((await userPresence(server, 'impostor')).status, 'offline');
  });

  test('the channels claim is an allowlist: room:* admits room:1 and nothing else', async () => {
    const client = await connect(server, { token: await hsToken('limited', { channels: ['room:*'] }) });
    assert.equal((await client.request({ type: 'join', channel: 'room:1' })).type, 'ack');
    assert.equal((await client.request({ type: 'join', channel: 'room:lobby.2' })).type, 'ack');

    for (const channel of ['other:1', 'room', 'xroom:1', 'Room:1', 'ROOM:1', 'other:room:1', 'roo:1']) {
      const answer = await client.request({ type: 'join', channel });
      assert.equal(answer.type, 'error', `join ${channel} must be refused`);
      assert.equal((answer as Extract<ServerMessage, { type: 'error' }>).code, 'CHANNEL_FORBIDDEN', channel);
    }
    // Names outside the channel alphabet are refused as invalid before the allowlist is consulted.
    for (const channel of ['room;1', 'room:1 ', 'room%3A1', 'room:*', 'room:1\u0000', '']) {
      const answer = await client.request({ type: 'join', channel });
      assert.equal(answer.type, 'error', `join ${JSON.stringify(channel)} must be refused`);
      assert.ok(['CHANNEL_FORBIDDEN', 'INVALID_CHANNEL'].includes((answer as { code: string }).code));
    }
    // Refused joins left nothing behind.
    for (const channel of ['other:1', 'room', 'xroom:1', 'Room:1']) {
      const { body } = await api(server, `/realtime/channels/${encodeURIComponent(channel)}/presence`, { bearer: API_KEY });
      assert.equal(body.count, 0, channel);
    }
    const { body } = await api(server, '/realtime/channels/room:1/presence', { bearer: API_KEY });
    assert.deepEqual(body.members.map((m: { userId: string }) => m.userId), ['limited']);
    // The same allowlist applies to the user's own HTTP reads.
    const token = await hsToken('limited', { channels: ['room:*'] });
    assert.equal((await api(server, '/realtime/channels/room:1/presence', { bearer: token })).status, 200);
    const forbidden = await api(server, '/realtime/channels/other:1/presence', { bearer: token });
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.body.error.code, 'CHANNEL_FORBIDDEN');
  });

  test('visibility contacts: a watcher in the contacts claim sees the user, others get the hidden view', async () => {
    const friend = await connect(server, { token: await hsToken('friend') });
    const stranger = await connect(server, { token: await hsToken('stranger') });
    const carol = await connect(server, { token: await hsToken('carol', { name: 'Carol', contacts: ['friend'] }) });
    for (const watcher of [friend, stranger]) {
      await watcher.request({ type: 'watch', users: ['carol'] });
      const sync = (await watcher.waitFor((m) => m.type === 'user.sync')) as Extract<ServerMessage, { type: 'user.sync' }>;
      assert.equal(sync.users[0].status, 'online', 'visible to everyone by default');
      watcher.drain();
    }

    assert.equal((await carol.request({ type: 'status', visibility: 'contacts' })).type, 'ack');
    const strangerUpdate = (await stranger.waitFor((m) => m.type === 'user.update')) as Extract<ServerMessage, { type: 'user.update' }>;
    assert.deepEqual(strangerUpdate.user, hiddenView('carol'));

    // A fresh watch answers with the same views.
    stranger.drain();
    await stranger.request({ type: 'unwatch', users: ['carol'] });
    await stranger.request({ type: 'watch', users: ['carol'] });
    const strangerSync = stranger.drain().find((m) => m.type === 'user.sync') as Extract<ServerMessage, { type: 'user.sync' }>;
    assert.deepEqual(strangerSync.users, [hiddenView('carol')]);

    friend.drain();
    await friend.request({ type: 'unwatch', users: ['carol'] });
    await friend.request({ type: 'watch', users: ['carol'] });
    const friendSync = friend.drain().find((m) => m.type === 'user.sync') as Extract<ServerMessage, { type: 'user.sync' }>;
    assert.equal(friendSync.users[0].status, 'online');
    assert.equal(friendSync.users[0].meta.name, 'Carol');
    assert.equal(typeof friendSync.users[0].lastSeen, 'string');

    // Later changes reach the contact only.
    assert.equal((await carol.request({ type: 'status', status: 'busy', message: 'heads down' })).type, 'ack');
    const friendUpdate = (await friend.waitFor((m) => m.type === 'user.update' && m.user.status === 'busy')) as Extract<
      ServerMessage,
      { type: 'user.update' }
    >;
    assert.equal(friendUpdate.user.message, 'heads down');
    await sleep(100);
    assert.deepEqual(stranger.drain(), [], 'the stranger learns nothing of the change');

    // The user-query HTTP API applies the same rule to a user's JWT.
    const asStranger = await api(server, '/realtime/users/carol/presence', { bearer: await hsToken('stranger') });
    assert.deepEqual(asStranger.body.user, hiddenView('carol'));
    const asFriend = await api(server, '/realtime/presence/query', { bearer: await hsToken('friend'), body: { userIds: ['carol'] } });
    assert.equal(asFriend.body.users[0].status, 'busy');
  });

  test("a user can never change another user's presence", async () => {
    const alice = await connect(server, { token: await hsToken('owner-a') });
    const bob = await connect(server, { token: await hsToken('owner-b', { name: 'Bob' }) });
    await alice.request({ type: 'join', channel: 'owners' });
    await bob.request({ type: 'join', channel: 'owners' });
    await alice.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'owner-b');

    // There is no WS command addressed to another user: a stray userId changes only the sender.
    const statusAnswer = await alice.request({ type: 'status', status: 'busy', message: 'mine', userId: 'owner-b' });
    const metaAnswer = await alice.request({ type: 'meta', meta: { name: 'Hacked' }, userId: 'owner-b' });
    await sleep(100);
    const bobNow = await userPresence(server, 'owner-b');
    assert.equal(bobNow.status, 'online');
    assert.equal(bobNow.message, undefined);
    assert.deepEqual(bobNow.meta, { name: 'Bob' });
    assert.ok(
      !alice.messages.some((m) => m.type === 'presence.update' && m.member.userId === 'owner-b'),
      'nobody was told that bob changed',
    );
    if (statusAnswer.type === 'ack') {
      const aliceNow = await userPresence(server, 'owner-a');
      assert.equal(aliceNow.status, 'busy', 'the sender changed itself');
      assert.equal(aliceNow.message, 'mine');
      if (metaAnswer.type === 'ack') assert.deepEqual(aliceNow.meta, { name: 'Hacked' });
    }

    // HTTP with a user JWT: someone else's id is 403, one's own is 200.
    const aliceToken = await hsToken('owner-a');
    const other = await api(server, '/realtime/presence/update', { bearer: aliceToken, body: { userId: 'owner-b', status: 'away' } });
    assert.equal(other.status, 403);
    assert.equal(other.body.error.code, 'FORBIDDEN');
    assert.equal((await userPresence(server, 'owner-b')).status, 'online');

    const own = await api(server, '/realtime/presence/update', { bearer: aliceToken, body: { userId: 'owner-a', status: 'away' } });
    assert.equal(own.status, 200);
    assert.equal(own.body.user.status, 'away');
    const implicit = await api(server, '/realtime/presence/update', { bearer: aliceToken, body: { status: 'online' } });
    assert.equal(implicit.status, 200);
    assert.equal(implicit.body.user.userId, 'owner-a');

    // The API key may update anyone, and members see it.
    const trusted = await api(server, '/realtime/presence/update', { bearer: API_KEY, body: { userId: 'owner-b', status: 'busy' } });
    assert.equal(trusted.status, 200);
    await alice.waitFor((m) => m.type === 'presence.update' && m.member.userId === 'owner-b' && m.member.status === 'busy');

    // A wrong API key is not trusted.
    const wrong = await api(server, '/realtime/presence/update', { bearer: `${API_KEY}x`, body: { userId: 'owner-b', status: 'away' } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'UNAUTHORIZED');
    assert.equal((await userPresence(server, 'owner-b')).status, 'busy');
  });
});

describe('WebSocket authentication with RS256 and ES256 public keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = (key: KeyObject): string => key.export({ type: 'spki', format: 'pem' }).toString();
  let rsServer: TestServer;
  let esServer: TestServer;
  const clients: TestClient[] = [];

  before(async () => {
    rsServer = await startTestServer({ auth: { jwtPublicKey: pem(rsa.publicKey) } });
    esServer = await startTestServer({ auth: { jwtPublicKey: pem(ec.publicKey) } });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([rsServer.shutdown(), esServer.shutdown()]);
  });

  test('RS256 tokens signed with the configured key are accepted; others refused', async () => {
    const client = await TestClient.connect(rsServer, { token: await asymToken('rs-user', 'RS256', rsa.privateKey, { name: 'Rosa' }) });
    clients.push(client);
    assert.equal(client.welcome.userId, 'rs-user');
    assert.equal(client.welcome.self.meta.name, 'Rosa');

    await expectRefused(rsServer, { token: await asymToken('rs-evil', 'RS256', otherRsa.privateKey) }, 'UNAUTHORIZED', 4001);
    await expectRefused(rsServer, { token: await asymToken('rs-evil', 'ES256', ec.privateKey) }, 'UNAUTHORIZED', 4001);
    await expectRefused(rsServer, { token: noneToken('rs-evil') }, 'UNAUTHORIZED', 4001);
    // Algorithm confusion: HS256 "signed" with the public key's PEM text.
    await expectRefused(rsServer, { token: await hsToken('rs-evil', {}, pem(rsa.publicKey)) }, 'UNAUTHORIZED', 4001);
    await expectRefused(
      rsServer,
      { token: await asymToken('rs-late', 'RS256', rsa.privateKey, { exp: nowS() - 60 }) },
      'TOKEN_EXPIRED',
      4001,
    );
  });

  test('ES256 tokens signed with the configured key are accepted; others refused', async () => {
    const client = await TestClient.connect(esServer, {}, {
      headers: { Authorization: `Bearer ${await asymToken('es-user', 'ES256', ec.privateKey)}` },
    });
    clients.push(client);
    assert.equal(client.welcome.userId, 'es-user');

    await expectRefused(esServer, { token: await asymToken('es-evil', 'ES256', otherEc.privateKey) }, 'UNAUTHORIZED', 4001);
    await expectRefused(esServer, { token: await asymToken('es-evil', 'RS256', rsa.privateKey) }, 'UNAUTHORIZED', 4001);
    await expectRefused(esServer, { token: 'garbage' }, 'UNAUTHORIZED', 4001);
    await expectRefused(esServer, { userId: 'es-evil' }, 'UNAUTHORIZED', 4001);
  });
});

describe('token expiry while connected', () => {
  let server: TestServer;
  const clients: TestClient[] = [];

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET }, offlineDelayMs: 5000 });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.shutdown();
  });

  test('the server sends TOKEN_EXPIRED and closes 4001 at exp; a fresh token resumes the session silently', async () => {
    const observer = await TestClient.connect(server, { token: await hsToken('exp-observer') });
    clients.push(observer);
    await observer.request({ type: 'join', channel: 'exp-room' });
    await observer.request({ type: 'watch', users: ['exp-user'] });

    const exp = nowS() + 2;
    const user = await TestClient.connect(server, { token: await hsToken('exp-user', { exp }) });
    clients.push(user);
    const { sessionId } = user.welcome;
    await user.request({ type: 'join', channel: 'exp-room' });
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'exp-user');
    observer.drain();

    const error = (await user.waitFor((m) => m.type === 'error', 4000)) as Extract<ServerMessage, { type: 'error' }>;
    const at = Date.now();
    assert.equal(error.code, 'TOKEN_EXPIRED');
    const closed = await user.closed;
    assert.equal(closed.code, 4001);
    // jose's clock tolerance does not keep an open socket alive past exp.
    assert.ok(at >= exp * 1000 - 100, `closed ${exp * 1000 - at} ms before exp`);
    assert.ok(at <= exp * 1000 + 1000, `closed ${at - exp * 1000} ms after exp`);

    const again = await TestClient.connect(server, { token: await hsToken('exp-user'), sessionId });
    clients.push(again);
    assert.equal(again.welcome.sessionId, sessionId);
    assert.equal(again.welcome.resumed, true);
    const sync = (await again.waitFor((m) => m.type === 'presence.sync' && m.channel === 'exp-room')) as Extract<
      ServerMessage,
      { type: 'presence.sync' }
    >;
    assert.deepEqual(sync.members.map((m) => m.userId).sort(), ['exp-observer', 'exp-user']);

    await sleep(200);
    assert.deepEqual(observer.drain(), [], 'expiry and resume inside the offline delay are invisible to others');
  });
});

describe('Origin allowlist', () => {
  let server: TestServer;
  const clients: TestClient[] = [];

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET }, allowedOrigins: ['https://app.example.com'] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.shutdown();
  });

  test('a foreign Origin is refused with ORIGIN_FORBIDDEN and close 4003, even with a valid token', async () => {
    const token = await hsToken('origin-user');
    await expectRefused(server, { token }, 'ORIGIN_FORBIDDEN', 4003, { origin: 'https://evil.example' });
    await expectRefused(server, { token }, 'ORIGIN_FORBIDDEN', 4003, { origin: 'https://app.example.com.evil.example' });
    await expectRefused(server, { token }, 'ORIGIN_FORBIDDEN', 4003, { origin: 'http://app.example.com' });
    await expectRefused(server, { token }, 'ORIGIN_FORBIDDEN', 4003, { origin: 'null' });
  });

  test('the allowed Origin and a missing Origin connect', async () => {
    const allowed = await TestClient.connect(server, { token: await hsToken('origin-ok') }, { origin: 'https://app.example.com' });
    clients.push(allowed);
    assert.equal(allowed.welcome.userId, 'origin-ok');
    const noOrigin = await TestClient.connect(server, { token: await hsToken('origin-none') });
    clients.push(noOrigin);
    assert.equal(noOrigin.welcome.userId, 'origin-none');
    // The origin check does not replace auth.
    await expectRefused(server, { userId: 'origin-ok' }, 'UNAUTHORIZED', 4001, { origin: 'https://app.example.com' });
  });
});
