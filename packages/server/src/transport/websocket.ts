import type { IncomingMessage } from 'node:http';
import type { ServerMessage } from '@presence/protocol';
import { ManualStatusFields } from '@presence/protocol/schema';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type ServerOptions, type WebSocket } from 'ws';
import type { ServerConfig } from '../config/config.js';
import { isDevMode } from '../config/config.js';
import type { ConnectRequest } from '../presence/engine.js';
import type { PresenceNode } from '../presence-node.js';
import type { Identity } from '../auth/identity.js';
import { SESSION_TOKEN_RENEW_AFTER_MS } from '../auth/session-tokens.js';
import type { TokenVerifier } from '../auth/tokens.js';
import { apiKeyMatches, bearerToken, originAllowed } from '../auth/access.js';
import { PresenceError, isPresenceError } from '../errors.js';
import type { Logger } from '../log.js';
import { compile } from '../schema-checks.js';
import { Connection, type ConnectionObserver, type ConnectionOptions } from './connection.js';
import { OverloadGuard, type OutboundBuffer, type OverloadReason } from './overload-guard.js';
import { PusherSocket } from './pusher-socket.js';
import { PusherError, PUSHER_CODES } from '../protocol-pusher/errors.js';

export const REALTIME_PATH = '/realtime';
/** The Pusher Channels endpoint is `/app/<key>` (when configured). */
export const PUSHER_PATH_PREFIX = '/app/';
/** A protocol v1 connection, or a Pusher one: the sweep and the socket handlers serve both. */
type AnyConnection = Connection | PusherSocket;
/** Where a socket keeps its Connection, for the shared event handlers. */
const CONNECTION = Symbol('connection');
type TrackedSocket = WebSocket & { [CONNECTION]?: AnyConnection };
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How long a connection that missed its heartbeats gets to complete a closing handshake. */
const HEARTBEAT_CLOSE_GRACE_MS = 1000;
/**
 * How long a peer gets to answer our close frame before its socket is cut. ws waits 30 s by
 * default, so a client that never answers (refused at connect, so never counted against any limit,
 * or flooding) could hold thousands of sockets open.
 */
const CLOSE_HANDSHAKE_TIMEOUT_MS = 1000;
/**
 * The heartbeat sweep visits one slice of the connections per tick, SWEEP_SLICES ticks per
 * interval: pinging 10,000 sockets in one loop (and the burst of pongs it provokes) held the event
 * loop for 200–400 ms, long enough to fail a 50 ms latency budget every interval.
 */
const SWEEP_SLICES = 20;

/** Shortest sweep tick: 1 ms timers fire late by a good share of their delay, which adds up over a cycle. */
const MIN_TICK_MS = 5;

/**
 * The heartbeat's timing for one interval: the sweep ticks every `tickMs`, visiting one of
 * `slices` slices per tick, so each connection is visited (and pinged) once per `slices * tickMs`,
 * which is at most the interval. Below 100 ms (tests) there are fewer slices, of 5 ms each.
 */
function heartbeatTiming(intervalMs: number): { slices: number; tickMs: number } {
  const slices = Math.max(1, Math.min(SWEEP_SLICES, Math.floor(intervalMs / MIN_TICK_MS)));
  return { slices, tickMs: Math.max(1, Math.floor(intervalMs / slices)) };
}

export interface TransportObserver extends ConnectionObserver {
  connectionOpened(): void;
  connectionClosed(code: number): void;
  /** An upgrade refused with OVERLOADED, before any authentication. */
  connectionRefused?(reason: OverloadReason): void;
}

export interface WebSocketTransportOptions {
  config: ServerConfig;
  engine: PresenceNode;
  verifier?: TokenVerifier;
  log: Logger;
  observer?: TransportObserver;
  /** Wall clock for heartbeats, rate limits and token expiry (the model has its own). */
  now?: () => number;
  /** How often a connection's session token is renewed (`session.token`). @default SESSION_TOKEN_RENEW_AFTER_MS (30 min) */
  sessionTokenRenewMs?: number;
}

/**
 * The only code that knows the `ws` library: upgrades, authenticates, and hands each socket to a
 * Connection. Also owns the heartbeat sweep and token-expiry timers, which are socket concerns.
 */
