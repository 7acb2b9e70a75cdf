import { createPublicKey, type KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyOptions } from 'jose';
import type { JsonValue, Meta, Visibility } from '@presence/protocol';
import type { AuthConfig } from '../config/config.js';
import { describeKey, jwtAlgorithmFor } from '../config/keys.js';
import { PresenceError } from '../errors.js';
import { isPlainObject } from '../json.js';
import type { Identity } from './identity.js';

export interface TokenVerifier {
  /** Resolves to the caller's identity, or rejects with a PresenceError (never a jose error). */
  verify(token: string): Promise<Identity>;
}

/**
 * Allows a little skew between the token issuer's clock and ours, so a token minted a moment
 * "in the future" by a slightly fast issuer is not refused. Kept small because it also extends
 * every token's life by the same amount.
 */
const CLOCK_TOLERANCE_SECONDS = 5;

/** Same as the default `maxUserIdLength`: a subject longer than a user id may be is useless. */
const MAX_SUBJECT_LENGTH = 128;

/**
 * Real tokens are a few hundred bytes to a few KiB; refusing huge inputs up front keeps an
 * unauthenticated caller from making us base64-decode and JSON-parse megabytes.
 */
const MAX_TOKEN_LENGTH = 16 * 1024;

const VISIBILITIES: ReadonlySet<string> = new Set<Visibility>(['everyone', 'contacts', 'nobody']);

type VerificationKey = KeyObject | Uint8Array;

/**
 * Builds the verifier from configuration, or returns undefined when no user-token key is set.
 * Throws (at start, naming the variable) when the public key is unusable, rather than failing
 * every connection later.
 */
export function createTokenVerifier(
  auth: AuthConfig,
  now: () => number = Date.now,
): TokenVerifier | undefined {
  // Each algorithm is bound to exactly one key. The header's `alg` picks the key, and jose is also
  // given the explicit list, so `none`, an unconfigured algorithm, or an HS256 token "signed" with
  // the public key's PEM text (algorithm confusion) can never be verified against the wrong key.
  const keys = new Map<string, VerificationKey>();
  if (auth.jwtSecret) {
    keys.set('HS256', new TextEncoder().encode(auth.jwtSecret));
  }
  if (auth.jwtPublicKey) {
    const { alg, key } = loadPublicKey(auth.jwtPublicKey);
    keys.set(alg, key);
  }
  if (keys.size === 0) return undefined;

  const algorithms = [...keys.keys()];

  return {
    async verify(token: string): Promise<Identity> {
      if (typeof token !== 'string' || token.length === 0) {
        throw new PresenceError('UNAUTHORIZED', 'Missing token.');
      }
      if (token.length > MAX_TOKEN_LENGTH) {
        throw new PresenceError('UNAUTHORIZED', 'Malformed token: too long.');
      }
      const options: JWTVerifyOptions = {
        algorithms,
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        currentDate: new Date(now()),
      };
      if (auth.jwtAudience !== undefined) options.audience = auth.jwtAudience;
      if (auth.jwtIssuer !== undefined) options.issuer = auth.jwtIssuer;

      let payload: JWTPayload;
      try {
        const result = await jwtVerify(
          token,
          (header) => {
            const key = keys.get(header.alg ?? '');
            // Unreachable while `algorithms` mirrors `keys`; kept so a future edit cannot
            // silently fall through to some other key.
            if (key === undefined) throw new PresenceError('UNAUTHORIZED', 'Token algorithm is not allowed.');
            return key;
          },
          options,
        );
        payload = result.payload;
      } catch (error) {
        throw toPresenceError(error);
      }
      return identityFromClaims(payload);
    },
  };
}

function loadPublicKey(pem: string): { alg: 'RS256' | 'ES256'; key: KeyObject } {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (error) {
    throw new Error(
      `PRESENCE_JWT_PUBLIC_KEY is not a valid PEM public key (SPKI): ${(error as Error).message}`,
    );
  }
  const alg = jwtAlgorithmFor(key);
  if (alg) return { alg, key };
  throw new Error(`PRESENCE_JWT_PUBLIC_KEY must be an RSA key (RS256) or an EC P-256 key (ES256), got ${describeKey(key)}.`);
}

