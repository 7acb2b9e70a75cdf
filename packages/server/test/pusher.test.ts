/**
 * The Pusher Channels endpoint (docs/pusher.md) with the real, unmodified libraries: pusher-js and
 * Laravel Echo as pages use them, the `pusher` server library as the app's backend, beside native
 * SDK users in the same rooms. Raw `ws` clients check the wire where the libraries hide it.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import type { PresenceChannel } from 'pusher-js';
import { TestClient, sleep } from './support/harness.js';
import { APP, echo, eventually, pusherJs, startPusherServer, type PusherTestServer } from './support/pusher.js';

/** A raw Pusher connection that records every message, `data` decoded as pusher-js decodes it. */
class RawPusher {
  readonly ws: WebSocket;
  readonly messages: { event: string; channel?: string; data?: unknown; user_id?: string }[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(url: string, options?: WebSocket.ClientOptions) {
    this.ws = new WebSocket(url, options);
    this.ws.on('error', () => {});
    this.ws.on('message', (text) => {
      const message = JSON.parse(text.toString()) as { event: string; data?: unknown };
      if (typeof message.data === 'string') {
        try {
          message.data = JSON.parse(message.data);
        } catch {
          // A plain string stays one.
        }
      }
      this.messages.push(message);
    });
    this.closed = new Promise((resolve) => this.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  send(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  next(event: string, channel?: string) {
    return eventually(() => this.messages.find((m) => m.event === event && (channel === undefined || m.channel === channel)), event);
  }

  get socketId(): string {
    const established = this.messages.find((m) => m.event === 'pusher:connection_established');
    return (established!.data as { socket_id: string }).socket_id;
  }
}

async function raw(server: PusherTestServer, url = server.pusherUrl): Promise<RawPusher> {
  const client = new RawPusher(url);
  await Promise.race([client.next('pusher:connection_established'), client.next('pusher:error')]);
  return client;
}

function disconnect(...clients: { disconnect(): void }[]): void {
  for (const client of clients) client.disconnect();
}

describe('Pusher endpoint: the connection', () => {
  let server: PusherTestServer;
  before(async () => {
    server = await startPusherServer();
  });
  after(() => server.shutdown());

  it('greets with connection_established (socket_id, activity_timeout) as string-encoded data, and answers pusher:ping', async () => {
    const client = new RawPusher(server.pusherUrl);
    const first = await new Promise<string>((resolve) => client.ws.once('message', (data) => resolve(data.toString())));
    const parsed = JSON.parse(first) as { event: string; data: unknown };
    assert.equal(parsed.event, 'pusher:connection_established');
    assert.equal(typeof parsed.data, 'string', 'data is a JSON string, as Pusher sends it');
    const data = JSON.parse(parsed.data as string) as { socket_id: string; activity_timeout: number };
    assert.match(data.socket_id, /^\d+\.\d+$/);
    assert.equal(data.activity_timeout, 120);
    client.send({ event: 'pusher:ping', data: {} });
    await client.next('pusher:pong');
    client.ws.close();
  });

  it('refuses an unknown key with 4001 and a missing or unsupported protocol with 4008 / 4007, after pusher:error', async () => {
    const base = `ws://127.0.0.1:${server.port}/app`;
    for (const [url, code] of [
      [`${base}/wrong-key?protocol=7`, 4001],
      [`${base}/${APP.key}`, 4008],
      [`${base}/${APP.key}?protocol=5`, 4007],
    ] as const) {
      const client = new RawPusher(url);
      const closed = await client.closed;
      assert.equal(closed.code, code, url);
      const error = client.messages.find((m) => m.event === 'pusher:error');
      assert.equal((error?.data as { code: number }).code, code);
    }
  });

  it('pusher-js connects, and stops for good after a refusal in 4000–4099 (a wrong key)', async () => {
    const client = await pusherJs(server);
    assert.equal(client.connection.state, 'connected');
    assert.match(client.connection.socket_id, /^\d+\.\d+$/);
    client.disconnect();
  });

  it('answers frames that are not Pusher messages with pusher:error 4300, and keeps the connection', async () => {
    const client = await raw(server);
    client.ws.send('not json');
    client.send({ event: 'pusher:nonsense' });
    client.send({ data: 1 });
    await eventually(() => (client.messages.filter((m) => m.event === 'pusher:error').length === 3 ? true : undefined), 'three errors');
    for (const error of client.messages.filter((m) => m.event === 'pusher:error')) assert.equal((error.data as { code: number }).code, 4300);
    client.send({ event: 'pusher:ping', data: {} });
    await client.next('pusher:pong');
    client.ws.close();
  });

  it('closes with 4201 when nothing comes back for two heartbeat intervals', async () => {
    const client = new RawPusher(server.pusherUrl);
    await client.next('pusher:connection_established');
    // A peer that stops answering pings: ws answers them unless told not to.
    (client.ws as unknown as { _autoPong: boolean })._autoPong = false;
    client.ws.pong = () => {};
    const closed = await client.closed;
    assert.equal(closed.code, 4201);
  });

  it('counts its messages and close codes in the metrics', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}"]/g, (c) => `\\${c}`)} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    assert.ok(value('presence_events_in_total{type="pusher"}') > 0, 'inbound Pusher messages');
    assert.ok(value('presence_events_out_total{type="pusher"}') > 0, 'outbound Pusher messages');
    assert.ok(value('presence_connections_closed_total{code="4201"}') >= 1, 'the heartbeat close');
    assert.ok(value('presence_connections_closed_total{code="4001"}') >= 1, 'the wrong key');
  });
});

describe('Pusher endpoint: presence channels are Presence channels', () => {
  let server: PusherTestServer;
  before(async () => {
    server = await startPusherServer({ offlineDelayMs: 400 });
  });
  after(() => server.shutdown());

  it("Echo's here/joining/leaving see pusher-js users and native SDK users alike, merged per user", async () => {
    const ann = await echo(server, { userId: 1, info: { id: 1, name: 'Ann' } });
    const here: unknown[][] = [];
    const joining: unknown[] = [];
    const leaving: unknown[] = [];
    ann.join('room.1').here((members: unknown[]) => here.push(members)).joining((m: unknown) => joining.push(m)).leaving((m: unknown) => leaving.push(m));
    await eventually(() => here[0], 'here');
    assert.deepEqual(here[0], [{ id: 1, name: 'Ann' }]);

    // A native SDK user joins the same channel: Ann's page sees them join, with their meta as user_info.
    const bob = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'bob', name: 'Bob' });
    await bob.request({ type: 'join', channel: 'room.1' });
    const sync = bob.messages.find((m) => m.type === 'presence.sync');
    assert.deepEqual(sync?.type === 'presence.sync' && sync.members.map((m) => [m.userId, m.meta, m.devices]), [
      ['1', { id: 1, name: 'Ann' }, ['pusher']],
      ['bob', { name: 'Bob' }, ['unknown']],
    ]);
    await eventually(() => joining[0], 'joining');
    assert.deepEqual(joining, [{ name: 'Bob' }]);

    // Ann's second tab (another connection, same user) is no new member for anyone.
    const annTab = await echo(server, { userId: 1, info: { id: 1, name: 'Ann' } });
    const tabHere: unknown[][] = [];
    annTab.join('room.1').here((members: unknown[]) => tabHere.push(members));
    await eventually(() => tabHere[0], 'the second tab\'s here');
    assert.equal(tabHere[0].length, 2);
    await sleep(100);
    assert.equal(bob.messages.filter((m) => m.type === 'presence.join').length, 0, 'no join for a second tab');

    // Bob leaves: Ann's tabs see leaving at once (an explicit leave has no offline delay).
    await bob.request({ type: 'leave', channel: 'room.1' });
    await eventually(() => leaving[0], 'leaving');
    assert.deepEqual(leaving, [{ name: 'Bob' }]);
    await bob.close();
    disconnect(ann, annTab);
  });

  it('the HTTP view of the channel and the pusher-js members agree', async () => {
    const carol = await pusherJs(server, { userId: 'carol', info: { name: 'Carol' } });
    const channel = carol.subscribe('presence-doc.7') as PresenceChannel;
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    assert.equal(channel.members.count, 1);
    assert.deepEqual(channel.members.me, { id: 'carol', info: { name: 'Carol' } });
    const members = server.engine.channelPresence('doc.7', { limit: 10 });
    assert.deepEqual(members.members.map((m) => m.userId), ['carol']);
    carol.disconnect();
  });

  it('a reload inside the offline delay is silent to the other members; leaving for good is member_removed after it', async () => {
    const watcher = await pusherJs(server, { userId: 'w', info: { name: 'W' } });
    const channel = watcher.subscribe('presence-lobby') as PresenceChannel;
    const seen: string[] = [];
    channel.bind('pusher:member_added', (m: { id: string }) => seen.push(`added ${m.id}`));
    channel.bind('pusher:member_removed', (m: { id: string }) => seen.push(`removed ${m.id}`));
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));

    let dave = await pusherJs(server, { userId: 'dave', info: { name: 'Dave' } });
    dave.subscribe('presence-lobby');
    await eventually(() => (seen.includes('added dave') ? true : undefined), 'dave added');

    // The page reloads: the old connection goes, a new one (new socket id) subscribes again.
    dave.disconnect();
    await sleep(100);
    dave = await pusherJs(server, { userId: 'dave', info: { name: 'Dave' } });
    const again = dave.subscribe('presence-lobby') as PresenceChannel;
    await new Promise((resolve) => again.bind('pusher:subscription_succeeded', resolve));
    await sleep(600);
    assert.deepEqual(seen, ['added dave'], 'nothing for the reload');

    dave.disconnect();
    await eventually(() => (seen.includes('removed dave') ? true : undefined), 'dave removed after the offline delay');
    watcher.disconnect();
  });

  it('a pusher-js user is active while connected: never away by the idle timeout; user_info over the meta limits is refused', async () => {
    const idleServer = await startPusherServer({ idleTimeoutMs: 200 });
    try {
      const page = await pusherJs(idleServer, { userId: 'steady' });
      const channel = page.subscribe('presence-desk');
      await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
      await sleep(700);
      const view = idleServer.engine.userPresence('steady', { trusted: true });
      assert.equal(view.status, 'online');
      const big = await pusherJs(idleServer, { userId: 'big', info: { blob: 'x'.repeat(4000) } });
      const errors: { status?: number }[] = [];
      big.subscribe('presence-desk').bind('pusher:subscription_error', (e: { status?: number }) => errors.push(e));
      await eventually(() => errors[0], 'subscription error');
      assert.equal(errors[0].status, 400);
      disconnect(page, big);
    } finally {
      await idleServer.shutdown();
    }
  });

  it('status, state and message of a member reach pusher-js as presence:member_updated; typing as presence:typing', async () => {
    const page = await pusherJs(server, { userId: 'p', info: {} });
    const channel = page.subscribe('presence-team') as PresenceChannel;
    const updates: { user_id: string; member: { status: string; state?: string; message?: string } }[] = [];
    const typing: { user_id: string; typing: boolean }[] = [];
    const members: { members: { userId: string }[] }[] = [];
    channel.bind('presence:member_updated', (data: (typeof updates)[number]) => updates.push(data));
    channel.bind('presence:typing', (data: (typeof typing)[number]) => typing.push(data));
    channel.bind('presence:members', (data: (typeof members)[number]) => members.push(data));
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    await eventually(() => members[0], 'presence:members');
    assert.deepEqual(members[0].members.map((m) => m.userId), ['p']);

    const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'erin' });
    await native.request({ type: 'join', channel: 'team' });
    await native.request({ type: 'status', status: 'busy', state: 'in-call', message: 'standup' });
    await eventually(() => updates.find((u) => u.user_id === 'erin' && u.member.status === 'busy'), 'busy');
    const busy = updates.find((u) => u.user_id === 'erin' && u.member.status === 'busy')!;
    assert.equal(busy.member.state, 'in-call');
    assert.equal(busy.member.message, 'standup');
    await native.request({ type: 'typing', channel: 'team', typing: true });
    await eventually(() => typing.find((t) => t.user_id === 'erin' && t.typing), 'typing');
    await native.close();
    page.disconnect();
  });
});

