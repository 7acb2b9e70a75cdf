import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { exportSPKI, generateKeyPair, SignJWT, type JWTPayload, type KeyInput } from 'jose';
import { createTokenVerifier, type TokenVerifier } from '../src/auth/tokens.js';
import { apiKeyMatches, bearerToken, channelAllowed, originAllowed } from '../src/auth/access.js';
import { PresenceError } from '../src/errors.js';
import type { AuthConfig } from '../src/config/config.js';

const SECRET = 'test-secret-that-is-long-enough-for-hs256';
const NOW_S = 1_700_000_000;
const now = (): number => NOW_S * 1000;
const enc = new TextEncoder();

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

async function sign(
  claims: JWTPayload,
  key: KeyInput,
  alg = 'HS256',
  build?: (jwt: SignJWT) => SignJWT,
): Promise<string> {
  let jwt = new SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT' });
  if (build) jwt = build(jwt);
  return jwt.sign(key);
}

/** Signs raw JSON by hand, for payloads jose's SignJWT would normalise or refuse. */
function hmacToken(payload: unknown, header: unknown = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64url(header)}.${typeof payload === 'string' ? Buffer.from(payload).toString('base64url') : b64url(payload)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

function verifier(auth: AuthConfig): TokenVerifier {
  const v = createTokenVerifier(auth, now);
  assert.ok(v, 'verifier expected');
  return v;
}

async function rejects(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    if (!(error instanceof PresenceError)) assert.fail(`expected PresenceError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe('createTokenVerifier', () => {
  it('returns undefined without a secret or public key', () => {
    assert.equal(createTokenVerifier({}), undefined);
    assert.equal(createTokenVerifier({ apiKey: 'k', jwtSecret: '' }), undefined);
  });

  it('refuses an unusable public key at construction, naming the variable', async () => {
    assert.throws(() => createTokenVerifier({ jwtPublicKey: 'not a pem' }), /PRESENCE_JWT_PUBLIC_KEY/);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.throws(() => createTokenVerifier({ jwtPublicKey: pem }), /PRESENCE_JWT_PUBLIC_KEY.*P-256|secp384r1/);
  });
});

describe('HS256 tokens', () => {
  const key = enc.encode(SECRET);
  const v = verifier({ jwtSecret: SECRET });

  it('maps claims to an Identity', async () => {
    const token = await sign(
      {
        sub: 'alice',
        name: 'Alice',
        avatar: 'https://example.com/a.png',
        meta: { team: 'core', name: 'overridden' },
        channels: ['room:*', 'doc:42'],
        contacts: ['bob', 'carol'],
        visibility: 'contacts',
        iat: NOW_S,
        exp: NOW_S + 3600,
      },
      key,
    );
    const identity = await v.verify(token);
    assert.deepEqual(identity, {
      userId: 'alice',
      meta: { team: 'core', name: 'Alice', avatar: 'https://example.com/a.png' },
      channels: ['room:*', 'doc:42'],
      contacts: ['bob', 'carol'],
      visibility: 'contacts',
      expiresAt: (NOW_S + 3600) * 1000,
    });
  });

  it('accepts a minimal token and leaves optional fields absent', async () => {
    const identity = await v.verify(await sign({ sub: 'bob' }, key));
    assert.deepEqual(identity, { userId: 'bob', meta: {} });
  });

  it('drops a __proto__ key from the meta claim without touching the prototype', async () => {
    const identity = await v.verify(hmacToken('{"sub":"eve","meta":{"__proto__":{"admin":true},"ok":1}}'));
    assert.deepEqual(identity.meta, { ok: 1 });
    assert.equal(Object.getPrototypeOf(identity.meta), Object.prototype);
  });

  it('rejects an expired token with TOKEN_EXPIRED', async () => {
    await rejects(v.verify(await sign({ sub: 'alice', exp: NOW_S - 60 }, key)), 'TOKEN_EXPIRED');
  });

  it('tolerates 5 s of clock skew on exp, not more', async () => {
    await v.verify(await sign({ sub: 'alice', exp: NOW_S - 3 }, key));
    await rejects(v.verify(await sign({ sub: 'alice', exp: NOW_S - 10 }, key)), 'TOKEN_EXPIRED');
  });

  it('uses the injected clock', async () => {
    const token = await sign({ sub: 'alice', exp: NOW_S + 60 }, key);
    await v.verify(token);
    const later = createTokenVerifier({ jwtSecret: SECRET }, () => (NOW_S + 120) * 1000)!;
    await rejects(later.verify(token), 'TOKEN_EXPIRED');
  });

  it('rejects a token that is not valid yet (nbf)', async () => {
    await rejects(v.verify(await sign({ sub: 'alice', nbf: NOW_S + 60 }, key)), 'UNAUTHORIZED', /nbf/);
    await v.verify(await sign({ sub: 'alice', nbf: NOW_S - 1 }, key));
  });

  it('rejects a token signed with another secret', async () => {
    const token = await sign({ sub: 'alice' }, enc.encode('another-secret-another-secret-12'));
    await rejects(v.verify(token), 'UNAUTHORIZED', /signature/);
  });

  it('rejects a tampered payload', async () => {
    const token = await sign({ sub: 'alice' }, key);
    const [h, , s] = token.split('.');
    await rejects(v.verify(`${h}.${b64url({ sub: 'admin' })}.${s}`), 'UNAUTHORIZED');
  });

  it('rejects alg "none"', async () => {
    const payload = b64url({ sub: 'alice', exp: NOW_S + 3600 });
    for (const alg of ['none', 'None', 'NONE']) {
      await rejects(v.verify(`${b64url({ alg, typ: 'JWT' })}.${payload}.`), 'UNAUTHORIZED');
    }
  });

  it('rejects HS384/HS512 with the right secret: only HS256 is configured', async () => {
    await rejects(v.verify(await sign({ sub: 'alice' }, key, 'HS512')), 'UNAUTHORIZED', /algorithm/);
  });

  it('rejects a missing, empty, too long or wrong-typed sub', async () => {
    await rejects(v.verify(await sign({ name: 'x' }, key)), 'UNAUTHORIZED', /sub/);
    await rejects(v.verify(await sign({ sub: '' }, key)), 'UNAUTHORIZED');
    await rejects(v.verify(await sign({ sub: 'a'.repeat(129) }, key)), 'UNAUTHORIZED', /sub/);
    await v.verify(await sign({ sub: 'a'.repeat(128) }, key));
    await rejects(v.verify(await sign({ sub: 42 } as unknown as JWTPayload, key)), 'UNAUTHORIZED');
  });

  it('rejects claims of the wrong type', async () => {
    const bad: JWTPayload[] = [
      { sub: 'a', name: 42 },
      { sub: 'a', avatar: { url: 'x' } },
      { sub: 'a', meta: ['x'] },
      { sub: 'a', meta: 'x' },
      { sub: 'a', meta: null },
      { sub: 'a', channels: 'room:*' },
      { sub: 'a', channels: ['room:1', 2] },
      { sub: 'a', contacts: [null] },
      { sub: 'a', visibility: 'friends' },
    ];
    for (const claims of bad) {
      await rejects(v.verify(await sign(claims, key)), 'UNAUTHORIZED');
    }
    // jose itself rejects a non-numeric exp/nbf in a correctly signed token; still UNAUTHORIZED.
    await rejects(v.verify(hmacToken({ sub: 'a', exp: 'soon' })), 'UNAUTHORIZED', /exp/);
    await rejects(v.verify(hmacToken({ sub: 'a', nbf: 'now' })), 'UNAUTHORIZED', /nbf/);
    // A correctly signed payload that is not a JSON object.
    await rejects(v.verify(hmacToken([1, 2])), 'UNAUTHORIZED');
    await rejects(v.verify(hmacToken('not json')), 'UNAUTHORIZED');
  });

  it('rejects garbage without leaking jose errors', async () => {
    const garbage = [
      '',
      'garbage',
      'a.b.c',
      'a.b',
      '...',
      `${b64url({ alg: 'HS256' })}.not-base64!.sig`,
      `${b64url({ alg: 'HS256' })}.${Buffer.from('not json').toString('base64url')}.sig`,
      `${b64url({ alg: 'HS256' })}.${b64url([1, 2])}.sig`,
      `${b64url('just a string')}.${b64url({ sub: 'a' })}.sig`,
      'x'.repeat(100_000),
      undefined as unknown as string,
      42 as unknown as string,
    ];
    for (const token of garbage) {
      await rejects(v.verify(token), 'UNAUTHORIZED');
    }
  });
});

describe('audience and issuer', () => {
  const key = enc.encode(SECRET);
  const v = verifier({ jwtSecret: SECRET, jwtAudience: 'presence', jwtIssuer: 'https://auth.example.com' });
  const good = (jwt: SignJWT) => jwt.setAudience('presence').setIssuer('https://auth.example.com');

  it('accepts the configured aud and iss', async () => {
    assert.equal((await v.verify(await sign({ sub: 'a' }, key, 'HS256', good))).userId, 'a');
    const multi = (jwt: SignJWT) => jwt.setAudience(['other', 'presence']).setIssuer('https://auth.example.com');
    await v.verify(await sign({ sub: 'a' }, key, 'HS256', multi));
  });

  it('rejects a wrong or missing audience', async () => {
    const wrong = (jwt: SignJWT) => jwt.setAudience('other').setIssuer('https://auth.example.com');
    await rejects(v.verify(await sign({ sub: 'a' }, key, 'HS256', wrong)), 'UNAUTHORIZED', /aud/);
    const missing = (jwt: SignJWT) => jwt.setIssuer('https://auth.example.com');
    await rejects(v.verify(await sign({ sub: 'a' }, key, 'HS256', missing)), 'UNAUTHORIZED', /aud/);
  });

  it('rejects a wrong or missing issuer', async () => {
    const wrong = (jwt: SignJWT) => jwt.setAudience('presence').setIssuer('https://evil.example.com');
    await rejects(v.verify(await sign({ sub: 'a' }, key, 'HS256', wrong)), 'UNAUTHORIZED', /iss/);
    const missing = (jwt: SignJWT) => jwt.setAudience('presence');
    await rejects(v.verify(await sign({ sub: 'a' }, key, 'HS256', missing)), 'UNAUTHORIZED', /iss/);
  });

  it('ignores aud and iss when not configured', async () => {
    const plain = verifier({ jwtSecret: SECRET });
    const other = (jwt: SignJWT) => jwt.setAudience('x').setIssuer('y');
    await plain.verify(await sign({ sub: 'a' }, key, 'HS256', other));
  });
});

describe('RS256 and ES256 tokens', async () => {
  const rsa = await generateKeyPair('RS256');
  const rsaPem = await exportSPKI(rsa.publicKey);
  const otherRsa = await generateKeyPair('RS256');
  const ec = await generateKeyPair('ES256');
  const ecPem = await exportSPKI(ec.publicKey);

  it('accepts RS256 tokens signed with the matching private key', async () => {
    const v = verifier({ jwtPublicKey: rsaPem });
    const identity = await v.verify(await sign({ sub: 'alice', exp: NOW_S + 60 }, rsa.privateKey, 'RS256'));
    assert.equal(identity.userId, 'alice');
    assert.equal(identity.expiresAt, (NOW_S + 60) * 1000);
  });

  it('accepts ES256 tokens signed with the matching private key', async () => {
    const v = verifier({ jwtPublicKey: ecPem });
    const identity = await v.verify(await sign({ sub: 'bob', name: 'Bob' }, ec.privateKey, 'ES256'));
    assert.deepEqual(identity, { userId: 'bob', meta: { name: 'Bob' } });
  });

  it('accepts a PEM from node:crypto too', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const token = await new SignJWT({ sub: 'carol' }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
    assert.equal((await verifier({ jwtPublicKey: pem }).verify(token)).userId, 'carol');
  });

  it('rejects an RS256 token signed with another key', async () => {
    const v = verifier({ jwtPublicKey: rsaPem });
    await rejects(v.verify(await sign({ sub: 'alice' }, otherRsa.privateKey, 'RS256')), 'UNAUTHORIZED', /signature/);
  });

  it('rejects an algorithm that does not fit the configured key', async () => {
    await rejects(
      verifier({ jwtPublicKey: rsaPem }).verify(await sign({ sub: 'a' }, ec.privateKey, 'ES256')),
      'UNAUTHORIZED',
      /algorithm/,
    );
    await rejects(
      verifier({ jwtPublicKey: ecPem }).verify(await sign({ sub: 'a' }, rsa.privateKey, 'RS256')),
      'UNAUTHORIZED',
      /algorithm/,
    );
    const ps = await generateKeyPair('PS256');
    await rejects(
      verifier({ jwtPublicKey: rsaPem }).verify(await sign({ sub: 'a' }, ps.privateKey, 'PS256')),
      'UNAUTHORIZED',
    );
    await rejects(
      verifier({ jwtSecret: SECRET }).verify(await sign({ sub: 'a' }, rsa.privateKey, 'RS256')),
      'UNAUTHORIZED',
      /algorithm/,
    );
  });

  it('rejects algorithm confusion: HS256 signed with the public key PEM, only the public key configured', async () => {
    for (const pem of [rsaPem, ecPem]) {
      const forged = await sign({ sub: 'admin' }, enc.encode(pem), 'HS256');
      await rejects(verifier({ jwtPublicKey: pem }).verify(forged), 'UNAUTHORIZED');
    }
  });

  it('rejects algorithm confusion with both a secret and a public key configured', async () => {
    const both = verifier({ jwtSecret: SECRET, jwtPublicKey: rsaPem });
    const forged = await sign({ sub: 'admin' }, enc.encode(rsaPem), 'HS256');
    await rejects(both.verify(forged), 'UNAUTHORIZED', /signature/);
    // Both legitimate kinds still work: the header's alg picks the key.
    assert.equal((await both.verify(await sign({ sub: 'h' }, enc.encode(SECRET), 'HS256'))).userId, 'h');
    assert.equal((await both.verify(await sign({ sub: 'r' }, rsa.privateKey, 'RS256'))).userId, 'r');
    await rejects(both.verify(await sign({ sub: 'e' }, ec.privateKey, 'ES256')), 'UNAUTHORIZED');
  });

  it('enforces exp on asymmetric tokens too', async () => {
    const v = verifier({ jwtPublicKey: ecPem });
    await rejects(v.verify(await sign({ sub: 'a', exp: NOW_S - 60 }, ec.privateKey, 'ES256')), 'TOKEN_EXPIRED');
  });
});

describe('channelAllowed', () => {
  it('allows everything without a list and nothing with an empty list', () => {
    assert.equal(channelAllowed(undefined, 'room:1'), true);
    assert.equal(channelAllowed([], 'room:1'), false);
  });

  it('matches exact names and * wildcards', () => {
    const patterns = ['room:*', 'doc:42'];
    assert.equal(channelAllowed(patterns, 'room:1'), true);
    assert.equal(channelAllowed(patterns, 'room:'), true);
    assert.equal(channelAllowed(patterns, 'room:a.b@c-d_e:f'), true);
    assert.equal(channelAllowed(patterns, 'doc:42'), true);
    assert.equal(channelAllowed(patterns, 'doc:421'), false);
    assert.equal(channelAllowed(patterns, 'doc:4'), false);
    assert.equal(channelAllowed(patterns, 'xroom:1'), false);
    assert.equal(channelAllowed(patterns, 'room'), false);
    assert.equal(channelAllowed(patterns, 'Room:1'), false, 'case-sensitive');
    assert.equal(channelAllowed(['*'], 'anything:at.all'), true);
    assert.equal(channelAllowed(['*:*:end'], 'a:b:c:end'), true);
    assert.equal(channelAllowed(['*:*:end'], 'a:b:c:ends'), false);
    assert.equal(channelAllowed(['team:*:doc:*'], 'team:7:doc:9'), true);
    assert.equal(channelAllowed(['a**b'], 'ab'), true);
  });

  it('treats regex syntax literally', () => {
    assert.equal(channelAllowed(['.*'], 'room:1'), false);
    assert.equal(channelAllowed(['.*'], '.anything'), true, '. is literal, * is the wildcard');
    assert.equal(channelAllowed(['room.1'], 'roomx1'), false);
    assert.equal(channelAllowed(['room.1'], 'room.1'), true);
    assert.equal(channelAllowed(['room:[a-z]'], 'room:a'), false);
    assert.equal(channelAllowed(['room:(.*)'], 'room:1'), false);
    assert.equal(channelAllowed(['room:(.*)'], 'room:(.1)'), false);
    assert.equal(channelAllowed(['room:?'], 'room:a'), false);
    assert.equal(channelAllowed(['^room:1$'], 'room:1'), false);
    assert.equal(channelAllowed(['room:1|.*'], 'doc:1'), false);
    assert.equal(channelAllowed(['room:\\d'], 'room:1'), false);
  });

  it('never matches names outside the channel alphabet', () => {
    assert.equal(channelAllowed(['room:*'], 'room%3A1'), false);
    assert.equal(channelAllowed(['room*'], 'room%3A1'), false);
    assert.equal(channelAllowed(['*'], 'room/1'), false);
    assert.equal(channelAllowed(['*'], 'room 1'), false);
    assert.equal(channelAllowed(['room:*'], 'room:1\n'), false);
    assert.equal(channelAllowed(['room%3A1'], 'room%3A1'), false);
  });

  it('stays fast on pathological patterns', () => {
    const start = performance.now();
    assert.equal(channelAllowed(['*a*a*a*a*a*a*a*a*a*a*b'], 'a'.repeat(128)), false);
    assert.ok(performance.now() - start < 100);
  });
});

describe('originAllowed', () => {
  it('allows anything with an empty list or *', () => {
    assert.equal(originAllowed([], 'https://evil.example'), true);
    assert.equal(originAllowed(['https://app.example.com', '*'], 'https://evil.example'), true);
  });

  it('requires an exact match otherwise, case-insensitive in scheme and host', () => {
    const allowed = ['https://app.example.com', 'http://localhost:3000'];
    assert.equal(originAllowed(allowed, 'https://app.example.com'), true);
    assert.equal(originAllowed(allowed, 'HTTPS://App.Example.COM'), true);
    assert.equal(originAllowed(allowed, 'http://localhost:3000'), true);
    assert.equal(originAllowed(allowed, 'http://localhost:3001'), false);
    assert.equal(originAllowed(allowed, 'http://app.example.com'), false);
    assert.equal(originAllowed(allowed, 'https://app.example.com.evil.com'), false);
    assert.equal(originAllowed(allowed, 'https://evilapp.example.com'), false);
    assert.equal(originAllowed(allowed, 'null'), false);
    assert.equal(originAllowed(allowed, ''), false);
    assert.equal(originAllowed(['https://app.example.com/'], 'https://app.example.com'), true);
  });

  it('allows a missing Origin (non-browser clients)', () => {
    assert.equal(originAllowed(['https://app.example.com'], undefined), true);
  });
});

describe('apiKeyMatches', () => {
  it('compares keys', () => {
    assert.equal(apiKeyMatches('s3cret-key', 's3cret-key'), true);
    assert.equal(apiKeyMatches('s3cret-key', 's3cret-kez'), false);
    assert.equal(apiKeyMatches('s3cret-key', 's3cret-key-longer'), false);
    assert.equal(apiKeyMatches('s3cret-key', 's3'), false);
    assert.equal(apiKeyMatches('s3cret-key', ''), false);
    assert.equal(apiKeyMatches('s3cret-key', undefined), false);
    assert.equal(apiKeyMatches(undefined, 'anything'), false);
    assert.equal(apiKeyMatches(undefined, undefined), false);
    assert.equal(apiKeyMatches('', ''), false, 'an empty configured key is no key');
  });
});

describe('bearerToken', () => {
  it('parses Bearer credentials', () => {
    assert.equal(bearerToken('Bearer abc.def-ghi_jkl'), 'abc.def-ghi_jkl');
    assert.equal(bearerToken('bearer abc'), 'abc');
    assert.equal(bearerToken('BEARER   abc=='), 'abc==');
    assert.equal(bearerToken(undefined), undefined);
    assert.equal(bearerToken(''), undefined);
    assert.equal(bearerToken('Bearer'), undefined);
    assert.equal(bearerToken('Bearer '), undefined);
    assert.equal(bearerToken('Basic dXNlcjpwYXNz'), undefined);
    assert.equal(bearerToken('Bearer a b'), undefined);
    assert.equal(bearerToken('Bearerabc'), undefined);
    assert.equal(bearerToken('Token abc'), undefined);
  });
});
