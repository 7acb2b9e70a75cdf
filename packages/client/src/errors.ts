import { ERRORS, isErrorCode, type ErrorCode, type Ref } from '@presence/protocol';

/**
 * Codes the client produces by itself, for failures that never reached the server. Server codes
 * (`ErrorCode` from @presence/protocol) keep their meaning; these complete the list.
 */
export const CLIENT_ERRORS = {
  /** `close()` was called while the command was pending. */
  CLIENT_CLOSED: { retryable: false, summary: 'The client was closed by the application.' },
  /** An ephemeral signal (typing, activity, idle) was dropped because there is no connection. */
  NOT_CONNECTED: { retryable: true, summary: 'There is no connection; the signal was dropped (it is not queued).' },
  /** The connection ended for good (logout, forbidden, session replaced, refused credentials). */
  CONNECTION_ENDED: { retryable: false, summary: 'The connection ended and will not be re-established automatically.' },
  /** `getToken()` threw or returned something that is not a non-empty string. */
  TOKEN_UNAVAILABLE: { retryable: true, summary: 'getToken() failed; the client retries with backoff.' },
  /** No WebSocket implementation: pass the `WebSocket` option (in Node, the `ws` package). */
  NO_WEBSOCKET: { retryable: false, summary: 'No WebSocket constructor is available.' },
  /** An option has an invalid value; thrown by the constructor. */
  INVALID_OPTION: { retryable: false, summary: 'A client option has an invalid value.' },
  /** The server sent a frame that is not protocol v1 JSON. */
  PROTOCOL_ERROR: { retryable: true, summary: 'The server sent a frame the client cannot read.' },
} as const;

export type ClientErrorCode = keyof typeof CLIENT_ERRORS;

/** Every code a PresenceError can carry: the server's, then the client's own. */
export type PresenceErrorCode = ErrorCode | ClientErrorCode;

/**
 * The one error class of the SDK. Program against `code`: it is the server's stable code when the
 * server refused something, or one of CLIENT_ERRORS when the client gave up by itself.
 */
export class PresenceError extends Error {
  override readonly name = 'PresenceError';
  readonly code: PresenceErrorCode;
  /** True when the same request may succeed later unchanged. */
  readonly retryable: boolean;
  /** The WebSocket close code, when this error ended a connection. */
  readonly closeCode?: number;
  /** The `ref` of the command the server refused; absent when the server did not answer it. */
  readonly ref?: Ref;

  constructor(code: PresenceErrorCode, message?: string, details: { closeCode?: number; ref?: Ref } = {}) {
    super(message ?? summaryOf(code));
    this.code = code;
    this.retryable = specOf(code)?.retryable ?? false;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.ref !== undefined) this.ref = details.ref;
  }

  /** True when the server answered the command with this error (it changed nothing there). */
  get refusedByServer(): boolean {
    return this.ref !== undefined;
  }
}

/** A newer server may send codes this client does not know yet: they are kept, as not retryable. */
function specOf(code: string): { retryable: boolean; summary: string } | undefined {
  if (isErrorCode(code)) return ERRORS[code];
  return Object.hasOwn(CLIENT_ERRORS, code) ? CLIENT_ERRORS[code as ClientErrorCode] : undefined;
}

function summaryOf(code: string): string {
  return specOf(code)?.summary ?? `The server answered ${code}.`;
}

export function isPresenceError(value: unknown): value is PresenceError {
  return value instanceof PresenceError;
}