describe('Pusher endpoint: private channels, auth and client events', () => {
  let server: PusherTestServer;
  before(async () => {
    server = await startPusherServer();
  });
  after(() => server.shutdown());

  it('a wrong signature is refused: Echo\'s .error() and pusher:error 4009; nothing is subscribed', async () => {
    const intruder = await echo(server, { userId: 'x', deny: true });
    const errors: { status?: number; type?: string }[] = [];
    intruder.private('orders.1').error((e: { status?: number; type?: string }) => errors.push(e));
    intruder.join('orders.2').error((e: { status?: number; type?: string }) => errors.push(e));
    await eventually(() => (errors.length === 2 ? true : undefined), 'two subscription errors');
    assert.deepEqual(errors.map((e) => e.status), [401, 401]);
    assert.deepEqual(await server.engine.pusher!.occupiedChannels(''), []);

    const client = await raw(server);
    client.send({ event: 'pusher:subscribe', data: { channel: 'private-orders.1', auth: `${APP.key}:0000` } });
    const error = await client.next('pusher:error');
    assert.equal((error.data as { code: number }).code, 4009);
    const subscriptionError = await client.next('pusher:subscription_error', 'private-orders.1');
    assert.equal((subscriptionError.data as { status: number }).status, 401);
    client.ws.close();
    disconnect(intruder);
  });

  it('refuses names that are not valid on both sides, and unsupported kinds, with 4303', async () => {
    const client = await raw(server);
    for (const channel of ['presence-has:colon', 'private-has,comma', 'private-encrypted-x', 'presence-', `presence-${'a'.repeat(200)}`]) {
      client.messages.length = 0;
      client.send({ event: 'pusher:subscribe', data: { channel, auth: 'x', channel_data: '{}' } });
      const error = await client.next('pusher:error');
      assert.equal((error.data as { code: number }).code, 4303, channel);
    }
    client.ws.close();
  });

  it('whisper/listenForWhisper on presence channels carry the sender\'s user_id; private channels relay too; never back to the sender', async () => {
    const ann = await echo(server, { userId: 'ann', info: { name: 'Ann' } });
    const bob = await echo(server, { userId: 'bob', info: { name: 'Bob' } });
    const heard: unknown[] = [];
    const heardByAnn: unknown[] = [];
    const annRoom = ann.join('chat.9');
    const bobRoom = bob.join('chat.9');
    bobRoom.listenForWhisper('typing', (e: unknown) => heard.push(e));
    annRoom.listenForWhisper('typing', (e: unknown) => heardByAnn.push(e));
    await new Promise((resolve) => annRoom.here(resolve));
    await new Promise((resolve) => bobRoom.here(resolve));
    annRoom.whisper('typing', { name: 'Ann', typing: true });
    await eventually(() => heard[0], 'the whisper');
    assert.deepEqual(heard, [{ name: 'Ann', typing: true }]);

    // The wire: user_id of the sender, data string-encoded.
    const rawBob = await raw(server);
    const channelData = JSON.stringify({ user_id: 'bob2' });
    const auth = server.backend.authorizeChannel(rawBob.socketId, 'presence-chat.9', { user_id: 'bob2' }).auth;
    rawBob.send({ event: 'pusher:subscribe', data: { channel: 'presence-chat.9', auth, channel_data: channelData } });
    await rawBob.next('pusher_internal:subscription_succeeded');
    annRoom.whisper('typing', { again: 1 });
    const relayed = await rawBob.next('client-typing');
    assert.equal(relayed.user_id, 'ann');
    assert.deepEqual(relayed.data, { again: 1 });

    const privateHeard: unknown[] = [];
    bob.private('dm.1').listenForWhisper('ping', (e: unknown) => privateHeard.push(e));
    const annDm = ann.private('dm.1');
    await new Promise((resolve) => annDm.subscribed(() => resolve(undefined)));
    await sleep(50);
    annDm.whisper('ping', { n: 1 });
    await eventually(() => privateHeard[0], 'private whisper');
    assert.deepEqual(heardByAnn, [], 'a whisper never comes back to its sender');
    rawBob.ws.close();
    disconnect(ann, bob);
  });

  it('refuses client events on public or unsubscribed channels (4302) and past 10 per second (4301)', async () => {
    const client = await raw(server);
    client.send({ event: 'pusher:subscribe', data: { channel: 'news' } });
    await client.next('pusher_internal:subscription_succeeded', 'news');
    client.send({ event: 'client-x', channel: 'news', data: {} });
    client.send({ event: 'client-x', channel: 'private-elsewhere', data: {} });
    await eventually(() => (client.messages.filter((m) => m.event === 'pusher:error').length === 2 ? true : undefined), 'two refusals');
    assert.deepEqual(client.messages.filter((m) => m.event === 'pusher:error').map((m) => (m.data as { code: number }).code), [4302, 4302]);

    const auth = server.backend.authorizeChannel(client.socketId, 'private-burst').auth;
    client.send({ event: 'pusher:subscribe', data: { channel: 'private-burst', auth } });
    await client.next('pusher_internal:subscription_succeeded', 'private-burst');
    client.messages.length = 0;
    for (let i = 0; i < 12; i += 1) client.send({ event: 'client-burst', channel: 'private-burst', data: { i } });
    await eventually(() => (client.messages.filter((m) => m.event === 'pusher:error').length === 2 ? true : undefined), 'rate limit');
    assert.deepEqual(client.messages.filter((m) => m.event === 'pusher:error').map((m) => (m.data as { code: number }).code), [4301, 4301]);
    client.ws.close();
  });
});

