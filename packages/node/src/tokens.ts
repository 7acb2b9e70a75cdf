import { SignJWT, importPKCS8, type KeyInput } from 'jose';
import type { Meta, Visibility } from '@presence/protocol';

/** What a user token says: the claims the server reads (docs/configuration.md, "Claims"). */
export interface UserTokenClaims {
  /** The user id (`sub`): 1–128 characters. */
  userId: string;
  /** Seeds `meta.name` when the user's WebSocket connects. */
  name?: string;
  /** Seeds `meta.avatar` when the user's WebSocket connects. */
  avatar?: string;
  /** Seeds the user's meta when their WebSocket connects (`name` and `avatar` win over the same keys). */
  meta?: Meta;
  /** Channel allowlist: exact names or patterns with `*`. Absent: every channel. */
  channels?: string[];
  /** Users who may see this user under `contacts` visibility. */
  contacts?: string[];
  /** Initial visibility. */
  visibility?: Visibility;
  /**
   * Lifetime: seconds, or a span such as `'15m'`, `'2h'`, `'7d'`; `null` for a token without `exp`
   * (the server accepts it, and it never expires: avoid). @default '1h'
   */
  expiresIn?: number | string | null;
  /** `aud`: required when the server sets `PRESENCE_JWT_AUDIENCE`. */
  audience?: string;
  /** `iss`: required when the server sets `PRESENCE_JWT_ISSUER`. */
  issuer?: string;
}

/**
 * The key to sign with, matching the server's: a string or bytes is an HS256 secret
 * (`PRESENCE_JWT_SECRET`); an RS256 or ES256 private key signs for `PRESENCE_JWT_PUBLIC_KEY`.
 * A private key is a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), a `CryptoKey`, a JWK or a Node
 * `KeyObject`.
 */
export type UserTokenKey =
  | string
  | Uint8Array
  | { alg: 'HS256'; secret: string | Uint8Array }
  | { alg: 'RS256' | 'ES256'; privateKey: string | Exclude<KeyInput, Uint8Array>; keyId?: string };

const DEFAULT_EXPIRES_IN = '1h';
const MAX_USER_ID_LENGTH = 128;
const VISIBILITIES: readonly string[] = ['everyone', 'contacts', 'nobody'];

/**
 * Signs a user token the server accepts (HS256, RS256 or ES256). Throws a `TypeError` for claims
 * the server would refuse (an empty or over-long `userId`, `channels` that are not strings, an
 * unknown `visibility`), so a bad token fails where it is made, not at connect.
 */
export async function createUserToken(claims: UserTokenClaims, key: UserTokenKey): Promise<string> {
  const { userId } = claims;
  if (typeof userId !== 'string' || userId.length === 0 || userId.length > MAX_USER_ID_LENGTH) {
    throw new TypeError(`createUserToken: userId must be a string of 1–${MAX_USER_ID_LENGTH} characters.`);
  }
  const payload: Record<string, unknown> = {};
  for (const field of ['name', 'avatar'] as const) {
    const value = claims[field];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new TypeError(`createUserToken: ${field} must be a string.`);
    payload[field] = value;
  }
  if (claims.meta !== undefined) {
    if (claims.meta === null || typeof claims.meta !== 'object' || Array.isArray(claims.meta)) {
      throw new TypeError('createUserToken: meta must be an object.');
    }
    payload.meta = claims.meta;
  }
  for (const field of ['channels', 'contacts'] as const) {
    const value = claims[field];
    if (value === undefined) continue;
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
      throw new TypeError(`createUserToken: ${field} must be an array of strings.`);
    }
    payload[field] = [...value];
  }
  if (claims.visibility !== undefined) {
    if (!VISIBILITIES.includes(claims.visibility)) throw new TypeError('createUserToken: visibility must be everyone, contacts or nobody.');
    payload.visibility = claims.visibility;
  }

  const { alg, signingKey, keyId } = await signingKeyOf(key);
  const jwt = new SignJWT(payload).setProtectedHeader(keyId === undefined ? { alg, typ: 'JWT' } : { alg, typ: 'JWT', kid: keyId }).setSubject(userId).setIssuedAt();
  const expiresIn = claims.expiresIn === undefined ? DEFAULT_EXPIRES_IN : claims.expiresIn;
  if (expiresIn !== null) {
    if (typeof expiresIn === 'number') {
      if (!Number.isFinite(expiresIn) || expiresIn <= 0) throw new TypeError('createUserToken: expiresIn must be a positive number of seconds.');
      jwt.setExpirationTime(Math.floor(Date.now() / 1000) + Math.ceil(expiresIn));
    } else {
      jwt.setExpirationTime(expiresIn);
    }
  }
  if (claims.audience !== undefined) jwt.setAudience(claims.audience);
  if (claims.issuer !== undefined) jwt.setIssuer(claims.issuer);
  return jwt.sign(signingKey);
}

async function signingKeyOf(key: UserTokenKey): Promise<{ alg: 'HS256' | 'RS256' | 'ES256'; signingKey: KeyInput; keyId?: string }> {
  if (typeof key === 'string' || key instanceof Uint8Array) return { alg: 'HS256', signingKey: secretBytes(key) };
  if (key?.alg === 'HS256') return { alg: 'HS256', signingKey: secretBytes(key.secret) };
  if (key?.alg === 'RS256' || key?.alg === 'ES256') {
    const { privateKey } = key;
    let signingKey: KeyInput;
    if (typeof privateKey === 'string') {
      if (!privateKey.includes('-----BEGIN PRIVATE KEY-----')) {
        throw new TypeError(
          'createUserToken: privateKey must be a PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"); convert others with `openssl pkcs8 -topk8 -nocrypt -in key.pem`.',
        );
      }
      signingKey = await importPKCS8(privateKey, key.alg);
    } else {
      signingKey = privateKey;
    }
    return key.keyId === undefined ? { alg: key.alg, signingKey } : { alg: key.alg, signingKey, keyId: key.keyId };
  }
  throw new TypeError('createUserToken: the key must be an HS256 secret, or { alg: "RS256" | "ES256", privateKey }.');
}

function secretBytes(secret: string | Uint8Array): Uint8Array {
  const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret;
  if (bytes.length === 0) throw new TypeError('createUserToken: the HS256 secret is empty.');
  return bytes;
}
