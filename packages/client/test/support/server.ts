/**
 * Real Presence servers for client tests: started in-process on a loopback port, with a handle on
 * the raw TCP sockets of the connections so a test can cut them the way a network would.
 */
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { resolveConfig, type ServerConfig } from '../../../server/src/config/config.js';
import { silentLogger } from '../../../server/src/log.js';
import { startServer, type RunningServer } from '../../../server/src/server.js';

export type ServerOverrides = Parameters<typeof resolveConfig>[0];

export interface TestServer extends RunningServer {
  config: ServerConfig;
  /** `ws://127.0.0.1:PORT/realtime` */
  wsUrl: string;
  /** Destroys the TCP sockets of this user's connections (dev-mode `?userId=`): no close frame, like a network failure. */
  cutConnections(userId: string): number;
  /** Stops reading this user's sockets: the server neither sees their pings nor answers them (a hung path). */
  freezeConnections(userId: string): number;
  /** Live upgraded sockets per dev-mode user id. */
  connectionsOf(userId: string): number;
  /** Every WebSocket upgrade this user ever made to this server (live or closed). */
  upgradesOf(userId: string): number;
}

interface TrackedSocket {
  socket: Duplex;
  userId: string | null;
}

/** Short timeouts unless a test says otherwise; `port` lets a test restart a server on the same port. */
export async function startPresenceServer(overrides: ServerOverrides = {}): Promise<TestServer> {
  const config = resolveConfig({
    port: 0,
    host: '127.0.0.1',
    offlineDelayMs: 5000,
    typingTimeoutMs: 3000,
    heartbeatIntervalMs: 10_000,
    ...overrides,
    // Load shedding off unless a test turns it on: a busy CI machine can stall a test process
    // past the default lag limit, and a refused connection would fail an unrelated test.
    limits: { maxEventLoopLagMs: 0, ...overrides.limits },
  });
  const server = await startServer(config, { log: silentLogger });
  const tracked = new Set<TrackedSocket>();
  const upgrades = new Map<string, number>();
  server.httpServer.prependListener('upgrade', (request: IncomingMessage, socket: Duplex) => {
    const url = new URL(request.url ?? '/', 'http://placeholder');
    const entry: TrackedSocket = { socket, userId: url.searchParams.get('userId') };
    if (entry.userId) upgrades.set(entry.userId, (upgrades.get(entry.userId) ?? 0) + 1);
    tracked.add(entry);
    socket.once('close', () => tracked.delete(entry));
  });
  const socketsOf = (userId: string) => [...tracked].filter((entry) => entry.userId === userId);
  const frozen = new Set<Duplex>();
  return {
    ...server,
    // A frozen socket never completes a closing handshake: cut it rather than wait for it.
    shutdown: (reason?: string) => {
      for (const socket of frozen) socket.destroy();
      return server.shutdown(reason);
    },
    config,
    wsUrl: `ws://127.0.0.1:${server.port}/realtime`,
    cutConnections(userId) {
      const entries = socketsOf(userId);
      for (const entry of entries) entry.socket.destroy();
      return entries.length;
    },
    freezeConnections(userId) {
      const entries = socketsOf(userId);
      for (const entry of entries) {
        entry.socket.pause();
        frozen.add(entry.socket);
      }
      return entries.length;
    },
    connectionsOf(userId) {
      return socketsOf(userId).length;
    },
    upgradesOf(userId) {
      return upgrades.get(userId) ?? 0;
    },
  };
}
