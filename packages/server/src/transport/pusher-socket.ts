import type { ErrorCode } from '@presence/protocol';
import { PusherError, pusherCloseCode, pusherCodeFor, PUSHER_CODES, type PusherCode } from '../protocol-pusher/errors.js';
import { errorFrame } from '../protocol-pusher/frames.js';
import type { PusherClient, PusherSocket as PusherOutput } from '../protocol-pusher/pusher-client.js';
import type { ConnectionOptions, RawStream, SocketLike } from './connection.js';
import { scheduleFlush, type Flushable, type SharedFrames } from './flush-queue.js';
import { RateLimiter } from './rate-limiter.js';

const OPEN = 1;

/**
 * One WebSocket on `/app/:key` after the handshake: rate-limits and parses frames for its
 * PusherClient, and writes its messages, one frame each (Pusher has no batches), the frames that
 * many sockets get in one pass encoded once. Every close it is asked for with the server's own
 * codes (heartbeat, shutdown, logout, flood) goes out with the Pusher code of the same meaning.
 */
export class PusherSocket implements PusherOutput, Flushable {
  client?: PusherClient;
  /** Time anything last arrived (frame or pong): the heartbeat sweep reads it. */
  lastInboundAt: number;
  /** Which heartbeat slice the transport filed it in. */
  sweepSlice = 0;
  /** Pusher connections hold no session token, and no JWT that expires. */
  readonly tokenRenewAt = Infinity;
  readonly expiryTimer: NodeJS.Timeout | undefined = undefined;
  private readonly limiter: RateLimiter;
  private readonly outbox: string[] = [];
  private flushScheduled = false;
  private closed = false;

  constructor(
    private readonly socket: SocketLike,
    private readonly raw: RawStream | undefined,
    private readonly options: ConnectionOptions,
  ) {
    this.limiter = new RateLimiter(options.rateLimitPerSecond, options.rateLimitBurst, options.now);
    this.lastInboundAt = options.now();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(json: string): void {
    if (this.closed) return;
    this.options.observer?.sent('pusher', 1);
    this.outbox.push(json);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      scheduleFlush(this);
    }
  }

  /** Closes with the Pusher code for `code` (one of the server's own close codes). */
  close(code: number, reason: string): void {
    this.closeWith(pusherCloseCode(code), reason);
  }

  /** Refuses the connection at its start: `pusher:error`, then the close code of the refusal. */
  reject(error: PusherError | { code: ErrorCode; message: string }): void {
    const code: PusherCode = error instanceof PusherError ? error.code : pusherCodeFor(error.code);
    if (!(error instanceof PusherError)) this.options.observer?.errorSent(error.code);
    this.send(errorFrame(code, error.message));
    this.closeWith(code, error.message);
  }

  /** The socket closed: the client's subscriptions and sessions end. */
  ended(): void {
    this.client?.closed();
  }

  /** Runs one inbound frame. Never throws. */
  receive(data: string | Buffer, isBinary: boolean): void {
    this.lastInboundAt = this.options.now();
    if (this.closed || !this.client) return;
    const verdict = this.limiter.take();
    if (verdict === 'close') {
      this.closeWith(PUSHER_CODES.FLOODING, 'RATE_LIMITED');
      return;
    }
    if (verdict === 'refuse') {
      this.send(errorFrame(PUSHER_CODES.RATE_LIMITED, 'too many messages; this one was dropped'));
      return;
    }
    let message: unknown;
    try {
      if (isBinary) throw new Error('binary');
      message = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
    } catch {
      this.send(errorFrame(PUSHER_CODES.INVALID_MESSAGE, 'a Pusher message is JSON text'));
      return;
    }
    this.options.observer?.commandReceived('pusher');
    this.client.receive(message);
  }

  /** Called by the flush pass of this turn. */
  flushQueued(frames: SharedFrames): void {
    this.flush(frames);
  }

  private closeWith(code: number, reason: string): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    // A close reason is at most 123 bytes.
    this.socket.close(code, Buffer.byteLength(reason) > 123 ? reason.slice(0, 60) : reason);
  }

  private flush(frames?: SharedFrames): void {
    this.flushScheduled = false;
    if (this.closed || this.outbox.length === 0) return;
    // A client that does not read is dropped once its backlog passes the limit, as on /realtime.
    if (this.socket.bufferedAmount > this.options.maxOutboundBufferBytes) {
      this.outbox.length = 0;
      this.closed = true;
      this.options.observer?.errorSent('SLOW_CONSUMER');
      this.options.log.warn('closing slow consumer', { socketId: this.client?.socketId, bufferedBytes: this.socket.bufferedAmount });
      this.socket.terminate();
      return;
    }
    const { raw } = this;
    for (const text of this.outbox) {
      const framed = raw !== undefined && frames !== undefined ? frames.framed(text) : undefined;
      if (framed === undefined) this.socket.send(text);
      else if (this.socket.readyState === OPEN) raw!.write(framed);
    }
    this.outbox.length = 0;
  }
}
