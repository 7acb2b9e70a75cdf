import type { ClientMessage, ErrorCode, Ref, ServerMessage } from '@presence/protocol';
import type { Attachment, SessionSink } from '../presence/engine.js';
import type { WindowFrame } from '../presence/state.js';
import type { PresenceNode } from '../presence-node.js';
import { decodeCommand, refOf } from '../presence/commands.js';
import { PresenceError, isPresenceError } from '../errors.js';
import type { Logger } from '../log.js';
import { scheduleFlush, type Flushable, type SharedFrames } from './flush-queue.js';
import { RateLimiter } from './rate-limiter.js';

/**
 * The few things a connection needs from a WebSocket. The `ws` library is adapted to this in
 * websocket.ts, and tests can drive a Connection without a socket at all.
 */
export interface SocketLike {
  send(data: string): void;
  close(code: number, reason: string): void;
  /** Drops the TCP connection without a closing handshake. */
  terminate(): void;
  readonly bufferedAmount: number;
  /** 1 while open (the WebSocket constants). */
  readonly readyState: number;
}

/** The byte stream under a WebSocket, for frames built once and written to many sockets. */
export interface RawStream {
  write(frame: Buffer): boolean;
}

const OPEN = 1;

export interface ConnectionObserver {
  commandReceived(type: string): void;
  errorSent(code: ErrorCode): void;
  /** `pusher`: any message of the Pusher endpoint. */
  sent(type: ServerMessage['type'] | 'pusher', receivers: number): void;
  /** Seconds a command took from arrival until its frames were queued to every receiver. */
  commandHandled(seconds: number): void;
}

/** What every connection of a transport shares: one object, not a copy per connection. */
export interface ConnectionOptions {
  log: Logger;
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  maxOutboundBufferBytes: number;
  now: () => number;
  observer?: ConnectionObserver;
}

/**
 * One WebSocket's life after the handshake: decodes frames into commands, rate-limits them, runs
 * them on the engine, and queues the engine's frames, coalescing those of one tick into a single
 * frame (a JSON array) so a burst of events costs one write.
 */
export class Connection implements SessionSink, Flushable {
  attachment?: Attachment;
  /** Time anything last arrived (frame or pong): the heartbeat sweep reads it. */
  lastInboundAt: number;
  /** Closes the connection when its token expires (set by the transport). */
  expiryTimer: NodeJS.Timeout | undefined = undefined;
  /** Which heartbeat slice the transport filed it in. */
  sweepSlice = 0;
  /** When the session token given in `welcome` is due for renewal (wall clock; the sweep renews it). */
  tokenRenewAt = Infinity;
  /** The client asked for occupancy mode in large channels (`features=occupancy` at connect). */
  occupancy = false;
  private readonly limiter: RateLimiter;
  private readonly outbox: string[] = [];
  private flushScheduled = false;
  private closed = false;

  /**
   * @param raw The socket's byte stream, when frames may bypass the WebSocket library: shared
   *   frames are then written pre-framed (see flush-queue.ts). Undefined when frames must go
   *   through it (with permessage-deflate, which compresses per socket).
   */
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

  // SessionSink -------------------------------------------------------------------------------

