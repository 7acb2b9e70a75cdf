/**
 * `@presence/client/http`: the same client over HTTP heartbeats instead of a WebSocket, for
 * networks and runtimes where a socket cannot stay open. Its API is `PresenceClient`'s; events
 * arrive at most one heartbeat interval late (`PRESENCE_HTTP_HEARTBEAT_INTERVAL_MS` on the server).
 */
import { PresenceClient, type PresenceClientOptions } from './client.js';
import { systemClock } from './clock.js';
import { PresenceError } from './errors.js';
import { HeartbeatSocket, type FetchLike } from './heartbeat-socket.js';
import type { WebSocketConstructor } from './socket.js';

export interface PresenceHttpClientOptions extends Omit<PresenceClientOptions, 'WebSocket'> {
  /**
   * The realtime endpoint: `https://presence.example.com/realtime` (`wss://…` is taken as
   * `https://…`, so one URL setting serves both transports).
   */
  url: string;
  /** The `fetch` implementation. @default globalThis.fetch */
  fetch?: FetchLike;
}

/** `PresenceClient` over HTTP heartbeats (`POST /realtime/heartbeat`). */
export class PresenceHttpClient extends PresenceClient {
  constructor(options: PresenceHttpClientOptions) {
    const fetchImpl = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (typeof fetchImpl !== 'function') throw new PresenceError('INVALID_OPTION', 'no fetch implementation: pass the `fetch` option');
    const deps = { fetch: fetchImpl.bind(globalThis) as FetchLike, clock: options.clock ?? systemClock };
    const Socket: WebSocketConstructor = class extends HeartbeatSocket {
      constructor(url: string) {
        super(url, deps);
      }
    };
    super({ ...options, url: asWebSocketUrl(options.url), WebSocket: Socket });
  }
}

/** The client core speaks of `ws(s)://` URLs; the heartbeat socket turns them back into HTTP. */
function asWebSocketUrl(url: unknown): string {
  if (typeof url !== 'string') return String(url);
  return url.replace(/^http(s?):/i, 'ws$1:');
}

export { HeartbeatSocket, type FetchLike } from './heartbeat-socket.js';
export * from './index.js';
