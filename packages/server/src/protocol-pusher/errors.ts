import type { ErrorCode } from '@presence/protocol';

/*
 * The codes of the Pusher endpoint. pusher-js acts on the close code alone: 4000–4099 stops for
 * good, 4100–4199 reconnects after a back-off, 4200–4299 reconnects at once, anything from 4300
 * on stops too. So a connection on `/app/:key` is closed only with codes of those ranges, chosen
 * for what the client should do next; `pusher:error` codes of 4300 and up never close anything.
 * docs/pusher.md lists every code.
 */

export const PUSHER_CODES = {
  /** Close: the key in the path is not this server's app key. */
  APP_NOT_FOUND: 4001,
  /** Close: the `protocol` query parameter is not 7. */
  UNSUPPORTED_PROTOCOL: 4007,
  /** Close: no `protocol` query parameter. */
  NO_PROTOCOL: 4008,
  /** Close: the connection may not connect or stay (Origin refused, its user terminated). Also a refused subscription signature. */
  UNAUTHORIZED: 4009,
  /** Close: the node is over capacity (event-loop lag, outbound buffers, connection limit); back off. */
  OVER_CAPACITY: 4100,
  /** Close: the connection kept sending past its rate limit; back off. */
  FLOODING: 4101,
  /** Close: the node is shutting down or restarting; reconnect now (to another node). */
  RECONNECT: 4200,
  /** Close: nothing came back for two heartbeat intervals. */
  PONG_TIMEOUT: 4201,
  /** Error: the frame is not a Pusher message (not JSON text, no `event`, an unknown `pusher:` event). */
  INVALID_MESSAGE: 4300,
  /** Error: too many client events (at most 10 per second per connection); this one was dropped. */
  CLIENT_EVENT_RATE_LIMIT: 4301,
  /** Error: a client event was refused (not subscribed, not a private or presence channel, too large, bad name). */
  CLIENT_EVENT_REFUSED: 4302,
  /** Error: a subscription was refused for its channel or its data (name, limits, channel_data, user_info). */
  SUBSCRIPTION_REFUSED: 4303,
  /** Error: frames past the rate limit are dropped (a flood that goes on is closed with 4101). */
  RATE_LIMITED: 4304,
} as const;

export type PusherCode = (typeof PUSHER_CODES)[keyof typeof PUSHER_CODES];

/** A refusal of the Pusher endpoint: a `pusher:error` with this code (and a close, for 4000–4299). */
export class PusherError extends Error {
  constructor(
    readonly code: PusherCode,
    message: string,
  ) {
    super(message);
    this.name = 'PusherError';
  }
}

/**
 * The Pusher close code for a close the rest of the server asks for with its own code (the
 * heartbeat sweep, shutdown, a logout or terminate, a flood), so pusher-js does the right thing.
 */
export function pusherCloseCode(code: number): PusherCode {
  switch (code) {
    case 4002: // HEARTBEAT_TIMEOUT
      return PUSHER_CODES.PONG_TIMEOUT;
    case 1000: // LOGGED_OUT: the user's connections were ended on purpose; pusher-js must not come back on its own
    case 4001:
    case 4003:
      return PUSHER_CODES.UNAUTHORIZED;
    case 4008: // RATE_LIMITED
      return PUSHER_CODES.FLOODING;
    case 4029: // TOO_MANY_CONNECTIONS, TOO_MANY_SESSIONS
    case 1013: // OVERLOADED
      return PUSHER_CODES.OVER_CAPACITY;
    default: // 1001 SHUTTING_DOWN, 1011 INTERNAL, 4000 SESSION_REPLACED …: come back now
      return PUSHER_CODES.RECONNECT;
  }
}

/** The Pusher refusal for a PresenceError raised while a connection is set up or a subscription made. */
export function pusherCodeFor(code: ErrorCode): PusherCode {
  switch (code) {
    case 'OVERLOADED':
    case 'TOO_MANY_CONNECTIONS':
      return PUSHER_CODES.OVER_CAPACITY;
    case 'ORIGIN_FORBIDDEN':
    case 'UNAUTHORIZED':
    case 'FORBIDDEN':
      return PUSHER_CODES.UNAUTHORIZED;
    case 'SHUTTING_DOWN':
    case 'INTERNAL':
      return PUSHER_CODES.RECONNECT;
    case 'RATE_LIMITED':
      return PUSHER_CODES.RATE_LIMITED;
    default:
      return PUSHER_CODES.SUBSCRIPTION_REFUSED;
  }
}