/**
 * The one algorithm a public key verifies. The contract names exactly RS256 and ES256; wider lists
 * only widen what a stolen or misissued token could use, so other RSA digests and other curves get
 * none (configuration refuses such keys at start).
 */
function toPresenceError(error: unknown): PresenceError {
  if (error instanceof PresenceError) return error;
  if (error instanceof joseErrors.JWTExpired) return new PresenceError('TOKEN_EXPIRED');
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.reason !== 'check_failed') {
      return new PresenceError('UNAUTHORIZED', `Token claim "${error.claim}" is missing or invalid.`);
    }
    switch (error.claim) {
      case 'nbf':
        return new PresenceError('UNAUTHORIZED', 'Token is not valid yet (nbf).');
      case 'aud':
        return new PresenceError('UNAUTHORIZED', 'Token audience (aud) is not accepted.');
      case 'iss':
        return new PresenceError('UNAUTHORIZED', 'Token issuer (iss) is not accepted.');
      default:
        return new PresenceError('UNAUTHORIZED', `Token claim "${error.claim}" is invalid.`);
    }
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed || error instanceof joseErrors.JOSENotSupported) {
    return new PresenceError('UNAUTHORIZED', 'Token algorithm is not allowed.');
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new PresenceError('UNAUTHORIZED', 'Token signature is invalid.');
  }
  if (error instanceof joseErrors.JWSInvalid || error instanceof joseErrors.JWTInvalid) {
    return new PresenceError('UNAUTHORIZED', 'Malformed token.');
  }
  // Anything else (e.g. a key jose refuses for the algorithm) is still the token's problem from
  // the caller's point of view; the details stay out of the response.
  return new PresenceError('UNAUTHORIZED', 'Invalid token.');
}

function identityFromClaims(claims: JWTPayload): Identity {
  const { sub } = claims;
  if (typeof sub !== 'string' || sub.length === 0) {
    throw new PresenceError('UNAUTHORIZED', 'Token has no subject (sub).');
  }
  if (sub.length > MAX_SUBJECT_LENGTH) {
    throw new PresenceError('UNAUTHORIZED', `Token subject (sub) is longer than ${MAX_SUBJECT_LENGTH} characters.`);
  }

  const meta: Meta = {};
  if (claims.meta !== undefined) {
    if (!isPlainObject(claims.meta)) {
      throw new PresenceError('UNAUTHORIZED', 'Token claim "meta" must be an object.');
    }
    for (const [key, value] of Object.entries(claims.meta)) {
      // JSON.parse makes `__proto__` an ordinary own key; copying it with assignment would swap
      // the object's prototype instead, so it is dropped (it is never meaningful metadata).
      if (key !== '__proto__') meta[key] = value as JsonValue;
    }
  }
  // The dedicated claims win over the same keys inside `meta`: they are the documented way to
  // seed a name and avatar.
  for (const field of ['name', 'avatar'] as const) {
    const value = claims[field];
    if (value === undefined) continue;
    if (typeof value !== 'string') {
      throw new PresenceError('UNAUTHORIZED', `Token claim "${field}" must be a string.`);
    }
    meta[field] = value;
  }

  const identity: Identity = { userId: sub, meta };

  const channels = stringArrayClaim(claims, 'channels');
  if (channels !== undefined) identity.channels = channels;
  const contacts = stringArrayClaim(claims, 'contacts');
  if (contacts !== undefined) identity.contacts = contacts;

  if (claims.visibility !== undefined) {
    if (typeof claims.visibility !== 'string' || !VISIBILITIES.has(claims.visibility)) {
      throw new PresenceError('UNAUTHORIZED', 'Token claim "visibility" must be everyone, contacts or nobody.');
    }
    identity.visibility = claims.visibility as Visibility;
  }

  // jose has already checked that `exp`, when present, is a number and not in the past. A token
  // without `exp` is accepted (the issuer chose a non-expiring token) and simply never expires.
  if (claims.exp !== undefined) identity.expiresAt = claims.exp * 1000;

  return identity;
}

function stringArrayClaim(claims: JWTPayload, name: string): string[] | undefined {
  const value = claims[name];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string')) {
    throw new PresenceError('UNAUTHORIZED', `Token claim "${name}" must be an array of strings.`);
  }
  return [...value];
}

