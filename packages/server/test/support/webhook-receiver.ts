/**
 * A webhook receiver on loopback for the delivery tests: it records every request (verifying its
 * signature) and answers as the test decides, failing on purpose (5xx, 429 with Retry-After, an
 * answer that never comes).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WebhookEvent } from '@presence/protocol';
import { verifyWebhookSignature } from '../../src/webhooks/signature.js';

export const SECRET = 'webhook-delivery-test-secret-0123456789';
export const NEXT_SECRET = 'webhook-delivery-test-next-secret-ABCDEFGH';

export interface Received {
  event: WebhookEvent;
  attempt: number;
  at: number;
  signed: boolean;
  answered?: number;
}

export type Answer = { status: number; headers?: Record<string, string> } | 'stall';

/** A webhook receiver on loopback; `answer` decides each request's fate (200 unless told otherwise). */
export class Receiver {
  readonly requests: Received[] = [];
  answer: (request: Received, nth: number) => Answer = () => ({ status: 200 });
  private readonly server: Server;
  private readonly stalled = new Set<ServerResponse>();
  private waiters: { until: () => boolean; resolve: () => void }[] = [];
  url = '';

  constructor(private readonly secrets: string[] = [SECRET]) {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  static async start(secrets?: string[]): Promise<Receiver> {
    const receiver = new Receiver(secrets);
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    receiver.url = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}/hook`;
    return receiver;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks);
    const event = JSON.parse(raw.toString('utf8')) as WebhookEvent;
    const header = String(req.headers['presence-signature'] ?? '');
    const request: Received = {
      event,
      attempt: Number(req.headers['presence-delivery-attempt']),
      at: Date.now(),
      signed: this.secrets.every((secret) => verifyWebhookSignature([secret], header, raw, { nowMs: Date.now() })),
    };
    assert.equal(req.headers['presence-event-id'], event.id);
    assert.equal(req.headers['presence-event-type'], event.type);
    assert.equal(req.headers['content-type'], 'application/json');
    this.requests.push(request);
    const answer = this.answer(request, this.requests.filter((r) => r.event.id === event.id).length);
    if (answer === 'stall') {
      this.stalled.add(res);
      res.on('close', () => this.stalled.delete(res));
    } else {
      request.answered = answer.status;
      res.writeHead(answer.status, answer.headers).end('ok');
    }
    this.waiters = this.waiters.filter((w) => {
      if (!w.until()) return true;
      w.resolve();
      return false;
    });
  }

  /** Events answered 2xx, in the order the answers were given. */
  delivered(): WebhookEvent[] {
    return this.requests.filter((r) => r.answered !== undefined && r.answered < 300).map((r) => r.event);
  }

  async waitFor(until: () => boolean, timeoutMs = 10_000, what = 'the receiver'): Promise<void> {
    if (until()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got ${this.requests.length} requests: ${this.requests.map((r) => `${r.event.type}#${r.attempt}=${r.answered ?? '…'}`).join(', ')}`)), timeoutMs);
      this.waiters.push({ until, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  async close(): Promise<void> {
    for (const res of this.stalled) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Per ordering key (user or channel), the event types in the order received. */
export function byKey(events: readonly WebhookEvent[]): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const event of events) {
    const data = event.data as { channel?: string; userId?: string };
    const key = data.channel === undefined ? `user:${data.userId}` : `channel:${data.channel}`;
    keys.set(key, [...(keys.get(key) ?? []), `${event.type}${data.channel !== undefined && data.userId !== undefined ? ` ${data.userId}` : ''}`]);
  }
  return keys;
}