describe('Pusher endpoint: refused presence subscriptions', () => {
  let server: PusherTestServer;
  before(async () => {
    // Occupancy mode from 3 visible members; no windows, so every member event goes out at once.
    server = await startPusherServer({ largeRooms: { occupancyMembers: 3, windowMembers: 0 } });
  });
  after(() => server.shutdown());

  /** A native user watching `userId`: what they were told of that user's status. */
  async function watch(userId: string): Promise<{ client: TestClient; statuses: () => string[] }> {
    const client = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: `watcher-of-${userId}` });
    await client.request({ type: 'watch', users: [userId] });
    const statuses = () => client.messages.flatMap((m) => (m.type === 'user.update' && m.user.userId === userId ? [m.user.status] : []));
    return { client, statuses };
  }

  it('a presence- subscription to a channel in occupancy mode is refused with pusher:error 4100 (the connection stays), and pusher-js hears subscription_error 503', async () => {
    const natives: TestClient[] = [];
    for (const userId of ['big1', 'big2', 'big3']) {
      const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId, features: 'occupancy' });
      await native.request({ type: 'join', channel: 'webinar' });
      natives.push(native);
    }
    const page = await pusherJs(server, { userId: 'viewer', info: { name: 'V' } });
    const connectionErrors: { data?: { code?: number } }[] = [];
    page.connection.bind('error', (e: { data?: { code?: number } }) => connectionErrors.push(e));
    const refusals: { status?: number }[] = [];
    page.subscribe('presence-webinar').bind('pusher:subscription_error', (e: { status?: number }) => refusals.push(e));
    await eventually(() => refusals[0], 'subscription error');
    assert.equal(refusals[0].status, 503);
    await eventually(() => connectionErrors[0], 'pusher:error');
    assert.equal(connectionErrors[0].data?.code, 4100);
    assert.equal(page.connection.state, 'connected', 'the connection stays: only the subscription is refused');

    // The wire, and the connection's other channels work on.
    const client = await raw(server);
    client.send({ event: 'pusher:subscribe', data: { channel: 'news' } });
    await client.next('pusher_internal:subscription_succeeded', 'news');
    const channelData = JSON.stringify({ user_id: 'viewer2' });
    client.send({ event: 'pusher:subscribe', data: { channel: 'presence-webinar', auth: server.backend.authorizeChannel(client.socketId, 'presence-webinar', { user_id: 'viewer2' }).auth, channel_data: channelData } });
    const error = await client.next('pusher:error');
    assert.equal((error.data as { code: number }).code, 4100);
    assert.equal(((await client.next('pusher:subscription_error', 'presence-webinar')).data as { code: number }).code, 4100);
    await server.backend.trigger('news', 'still-here', {});
    await client.next('still-here', 'news');

    // Below the threshold (and out of occupancy mode) Pusher clients are members again.
    await natives.pop()!.close();
    await natives.pop()!.close();
    const later = page.subscribe('presence-webinar-2') as PresenceChannel;
    await new Promise((resolve) => later.bind('pusher:subscription_succeeded', resolve));
    client.ws.close();
    page.disconnect();
    for (const native of natives) await native.close();
  });

  it('a refused first presence subscription (occupancy mode, a wrong signature) leaves no session: the user never looks present', async () => {
    const natives: TestClient[] = [];
    for (const userId of ['crowd1', 'crowd2', 'crowd3']) {
      const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId });
      await native.request({ type: 'join', channel: 'crowd' });
      natives.push(native);
    }
    const ghost = await watch('ghost');
    const client = await raw(server);
    const socketId = client.socketId;
    const channelData = JSON.stringify({ user_id: 'ghost' });
    client.send({ event: 'pusher:subscribe', data: { channel: 'presence-crowd', auth: server.backend.authorizeChannel(socketId, 'presence-crowd', { user_id: 'ghost' }).auth, channel_data: channelData } });
    await client.next('pusher:subscription_error', 'presence-crowd');
    client.messages.length = 0;
    client.send({ event: 'pusher:subscribe', data: { channel: 'presence-quiet', auth: `${APP.key}:${'0'.repeat(64)}`, channel_data: channelData } });
    await client.next('pusher:subscription_error', 'presence-quiet');
    await sleep(100);
    assert.equal(server.engine.userPresence('ghost', { trusted: true }).status, 'offline');
    assert.deepEqual(server.engine.userPresence('ghost', { trusted: true }).devices ?? [], []);
    assert.deepEqual(ghost.statuses().filter((s) => s !== 'offline'), [], 'no watcher was told the user came online');
    assert.deepEqual(server.engine.channelPresence('crowd', { limit: 10 }).members.map((m) => m.userId), ['crowd1', 'crowd2', 'crowd3']);

    // The same connection can still become the user in a channel that accepts them.
    client.send({ event: 'pusher:subscribe', data: { channel: 'presence-small', auth: server.backend.authorizeChannel(socketId, 'presence-small', { user_id: 'ghost' }).auth, channel_data: channelData } });
    await client.next('pusher_internal:subscription_succeeded', 'presence-small');
    assert.equal(server.engine.userPresence('ghost', { trusted: true }).status, 'online');
    client.ws.close();
    await ghost.client.close();
    for (const native of natives) await native.close();
  });
});

