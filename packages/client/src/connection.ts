import { CLOSE_CODES, isErrorCode, shouldReconnect, type ClientMessage, type ServerMessage, type WelcomeMessage } from '@presence/protocol';
import { Backoff, type BackoffOptions } from './backoff.js';
import { Timer, type Clock } from './clock.js';
import { Emitter } from './emitter.js';
import { PresenceError, type PresenceErrorCode } from './errors.js';
import { READY_STATE, decodeFrame, type CloseEventLike, type MessageEventLike, type WebSocketConstructor, type WebSocketLike } from './socket.js';

/** What the application sees of the connection. */
export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/**
 * The internal phases. Public status is derived from them (see `statusOf`):
 *
 * | phase          | meaning                                           | leaves to                          |
 * | -------------- | ------------------------------------------------- | ---------------------------------- |
 * | idle           | not started, or closed by the application         | authenticating (start)             |
 * | authenticating | waiting for getToken()                            | opening, waiting                   |
 * | opening        | WebSocket created, not open yet                   | handshaking, waiting, ended        |
 * | handshaking    | socket open, waiting for `welcome`                | open, waiting, ended               |
 * | open           | welcomed: commands flow                           | waiting, ended                     |
 * | waiting        | backoff before the next attempt                   | authenticating                     |
 * | ended          | terminal: logout, forbidden, replaced, bad token  | authenticating (start)             |
 *
 * Every phase may also go to idle through `close()`.
 */
export type ConnectionPhase = 'idle' | 'authenticating' | 'opening' | 'handshaking' | 'open' | 'waiting' | 'ended';

export interface ConnectionOptions {
  url: string;
  getToken?: () => string | Promise<string>;
  /** Extra query parameters for every connect (`device`, or `userId` in development mode). */
  params: Record<string, string>;
  /** Parameters computed at each connect (the own status to restore if the server forgot it). */
  connectParams?: () => Record<string, string>;
  WebSocket: WebSocketConstructor;
  clock: Clock;
  random: () => number;
  backoff: BackoffOptions;
  connectTimeoutMs: number;
  pingAfterMs: number;
  pongTimeoutMs: number;
  slowDownDelayMs: number;
  maxUnauthorized: number;
}

/** Why an established connection went away, told before the client reconnects (or gives up). */
export interface ConnectionLost {
  closeCode: number;
  /** The server's error code for the close, when it sent one (error frame or close reason). */
  code?: PresenceErrorCode;
  willReconnect: boolean;
}

export interface ConnectionEvents {
  status(status: ConnectionStatus): void;
  /** A connection was established; `welcome.resumed` says whether the session survived. */
  welcome(welcome: WelcomeMessage): void;
  /** Every server message after `welcome`, batches already split. */
  message(message: ServerMessage): void;
  /** An established connection ended. Pending commands must be re-sent or failed now. */
  lost(info: ConnectionLost): void;
  /** The connection will not come back by itself. */
  ended(error: PresenceError): void;
  /** Something failed that the connection recovers from (token, unreadable frame). */
  error(error: PresenceError): void;
}

type ActiveSocket = { socket: WebSocketLike; refusal?: PresenceErrorCode };

const noop = (): void => {};

/**
 * One logical connection to the server over a series of WebSockets: authenticates with a fresh
 * token on every attempt, resumes the session by id, detects dead sockets with its own pings (a
 * browser cannot see WebSocket pings), and reconnects with backoff unless the close code says not to.
 */
export class Connection extends Emitter<ConnectionEvents> {
  private currentPhase: ConnectionPhase = 'idle';
  private active: ActiveSocket | undefined;
  private welcomeMessage: WelcomeMessage | undefined;
  private sessionIdToResume: string | undefined;
  /** Any welcome since `start()`: then losing the connection is "reconnecting", not "connecting". */
  private welcomedSinceStart = false;
  private lastStatus: ConnectionStatus = 'disconnected';
  /** Bumped whenever an attempt is abandoned, so late callbacks of old attempts do nothing. */
  private attemptId = 0;
  private unauthorizedInARow = 0;
  private lastReceivedAt = 0;
  private pingSentAt: number | undefined;
  /** Before this time, no attempt is made early: the server asked for the wait (overloaded). */
  private notBefore = 0;
  private readonly backoff: Backoff;
  private readonly retryTimer: Timer;
  private readonly connectTimer: Timer;
  private readonly livenessTimer: Timer;

