/**
 * A minimal WebSocket client (RFC 6455) for the load generator: the opening handshake over a plain
 * TCP socket, then frames parsed straight from the socket's data events.
 *
 * The load generator runs on one core and must receive more messages per second than the fastest
 * server can send, or it becomes what the benchmark measures. The `ws` client spends most of its
 * per-message time in stream and event machinery (a Writable per socket, an event per frame);
 * this one parses in place and calls one function per message, which roughly doubles the messages
 * one core can take in. It speaks only what the bench needs: text frames out (masked with a zero
 * key, which servers accept and which makes masking free), text/binary frames in, ping → pong,
 * close. Fragmented messages are reassembled.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export interface LeanSocketOptions {
  /** `ws://host:port/path?query` */
  url: string;
  localAddress?: string;
  handshakeTimeoutMs?: number;
}

export interface LeanSocketHandlers {
  open(): void;
  message(data: Buffer): void;
  /** Always called once, last; `code` is 1006 when the connection dropped without a close frame. */
  close(code: number): void;
  error(error: Error & { code?: string }): void;
}

const OPEN = 1;
const CLOSED = 3;

export class LeanSocket {
  readyState = 0;
  private readonly socket: Socket;
  private pending: Buffer | null = null;
  private handshaken = false;
  private closeCode = 1006;
  private fragments: Buffer[] | null = null;
  private finished = false;
  private readonly timer: NodeJS.Timeout;

  constructor(options: LeanSocketOptions, private readonly handlers: LeanSocketHandlers) {
    const url = new URL(options.url);
    const key = randomBytes(16).toString('base64');
    this.socket = connect({ host: url.hostname, port: Number(url.port || 80), ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    this.socket.setNoDelay(true);
    this.timer = setTimeout(() => this.fail(Object.assign(new Error('Opening handshake has timed out'), { code: 'HANDSHAKE_TIMEOUT' })), options.handshakeTimeoutMs ?? 30_000);
    this.socket.once('connect', () => {
      this.socket.write(
        `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (error: Error & { code?: string }) => this.handlers.error(error));
    this.socket.on('close', () => this.finish());
  }

  send(text: string): void {
    if (this.readyState !== OPEN) return;
    const length = Buffer.byteLength(text);
    const header = length < 126 ? 6 : length < 65536 ? 8 : 14;
    const frame = Buffer.allocUnsafe(header + length);
    frame[0] = 0x81; // FIN + text
    if (length < 126) {
      frame[1] = 0x80 | length;
    } else if (length < 65536) {
      frame[1] = 0x80 | 126;
      frame.writeUInt16BE(length, 2);
    } else {
      frame[1] = 0x80 | 127;
      frame.writeUInt32BE(0, 2);
      frame.writeUInt32BE(length, 6);
    }
    // A zero masking key: XOR with it changes nothing, so the payload is written as it is.
    frame.writeUInt32BE(0, header - 4);
    frame.write(text, header, 'utf8');
    this.socket.write(frame);
  }

  /** Drops the TCP connection without a closing handshake. */
  terminate(): void {
    this.socket.destroy();
  }

  close(): void {
    if (this.readyState !== OPEN) return this.terminate();
    // Close frame with code 1000, zero mask.
    this.socket.end(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]));
  }

  private fail(error: Error & { code?: string }): void {
    this.handlers.error(error);
    this.socket.destroy();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    this.readyState = CLOSED;
    this.handlers.close(this.closeCode);
  }

  private onData(chunk: Buffer): void {
    let data = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = null;
    if (!this.handshaken) {
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) {
        this.pending = data;
        return;
      }
      const status = data.toString('latin1', 0, Math.min(end, 64));
      if (!status.startsWith('HTTP/1.1 101')) {
        this.fail(Object.assign(new Error(`Unexpected server response: ${status.split('\r\n')[0]}`), { code: 'HANDSHAKE_REFUSED' }));
        return;
      }
      this.handshaken = true;
      clearTimeout(this.timer);
      this.readyState = OPEN;
      this.handlers.open();
      data = data.subarray(end + 4);
    }
    let at = 0;
    while (data.length - at >= 2) {
      const first = data[at];
      const second = data[at + 1];
      let length = second & 0x7f;
      let offset = at + 2;
      if (length === 126) {
        if (data.length - at < 4) break;
        length = data.readUInt16BE(at + 2);
        offset = at + 4;
      } else if (length === 127) {
        if (data.length - at < 10) break;
        length = data.readUInt32BE(at + 2) * 2 ** 32 + data.readUInt32BE(at + 6);
        offset = at + 10;
      }
      if (second & 0x80) offset += 4; // servers do not mask, but skip a key if one is there
      if (data.length < offset + length) break;
      const payload = data.subarray(offset, offset + length);
      at = offset + length;
      this.onFrame(first & 0x0f, (first & 0x80) !== 0, payload);
      if (this.readyState !== OPEN) return;
    }
    if (at < data.length) {
      // Keep the partial frame (copied: the chunk's memory is reused by nothing, but a subarray
      // would pin the whole chunk).
      this.pending = Buffer.from(data.subarray(at));
    }
  }

  private onFrame(opcode: number, fin: boolean, payload: Buffer): void {
    switch (opcode) {
      case 0x0: // continuation
        if (this.fragments === null) return;
        this.fragments.push(Buffer.from(payload));
        if (fin) {
          const whole = Buffer.concat(this.fragments);
          this.fragments = null;
          this.handlers.message(whole);
        }
        return;
      case 0x1:
      case 0x2:
        if (fin) this.handlers.message(payload);
        else this.fragments = [Buffer.from(payload)];
        return;
      case 0x8: // close: answer it and let the server close the TCP connection
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.readyState = 2;
        if (!this.socket.destroyed) this.socket.end(Buffer.from([0x88, 0x82, 0, 0, 0, 0, payload[0] ?? 0x03, payload[1] ?? 0xe8]));
        return;
      case 0x9: {
        // ping → pong with the same payload (zero mask)
        const pong = Buffer.allocUnsafe(6 + payload.length);
        pong[0] = 0x8a;
        pong[1] = 0x80 | payload.length;
        pong.writeUInt32BE(0, 2);
        payload.copy(pong, 6);
        this.socket.write(pong);
        return;
      }
      default:
        return; // pong and reserved opcodes
    }
  }
}
