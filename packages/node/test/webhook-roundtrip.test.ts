/**
 * The server's webhooks and the SDK's `verifyWebhook` agree: a real server sends real signed
 * webhooks to a receiver on loopback, and the SDK verifies each raw body and header as a backend
 * would, during a secret rotation too (the server signs with two secrets, the receiver knows only
 * the new one).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { DEFAULT_WEBHOOK_EVENT_TYPES } from '@presence/protocol';
import WebSocket from 'ws';
import { resolveConfig } from '../../server/src/config/config.js';
import { silentLogger } from '../../server/src/log.js';
import { startServer } from '../../server/src/server.js';
import { verifyWebhook, type WebhookEvent } from '../src/index.js';

const OLD_SECRET = 'roundtrip-old-secret-0123456789abcdef';
const NEW_SECRET = 'roundtrip-new-secret-fedcba9876543210';

describe('webhooks sent by the server, verified by the SDK', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  test('every webhook of a join and a leave verifies with the new secret alone, and a tampered body does not', async () => {
    const verified: WebhookEvent[] = [];
    const failures: string[] = [];
    const receiver: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const header = String(req.headers['presence-signature'] ?? '');
        verifyWebhook(body, header, [NEW_SECRET])
          .then((events) => verified.push(...events))
          .catch((error: Error) => failures.push(error.message));
        // The same request with one byte changed must not verify.
        verifyWebhook(body.replace('"', "'"), header, [NEW_SECRET]).then(
          () => failures.push('a tampered body verified'),
          () => {},
        );
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => receiver.close(() => resolve())));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;

    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      offlineDelayMs: 0,
      webhooks: { urls: [url], secrets: [OLD_SECRET, NEW_SECRET], events: [...DEFAULT_WEBHOOK_EVENT_TYPES], maxBacklog: 100, timeoutMs: 5_000, giveUpMs: 60_000 },
    });
    const server = await startServer(config, { log: silentLogger });
    closers.push(() => server.shutdown());

    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/realtime?userId=ada`);
    await new Promise((resolve) => ws.once('message', resolve));
    ws.send(JSON.stringify({ type: 'join', channel: 'room', ref: 1 }));
    const deadline = Date.now() + 5_000;
    while (!verified.some((e) => e.type === 'channel.member_joined') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    ws.close();
    // User and channel events travel in queues of their own (ordered per user, per channel).
    const arrived = (type: string) => verified.some((e) => e.type === type);
    while (!(arrived('user.offline') && arrived('channel.vacated')) && Date.now() < deadline + 5_000) await new Promise((r) => setTimeout(r, 20));

    assert.deepEqual(failures, []);
    const types = verified.map((e) => e.type);
    for (const type of ['user.online', 'channel.occupied', 'channel.member_joined', 'channel.member_left', 'channel.vacated', 'user.offline']) {
      assert.ok(types.includes(type), `${type} arrived and verified (got ${types.join(', ')})`);
    }
    assert.equal(new Set(verified.map((e) => e.id)).size, verified.length, 'every event has its own id');
  });
});