  constructor(private readonly options: ConnectionOptions) {
    super();
    this.backoff = new Backoff(options.backoff, options.random);
    this.retryTimer = new Timer(options.clock, () => this.beginAttempt());
    this.connectTimer = new Timer(options.clock, () => this.abandon('connect timeout'));
    this.livenessTimer = new Timer(options.clock, () => this.checkLiveness());
  }

  get phase(): ConnectionPhase {
    return this.currentPhase;
  }

  get status(): ConnectionStatus {
    return this.lastStatus;
  }

  /** The `welcome` of the current connection, or of the last one while reconnecting. */
  get welcome(): WelcomeMessage | undefined {
    return this.welcomeMessage;
  }

  get sessionId(): string | undefined {
    return this.sessionIdToResume;
  }

  /** Starts connecting unless already under way. */
  start(): void {
    if (this.currentPhase !== 'idle' && this.currentPhase !== 'ended') return;
    this.welcomedSinceStart = false;
    this.unauthorizedInARow = 0;
    this.backoff.reset();
    this.beginAttempt();
  }

  /** Closes the socket and stops every timer. The session id is kept, so `start()` resumes. */
  close(): void {
    this.attemptId += 1;
    this.dropSocket(1000, 'client closed');
    this.stopTimers();
    this.currentPhase = 'idle';
    this.updateStatus();
  }

  /**
   * The network came back or the page became visible again: a reconnect waiting out its backoff
   * tries at once (the browser may have throttled the timer, and the wait may be 30 s long). A
   * wait the server asked for (overloaded or rate limited) is kept.
   */
  retryNow(): void {
    if (this.currentPhase !== 'waiting' || this.options.clock.now() < this.notBefore) return;
    this.retryTimer.cancel();
    this.beginAttempt();
  }

  /** Sends when open; returns false (and sends nothing) otherwise. */
  send(message: ClientMessage): boolean {
    const socket = this.active?.socket;
    if (this.currentPhase !== 'open' || !socket || socket.readyState !== READY_STATE.OPEN) return false;
    socket.send(JSON.stringify(message));
    return true;
  }

  // Attempts ---------------------------------------------------------------------------------

  private beginAttempt(): void {
    const attempt = ++this.attemptId;
    this.currentPhase = 'authenticating';
    this.updateStatus();
    const { getToken } = this.options;
    if (!getToken) {
      this.openSocket(attempt, undefined);
      return;
    }
    let pending: Promise<string>;
    try {
      pending = Promise.resolve(getToken());
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (token) => {
        if (attempt !== this.attemptId) return;
        if (typeof token !== 'string' || token.length === 0) {
          this.tokenFailed(attempt, new PresenceError('TOKEN_UNAVAILABLE', 'getToken() returned no token'));
          return;
        }
        this.openSocket(attempt, token);
      },
      (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        this.tokenFailed(attempt, new PresenceError('TOKEN_UNAVAILABLE', `getToken() failed: ${message}`));
      },
    );
  }

  private tokenFailed(attempt: number, error: PresenceError): void {
    if (attempt !== this.attemptId) return;
    this.emit('error', error);
    this.scheduleRetry(0);
  }

