/**
 * A raw protocol client (the `ws` package, no SDK) that records everything the server sends it:
 * the strictest witness of what other users see.
 */
import WebSocket from 'ws';
import type { ServerMessage } from '@presence/protocol';

export class Observer {
  readonly messages: ServerMessage[] = [];
  private readonly ws: WebSocket;
  private waiters: { match: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
  private nextRef = 1;
  private cursor = 0;

  private constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (data) => {
      const parsed = JSON.parse(data.toString()) as ServerMessage | ServerMessage[];
      for (const message of Array.isArray(parsed) ? parsed : [parsed]) {
        this.messages.push(message);
        this.waiters = this.waiters.filter((waiter) => {
          if (!waiter.match(message)) return true;
          waiter.resolve(message);
          return false;
        });
      }
    });
    this.ws.on('error', () => {});
  }

  /** Connects as `userId` (development mode), or with a token, and waits for the welcome. */
  static async connect(wsUrl: string, userId: string, token?: string): Promise<Observer> {
    const observer = new Observer(`${wsUrl}?${new URLSearchParams(token ? { token } : { userId })}`);
    await observer.waitFor((m) => m.type === 'welcome');
    return observer;
  }

  /** Sends a command and waits for its ack (or error). */
  async request(command: Record<string, unknown>): Promise<ServerMessage> {
    const ref = `o${this.nextRef++}`;
    this.ws.send(JSON.stringify({ ...command, ref }));
    return this.waitFor((m) => (m.type === 'ack' || m.type === 'error') && m.ref === ref);
  }

  /**
   * Resolves once every message the server queued for this observer before now has arrived:
   * a ping's pong comes after them on the same socket.
   */
  async barrier(): Promise<void> {
    const ref = `b${this.nextRef++}`;
    this.ws.send(JSON.stringify({ type: 'ping', ref }));
    await this.waitFor((m) => m.type === 'pong' && m.ref === ref);
  }

  /** First message (already received or future) that matches. */
  waitFor(match: (m: ServerMessage) => boolean, timeoutMs = 8000): Promise<ServerMessage> {
    const seen = this.messages.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`observer: timed out; last messages ${JSON.stringify(this.messages.slice(-4))}`));
      }, timeoutMs);
      const done = (m: ServerMessage) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.waiters.push({ match, resolve: done });
    });
  }

  /** Messages received since the previous call (or since connecting). */
  drain(): ServerMessage[] {
    const fresh = this.messages.slice(this.cursor);
    this.cursor = this.messages.length;
    return fresh;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

/** Presence events (join/leave/update) about `userId` in a list of messages. */
export function presenceEventsAbout(messages: ServerMessage[], userId: string): ServerMessage[] {
  return messages.filter(
    (m) =>
      ((m.type === 'presence.join' || m.type === 'presence.update') && m.member.userId === userId) ||
      (m.type === 'presence.leave' && m.userId === userId) ||
      (m.type === 'user.update' && m.user.userId === userId),
  );
}
