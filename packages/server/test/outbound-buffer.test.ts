/**
 * The per-connection outbound limit (PRESENCE_MAX_OUTBOUND_BUFFER_BYTES) at its boundary, with a
 * Connection driven through its SocketLike seam. Over loopback the kernel takes megabytes before a
 * socket reports anything unsent, so "a client that reads, with a few bytes still in flight, is
 * sent a frame larger than the limit" cannot be set up with a real socket; the end-to-end cases
 * (a 12 KB sync delivered at 4,096, a client that stops reading cut with 1006) are in
 * protocol.test.ts, "connection health".
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ErrorCode } from '@presence/protocol';
import { silentLogger } from '../src/log.js';
import { Connection, type SocketLike } from '../src/transport/connection.js';

const LIMIT = 4096;

class Socket implements SocketLike {
  readonly written: string[] = [];
  terminated = false;
  readyState = 1;
  constructor(public bufferedAmount: number) {}
  send(data: string): void {
    this.written.push(data);
  }
  close(): void {
    this.readyState = 3;
  }
  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
  }
}

/** Queues one frame of `bytes` on a connection whose socket holds `backlog` unsent bytes, and lets it flush. */
async function sendWithBacklog(backlog: number, bytes: number): Promise<{ socket: Socket; errors: ErrorCode[] }> {
  const socket = new Socket(backlog);
  const errors: ErrorCode[] = [];
  const connection = new Connection(socket, undefined, {
    log: silentLogger,
    rateLimitPerSecond: 50,
    rateLimitBurst: 100,
    maxOutboundBufferBytes: LIMIT,
    now: Date.now,
    observer: { commandReceived() {}, errorSent: (code) => errors.push(code), sent() {}, commandHandled() {} },
  });
  connection.send(JSON.stringify({ type: 'presence.sync', channel: 'big', members: [], seq: 1, pad: 'x'.repeat(bytes) }));
  await new Promise((resolve) => setImmediate(resolve));
  return { socket, errors };
}

describe('outbound buffer limit', () => {
  test('a frame larger than the limit is written while the backlog is within it, even when a few bytes are still unsent', async () => {
    for (const backlog of [0, 1, 200, LIMIT]) {
      const { socket, errors } = await sendWithBacklog(backlog, 12_000);
      assert.equal(socket.written.length, 1, `backlog ${backlog}: the frame is written`);
      assert.ok(socket.written[0].length > 12_000);
      assert.equal(socket.terminated, false, `backlog ${backlog}: the connection stays`);
      assert.deepEqual(errors, []);
    }
  });

  test('a backlog over the limit cuts the connection before anything more is queued', async () => {
    for (const bytes of [10, 12_000]) {
      const { socket, errors } = await sendWithBacklog(LIMIT + 1, bytes);
      assert.deepEqual(socket.written, [], 'nothing is written behind an unread backlog');
      assert.equal(socket.terminated, true, 'cut, not closed: a close frame would wait behind the backlog');
      assert.deepEqual(errors, ['SLOW_CONSUMER']);
    }
  });
});