  private openSocket(attempt: number, token: string | undefined): void {
    const url = new URL(this.options.url);
    for (const [key, value] of Object.entries(this.options.params)) url.searchParams.set(key, value);
    for (const [key, value] of Object.entries(this.options.connectParams?.() ?? {})) url.searchParams.set(key, value);
    if (token !== undefined) url.searchParams.set('token', token);
    if (this.sessionIdToResume) url.searchParams.set('sessionId', this.sessionIdToResume);
    let socket: WebSocketLike;
    try {
      socket = new this.options.WebSocket(url.toString());
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.emit('error', new PresenceError('PROTOCOL_ERROR', `could not create a WebSocket: ${message}`));
      this.scheduleRetry(0);
      return;
    }
    const active: ActiveSocket = { socket };
    this.active = active;
    this.currentPhase = 'opening';
    this.connectTimer.arm(this.options.connectTimeoutMs);
    // Handlers are typed `never` in WebSocketLike so that any implementation fits; read narrowly here.
    const handlers = socket as unknown as {
      onopen: (() => void) | null;
      onmessage: ((event: MessageEventLike) => void) | null;
      onclose: ((event: CloseEventLike) => void) | null;
      onerror: (() => void) | null;
    };
    handlers.onopen = () => {
      if (this.active !== active || attempt !== this.attemptId) return;
      this.currentPhase = 'handshaking';
    };
    handlers.onmessage = (event) => {
      if (this.active === active) this.receive(active, event.data);
    };
    handlers.onclose = (event) => {
      if (this.active === active) this.socketClosed(active, event.code, event.reason);
    };
    // A failed socket always closes too; the close event carries what we need.
    handlers.onerror = noop;
  }

  private receive(active: ActiveSocket, data: unknown): void {
    this.lastReceivedAt = this.options.clock.now();
    const messages = decodeFrame(data);
    if (!messages) {
      this.emit('error', new PresenceError('PROTOCOL_ERROR', 'the server sent a frame that is not protocol JSON'));
      return;
    }
    for (const message of messages) {
      // A listener may have closed the connection in the middle of a batch.
      if (this.active !== active) return;
      if (this.currentPhase === 'open') {
        if (message.type === 'error' && message.ref === undefined && isErrorCode(message.code)) {
          // An error without ref while open may announce the close that follows (TOKEN_EXPIRED).
          active.refusal = message.code;
        }
        this.emit('message', message);
      } else if (message.type === 'welcome') {
        this.welcomed(message);
      } else if (message.type === 'error' && isErrorCode(message.code)) {
        // Refusals come as an error frame, then a close: remember which, to decide at the close.
        active.refusal = message.code;
      }
    }
  }

  private welcomed(welcome: WelcomeMessage): void {
    this.connectTimer.cancel();
    this.currentPhase = 'open';
    this.welcomeMessage = welcome;
    this.sessionIdToResume = welcome.sessionId;
    this.welcomedSinceStart = true;
    this.unauthorizedInARow = 0;
    this.backoff.reset();
    this.pingSentAt = undefined;
    this.livenessTimer.arm(this.options.pingAfterMs);
    this.updateStatus();
    this.emit('welcome', welcome);
  }

  private socketClosed(active: ActiveSocket, closeCode: number, reason: string): void {
    const wasOpen = this.currentPhase === 'open';
    this.detach(active.socket);
    this.active = undefined;
    this.stopTimers();
    const code = active.refusal ?? (isErrorCode(reason) ? reason : undefined);
    const verdict = this.verdict(closeCode, code);
    if (wasOpen) this.emit('lost', { closeCode, ...(code ? { code } : {}), willReconnect: verdict.retry });
    if (verdict.retry) {
      this.scheduleRetry(verdict.floorMs);
    } else {
      this.end(new PresenceError(code ?? 'CONNECTION_ENDED', `the server closed the connection (${closeCode}${code ? ` ${code}` : ''})`, { closeCode }));
    }
  }

