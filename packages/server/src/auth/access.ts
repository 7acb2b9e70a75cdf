import { createHash, timingSafeEqual } from 'node:crypto';

const CHANNEL_CHARS = /^[A-Za-z0-9_:.@-]*$/;
const PATTERN_CHARS = /^[A-Za-z0-9_:.@*-]*$/;

/**
 * Whether a token's channel allowlist admits `channel`. No list means no restriction; an empty
 * list admits nothing. In a pattern `*` stands for any run (possibly empty) of channel characters
 * and every other character is literal. Matching is done by hand rather than by building a
 * RegExp, so a pattern can neither inject regex syntax nor cause catastrophic backtracking.
 */
export function channelAllowed(patterns: string[] | undefined, channel: string): boolean {
  if (patterns === undefined) return true;
  // A character outside the channel alphabet (e.g. `%` of a percent-encoded name) can be matched
  // neither by a literal (patterns are restricted to the alphabet) nor by `*`.
  if (!CHANNEL_CHARS.test(channel)) return false;
  return patterns.some(
    (pattern) => typeof pattern === 'string' && PATTERN_CHARS.test(pattern) && globMatch(pattern, channel),
  );
}

/**
 * Linear-backtracking wildcard match (O(pattern × text) worst case): on a mismatch, only the most
 * recent `*` is widened by one character, which is enough because `*` matches any run of the
 * alphabet that `text` is already known to consist of.
 */
function globMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    if (p < pattern.length && pattern[p] === '*') {
      starP = p++;
      starT = t;
    } else if (p < pattern.length && pattern[p] === text[t]) {
      p++;
      t++;
    } else if (starP !== -1) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

/**
 * Whether a request's `Origin` may use the server. An empty allowlist or `*` allows every origin.
 *
 * A missing Origin header is allowed: browsers always send it on WebSocket upgrades and on
 * cross-origin requests, so its absence means a non-browser client (a backend, a mobile app, a
 * CLI). The check exists to stop other web pages from riding a user's browser; it cannot stop a
 * non-browser client, which could send any Origin it likes anyway. Those are held back by tokens.
 */
export function originAllowed(allowed: string[], origin: string | undefined): boolean {
  if (allowed.length === 0 || allowed.includes('*')) return true;
  if (origin === undefined) return true;
  // An origin is only scheme, host and port, all case-insensitive, so lowercasing the whole string
  // compares them correctly. A trailing slash on a configured entry is a common slip, forgiven.
  const presented = origin.trim().toLowerCase();
  return allowed.some((entry) => entry.trim().toLowerCase().replace(/\/$/, '') === presented);
}

/**
 * Constant-time API key check. Hashing both sides first gives equal-length inputs for
 * timingSafeEqual, so neither the contents nor the length of the expected key leak through timing.
 * No configured key matches nothing.
 */
export function apiKeyMatches(expected: string | undefined, presented: string | undefined): boolean {
  if (!expected || presented === undefined) return false;
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(presented, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive). */
export function bearerToken(authorizationHeader: string | undefined): string | undefined {
  if (authorizationHeader === undefined) return undefined;
  const match = /^bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorizationHeader.trim());
  return match?.[1];
}
