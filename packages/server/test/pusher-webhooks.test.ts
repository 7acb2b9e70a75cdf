/**
 * Pusher-format webhooks (docs/pusher.md#webhooks) through the server's webhook delivery, checked
 * by a real HTTP receiver with the `pusher` server library's own webhook verification.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import PusherServer from 'pusher';
import { TestClient, sleep } from './support/harness.js';
import { APP, echo, eventually, pusherJs, startPusherServer, type PusherTestServer } from './support/pusher.js';

interface Delivery {
  headers: IncomingHttpHeaders;
  body: string;
}

/** An app's webhook endpoint: records every POST and answers 200. */
async function receiver(): Promise<{ url: string; deliveries: Delivery[]; server: Server }> {
  const deliveries: Delivery[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/pusher/webhooks`, deliveries, server };
}

const verifier = new PusherServer({ appId: APP.appId, key: APP.key, secret: APP.secret, host: '127.0.0.1' });

/** The events of every delivery, each checked as an app's backend checks it. */
function events(deliveries: Delivery[]): Record<string, unknown>[] {
  return deliveries.flatMap((delivery) => {
    const webhook = verifier.webhook({ headers: delivery.headers as Record<string, string>, rawBody: delivery.body });
    assert.ok(webhook.isValid(), 'X-Pusher-Key and X-Pusher-Signature check out');
    assert.ok(Math.abs(webhook.getTime().getTime() - Date.now()) < 60_000, 'time_ms is the time of the change');
    return webhook.getEvents() as unknown as Record<string, unknown>[];
  });
}

describe('Pusher-format webhooks', () => {
  let hook: Awaited<ReturnType<typeof receiver>>;
  let server: PusherTestServer;
  before(async () => {
    hook = await receiver();
    server = await startPusherServer({ offlineDelayMs: 300, pusher: { ...APP, webhookUrls: [hook.url] } });
  });
  after(async () => {
    await server.shutdown();
    hook.server.close();
  });

  it('sends channel_occupied, member_added, client_event, member_removed (after the offline delay) and channel_vacated, signed', async () => {
    const ann = await echo(server, { userId: 'ann', info: { name: 'Ann' } });
    const bob = await pusherJs(server, { userId: 'bob' });
    const room = ann.join('room.5');
    await new Promise((resolve) => room.here(resolve));
    const news = bob.subscribe('news');
    await new Promise((resolve) => news.bind('pusher:subscription_succeeded', resolve));
    const dm = bob.subscribe('private-dm');
    await new Promise((resolve) => dm.bind('pusher:subscription_succeeded', resolve));
    room.whisper('typing', { typing: true });

    // A native SDK user in the same room is a member like any other.
    const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'nat' });
    await native.request({ type: 'join', channel: 'room.5' });
    await native.close();

    await eventually(() => (events(hook.deliveries).length >= 6 ? true : undefined), 'the first deliveries');
    const first = events(hook.deliveries);
    assert.deepEqual(first.filter((e) => e.channel === 'presence-room.5' && e.name !== 'client_event'), [
      { name: 'channel_occupied', channel: 'presence-room.5' },
      { name: 'member_added', channel: 'presence-room.5', user_id: 'ann' },
      { name: 'member_added', channel: 'presence-room.5', user_id: 'nat' },
    ]);
    const clientEvent = first.find((e) => e.name === 'client_event');
    assert.deepEqual(clientEvent, {
      name: 'client_event',
      channel: 'presence-room.5',
      event: 'client-typing',
      data: JSON.stringify({ typing: true }),
      socket_id: (ann.connector.pusher as { connection: { socket_id: string } }).connection.socket_id,
      user_id: 'ann',
    });
    assert.deepEqual(
      first.filter((e) => e.channel === 'news' || e.channel === 'private-dm'),
      [
        { name: 'channel_occupied', channel: 'news' },
        { name: 'channel_occupied', channel: 'private-dm' },
      ],
    );
    assert.equal(hook.deliveries[0].headers['content-type'], 'application/json');

    // The native user closed: member_removed only after the offline delay.
    await sleep(100);
    assert.equal(events(hook.deliveries).filter((e) => e.name === 'member_removed').length, 0, 'not within the offline delay');
    await eventually(() => events(hook.deliveries).find((e) => e.name === 'member_removed' && e.user_id === 'nat'), 'member_removed nat');

    // Everyone goes: public channels are vacated at once, the presence channel after the delay.
    ann.disconnect();
    bob.disconnect();
    await eventually(() => events(hook.deliveries).find((e) => e.name === 'channel_vacated' && e.channel === 'presence-room.5'), 'presence channel vacated');
    const all = events(hook.deliveries);
    assert.deepEqual(all.filter((e) => e.name === 'channel_vacated').map((e) => e.channel).sort(), ['news', 'presence-room.5', 'private-dm']);
    const last = all.filter((e) => e.channel === 'presence-room.5').slice(-2);
    assert.deepEqual(last, [
      { name: 'member_removed', channel: 'presence-room.5', user_id: 'ann' },
      { name: 'channel_vacated', channel: 'presence-room.5' },
    ]);
  });
});

describe('Pusher-format webhooks with a data directory', () => {
  it('keep their own outbox: after a restart, receivers are told that what the previous run showed is gone', async () => {
    const hook = await receiver();
    const dir = mkdtempSync(join(tmpdir(), 'presence-pusher-hooks-'));
    try {
      const config = { dataDir: dir, pusher: { ...APP, webhookUrls: [hook.url] } };
      const first = await startPusherServer(config);
      const page = await pusherJs(first, { userId: 'ann' });
      const room = page.subscribe('presence-kept');
      await new Promise((resolve) => room.bind('pusher:subscription_succeeded', resolve));
      await eventually(() => (events(hook.deliveries).length === 2 ? true : undefined), 'occupied and added');
      // A shutdown ends every session without events: the next start owes the receivers the end.
      page.disconnect();
      await first.shutdown();
      assert.equal(events(hook.deliveries).length, 2);

      const second = await startPusherServer({ ...config, port: 0 });
      await eventually(() => (events(hook.deliveries).length === 4 ? true : undefined), 'the reap');
      assert.deepEqual(events(hook.deliveries).slice(2), [
        { name: 'member_removed', channel: 'presence-kept', user_id: 'ann' },
        { name: 'channel_vacated', channel: 'presence-kept' },
      ]);
      await second.shutdown();
    } finally {
      hook.server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