export class WebSocketTransport {
  private readonly wss: WebSocketServer;
  /** Authenticated connections and their sockets. */
  private readonly connections = new Map<AnyConnection, WebSocket>();
  /** The same connections split into fixed slices for the staggered heartbeat sweep. */
  private readonly sweepSlices: Map<AnyConnection, WebSocket>[];
  private readonly tickMs: number;
  private nextSlice = 0;
  /**
   * Tick `n` of the sweep is due at `sweepEpoch + n * tickMs`: the ticks keep to the wall clock
   * (setInterval drifts by its lateness at every run, which would stretch the ping interval and
   * put the deadlines below late), and a late timer runs every tick it missed.
   */
  private readonly sweepEpoch: number;
  private nextTick = 0;
  /**
   * Connections whose two silent intervals run out before their slice comes round again, filed
   * under the tick that ends them (a ring of ticks): visiting each connection once per interval
   * alone would cut it anywhere from two to three intervals after its last sign of life.
   */
  private readonly deadlines: [AnyConnection, WebSocket][][];
  private readonly heartbeat: NodeJS.Timeout;
  private readonly now: () => number;
  private accepting = true;
  private readonly connectionOptions: ConnectionOptions;
  private readonly handlers: ReturnType<WebSocketTransport['makeHandlers']>;
  private readonly overload: OverloadGuard;
  private readonly tokenRenewMs: number;

  constructor(private readonly options: WebSocketTransportOptions) {
    const { config } = options;
    this.now = options.now ?? Date.now;
    this.tokenRenewMs = options.sessionTokenRenewMs ?? SESSION_TOKEN_RENEW_AFTER_MS;
    this.wss = new WebSocketServer({
      noServer: true,
      // ws accepts 100 MiB frames by default; a presence frame is small, and the limit is the contract.
      maxPayload: config.limits.maxFrameBytes,
      perMessageDeflate: config.permessageDeflate,
      clientTracking: false,
      // A ws option (8.23 has it) that @types/ws does not declare yet.
      closeTimeout: CLOSE_HANDSHAKE_TIMEOUT_MS,
    } as ServerOptions & { closeTimeout: number });
    this.connectionOptions = {
      log: options.log,
      rateLimitPerSecond: config.limits.rateLimitPerSecond,
      rateLimitBurst: config.limits.rateLimitBurst,
      maxOutboundBufferBytes: config.limits.maxOutboundBufferBytes,
      now: this.now,
      observer: options.observer,
    };
    this.handlers = this.makeHandlers();
    const { slices, tickMs } = heartbeatTiming(config.heartbeatIntervalMs);
    this.tickMs = tickMs;
    this.sweepSlices = Array.from({ length: slices }, () => new Map());
    this.sweepEpoch = this.now();
    // A deadline is filed only when it comes before the connection's next visit, fewer than
    // `slices` ticks ahead; a sweep that catches up runs at most `slices` ticks back. Twice that
    // and one never puts two ticks of one sweep in the same place.
    this.deadlines = Array.from({ length: 2 * slices + 1 }, () => []);
    this.heartbeat = setInterval(() => this.sweep(), tickMs);
    this.heartbeat.unref();
    this.overload = new OverloadGuard({
      maxEventLoopLagMs: config.limits.maxEventLoopLagMs,
      maxTotalOutboundBytes: config.limits.maxTotalOutboundBytes,
      outbound: () => this.outboundBuffer(),
      idle: () => this.connections.size === 0,
    });
  }

  /** What the sockets hold unsent; a full scan, for the guard's timer and for metrics scrapes. */
  outboundBuffer(): OutboundBuffer {
    let totalBytes = 0;
    let maxBytes = 0;
    for (const ws of this.connections.values()) {
      const bytes = ws.bufferedAmount;
      totalBytes += bytes;
      if (bytes > maxBytes) maxBytes = bytes;
    }
    return { totalBytes, maxBytes };
  }

