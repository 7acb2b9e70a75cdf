/**
 * Real Presence servers for the server SDK's tests, in-process on a loopback port, and plain `ws`
 * clients to put users into channels.
 */
import { generateKeyPairSync } from 'node:crypto';
import WebSocket from 'ws';
import type { ServerMessage, WelcomeMessage } from '@presence/protocol';
import { resolveConfig, type ServerConfig } from '../../../server/src/config/config.js';
import { silentLogger } from '../../../server/src/log.js';
import { startServer, type RunningServer } from '../../../server/src/server.js';

export const API_KEY = 'node-sdk-test-api-key-0123456789';
export const JWT_SECRET = 'node-sdk-test-secret-of-at-least-32-bytes';

export type TestServer = RunningServer & { config: ServerConfig; wsUrl: string };

/** A server with the API key and the HS256 secret unless the overrides say otherwise. */
export async function startPresenceServer(overrides: Parameters<typeof resolveConfig>[0] = {}): Promise<TestServer> {
  const config = resolveConfig({
    port: 0,
    host: '127.0.0.1',
    offlineDelayMs: 200,
    ...overrides,
    auth: { apiKey: API_KEY, jwtSecret: JWT_SECRET, ...overrides.auth },
    limits: { maxEventLoopLagMs: 0, ...overrides.limits },
  });
  const server = await startServer(config, { log: silentLogger });
  return { ...server, config, wsUrl: `ws://127.0.0.1:${server.port}/realtime` };
}

/** PEM key pairs: the public half for the server, the PKCS#8 private half for `createUserToken`. */
export function keyPair(kind: 'rsa' | 'ec'): { publicKey: string; privateKey: string } {
  const pair =
    kind === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

/** A WebSocket client that keeps every server message. */
export class Socket {
  readonly messages: ServerMessage[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: { match: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
  private nextRef = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const parsed = JSON.parse(data.toString()) as ServerMessage | ServerMessage[];
      for (const message of Array.isArray(parsed) ? parsed : [parsed]) {
        this.messages.push(message);
        this.waiters = this.waiters.filter((w) => (w.match(message) ? (w.resolve(message), false) : true));
      }
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Connects with `?token=` (or dev-mode `?userId=`) and waits for the first frame. */
  static async open(server: TestServer, query: Record<string, string>): Promise<Socket> {
    const socket = new Socket(new WebSocket(`${server.wsUrl}?${new URLSearchParams(query)}`));
    await socket.next(() => true, 'the first frame');
    return socket;
  }

  welcome(): WelcomeMessage | undefined {
    return this.messages.find((m): m is WelcomeMessage => m.type === 'welcome');
  }

  next(match: (m: ServerMessage) => boolean, what: string, timeoutMs = 5000): Promise<ServerMessage> {
    const seen = this.messages.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({ match, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  }

  /** Sends a command with a fresh `ref` and resolves with its `ack` or `error`. */
  async request(command: Record<string, unknown>): Promise<ServerMessage> {
    const ref = this.nextRef++;
    const answer = this.next((m) => (m.type === 'ack' || m.type === 'error') && m.ref === ref, `the answer to ${String(command.type)}`);
    this.ws.send(JSON.stringify({ ...command, ref }));
    return answer;
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close();
    await this.closed;
  }
}
