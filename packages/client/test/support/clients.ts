import WebSocket from 'ws';
import { PresenceClient, type PresenceClientOptions } from '../../src/index.js';

/** A client for `userId` (development mode) with fast reconnects, and no browser activity detection. */
export function devClient(wsUrl: string, userId: string, options: Partial<PresenceClientOptions> = {}): PresenceClient {
  return new PresenceClient({
    url: wsUrl,
    userId,
    WebSocket,
    activity: false,
    reconnect: { initialDelayMs: 20, maxDelayMs: 250 },
    ...options,
  });
}
