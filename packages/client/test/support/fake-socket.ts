import type { WebSocketConstructor, WebSocketLike, WelcomeMessage } from '../../src/index.js';

/**
 * A scripted WebSocket for unit tests of the connection state machine: the test opens it,
 * delivers frames and closes it, with a manual clock driving the client's timers. Integration
 * tests use the real server instead.
 */
export class FakeSocket implements WebSocketLike {
  readyState = 0;
  readonly sent: { type: string; [key: string]: unknown }[] = [];
  closedByClient: { code?: number; reason?: string } | undefined;
  onopen: ((event: never) => void) | null = null;
  onmessage: ((event: never) => void) | null = null;
  onclose: ((event: never) => void) | null = null;
  onerror: ((event: never) => void) | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    // Nothing comes back: the test decides whether a close event ever arrives.
    this.closedByClient = { code, reason };
    this.readyState = 2;
  }

  // Scripted server side ----------------------------------------------------------------------

  open(): void {
    this.readyState = 1;
    (this.onopen as ((event: unknown) => void) | null)?.({});
  }

  deliver(message: unknown): void {
    (this.onmessage as ((event: unknown) => void) | null)?.({ data: JSON.stringify(message) });
  }

  welcome(sessionId = 'session-0001', resumed = false): void {
    this.open();
    this.deliver(welcomeMessage(sessionId, resumed));
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    (this.onclose as ((event: unknown) => void) | null)?.({ code, reason });
  }
}

export function fakeWebSocket(): { WebSocket: WebSocketConstructor; sockets: FakeSocket[]; last(): FakeSocket } {
  const sockets: FakeSocket[] = [];
  class Constructed extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return { WebSocket: Constructed, sockets, last: () => sockets[sockets.length - 1] };
}

export function welcomeMessage(sessionId: string, resumed: boolean): WelcomeMessage {
  return {
    type: 'welcome',
    userId: 'ada',
    sessionId,
    resumed,
    serverTime: new Date(0).toISOString(),
    timeouts: { heartbeatMs: 20_000, idleMs: 300_000, offlineDelayMs: 30_000, typingMs: 3000 },
    limits: {
      maxFrameBytes: 65536,
      maxMetaBytes: 2048,
      maxMetaDepth: 4,
      maxMetaKeys: 32,
      maxMessageLength: 256,
      maxChannelNameLength: 128,
      maxChannelsPerSession: 100,
      maxSessionsPerUser: 10,
      maxWatchedUsers: 1000,
      rateLimitPerSecond: 50,
      rateLimitBurst: 100,
      maxOutboundBufferBytes: 1048576,
    },
    states: {},
    self: { userId: 'ada', status: 'online', meta: {}, lastSeen: null, devices: ['web'], manualStatus: null, visibility: 'everyone' },
  };
}
