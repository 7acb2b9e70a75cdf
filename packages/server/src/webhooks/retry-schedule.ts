/*
 * When to try a webhook again, as pure functions of the attempt's outcome, the event's age and an
 * injected random source: the delivery queue asks, the tests check the schedule without a clock.
 */

/** How an attempt ended, as far as retrying is concerned. */
export type AttemptOutcome =
  | { kind: 'delivered'; status: number }
  /** Worth another try: a network error, a timeout, 5xx, 408 or 429. */
  | { kind: 'retry'; reason: string; status?: number; retryAfterMs?: number }
  /** The receiver refused the event itself (another 4xx, or a redirect): trying again would not help. */
  | { kind: 'reject'; reason: string; status: number };

export interface RetryPolicy {
  /** The first retry comes after up to this long (half of it at least). @default 1000 */
  baseDelayMs: number;
  /** The backoff stops doubling here. @default 300000 */
  maxDelayMs: number;
  /**
   * An event is retried until it is this old (from when it was queued); the first failure at or
   * past that age dead-letters it, so no event is given up on sooner. @default 3600000
   */
  giveUpAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { baseDelayMs: 1000, maxDelayMs: 300_000, giveUpAfterMs: 3_600_000 };

/** Statuses worth retrying besides 5xx: the receiver was too slow (408) or asks us to slow down (429). */
const RETRY_STATUSES = new Set([408, 429]);

/** Classifies an HTTP answer. `retryAfter` is the raw `Retry-After` header, if any. */
export function classifyResponse(status: number, retryAfter: string | null | undefined, now: number): AttemptOutcome {
  if (status >= 200 && status < 300) return { kind: 'delivered', status };
  if (status >= 500 || RETRY_STATUSES.has(status)) {
    const retryAfterMs = parseRetryAfter(retryAfter, now);
    return retryAfterMs === undefined ? { kind: 'retry', reason: `http ${status}`, status } : { kind: 'retry', reason: `http ${status}`, status, retryAfterMs };
  }
  // 1xx and 3xx too: redirects are not followed (a signed body must not be replayed elsewhere).
  return { kind: 'reject', reason: `http ${status}`, status };
}

/**
 * `Retry-After` as milliseconds from `now`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
 * Anything else is ignored (undefined), and a date in the past means no wait (0).
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!/[A-Za-z]/.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/**
 * The backoff before retry number `retry` (1 for the first): doubling from `baseDelayMs`, capped
 * at `maxDelayMs`, then "equal jitter": a uniform draw in its upper half, so retries of many
 * events that failed together spread out while the wait still grows.
 */
export function backoffDelay(policy: RetryPolicy, retry: number, random: () => number): number {
  const exponent = Math.min(Math.max(0, retry - 1), 40);
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** exponent);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export type RetryDecision = { retryAt: number } | { giveUp: true };

/**
 * After failed attempt number `attempts` (1 for the first) of an event queued at `queuedAt`:
 * when to try again, or to give up. A `Retry-After` longer than the backoff is honoured, though
 * never past the give-up age (the last try then comes right at it); a shorter one does not make
 * the retry sooner than the backoff.
 */
export function nextRetry(
  policy: RetryPolicy,
  failure: { attempts: number; queuedAt: number; now: number; retryAfterMs?: number },
  random: () => number,
): RetryDecision {
  const { attempts, queuedAt, now, retryAfterMs } = failure;
  const giveUpAt = queuedAt + policy.giveUpAfterMs;
  if (now >= giveUpAt) return { giveUp: true };
  const backoffAt = now + backoffDelay(policy, attempts, random);
  if (retryAfterMs === undefined || now + retryAfterMs <= backoffAt) return { retryAt: backoffAt };
  return { retryAt: Math.max(backoffAt, Math.min(now + retryAfterMs, giveUpAt)) };
}
