/*
 * Outbound frames of all connections are written in one pass per event-loop turn.
 *
 * A fan-out queues one message on each of many connections. One `setImmediate` per connection
 * meant one timer object and callback per receiver per turn; one pass for all of them costs a
 * single callback. Within a pass the same string usually goes to many sockets (every receiver of
 * an event gets the identical JSON), so it is UTF-8 encoded once and the same bytes are handed to
 * every socket, instead of each socket encoding its own copy.
 */

export interface Flushable {
  /** Writes what the connection has queued; `frames` encodes strings shared within this pass. */
  flushQueued(frames: SharedFrames): void;
}

/** UTF-8 bytes of the frames written in the current pass, by frame text. */
export class SharedFrames {
  private readonly encoded = new Map<string, Buffer>();

  bytes(frame: string): Buffer {
    let buffer = this.encoded.get(frame);
    if (buffer === undefined) {
      buffer = Buffer.from(frame, 'utf8');
      this.encoded.set(frame, buffer);
    }
    return buffer;
  }
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