  /** OVERLOADED while new connections are being refused for load (see overload-guard.ts). */
  overloaded(): PresenceError | undefined {
    const overload = this.accepting ? this.overload.check() : undefined;
    return overload && new PresenceError('OVERLOADED', overload.message);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** For `server.on('upgrade')`: anything but the realtime path is refused at the HTTP level. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(request.url ?? '/', 'http://placeholder');
    if (url.pathname.startsWith(PUSHER_PATH_PREFIX) && this.options.engine.pusher) {
      this.acceptPusher(request, socket, head, url);
      return;
    }
    if (url.pathname !== REALTIME_PATH) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    socket.on('error', destroyOnError);
    void this.authenticate(request, url).then(
      (identity) => this.accept(request, socket, head, url, identity),
      (error: unknown) => this.accept(request, socket, head, url, undefined, toPresenceError(error, this.options.log)),
    );
  }

  /**
   * Who is connecting. Failures still complete the handshake and then close with a code, because
   * a browser cannot read the HTTP status of a refused upgrade and would not know to refresh.
   */
  private async authenticate(request: IncomingMessage, url: URL): Promise<Identity> {
    const { config, verifier } = this.options;
    if (!this.accepting) throw new PresenceError('SHUTTING_DOWN');
    if (!originAllowed(config.allowedOrigins, request.headers.origin)) {
      throw new PresenceError('ORIGIN_FORBIDDEN', 'this Origin is not allowed');
    }
    if (this.connections.size >= config.limits.maxConnections) {
      throw new PresenceError('TOO_MANY_CONNECTIONS');
    }
    // Before any token or store work: refusing must stay cheap when the node is struggling. A
    // client resuming a session it still has is let in: it is already counted in everyone's view,
    // and turning it away for longer than the offline delay is the flap that delay exists to
    // prevent (a reconnect storm after a network blip is such a load, and exactly that case).
    const sessionId = url.searchParams.get('sessionId');
    const overload = sessionId !== null && this.options.engine.hasSession(sessionId) ? undefined : this.overload.check();
    if (overload) {
      this.options.observer?.connectionRefused?.(overload.reason);
      throw new PresenceError('OVERLOADED', overload.message);
    }
    const token = url.searchParams.get('token') ?? bearerToken(request.headers.authorization);
    if (token) {
      // Refused by name, not only because it is no JWT: the read-only key must never open a session.
      if (apiKeyMatches(config.auth.dashboardKey, token)) throw new PresenceError('UNAUTHORIZED', 'the dashboard key reads the admin stats only; connect with a user token');
      if (!verifier) throw new PresenceError('UNAUTHORIZED', 'tokens are not configured on this server');
      const identity = await verifier.verify(token);
      // The verifier tolerates a few seconds of clock skew on `exp`, but an open socket is closed
      // at `exp` itself (see accept). Without this check a token just past `exp` would be welcomed,
      // announced online to watchers, and cut a moment later with TOKEN_EXPIRED.
      if (identity.expiresAt !== undefined && identity.expiresAt <= this.now()) {
        throw new PresenceError('TOKEN_EXPIRED');
      }
      await this.options.engine.prepareConnect(identity.userId, url.searchParams.get('sessionId') ?? undefined);
      return identity;
    }
    if (isDevMode(config)) {
      const userId = url.searchParams.get('userId');
      if (!userId || userId.length > config.limits.maxUserIdLength) {
        throw new PresenceError('UNAUTHORIZED', `development mode: pass ?userId=<id> (1–${config.limits.maxUserIdLength} characters)`);
      }
      // Development stands in for a token's claims: `name` and `avatar` seed meta as those claims would.
      const meta: Record<string, string> = {};
      for (const claim of ['name', 'avatar'] as const) {
        const value = url.searchParams.get(claim);
        if (value) meta[claim] = value;
      }
      await this.options.engine.prepareConnect(userId, url.searchParams.get('sessionId') ?? undefined);
      return { userId, meta };
    }
    throw new PresenceError('UNAUTHORIZED', 'a token is required: ?token=<JWT>');
  }

