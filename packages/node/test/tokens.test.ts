/**
 * createUserToken: real servers, configured with an HS256 secret and an RSA or EC public key,
 * accept the tokens it makes over HTTP and WebSocket, with every claim applied, and refuse
 * expired ones.
 */
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { PresenceApiError, PresenceServerClient, createUserToken, type UserTokenKey } from '../src/index.js';
import { JWT_SECRET, Socket, keyPair, startPresenceServer, type TestServer } from './support/server.js';

const rsa = keyPair('rsa');
const ec = keyPair('ec');

async function readsOwnChannels(server: TestServer, token: string): Promise<number | string> {
  try {
    await new PresenceServerClient({ baseUrl: server.url, token }).getUserChannels(String(decodeJwt(token).sub));
    return 200;
  } catch (error) {
    if (error instanceof PresenceApiError) return error.code;
    throw error;
  }
}

describe('createUserToken against real servers', () => {
  let rsaServer: TestServer;
  let ecServer: TestServer;
  before(async () => {
    rsaServer = await startPresenceServer({ auth: { jwtPublicKey: rsa.publicKey } });
    ecServer = await startPresenceServer({ auth: { jwtSecret: undefined, jwtPublicKey: ec.publicKey, jwtAudience: 'presence', jwtIssuer: 'https://auth.example.com' } });
  });
  after(async () => {
    await rsaServer.shutdown();
    await ecServer.shutdown();
  });

  const cases: [string, () => TestServer, UserTokenKey, string][] = [
    ['HS256 (a string secret)', () => rsaServer, JWT_SECRET, 'HS256'],
    ['HS256 (bytes)', () => rsaServer, { alg: 'HS256', secret: new TextEncoder().encode(JWT_SECRET) }, 'HS256'],
    ['RS256 (PKCS#8 PEM)', () => rsaServer, { alg: 'RS256', privateKey: rsa.privateKey, keyId: 'rsa-1' }, 'RS256'],
    ['RS256 (a Node KeyObject)', () => rsaServer, { alg: 'RS256', privateKey: createPrivateKey(rsa.privateKey) }, 'RS256'],
  ];
  for (const [what, serverOf, key, alg] of cases) {
    test(`${what}: accepted over HTTP and WebSocket`, async () => {
      const token = await createUserToken({ userId: `tok-${alg}`, name: 'Ada', avatar: 'https://example.com/a.png', meta: { team: 'x' } }, key);
      assert.equal(decodeProtectedHeader(token).alg, alg);
      assert.equal(await readsOwnChannels(serverOf(), token), 200);
      const socket = await Socket.open(serverOf(), { token });
      try {
        const welcome = socket.welcome();
        assert.ok(welcome, JSON.stringify(socket.messages[0]));
        assert.equal(welcome.userId, `tok-${alg}`);
        assert.deepEqual(welcome.self.meta, { team: 'x', name: 'Ada', avatar: 'https://example.com/a.png' });
      } finally {
        await socket.close();
      }
    });
  }

  test('ES256 with the audience and issuer the server requires; without them it is refused', async () => {
    const key: UserTokenKey = { alg: 'ES256', privateKey: ec.privateKey };
    const good = await createUserToken({ userId: 'tok-es', audience: 'presence', issuer: 'https://auth.example.com' }, key);
    assert.equal(decodeProtectedHeader(good).alg, 'ES256');
    assert.equal(await readsOwnChannels(ecServer, good), 200);
    assert.equal(await readsOwnChannels(ecServer, await createUserToken({ userId: 'tok-es' }, key)), 'UNAUTHORIZED');
    assert.equal(
      await readsOwnChannels(ecServer, await createUserToken({ userId: 'tok-es', audience: 'presence', issuer: 'https://auth.example.com' }, JWT_SECRET)),
      'UNAUTHORIZED',
      'this server has no HS256 secret',
    );
    // A key of the other kind is refused too.
    const rsaSigned = await createUserToken({ userId: 'tok-es', audience: 'presence', issuer: 'https://auth.example.com' }, { alg: 'RS256', privateKey: rsa.privateKey });
    assert.equal(await readsOwnChannels(ecServer, rsaSigned), 'UNAUTHORIZED');
  });

  test('expired tokens are refused: TOKEN_EXPIRED over HTTP, 4001 over WebSocket', async () => {
    const expired = await createUserToken({ userId: 'tok-old', expiresIn: '10 minutes ago' }, JWT_SECRET);
    assert.ok((decodeJwt(expired).exp ?? Infinity) < Date.now() / 1000);
    assert.equal(await readsOwnChannels(rsaServer, expired), 'TOKEN_EXPIRED');
    const socket = await Socket.open(rsaServer, { token: expired });
    const error = socket.messages.find((m) => m.type === 'error');
    assert.equal(error?.type === 'error' && error.code, 'TOKEN_EXPIRED');
    assert.equal((await socket.closed).code, 4001);
  });

  test('the claims the server reads: channels is an allowlist, visibility and contacts apply', async () => {
    const token = await createUserToken({ userId: 'tok-claims', channels: ['doc:*'], visibility: 'contacts', contacts: ['tok-friend'] }, JWT_SECRET);
    const client = new PresenceServerClient({ baseUrl: rsaServer.url, token });
    assert.equal((await client.getChannelPresence('doc:1')).count, 0);
    await assert.rejects(client.getChannelPresence('room:1'), (error: PresenceApiError) => error.code === 'CHANNEL_FORBIDDEN');

    const socket = await Socket.open(rsaServer, { token });
    try {
      assert.equal(socket.welcome()?.self.visibility, 'contacts');
      const asFriend = new PresenceServerClient({ baseUrl: rsaServer.url, token: await createUserToken({ userId: 'tok-friend' }, JWT_SECRET) });
      const asStranger = new PresenceServerClient({ baseUrl: rsaServer.url, token: await createUserToken({ userId: 'tok-stranger' }, JWT_SECRET) });
      assert.equal((await asFriend.getUserPresence('tok-claims')).status, 'online');
      assert.equal((await asStranger.getUserPresence('tok-claims')).status, 'offline');
    } finally {
      await socket.close();
    }
  });
});

