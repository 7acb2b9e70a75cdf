import { ERRORS, type ErrorCode } from '@presence/protocol';

/**
 * Codes of failures that have no answer from the server: the request never got one
 * (`NETWORK_ERROR`), took longer than `timeoutMs` (`TIMEOUT`), or the answer was not the API's
 * (`INVALID_RESPONSE`: a proxy's HTML error page, a body that is not JSON).
 */
export type ClientErrorCode = 'NETWORK_ERROR' | 'TIMEOUT' | 'INVALID_RESPONSE';

/** Every code a `PresenceApiError` can carry: the server's stable codes (docs/errors.md), and the client's own. */
export type PresenceApiErrorCode = ErrorCode | ClientErrorCode;

/** A failed HTTP API call, with the server's stable error `code` and the HTTP status. */
export class PresenceApiError extends Error {
  /** The stable code: one of the server's (`RATE_LIMITED`, `FORBIDDEN`, …) or the client's own. */
  readonly code: PresenceApiErrorCode;
  /** The HTTP status; `0` when no response arrived (`NETWORK_ERROR`, `TIMEOUT`). */
  readonly status: number;
  /** Whether the same request may succeed later unchanged (after a wait). */
  readonly retryable: boolean;
  /** Seconds the server asked to wait (`Retry-After`, on 429 and 503), when it said. */
  readonly retryAfter?: number;
  /** The operation that failed, as named in the OpenAPI document (`getUserPresence`, …). */
  readonly operation: string;

  constructor(init: { code: PresenceApiErrorCode; status: number; message: string; operation: string; retryAfter?: number; cause?: unknown }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'PresenceApiError';
    this.code = init.code;
    this.status = init.status;
    this.operation = init.operation;
    if (init.retryAfter !== undefined) this.retryAfter = init.retryAfter;
    this.retryable = isRetryable(init.code, init.status);
  }
}

function isRetryable(code: PresenceApiErrorCode, status: number): boolean {
  if (code === 'NETWORK_ERROR' || code === 'TIMEOUT') return true;
  if (Object.hasOwn(ERRORS, code)) return ERRORS[code as ErrorCode].retryable;
  // A code this version does not know (a newer server), or no code at all: by the status.
  return status === 429 || status >= 500;
}

/** The delay a `Retry-After` header asks for, in seconds (delta-seconds or an HTTP date). */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}