  private accept(request: IncomingMessage, socket: Duplex, head: Buffer, url: URL, identity?: Identity, failure?: PresenceError): void {
    if (socket.destroyed) return;
    const connect = identity && connectRequest(identity, url.searchParams);
    this.wss.handleUpgrade(request, socket, head, (ws) => {
      const { config, engine, log } = this.options;
      const connection = this.track(ws, socket, failure === undefined && connect !== undefined) as Connection;
      if (failure || !connect) {
        connection.reject(failure ?? new PresenceError('UNAUTHORIZED'));
        return;
      }
      connection.occupancy = wantsOccupancy(url.searchParams);
      try {
        connection.attachment = engine.connect(connect, connection);
      } catch (error) {
        connection.reject(toPresenceError(error, log));
        return;
      }
      const { identity } = connect;
      connection.tokenRenewAt = this.now() + this.tokenRenewMs;
      if (identity.expiresAt !== undefined) this.expireAt(connection, identity.expiresAt);
      if (isDevMode(config)) log.debug('dev-mode connection', { userId: identity.userId });
    });
  }

  /**
   * A Pusher connection: the same gates as /realtime (shutdown, Origin, connection limit, load),
   * then the app key and protocol version. Refusals complete the handshake and close with a
   * Pusher code, which is all pusher-js reads.
   */
  private acceptPusher(request: IncomingMessage, socket: Duplex, head: Buffer, url: URL): void {
    socket.on('error', destroyOnError);
    const refusal = this.pusherRefusal(request, url);
    this.wss.handleUpgrade(request, socket, head, (ws) => {
      const connection = this.track(ws, socket, refusal === undefined, true) as PusherSocket;
      if (refusal) connection.reject(refusal);
      else connection.client = this.options.engine.pusher!.open(connection);
    });
  }

  private pusherRefusal(request: IncomingMessage, url: URL): PusherError | PresenceError | undefined {
    const { config } = this.options;
    if (!this.accepting) return new PresenceError('SHUTTING_DOWN');
    if (!originAllowed(config.allowedOrigins, request.headers.origin)) return new PresenceError('ORIGIN_FORBIDDEN', 'this Origin is not allowed');
    if (this.connections.size >= config.limits.maxConnections) return new PresenceError('TOO_MANY_CONNECTIONS');
    const overload = this.overload.check();
    if (overload) {
      this.options.observer?.connectionRefused?.(overload.reason);
      return new PresenceError('OVERLOADED', overload.message);
    }
    if (url.pathname.slice(PUSHER_PATH_PREFIX.length) !== this.options.engine.pusher!.config.key) {
      return new PusherError(PUSHER_CODES.APP_NOT_FOUND, 'no app with this key on this server');
    }
    const protocol = url.searchParams.get('protocol');
    if (protocol === null) return new PusherError(PUSHER_CODES.NO_PROTOCOL, 'no protocol version: connect with ?protocol=7');
    if (protocol !== '7') return new PusherError(PUSHER_CODES.UNSUPPORTED_PROTOCOL, `protocol ${protocol.slice(0, 16)} is not supported: this server speaks protocol 7`);
    return undefined;
  }

  /**
   * Wires a socket to a new Connection with the shared handlers. Nothing here may close over the
   * upgrade: whatever a socket's handlers can reach (the request, its headers, the URL, about 1 KB)
   * lives as long as the socket.
   */
  private track(ws: WebSocket, socket: Duplex, authenticated: boolean, pusher = false): AnyConnection {
    // ws writes a text frame as the very bytes textFrame builds, so shared frames may go straight
    // to the socket, in order with ws's own writes; compression is per socket and must not.
    const raw = this.options.config.permessageDeflate ? undefined : socket;
    const connection = pusher ? new PusherSocket(ws, raw, this.connectionOptions) : new Connection(ws, raw, this.connectionOptions);
    this.options.observer?.connectionOpened();
    (ws as TrackedSocket)[CONNECTION] = connection;
    ws.on('close', this.handlers.close);
    ws.on('error', this.handlers.error);
    if (!authenticated) return connection;
    connection.sweepSlice = this.nextSlice;
    this.nextSlice = (this.nextSlice + 1) % this.sweepSlices.length;
    this.connections.set(connection, ws);
    this.sweepSlices[connection.sweepSlice].set(connection, ws);
    ws.on('pong', this.handlers.pong);
    ws.on('message', this.handlers.message);
    return connection;
  }