describe('createUserToken claims and checks', () => {
  test('expiresIn: one hour by default, seconds, a span, or none', async () => {
    const now = Math.floor(Date.now() / 1000);
    const byDefault = decodeJwt(await createUserToken({ userId: 'a' }, JWT_SECRET));
    assert.equal(byDefault.sub, 'a');
    assert.ok(Math.abs((byDefault.exp ?? 0) - (now + 3600)) <= 2);
    assert.ok(Math.abs((byDefault.iat ?? 0) - now) <= 2);
    assert.ok(Math.abs((decodeJwt(await createUserToken({ userId: 'a', expiresIn: 90 }, JWT_SECRET)).exp ?? 0) - (now + 90)) <= 2);
    assert.ok(Math.abs((decodeJwt(await createUserToken({ userId: 'a', expiresIn: '15m' }, JWT_SECRET)).exp ?? 0) - (now + 900)) <= 2);
    assert.equal(decodeJwt(await createUserToken({ userId: 'a', expiresIn: null }, JWT_SECRET)).exp, undefined);
    const claims = decodeJwt(await createUserToken({ userId: 'a', channels: ['x'], contacts: ['b'], visibility: 'nobody' }, JWT_SECRET));
    assert.deepEqual([claims.channels, claims.contacts, claims.visibility], [['x'], ['b'], 'nobody']);
  });

  test('refuses claims and keys the server would refuse, where the token is made', async () => {
    const bad: [Parameters<typeof createUserToken>[0], UserTokenKey, RegExp][] = [
      [{ userId: '' }, JWT_SECRET, /userId/],
      [{ userId: 'u'.repeat(129) }, JWT_SECRET, /userId/],
      [{ userId: 'a', channels: 'doc:*' as unknown as string[] }, JWT_SECRET, /channels/],
      [{ userId: 'a', contacts: [1] as unknown as string[] }, JWT_SECRET, /contacts/],
      [{ userId: 'a', visibility: 'friends' as 'everyone' }, JWT_SECRET, /visibility/],
      [{ userId: 'a', meta: [] as unknown as Record<string, never> }, JWT_SECRET, /meta/],
      [{ userId: 'a', expiresIn: -5 }, JWT_SECRET, /expiresIn/],
      [{ userId: 'a' }, '', /empty/],
      [{ userId: 'a' }, { alg: 'RS256', privateKey: rsa.publicKey }, /PKCS#8/],
      [{ userId: 'a' }, { alg: 'ES256', privateKey: createPrivateKey(rsa.privateKey).export({ type: 'pkcs1', format: 'pem' }).toString() }, /openssl pkcs8/],
      [{ userId: 'a' }, { alg: 'none' } as unknown as UserTokenKey, /key must be/],
    ];
    for (const [claims, key, message] of bad) {
      await assert.rejects(createUserToken(claims, key), (error: Error) => error instanceof TypeError && message.test(error.message), JSON.stringify(claims));
    }
    // A PKCS#8 key of the wrong kind for the algorithm: jose refuses it.
    await assert.rejects(createUserToken({ userId: 'a' }, { alg: 'ES256', privateKey: rsa.privateKey }));
  });
});