  /** Whether to reconnect after this close, and how long to wait at least. */
  private verdict(closeCode: number, code: PresenceErrorCode | undefined): { retry: boolean; floorMs: number } {
    if (closeCode === CLOSE_CODES.UNAUTHORIZED) {
      // A token that expired is normal; a fresh one being refused as well is a configuration error.
      if (code === 'UNAUTHORIZED') {
        this.unauthorizedInARow += 1;
        if (this.unauthorizedInARow >= this.options.maxUnauthorized) return { retry: false, floorMs: 0 };
      }
      return { retry: true, floorMs: 0 };
    }
    if (!shouldReconnect(closeCode)) return { retry: false, floorMs: 0 };
    if (closeCode === CLOSE_CODES.RATE_LIMITED || closeCode === CLOSE_CODES.TOO_MANY || closeCode === CLOSE_CODES.TRY_AGAIN_LATER) {
      return { retry: true, floorMs: this.options.slowDownDelayMs };
    }
    return { retry: true, floorMs: 0 };
  }

  private scheduleRetry(floorMs: number): void {
    this.currentPhase = 'waiting';
    // The floor gets up to as much again at random: clients refused together must not return together.
    const floor = floorMs * (1 + this.options.random());
    this.notBefore = floor > 0 ? this.options.clock.now() + floor : 0;
    this.retryTimer.arm(Math.max(floor, this.backoff.next()));
    this.updateStatus();
  }

  private end(error: PresenceError): void {
    this.attemptId += 1;
    this.stopTimers();
    this.currentPhase = 'ended';
    // Logged out, replaced or refused: that session must not be resumed.
    this.sessionIdToResume = undefined;
    this.updateStatus();
    this.emit('ended', error);
  }

  /** Gives up on the current socket without waiting for its close (it may never come). */
  private abandon(why: string): void {
    const active = this.active;
    if (!active) return;
    const wasOpen = this.currentPhase === 'open';
    this.attemptId += 1;
    this.dropSocket(1000, why);
    this.stopTimers();
    if (wasOpen) this.emit('lost', { closeCode: 1006, willReconnect: true });
    this.scheduleRetry(0);
  }

  // Liveness ---------------------------------------------------------------------------------

  /**
   * After `pingAfterMs` of silence the client pings; if nothing at all arrives within
   * `pongTimeoutMs` after that, the socket is presumed dead (half-open TCP) and replaced.
   */
  private checkLiveness(): void {
    if (this.currentPhase !== 'open') return;
    const now = this.options.clock.now();
    const { pingAfterMs, pongTimeoutMs } = this.options;
    if (this.pingSentAt !== undefined) {
      if (this.lastReceivedAt < this.pingSentAt) {
        this.abandon('no answer to ping');
        return;
      }
      this.pingSentAt = undefined;
    }
    const silentFor = now - this.lastReceivedAt;
    if (silentFor < pingAfterMs) {
      this.livenessTimer.arm(pingAfterMs - silentFor);
      return;
    }
    this.pingSentAt = now;
    this.send({ type: 'ping' });
    this.livenessTimer.arm(pongTimeoutMs);
  }

  // Helpers ----------------------------------------------------------------------------------

  private dropSocket(code: number, reason: string): void {
    const active = this.active;
    this.active = undefined;
    if (!active) return;
    this.detach(active.socket);
    const { readyState } = active.socket;
    if (readyState === READY_STATE.OPEN || readyState === READY_STATE.CONNECTING) {
      try {
        active.socket.close(code, reason);
      } catch {
        // Some implementations throw when closing a socket that is still connecting; it is gone either way.
      }
    }
  }

  private detach(socket: WebSocketLike): void {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    // Not null: some implementations (ws) throw on an error event nobody listens to.
    socket.onerror = noop;
  }

  private stopTimers(): void {
    this.retryTimer.cancel();
    this.connectTimer.cancel();
    this.livenessTimer.cancel();
    this.pingSentAt = undefined;
  }

  private updateStatus(): void {
    const status = statusOf(this.currentPhase, this.welcomedSinceStart);
    if (status === this.lastStatus) return;
    this.lastStatus = status;
    this.emit('status', status);
  }
}

export function statusOf(phase: ConnectionPhase, welcomedBefore: boolean): ConnectionStatus {
  switch (phase) {
    case 'idle':
    case 'ended':
      return 'disconnected';
    case 'open':
      return 'connected';
    default:
      return welcomedBefore ? 'reconnecting' : 'connecting';
  }
}