describe('Pusher endpoint: close codes', () => {
  it('refuses over capacity with 4100 (pusher-js backs off) and a foreign Origin with 4009 (it stops)', async () => {
    const server = await startPusherServer({ allowedOrigins: ['https://app.example.com'], limits: { maxConnections: 1 } });
    try {
      const foreign = new RawPusher(server.pusherUrl, { origin: 'https://elsewhere.example.com' });
      assert.equal((await foreign.closed).code, 4009);
      const first = new WebSocket(server.pusherUrl, { origin: 'https://app.example.com' });
      await new Promise((resolve) => first.once('message', resolve));
      const second = new RawPusher(server.pusherUrl);
      const closed = await second.closed;
      assert.equal(closed.code, 4100);
      assert.equal((second.messages[0]?.data as { code: number }).code, 4100);
      first.close();
    } finally {
      await server.shutdown();
    }
  });

  it('closes a connection that keeps flooding past its rate limit with 4101, after 4304 errors', async () => {
    const server = await startPusherServer({ limits: { rateLimitPerSecond: 5, rateLimitBurst: 5 } });
    try {
      const client = await raw(server);
      for (let i = 0; i < 40; i += 1) client.send({ event: 'pusher:ping', data: {} });
      assert.equal((await client.closed).code, 4101);
      assert.ok(client.messages.some((m) => m.event === 'pusher:error' && (m.data as { code: number }).code === 4304));
    } finally {
      await server.shutdown();
    }
  });

  it('shutdown closes pusher-js connections with 4200 (reconnect now)', async () => {
    const server = await startPusherServer();
    const client = await raw(server);
    await server.shutdown();
    assert.equal((await client.closed).code, 4200);
  });
});

