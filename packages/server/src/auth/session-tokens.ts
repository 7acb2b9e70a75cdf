import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isDevMode, type AuthConfig } from '../config/config.js';
import { PresenceError } from '../errors.js';

/**
 * Session tokens: a capability for one session, and for nothing else. The unload beacon
 * (`POST /realtime/disconnect`) carries one instead of credentials, because `navigator.sendBeacon`
 * can send no header. A token names the session id and its user, and expires; it is signed with a
 * key every node of a cluster derives alike, so any node verifies what another issued.
 *
 * Format: `<payload>.<mac>`, both base64url; the payload is `v1.<exp>.<sessionId>.<userId>` (the
 * user id last, as it is the only part that may hold dots), the mac HMAC-SHA256 over it.
 */
export interface SessionTokenClaims {
  sessionId: string;
  userId: string;
  /** Ms since the epoch. */
  expiresAt: number;
}

export interface IssuedSessionToken {
  token: string;
  expiresAt: number;
}

/**
 * How long a token lives. A live session's token is renewed every `RENEW_AFTER_MS` (WebSocket:
 * a `session.token` message; HTTP sessions: every heartbeat answer), so one that is never renewed
 * again, because its page went away, stays valid for at least `RENEW_AFTER_MS` plus the offline
 * delay: long enough for any beacon about it.
 */
export const SESSION_TOKEN_RENEW_AFTER_MS = 30 * 60_000;
const LIFETIME_MS = 2 * SESSION_TOKEN_RENEW_AFTER_MS;
/** A beacon body is tiny; anything longer than this is not one of ours. */
const MAX_TOKEN_LENGTH = 1024;
const LABEL = 'presence session token v1';
/**
 * Development mode has no secret to derive from, and needs none (anyone may connect as anyone),
 * but the nodes of a development cluster must still accept each other's tokens.
 */
const DEVELOPMENT_KEY = 'presence development session tokens (insecure)';

/** Where the signing key comes from, for the start-up log and the docs. */
export type SessionKeySource = 'PRESENCE_SESSION_SECRET' | 'PRESENCE_JWT_SECRET' | 'PRESENCE_API_KEY' | 'development' | 'random';

export class SessionTokens {
  private readonly key: Buffer;
  readonly source: SessionKeySource;

  constructor(auth: AuthConfig, private readonly offlineDelayMs: number) {
    const { secret, source } = keySource(auth);
    this.source = source;
    // Derived, never the secret itself: a session token's MAC must not double as a JWT signature.
    this.key = createHmac('sha256', secret).update(LABEL).digest();
  }

  issue(sessionId: string, userId: string, now: number): IssuedSessionToken {
    const expiresAt = now + LIFETIME_MS + this.offlineDelayMs;
    const payload = Buffer.from(`v1.${expiresAt}.${sessionId}.${userId}`).toString('base64url');
    return { token: `${payload}.${this.mac(payload)}`, expiresAt };
  }

  /** The claims of a token this cluster issued; throws UNAUTHORIZED (forged, malformed) or TOKEN_EXPIRED. */
  verify(token: unknown, now: number): SessionTokenClaims {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw invalid();
    const dot = token.indexOf('.');
    if (dot <= 0 || dot !== token.lastIndexOf('.')) throw invalid();
    const payload = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1), 'base64url');
    const expected = Buffer.from(this.mac(payload), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
    const match = /^v1\.(\d{1,16})\.([A-Za-z0-9_-]{1,64})\.(.+)$/s.exec(Buffer.from(payload, 'base64url').toString('utf8'));
    if (!match) throw invalid();
    const expiresAt = Number(match[1]);
    if (expiresAt <= now) throw new PresenceError('TOKEN_EXPIRED', 'The session token has expired.');
    return { expiresAt, sessionId: match[2], userId: match[3] };
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }
}

function keySource(auth: AuthConfig): { secret: string | Buffer; source: SessionKeySource } {
  if (auth.sessionSecret) return { secret: auth.sessionSecret, source: 'PRESENCE_SESSION_SECRET' };
  if (auth.jwtSecret) return { secret: auth.jwtSecret, source: 'PRESENCE_JWT_SECRET' };
  if (auth.apiKey) return { secret: auth.apiKey, source: 'PRESENCE_API_KEY' };
  if (isDevMode({ auth })) return { secret: DEVELOPMENT_KEY, source: 'development' };
  // Only a public key: nothing secret is shared, so tokens verify on this process only.
  return { secret: randomBytes(32), source: 'random' };
}

function invalid(): PresenceError {
  return new PresenceError('UNAUTHORIZED', 'The session token is not valid.');
}