  /**
   * Socket event handlers, made once and shared by every socket (`this` is the socket, which
   * carries its connection): per-socket closures cost about 200 bytes a connection.
   */
  private makeHandlers() {
    const { engine, log, observer } = this.options;
    const transport = this;
    return {
      close(this: WebSocket, code: number): void {
        const connection = (this as TrackedSocket)[CONNECTION]!;
        clearTimeout(connection.expiryTimer);
        if (transport.connections.delete(connection)) transport.sweepSlices[connection.sweepSlice].delete(connection);
        observer?.connectionClosed(code);
        if (connection instanceof PusherSocket) connection.ended();
        else if (connection.attachment) engine.disconnect(connection.attachment);
      },
      error(error: Error & { code?: string }): void {
        // ws reports oversized frames here and closes with 1009 itself; nothing else to do.
        log.debug('socket error', { code: error.code, message: error.message });
      },
      pong(this: WebSocket): void {
        (this as TrackedSocket)[CONNECTION]!.lastInboundAt = transport.now();
      },
      message(this: WebSocket, data: RawData, isBinary: boolean): void {
        const connection = (this as TrackedSocket)[CONNECTION]!;
        if (connection instanceof PusherSocket) connection.receive(data as Buffer, isBinary);
        else connection.receive(engine, data as Buffer, isBinary);
      },
    };
  }

  /** Closes the connection with TOKEN_EXPIRED when its token expires. */
  private expireAt(connection: Connection, expiresAt: number): void {
    const remaining = expiresAt - this.now();
    if (remaining <= 0) {
      connection.reject(new PresenceError('TOKEN_EXPIRED'));
      return;
    }
    // setTimeout cannot wait longer than ~24.8 days, so a long-lived token is checked in steps.
    connection.expiryTimer = setTimeout(() => this.expireAt(connection, expiresAt), Math.min(remaining, MAX_TIMER_MS));
    connection.expiryTimer.unref();
  }

  /**
   * Pings each connection once per interval (one slice per tick), and cuts one that sent nothing
   * (not even a pong) for two intervals: it is half-open or hung, and its offline delay should
   * start. A connection whose two intervals end before its slice comes round again is filed under
   * the tick that ends them, so it is cut at most one tick late; one that answered in the meantime
   * is let be there. A live peer is never near that deadline: it answers each ping within its
   * round trip, pings come once per interval, and so it is seldom filed at all.
   */
  private sweep(): void {
    const now = this.now();
    const target = Math.floor((now - this.sweepEpoch) / this.tickMs);
    if (target < this.nextTick) return; // fired early
    const slices = this.sweepSlices.length;
    // After a stall longer than a cycle each slice is visited once, and every skipped tick's
    // deadlines are due (one pass over the ring covers them all).
    const from = Math.max(this.nextTick, target - slices + 1);
    for (let tick = this.nextTick; tick < Math.min(from, this.nextTick + this.deadlines.length); tick++) this.checkDeadlines(tick, now, target);
    for (let tick = from; tick <= target; tick++) {
      this.checkDeadlines(tick, now, target);
      for (const [connection, ws] of this.sweepSlices[tick % slices]) {
        if (this.checkLiveness(connection, ws, now, target) && ws.readyState === ws.OPEN) {
          ws.ping();
          if (connection.tokenRenewAt <= now && connection instanceof Connection) this.renewSessionToken(connection);
        }
      }
    }
    this.nextTick = target + 1;
  }

  /** Checks the connections filed under this tick. */
  private checkDeadlines(tick: number, now: number, target: number): void {
    const index = tick % this.deadlines.length;
    const due = this.deadlines[index];
    if (due.length === 0) return;
    this.deadlines[index] = [];
    for (const [connection, ws] of due) {
      if (this.connections.has(connection)) this.checkLiveness(connection, ws, now, target);
    }
  }

