import WebSocket from 'ws';
import type { ServerMessage } from '@presence/protocol';
import { resolveConfig, type ServerConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';

type ConfigOverrides = Parameters<typeof resolveConfig>[0];

/** The messages of one frame: the server batches several into a JSON array. */
export function serverMessages(text: string): ServerMessage[] {
  const parsed = JSON.parse(text) as ServerMessage | ServerMessage[];
  return Array.isArray(parsed) ? parsed : [parsed];
}

/** A real server on a free loopback port, with short timeouts unless the test says otherwise. */
export async function startTestServer(overrides: ConfigOverrides = {}): Promise<RunningServer & { config: ServerConfig; wsUrl: string }> {
  const config = resolveConfig({
    port: 0,
    host: '127.0.0.1',
    offlineDelayMs: 200,
    typingTimeoutMs: 300,
    heartbeatIntervalMs: 1000,
    ...overrides,
    // Load shedding off unless a test turns it on: a busy CI machine can stall a test process
    // past the default lag limit, and a refused connection would fail an unrelated test.
    limits: { maxEventLoopLagMs: 0, ...overrides.limits },
  });
  const server = await startServer(config, { log: silentLogger });
  return { ...server, config, wsUrl: `ws://127.0.0.1:${server.port}/realtime` };
}

export interface Closed {
  code: number;
  reason: string;
}

/**
 * A plain `ws` client that records every server message (batches flattened) and lets a test
 * wait for the next message matching a predicate.
 */
export class TestClient {
  readonly ws: WebSocket;
  readonly messages: ServerMessage[] = [];
  readonly closed: Promise<Closed>;
  private waiters: { match: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
  private nextRef = 1;
  /** Index of the first message not yet consumed by `next`. */
  private cursor = 0;

  constructor(url: string, options?: WebSocket.ClientOptions) {
    this.ws = new WebSocket(url, options);
    this.ws.on('message', (data) => {
      for (const message of serverMessages(data.toString())) {
        this.messages.push(message);
        this.waiters = this.waiters.filter((w) => {
          if (!w.match(message)) return true;
          w.resolve(message);
          return false;
        });
      }
    });
    this.closed = new Promise((resolve) => this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.ws.on('error', () => {});
  }

  /** Connects as `userId` in development mode (or with `?token=` when given a token). */
  static async connect(server: { wsUrl: string }, query: Record<string, string>, options?: WebSocket.ClientOptions): Promise<TestClient> {
    const client = new TestClient(`${server.wsUrl}?${new URLSearchParams(query)}`, options);
    await client.waitFor((m) => m.type === 'welcome' || m.type === 'error');
    return client;
  }

  get welcome(): Extract<ServerMessage, { type: 'welcome' }> {
    const welcome = this.messages.find((m) => m.type === 'welcome');
    if (!welcome || welcome.type !== 'welcome') throw new Error('no welcome received');
    return welcome;
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** Sends a command with a fresh `ref` and resolves with the `ack` or `error` that answers it. */
  async request(command: Record<string, unknown>, timeoutMs = 2000): Promise<Extract<ServerMessage, { type: 'ack' | 'error' }>> {
    const ref = this.nextRef++;
    this.ws.send(JSON.stringify({ ...command, ref }));
    const answer = await this.waitFor((m) => (m.type === 'ack' || m.type === 'error') && m.ref === ref, timeoutMs);
    return answer as Extract<ServerMessage, { type: 'ack' | 'error' }>;
  }

  /** Resolves with the first message (already received or future) that matches. */
  waitFor(match: (m: ServerMessage) => boolean, timeoutMs = 2000): Promise<ServerMessage> {
    const seen = this.messages.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out waiting for a message; got: ${JSON.stringify(this.messages.slice(-5))}`));
      }, timeoutMs);
      const done = (m: ServerMessage) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.waiters.push({ match, resolve: done });
    });
  }

  /** Messages of `type` received so far. */
  ofType<T extends ServerMessage['type']>(type: T): Extract<ServerMessage, { type: T }>[] {
    return this.messages.filter((m) => m.type === type) as Extract<ServerMessage, { type: T }>[];
  }

  /** Messages received after the last call (or since connect): for "nothing else happened" checks. */
  drain(): ServerMessage[] {
    const fresh = this.messages.slice(this.cursor);
    this.cursor = this.messages.length;
    return fresh;
  }

  async close(): Promise<Closed> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close();
    return this.closed;
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface HttpAnswer {
  status: number;
  // Tests look into bodies freely.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  headers: Headers;
  text: string;
}

/** One HTTP API call over loopback: JSON in (POST when a body is given), parsed JSON out when there is any. */
export async function httpJson(
  server: { url: string },
  path: string,
  options: { method?: string; body?: unknown; bearer?: string } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = {};
  if (options.bearer) headers.authorization = `Bearer ${options.bearer}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${server.url}${path}`, {
    method: options.method ?? (options.body !== undefined ? 'POST' : 'GET'),
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: response.status, body, headers: response.headers, text };
}