describe('Pusher endpoint: the HTTP API with the pusher server library', () => {
  let server: PusherTestServer;
  before(async () => {
    server = await startPusherServer();
  });
  after(() => server.shutdown());

  it('trigger reaches every subscriber of each channel, but the socket_id given; string data arrives as JSON', async () => {
    const a = await pusherJs(server, { userId: 'a' });
    const b = await pusherJs(server, { userId: 'b' });
    const got: string[] = [];
    for (const [client, who] of [[a, 'a'], [b, 'b']] as const) {
      for (const name of ['news', 'private-orders', 'presence-room']) {
        const channel = client.subscribe(name);
        channel.bind('order-shipped', (data: { id: number }) => got.push(`${who} ${name} ${data.id}`));
        await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
      }
    }
    const response = await server.backend.trigger(['news', 'private-orders', 'presence-room'], 'order-shipped', { id: 7 });
    assert.equal(response.status, 200);
    await eventually(() => (got.length === 6 ? true : undefined), 'six deliveries');
    assert.deepEqual(got.sort(), ['a news 7', 'a presence-room 7', 'a private-orders 7', 'b news 7', 'b presence-room 7', 'b private-orders 7']);

    got.length = 0;
    await server.backend.trigger('news', 'order-shipped', { id: 8 }, { socket_id: a.connection.socket_id });
    await server.backend.triggerBatch([
      { channel: 'private-orders', name: 'order-shipped', data: JSON.stringify({ id: 9 }) },
      { channel: 'presence-room', name: 'order-shipped', data: JSON.stringify({ id: 10 }), socket_id: b.connection.socket_id },
    ]);
    await eventually(() => (got.length === 4 ? true : undefined), 'four deliveries');
    assert.deepEqual(got.sort(), ['a presence-room 10', 'a private-orders 9', 'b news 8', 'b private-orders 9']);
    disconnect(a, b);
  });

  it('answers the channel queries: occupied channels, user and subscription counts, users', async () => {
    const a = await pusherJs(server, { userId: 'ann', info: { name: 'Ann' } });
    const b = await pusherJs(server, { userId: 'ann' });
    const c = await pusherJs(server, { userId: 'cid' });
    for (const client of [a, b, c]) {
      const channel = client.subscribe('presence-q.stats');
      await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    }
    const pub = a.subscribe('q.ticker');
    await new Promise((resolve) => pub.bind('pusher:subscription_succeeded', resolve));
    const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'nat' });
    await native.request({ type: 'join', channel: 'q.stats' });
    await native.request({ type: 'join', channel: 'q.native-only' });

    const get = async (path: string, params?: Record<string, string>) => {
      const response = await server.backend.get({ path, params });
      return (await response.json()) as Record<string, unknown>;
    };
    assert.deepEqual(await get('/channels/presence-q.stats', { info: 'user_count,subscription_count' }), { occupied: true, user_count: 3, subscription_count: 3 });
    assert.deepEqual(await get('/channels/q.ticker', { info: 'subscription_count' }), { occupied: true, subscription_count: 1 });
    assert.deepEqual(await get('/channels/empty'), { occupied: false });
    assert.deepEqual(await get('/channels/presence-q.stats/users'), { users: [{ id: 'ann' }, { id: 'cid' }, { id: 'nat' }] });
    assert.deepEqual(await get('/channels', { filter_by_prefix: 'presence-q.', info: 'user_count' }), {
      channels: { 'presence-q.native-only': { user_count: 1 }, 'presence-q.stats': { user_count: 3 } },
    });
    assert.deepEqual(await get('/channels', { filter_by_prefix: 'q.' }), { channels: { 'q.ticker': {} } });
    await assert.rejects(server.backend.get({ path: '/channels', params: { info: 'user_count' } }), (error: { status: number }) => error.status === 400);
    await assert.rejects(server.backend.get({ path: '/channels/q.ticker/users' }), (error: { status: number }) => error.status === 400);
    await native.close();
    disconnect(a, b, c);
  });

  it('terminate_connections ends every connection of the user, pusher-js ones with 4009 (and no reconnect), at once for the others', async () => {
    const watcher = await pusherJs(server, { userId: 'watcher' });
    const room = watcher.subscribe('presence-kick') as PresenceChannel;
    const removed: string[] = [];
    room.bind('pusher:member_removed', (m: { id: string }) => removed.push(m.id));
    await new Promise((resolve) => room.bind('pusher:subscription_succeeded', resolve));
    const target = await raw(server);
    const channelData = JSON.stringify({ user_id: 'troll' });
    target.send({ event: 'pusher:subscribe', data: { channel: 'presence-kick', auth: server.backend.authorizeChannel(target.socketId, 'presence-kick', { user_id: 'troll' }).auth, channel_data: channelData } });
    await target.next('pusher_internal:subscription_succeeded');
    const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'troll' });

    await server.backend.terminateUserConnections('troll');
    assert.equal((await target.closed).code, 4009);
    assert.equal((await native.closed).code, 1000);
    await eventually(() => (removed.includes('troll') ? true : undefined), 'member_removed without the offline delay');
    watcher.disconnect();
  });

  it('refuses unsigned, forged, stale and misaddressed requests', async () => {
    const forged = new (server.backend.constructor as typeof server.backend.constructor & (new (o: object) => typeof server.backend))({
      appId: APP.appId, key: APP.key, secret: 'wrong-secret', host: '127.0.0.1', port: String(server.port), useTLS: false,
    });
    await assert.rejects(forged.trigger('news', 'x', {}), (error: { status: number }) => error.status === 401);
    const otherApp = new (server.backend.constructor as new (o: object) => typeof server.backend)({
      appId: '999', key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(server.port), useTLS: false,
    });
    await assert.rejects(otherApp.trigger('news', 'x', {}), (error: { status: number }) => error.status === 404);

    const unsigned = await fetch(`${server.url}/apps/${APP.appId}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x', data: '{}', channel: 'news' }) });
    assert.equal(unsigned.status, 401);
    assert.equal(((await unsigned.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');

    // A request signed ten minutes and more ago is refused, however well signed.
    const stale = signedUrl(`/apps/${APP.appId}/channels`, 'GET', Math.floor(Date.now() / 1000) - 700);
    assert.equal((await fetch(`${server.url}${stale}`)).status, 401);
    const fresh = signedUrl(`/apps/${APP.appId}/channels`, 'GET', Math.floor(Date.now() / 1000));
    assert.equal((await fetch(`${server.url}${fresh}`)).status, 200);

    // Valid for Pusher, not for Presence: `=` is refused here.
    await assert.rejects(server.backend.trigger('news=1', 'x', {}), (error: { status: number; body: string }) => error.status === 400 && error.body.includes('INVALID_CHANNEL'));
    await assert.rejects(server.backend.trigger('news', 'pusher:x', {}), (error: { status: number }) => error.status === 400);
  });
});

/** A GET path signed as Pusher's libraries sign it, at `timestamp` (seconds). */
function signedUrl(path: string, method: string, timestamp: number): string {
  const params = new URLSearchParams({ auth_key: APP.key, auth_timestamp: String(timestamp), auth_version: '1.0' });
  const text = `${method}\n${path}\n${[...params].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join('&')}`;
  params.set('auth_signature', createHmac('sha256', APP.secret).update(text).digest('hex'));
  return `${path}?${params}`;
}
