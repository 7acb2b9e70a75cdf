import WebSocket from 'ws';
import type { WebSocketConstructor, WebSocketLike } from '../../src/index.js';

export interface SocketTap {
  /** Every frame the client sent, parsed. */
  sent: { type: string; [key: string]: unknown }[];
  /** Frames the client never saw because `drop` said so. */
  dropped: string[];
  /** Return true to lose an incoming frame, as a faulty path would. */
  drop: (frame: string) => boolean;
}

/**
 * A WebSocket for the client that wraps the `ws` package's and lets a test watch what the client
 * sends and lose chosen frames from the server. Also shows that any WebSocketLike fits.
 */
export function tappedWebSocket(tap: SocketTap): WebSocketConstructor {
  return class TappedWebSocket implements WebSocketLike {
    onopen: ((event: never) => void) | null = null;
    onmessage: ((event: never) => void) | null = null;
    onclose: ((event: never) => void) | null = null;
    onerror: ((event: never) => void) | null = null;
    private readonly inner: WebSocket;

    constructor(url: string) {
      this.inner = new WebSocket(url);
      type Handler = ((event: unknown) => void) | null;
      this.inner.onopen = (event) => (this.onopen as Handler)?.(event);
      this.inner.onclose = (event) => (this.onclose as Handler)?.(event);
      this.inner.onerror = (event) => (this.onerror as Handler)?.(event);
      this.inner.onmessage = (event) => {
        const frame = String(event.data);
        if (tap.drop(frame)) {
          tap.dropped.push(frame);
          return;
        }
        (this.onmessage as Handler)?.(event);
      };
    }

    get readyState(): number {
      return this.inner.readyState;
    }

    send(data: string): void {
      tap.sent.push(JSON.parse(data));
      this.inner.send(data);
    }

    close(code?: number, reason?: string): void {
      this.inner.close(code, reason);
    }
  };
}

export function newTap(): SocketTap {
  return { sent: [], dropped: [], drop: () => false };
}