  /**
   * Cuts a connection silent for two intervals, or files its deadline under its tick if that
   * comes before the connection's next visit; false once cut. `target` is the sweep's current tick.
   */
  private checkLiveness(connection: AnyConnection, ws: WebSocket, now: number, target: number): boolean {
    if (connection.isClosed) return false;
    const intervalMs = this.options.config.heartbeatIntervalMs;
    const deadline = connection.lastInboundAt + 2 * intervalMs;
    if (deadline <= now) {
      // Timers run before the event loop reads sockets: after a stall, a pong may be waiting
      // unread. The verdict waits for this turn's reads (setImmediate runs after them).
      setImmediate(() => {
        if (connection.isClosed || !this.connections.has(connection)) return;
        if (connection.lastInboundAt + 2 * intervalMs > this.now()) return;
        this.options.observer?.errorSent('HEARTBEAT_TIMEOUT');
        // A hung client may still read a close frame; a half-open one never will, so cut it shortly.
        connection.close(4002, 'HEARTBEAT_TIMEOUT');
        setTimeout(() => ws.terminate(), Math.min(HEARTBEAT_CLOSE_GRACE_MS, intervalMs)).unref();
      });
      return false;
    }
    // The first tick at or after the deadline (later than `target`, as the deadline is after now);
    // the slice's next visit would see to it as well, so only an earlier deadline is filed: a
    // connection that answered the last ping is seldom filed at all.
    const slices = this.sweepSlices.length;
    const dueTick = Math.ceil((deadline - this.sweepEpoch) / this.tickMs);
    const nextVisit = target + ((((connection.sweepSlice - target - 1) % slices) + slices) % slices) + 1;
    if (dueTick < nextVisit) this.deadlines[dueTick % this.deadlines.length].push([connection, ws]);
    return true;
  }

  /** Sends a fresh session token before the one of `welcome` (or the last renewal) expires. */
  private renewSessionToken(connection: Connection): void {
    connection.tokenRenewAt = this.now() + this.tokenRenewMs;
    const renewed = connection.attachment && this.options.engine.renewSessionToken(connection.attachment);
    if (!renewed) return;
    const message: ServerMessage = { type: 'session.token', sessionToken: renewed.token, expiresAt: new Date(renewed.expiresAt).toISOString() };
    connection.send(JSON.stringify(message));
    this.options.observer?.sent('session.token', 1);
  }

  /** Closes every connection with 1001 so clients reconnect (elsewhere), then stops. */
  async shutdown(graceMs = 2000): Promise<void> {
    this.accepting = false;
    clearInterval(this.heartbeat);
    this.overload.close();
    const open = [...this.connections];
    const closed = Promise.all(
      open.map(
        ([connection, ws]) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === ws.CLOSED) return resolve();
            ws.once('close', () => resolve());
            connection.close(1001, 'SHUTTING_DOWN');
          }),
      ),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const ws of this.connections.values()) ws.terminate();
    this.wss.close();
  }
}

/** A listener shared by every upgrading socket: a per-socket closure would keep its request alive. */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

function connectRequest(identity: Identity, params: URLSearchParams): ConnectRequest {
  return {
    identity,
    sessionId: params.get('sessionId') ?? undefined,
    device: params.get('device') ?? undefined,
    restore: restoreHint(params),
  };
}

/** `features=occupancy` (a comma list: features this server does not know are ignored). */
function wantsOccupancy(params: URLSearchParams): boolean {
  const features = params.get('features');
  return features !== null && features.split(',').some((feature) => feature.trim() === 'occupancy');
}

/** The manual status fields of the `status` command, each with its compiled check. */
const RESTORE_FIELDS = Object.entries(ManualStatusFields).map(([field, schema]) => [field, compile(schema)] as const);

/**
 * The status a reconnecting client asks to have back if this server forgot it (see ConnectRequest):
 * the `status` command's manual status fields, as query parameters. A value the command's schema
 * refuses is dropped, not an error: the client re-sends its status after `welcome` anyway.
 */
function restoreHint(params: URLSearchParams): ConnectRequest['restore'] {
  const hint: Record<string, string> = {};
  for (const [field, check] of RESTORE_FIELDS) {
    const value = params.get(field);
    if (value !== null && check(value)) hint[field] = value;
  }
  return Object.keys(hint).length > 0 ? (hint as ConnectRequest['restore']) : undefined;
}

function toPresenceError(error: unknown, log: Logger): PresenceError {
  if (isPresenceError(error)) return error;
  log.error('connection setup failed', { error });
  return new PresenceError('INTERNAL');
}
