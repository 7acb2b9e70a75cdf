import { ERRORS, type ErrorCode, type ErrorSpec } from '@presence/protocol';

/**
 * The one error type the server throws on purpose. Its `code` is a stable string from the
 * protocol's table, so transports can turn it into an `error` frame, a close code or an HTTP
 * status without guessing from messages.
 */
export class PresenceError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message?: string) {
    super(message ?? ERRORS[code].summary);
    this.name = 'PresenceError';
    this.code = code;
  }

  get httpStatus(): number {
    return ERRORS[this.code].http;
  }

  /** The close code when this error ends a WebSocket, or undefined when the socket stays open. */
  get closeCode(): number | undefined {
    return (ERRORS[this.code] as ErrorSpec).close;
  }
}

export function isPresenceError(error: unknown): error is PresenceError {
  return error instanceof PresenceError;
}
