/**
 * Every error code the server can answer with, listed once. The WebSocket `error` frame, the HTTP
 * error body and the close reason all use these strings; `docs/errors.md` documents each (a test
 * checks that the two lists agree).
 */

export interface ErrorSpec {
  /** HTTP status when the error answers an HTTP request. */
  http: number;
  /** WebSocket close code when the error ends the connection; absent when the socket stays open. */
  close?: number;
  /** True when the same request may succeed later without being changed (back off, then retry). */
  retryable: boolean;
  /** One line for humans; the docs say more. */
  summary: string;
}

export const ERRORS = {
  INVALID_JSON: { http: 400, retryable: false, summary: 'The frame or body is not valid JSON.' },
  INVALID_MESSAGE: {
    http: 400,
    retryable: false,
    summary: 'A field is missing, has the wrong type or an invalid value.',
  },
  UNKNOWN_TYPE: { http: 400, retryable: false, summary: 'The message type is not part of protocol v1.' },
  BINARY_NOT_SUPPORTED: { http: 400, retryable: false, summary: 'Binary frames are not accepted; send JSON text.' },
  FRAME_TOO_LARGE: {
    http: 413,
    close: 1009,
    retryable: false,
    summary: 'The frame or request body is larger than the configured maximum.',
  },
  META_TOO_LARGE: {
    http: 400,
    retryable: false,
    summary: 'Meta exceeds the size, depth or key-count limit (after merging).',
  },
  MESSAGE_TOO_LONG: { http: 400, retryable: false, summary: 'The custom status message is longer than allowed.' },
  INVALID_CHANNEL: { http: 400, retryable: false, summary: 'The channel name is empty, too long or has characters outside [A-Za-z0-9_:.@-].' },
  INVALID_USER_ID: { http: 400, retryable: false, summary: 'A user id is empty, too long or not a string.' },
  UNKNOWN_STATE: { http: 400, retryable: false, summary: 'The custom state is not configured on this server.' },
  INVALID_EXPIRY: { http: 400, retryable: false, summary: '`expiresAt` is not an ISO 8601 time in the future.' },
  NOT_IN_CHANNEL: { http: 409, retryable: false, summary: 'The session has not joined this channel.' },
  TOO_MANY_CHANNELS: { http: 429, retryable: false, summary: 'The session has joined the maximum number of channels.' },
  TOO_MANY_WATCHES: { http: 429, retryable: false, summary: 'The session watches the maximum number of users.' },
  TOO_MANY_USERS: { http: 400, retryable: false, summary: 'A bulk query names more users than allowed.' },
  TOO_MANY_SESSIONS: {
    http: 429,
    close: 4029,
    retryable: true,
    summary: 'The user has the maximum number of sessions on this node.',
  },
  TOO_MANY_CONNECTIONS: {
    http: 503,
    close: 4029,
    retryable: true,
    summary: 'The node accepts no more connections now; reconnect later or elsewhere.',
  },
  RATE_LIMITED: {
    http: 429,
    close: 4008,
    retryable: true,
    summary: 'Too many commands; this one was dropped. A flood that continues closes the connection.',
  },
  SLOW_CONSUMER: {
    http: 503,
    close: 4009,
    retryable: true,
    summary: 'The client read too slowly and its outbound buffer passed the limit.',
  },
  UNAUTHORIZED: {
    http: 401,
    close: 4001,
    retryable: false,
    summary: 'No credentials, or the token or API key is invalid.',
  },
  TOKEN_EXPIRED: {
    http: 401,
    close: 4001,
    retryable: true,
    summary: 'The token has expired; get a new one and reconnect.',
  },
  FORBIDDEN: {
    http: 403,
    close: 4003,
    retryable: false,
    summary: 'The credentials do not allow this (e.g. changing another user\'s presence).',
  },
  CHANNEL_FORBIDDEN: { http: 403, retryable: false, summary: 'The token\'s channel allowlist does not include this channel.' },
  ORIGIN_FORBIDDEN: { http: 403, close: 4003, retryable: false, summary: 'The Origin header is not in the allowlist.' },
  SESSION_REPLACED: {
    http: 409,
    close: 4000,
    retryable: false,
    summary: 'Another connection resumed this session id; this one is closed.',
  },
  LOGGED_OUT: { http: 410, close: 1000, retryable: false, summary: 'The user logged out; do not reconnect.' },
  HEARTBEAT_TIMEOUT: {
    http: 408,
    close: 4002,
    retryable: true,
    summary: 'Nothing was received for two heartbeat intervals; the connection is presumed dead.',
  },
  NOT_FOUND: { http: 404, retryable: false, summary: 'No such route.' },
  METHOD_NOT_ALLOWED: { http: 405, retryable: false, summary: 'The route exists but not for this method.' },
  UNSUPPORTED_MEDIA_TYPE: { http: 415, retryable: false, summary: 'The request body must be application/json.' },
  SHUTTING_DOWN: {
    http: 503,
    close: 1001,
    retryable: true,
    summary: 'The node is going away; reconnect (to another node).',
  },
  OVERLOADED: {
    http: 503,
    close: 1013,
    retryable: true,
    summary: 'The node is past its event-loop lag or outbound buffer limit; back off, then reconnect (maybe elsewhere).',
  },
  NOT_READY: { http: 503, retryable: true, summary: 'The node cannot reach its store.' },
  MIXED_CLUSTER: { http: 503, retryable: true, summary: 'Old nodes still run.' },
  INTERNAL: { http: 500, close: 1011, retryable: true, summary: 'An unexpected server error; it is logged.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

/** Close codes the server uses, with the error code each stands for. */
export const CLOSE_CODES = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_LARGE: 1009,
  INTERNAL: 1011,
  TRY_AGAIN_LATER: 1013,
  SESSION_REPLACED: 4000,
  UNAUTHORIZED: 4001,
  HEARTBEAT_TIMEOUT: 4002,
  FORBIDDEN: 4003,
  RATE_LIMITED: 4008,
  SLOW_CONSUMER: 4009,
  TOO_MANY: 4029,
} as const;

/** Whether a client should reconnect after the server closed with this code. */
export function shouldReconnect(closeCode: number): boolean {
  switch (closeCode) {
    case CLOSE_CODES.NORMAL:
    case CLOSE_CODES.SESSION_REPLACED:
    case CLOSE_CODES.FORBIDDEN:
    case CLOSE_CODES.POLICY:
    case CLOSE_CODES.TOO_LARGE:
      return false;
    default:
      // 4001 reconnects too, but only after fetching a fresh token.
      return true;
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, code);
}