  send(json: string): void {
    if (this.closed) return;
    this.outbox.push(json);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      scheduleFlush(this);
    }
  }

  /**
   * A large channel's window: its text (an array of messages) is queued as it is, and written as a
   * frame of its own, encoded once for every socket of this pass. Another message in the same turn
   * makes the frame one flat array of all of them.
   */
  sendWindow(frame: WindowFrame): void {
    this.send(frame.text);
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.socket.close(code, reason);
  }

  // Inbound ----------------------------------------------------------------------------------

  /** Runs one inbound frame. Never throws: every failure becomes an `error` frame or a close. */
  receive(engine: PresenceNode, data: string | Buffer, isBinary: boolean): void {
    this.lastInboundAt = this.options.now();
    if (this.closed || !this.attachment) return;
    // Every frame takes a token before anything looks at its content, and one over the limit is
    // refused whatever it holds: junk must cost a flooder as much as commands do, and must get the
    // same answer, RATE_LIMITED, on the way to the same 4008.
    const verdict = this.limiter.take();
    if (verdict === 'close') {
      this.fail(new PresenceError('RATE_LIMITED', 'command flood; closing'), undefined, true);
      return;
    }
    if (verdict === 'refuse') {
      // Parsed only to echo the ref, so a client can fail the right request; binary and invalid
      // JSON have none.
      this.fail(new PresenceError('RATE_LIMITED'), isBinary ? undefined : refOf(parseJson(data)));
      return;
    }
    if (isBinary) {
      this.fail(new PresenceError('BINARY_NOT_SUPPORTED'), undefined);
      return;
    }
    const parsed = parseJson(data);
    if (parsed === undefined) {
      this.fail(new PresenceError('INVALID_JSON', 'the frame is not valid JSON'), undefined);
      return;
    }
    const ref = refOf(parsed);
    let command: ClientMessage;
    try {
      command = decodeCommand(parsed);
    } catch (error) {
      this.fail(error, ref);
      return;
    }
    this.options.observer?.commandReceived(command.type);
    const started = performance.now();
    try {
      const ackData = engine.handle(this.attachment, command);
      if (ackData instanceof Promise) {
        // The command waited for user records from the shared store (a watch of unseen users).
        ackData.then(
          (data) => this.acknowledge(data, ref),
          (error: unknown) => this.fail(error, ref),
        );
        return;
      }
      this.options.observer?.commandHandled((performance.now() - started) / 1000);
      this.acknowledge(ackData, ref);
    } catch (error) {
      this.fail(error, ref);
    }
  }

  private acknowledge(data: Record<string, unknown> | undefined, ref: Ref | undefined): void {
    if (data !== undefined && ref !== undefined && !this.closed) this.sendMessage({ ...data, type: 'ack', ref });
  }

  /** Answers with an `error` frame; closes too when the error is one that ends connections. */
  fail(error: unknown, ref: Ref | undefined, forceClose = false): void {
    let presenceError: PresenceError;
    if (isPresenceError(error)) {
      presenceError = error;
    } else {
      this.options.log.error('command failed', { error });
      presenceError = new PresenceError('INTERNAL');
    }
    const { code } = presenceError;
    this.options.observer?.errorSent(code);
    this.sendMessage({ type: 'error', ...(ref !== undefined ? { ref } : {}), code, message: presenceError.message });
    // Errors with a close code end the connection only when they are about the connection itself
    // (auth, floods); a refused command such as one rate-limited frame leaves it open.
    if (forceClose) this.close(presenceError.closeCode ?? 1008, code);
  }

  /** Fails the whole connection (auth, limits at connect): error frame, then the error's close code. */
  reject(error: PresenceError): void {
    this.fail(error, undefined, true);
  }

  private sendMessage(message: ServerMessage): void {
    this.send(JSON.stringify(message));
    this.options.observer?.sent(message.type, 1);
  }

  // Outbound ---------------------------------------------------------------------------------

  /** Called by the flush pass of this turn. */
  flushQueued(frames: SharedFrames): void {
    this.flush(frames);
  }

  private flush(frames?: SharedFrames): void {
    this.flushScheduled = false;
    if (this.closed || this.outbox.length === 0) return;
    const { outbox } = this;
    // A lone window (an array already) is shared by every receiver of the channel, however long.
    const window = outbox.length === 1 && outbox[0].charCodeAt(0) === LEFT_BRACKET;
    const frame = outbox.length === 1 ? outbox[0] : batchOf(outbox, frames);
    outbox.length = 0;
    // A client that does not read must not make the server buffer without bound, nor slow the
    // others: once its backlog (what earlier writes left unsent) is over the limit it is dropped,
    // and nothing more is queued. The frame at hand does not count: a client that keeps up gets
    // every frame, even one larger than the limit (the presence.sync of a big channel, or one
    // tick's batch of many events), where judging backlog plus frame would cut a client that asked
    // for a member list whenever a few bytes happened to be in flight. So a connection holds at
    // most the limit plus one frame.
    const backlog = this.socket.bufferedAmount;
    if (backlog > this.options.maxOutboundBufferBytes) {
      this.closed = true;
      this.options.observer?.errorSent('SLOW_CONSUMER');
      this.options.log.warn('closing slow consumer', {
        userId: this.attachment?.session.user.record.userId,
        bufferedBytes: this.socket.bufferedAmount,
      });
      // The close frame would wait behind the unread data, so the socket is cut.
      this.socket.terminate();
      return;
    }
    // Usually a frame that many sockets get in this pass: encoded and framed once (flush-queue.ts).
    const { raw } = this;
    const framed = raw !== undefined && frames !== undefined ? frames.framed(frame, window) : undefined;
    if (framed === undefined) this.socket.send(frame);
    else if (this.socket.readyState === OPEN) raw!.write(framed);
  }
}

const LEFT_BRACKET = 0x5b;

/** One frame of several queued messages; a queued window's messages go into it one by one. */
function batchOf(outbox: readonly string[], frames: SharedFrames | undefined): string {
  if (!outbox.some((text) => text.charCodeAt(0) === LEFT_BRACKET)) return frames !== undefined ? frames.batch(outbox) : `[${outbox.join(',')}]`;
  return `[${outbox.map((text) => (text.charCodeAt(0) === LEFT_BRACKET ? text.slice(1, -1) : text)).join(',')}]`;
}

/** The JSON value of a text frame, or undefined when it is not JSON (JSON itself has no undefined). */
function parseJson(data: string | Buffer): unknown {
  try {
    return JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch {
    return undefined;
  }
}
