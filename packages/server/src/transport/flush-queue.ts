/*
 * Outbound frames of all connections are written in one pass per event-loop turn.
 *
 * A fan-out queues one message on each of many connections. One `setImmediate` per connection
 * meant one timer object and callback per receiver per turn; one pass for all of them costs a
 * single callback. Within a pass the same text usually goes to many sockets (every receiver of
 * an event gets the identical JSON, and during a burst the identical batch of events), so it is
 * built, encoded and framed once and the same bytes are written to every socket.
 */

export interface Flushable {
  /** Writes what the connection has queued; `frames` encodes strings shared within this pass. */
  flushQueued(frames: SharedFrames): void;
}

interface Batch {
  messages: readonly string[];
  frame: string;
}

/** Larger texts are mostly member lists, unique to their receiver: sharing them gains nothing. */
const SHARE_MAX_CHARS = 16 * 1024;

/**
 * Frames of the current pass. Sockets that get the same message (every receiver of an event), or
 * exactly the same messages (every member of a channel during a burst of its events), share one
 * text and one UTF-8 encoding of it.
 */
export class SharedFrames {
  private readonly encoded = new Map<string, Buffer>();
  private readonly batches = new Map<string, Batch[]>();

  /**
   * The whole WebSocket frame (header and UTF-8 payload) for a text small enough to be worth
   * sharing, else undefined. Every socket that gets the text this pass is handed these same bytes,
   * written with one call: no per-socket encoding, header or two-part write.
   */
  framed(text: string, shared = false): Buffer | undefined {
    // `shared`: the caller knows many sockets get this text (a large channel's window), whatever its size.
    if (text.length > SHARE_MAX_CHARS && !shared) return undefined;
    let frame = this.encoded.get(text);
    if (frame === undefined) {
      frame = textFrame(text);
      this.encoded.set(text, frame);
    }
    return frame;
  }

  /** `[m1,m2,…]`, built once per pass for each distinct sequence of messages. */
  batch(messages: readonly string[]): string {
    const first = messages[0];
    if (first.length > SHARE_MAX_CHARS) return `[${messages.join(',')}]`;
    const candidates = this.batches.get(first);
    if (candidates !== undefined) {
      next: for (const candidate of candidates) {
        if (candidate.messages.length !== messages.length) continue;
        for (let i = 1; i < messages.length; i += 1) if (candidate.messages[i] !== messages[i]) continue next;
        return candidate.frame;
      }
    }
    const frame = `[${messages.join(',')}]`;
    // A few variants per first message: a member who joined mid-burst sees only part of it.
    if (candidates === undefined) this.batches.set(first, [{ messages: messages.slice(), frame }]);
    else if (candidates.length < 4) candidates.push({ messages: messages.slice(), frame });
    return frame;
  }
}

/**
 * An unmasked, unfragmented text frame (RFC 6455 §5.2), as a server sends it: FIN and opcode 1,
 * then the payload length in 7, 7+16 or 7+64 bits.
 */
export function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text, 'utf8');
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x81;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  frame.write(text, headerLength, 'utf8');
  return frame;
}

let queue: Flushable[] = [];

function flushAll(): void {
  const batch = queue;
  // Frames queued while this pass writes (none today: writes do not call back synchronously)
  // go out on the next turn, as they would have with one immediate per connection.
  queue = [];
  const frames = new SharedFrames();
  for (const connection of batch) connection.flushQueued(frames);
}

/** Queues a connection for the next pass; the caller makes sure it is queued at most once. */
export function scheduleFlush(connection: Flushable): void {
  if (queue.length === 0) setImmediate(flushAll);
  queue.push(connection);
}
