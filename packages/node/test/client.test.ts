/**
 * PresenceServerClient against real servers on loopback: it has a method for every operation of
 * the OpenAPI document the server serves, and each method does what the route does, errors included.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { NOT_HTTP_OPERATIONS, OPERATIONS, PresenceApiError, PresenceServerClient, createUserToken } from '../src/index.js';
import { ROUTES } from '../../server/src/http/api.js';
import { openApiDocument } from '../../server/src/http/openapi.js';
import { REALTIME_PATH } from '../../server/src/transport/websocket.js';
import { API_KEY, JWT_SECRET, Socket, startPresenceServer, type TestServer } from './support/server.js';

type OpenApi = { paths: Record<string, Record<string, { operationId: string }>> };

/** operationId → { method, path } as a document lists them. */
function operationsOf(document: OpenApi): Map<string, { method: string; path: string }> {
  const out = new Map<string, { method: string; path: string }>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) out.set(operation.operationId, { method: method.toUpperCase(), path });
  }
  return out;
}

async function rejectsWith(promise: Promise<unknown>, code: string, status: number): Promise<PresenceApiError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PresenceApiError, `a PresenceApiError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.equal(error.status, status);
    assert.ok(error.message.length > 0);
    return error;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

/** A plain HTTP server answering every request with `handler`; for failures a Presence server never makes. */
async function fakeServer(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('PresenceServerClient covers the HTTP API', () => {
  let server: TestServer;
  before(async () => {
    server = await startPresenceServer();
  });
  after(() => server.shutdown());

  test('a method for every operation of the OpenAPI document a real server serves, with its method and path', async () => {
    const client = new PresenceServerClient({ baseUrl: server.url });
    const served = operationsOf((await client.getOpenApiDocument()) as OpenApi);
    assert.ok(served.size >= 12, `the document lists the operations (${served.size})`);
    const covered = new Map(Object.entries(OPERATIONS));
    for (const [operationId, { method, path }] of served) {
      if ((NOT_HTTP_OPERATIONS as readonly string[]).includes(operationId)) continue;
      assert.deepEqual(covered.get(operationId), { method, path }, `OPERATIONS.${operationId} is ${method} ${path}`);
      assert.equal(typeof (client as unknown as Record<string, unknown>)[operationId], 'function', `the client has ${operationId}()`);
      covered.delete(operationId);
    }
    assert.deepEqual([...covered.keys()], [], 'no operation the server does not have');
    // The document in the repository is the same one (schema.test.ts keeps docs/schema/openapi.json current).
    assert.deepEqual(operationsOf(openApiDocument({ routes: ROUTES, realtimePath: REALTIME_PATH }) as unknown as OpenApi), served);
  });
});

describe('PresenceServerClient against a real server', () => {
  let server: TestServer;
  let api: PresenceServerClient;
  const sockets: Socket[] = [];
  const connect = async (userId: string, device = 'web') => {
    const socket = await Socket.open(server, { token: await createUserToken({ userId, name: userId.toUpperCase() }, JWT_SECRET), device });
    assert.equal(socket.welcome()?.userId, userId);
    sockets.push(socket);
    return socket;
  };

  before(async () => {
    server = await startPresenceServer({ limits: { maxPageSize: 2 } });
    api = new PresenceServerClient({ baseUrl: `${server.url}/`, apiKey: API_KEY });
  });
  after(async () => {
    await Promise.all(sockets.map((s) => s.close()));
    await server.shutdown();
  });

  test('getHealth, getReadiness, getMetrics, getOpenApiDocument', async () => {
    assert.deepEqual(await api.getHealth(), { status: 'ok' });
    assert.deepEqual(await api.getReadiness(), { status: 'ready' });
    const metrics = await api.getMetrics();
    assert.match(metrics, /^# HELP presence_/m);
    assert.match(metrics, /presence_http_requests_total\{route="\/healthz",status="200"\} 1/);
    const document = await api.getOpenApiDocument();
    assert.equal(document.openapi, '3.1.0');
  });

  test('updatePresence, getUserPresence, queryPresence; ids are percent-encoded', async () => {
    const odd = 'team/ops lead?#1';
    const self = await api.updatePresence({ userId: odd, status: 'busy', message: 'On call', meta: { name: 'Ops' } });
    assert.equal(self.userId, odd);
    assert.equal(self.manualStatus, 'busy');
    assert.equal(self.visibility, 'everyone');
    assert.deepEqual(self.meta, { name: 'Ops' });

    await connect('cli-ada');
    const ada = await api.getUserPresence('cli-ada');
    assert.equal(ada.status, 'online');
    assert.deepEqual(ada.meta, { name: 'CLI-ADA' });
    assert.deepEqual(ada.devices, ['web']);
    const offline = await api.getUserPresence(odd);
    assert.equal(offline.status, 'offline', 'a user without a session is offline, whatever the manual status');
    assert.deepEqual(
      (await api.queryPresence(['cli-ada', odd, 'cli-ghost'])).map((u) => [u.userId, u.status]),
      [
        ['cli-ada', 'online'],
        [odd, 'offline'],
        ['cli-ghost', 'offline'],
      ],
    );
  });

  test('getChannelPresence pages; iterateChannelPresence walks every page', async () => {
    const members = ['cli-m1', 'cli-m2', 'cli-m3'];
    for (const id of members) await (await connect(id)).request({ type: 'join', channel: 'cli:room', meta: { seat: id } });
    const first = await api.getChannelPresence('cli:room', { limit: 2 });
    assert.equal(first.channel, 'cli:room');
    assert.equal(first.count, 3);
    assert.deepEqual(first.members.map((m) => m.userId), ['cli-m1', 'cli-m2']);
    assert.equal(first.nextCursor, 'cli-m2');
    const second = await api.getChannelPresence('cli:room', { cursor: first.nextCursor });
    assert.deepEqual(second.members.map((m) => [m.userId, m.channelMeta]), [['cli-m3', { seat: 'cli-m3' }]]);
    assert.equal(second.nextCursor, undefined);

    const all = [];
    for await (const member of api.iterateChannelPresence('cli:room')) all.push(member.userId);
    assert.deepEqual(all, members);
    assert.deepEqual(await api.getChannelPresence('cli:empty'), { channel: 'cli:empty', count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] });
  });

  test("getUserChannels: the API key for anyone, a user's token for their own", async () => {
    const socket = await connect('cli-chan');
    await socket.request({ type: 'join', channel: 'cli:b', meta: { mode: 'editing' } });
    await socket.request({ type: 'join', channel: 'cli:a' });
    const channels = await api.getUserChannels('cli-chan');
    assert.deepEqual(channels.map((c) => [c.channel, c.channelMeta]), [['cli:a', {}], ['cli:b', { mode: 'editing' }]]);
    assert.ok(channels.every((c) => !Number.isNaN(Date.parse(c.joinedAt))));

    const own = new PresenceServerClient({ baseUrl: server.url, token: await createUserToken({ userId: 'cli-chan' }, JWT_SECRET) });
    assert.deepEqual(await own.getUserChannels('cli-chan'), channels);
    await rejectsWith(own.getUserChannels('cli-ada'), 'FORBIDDEN', 403);

    await socket.request({ type: 'status', status: 'invisible' });
    assert.deepEqual(await api.getUserChannels('cli-chan'), [], 'invisible: in no channel, as if offline');
  });

  test('heartbeat keeps a user present over HTTP with their token; unloadBeacon ends that session after the grace', async () => {
    const user = new PresenceServerClient({ baseUrl: server.url, token: await createUserToken({ userId: 'cli-beat' }, JWT_SECRET) });
    const first = await user.heartbeat({ channels: ['cli:beat'], device: 'server' });
    assert.ok(first.sessionId && first.sessionToken && first.intervalMs > 0);
    assert.ok(first.events.some((e) => e.type === 'presence.sync'), 'the first heartbeat syncs the channel');
    assert.deepEqual((await api.getUserChannels('cli-beat')).map((c) => c.channel), ['cli:beat']);
    assert.equal((await api.getUserPresence('cli-beat')).status, 'online');
    // No credential but the session token: an anonymous client can send it.
    const anonymous = new PresenceServerClient({ baseUrl: server.url, apiKey: 'not-the-key-but-unused-by-the-beacon' });
    assert.equal(await anonymous.unloadBeacon(first.sessionToken), undefined);
    await rejectsWith(anonymous.unloadBeacon('forged'), 'UNAUTHORIZED', 401);
  });

  test('getOnlineUsers pages; iterateOnlineUsers walks every page; invisible users are absent', async () => {
    const ids: string[] = [];
    for await (const user of api.iterateOnlineUsers()) ids.push(user.userId);
    const page = await api.getOnlineUsers({ limit: 1 });
    assert.equal(page.count, ids.length);
    assert.equal(page.users.length, 1);
    assert.equal(page.nextCursor, ids[0]);
    assert.deepEqual([...ids].sort(), ids, 'sorted by user id');
    assert.ok(ids.includes('cli-ada') && ids.includes('cli-m3'));
    assert.ok(!ids.includes('cli-chan'), 'the invisible user is not listed');
    const user = new PresenceServerClient({ baseUrl: server.url, token: await createUserToken({ userId: 'cli-ada' }, JWT_SECRET) });
    await rejectsWith(user.getOnlineUsers(), 'FORBIDDEN', 403);
  });

  test('getAdminStats', async () => {
    const stats = await api.getAdminStats();
    assert.equal(stats.nodeId, null);
    assert.ok(stats.connections >= 1);
    assert.ok(stats.topChannels.some((c) => c.channel === 'cli:room'));
  });

  test('logout ends every session of the user: sockets close with 1000 LOGGED_OUT', async () => {
    const tab = await connect('cli-leaving');
    const self = await api.logout('cli-leaving');
    assert.equal(self.userId, 'cli-leaving');
    assert.deepEqual(await tab.closed, { code: 1000, reason: 'LOGGED_OUT' });
  });

  test("errors carry the server's code and status", async () => {
    await rejectsWith(api.getUserPresence('u'.repeat(129)), 'INVALID_USER_ID', 400);
    await rejectsWith(api.getChannelPresence('bad name'), 'INVALID_CHANNEL', 400);
    await rejectsWith(api.getChannelPresence('cli:room', { limit: 0 }), 'INVALID_MESSAGE', 400);
    await rejectsWith(api.updatePresence({ userId: 'x', state: 'no-such-state' }), 'UNKNOWN_STATE', 400);
    await rejectsWith(api.updatePresence({ status: 'away' }), 'INVALID_MESSAGE', 400);
    const wrong = await rejectsWith(new PresenceServerClient({ baseUrl: server.url, apiKey: 'not-the-key' }).getUserPresence('x'), 'UNAUTHORIZED', 401);
    assert.equal(wrong.retryable, false);
    assert.equal(wrong.operation, 'getUserPresence');
    await rejectsWith(new PresenceServerClient({ baseUrl: server.url }).getAdminStats(), 'UNAUTHORIZED', 401);
    const user = new PresenceServerClient({ baseUrl: server.url, token: await createUserToken({ userId: 'cli-ada' }, JWT_SECRET) });
    await rejectsWith(user.updatePresence({ userId: 'someone-else', status: 'away' }), 'FORBIDDEN', 403);
    await rejectsWith(user.getAdminStats(), 'FORBIDDEN', 403);
  });
});

describe('PresenceServerClient failures', () => {
  test('RATE_LIMITED carries retryAfter from Retry-After and is retryable', async () => {
    const server = await startPresenceServer({ limits: { httpKeyRateBurst: 2, httpKeyRateLimit: 1 } });
    try {
      const api = new PresenceServerClient({ baseUrl: server.url, apiKey: API_KEY });
      await api.getUserPresence('a');
      await api.getUserPresence('a');
      const error = await rejectsWith(api.getUserPresence('a'), 'RATE_LIMITED', 429);
      assert.equal(error.retryAfter, 1);
      assert.equal(error.retryable, true);
      assert.deepEqual(await api.getHealth(), { status: 'ok' }, 'health is not rate limited');
    } finally {
      await server.shutdown();
    }
  });

  test('NETWORK_ERROR when nothing listens, TIMEOUT when nothing answers, INVALID_RESPONSE for answers that are not the API', async () => {
    const gone = await fakeServer(() => {});
    const goneUrl = gone.url;
    await gone.close();
    const network = await rejectsWith(new PresenceServerClient({ baseUrl: goneUrl }).getHealth(), 'NETWORK_ERROR', 0);
    assert.equal(network.retryable, true);
    assert.ok(network.cause, 'the fetch failure is kept as the cause');

    const silent = await fakeServer(() => {});
    try {
      const timeout = await rejectsWith(new PresenceServerClient({ baseUrl: silent.url, timeoutMs: 100 }).getHealth(), 'TIMEOUT', 0);
      assert.equal(timeout.retryable, true);
    } finally {
      await silent.close();
    }

    const proxy = await fakeServer((req, res) => {
      if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>');
        return;
      }
      res.writeHead(502, { 'content-type': 'text/html', 'retry-after': '7' }).end('<html>Bad Gateway</html>');
    });
    try {
      const client = new PresenceServerClient({ baseUrl: proxy.url, apiKey: API_KEY });
      const bad = await rejectsWith(client.getUserPresence('a'), 'INVALID_RESPONSE', 502);
      assert.equal(bad.retryable, true);
      assert.equal(bad.retryAfter, 7);
      const notJson = await rejectsWith(client.getHealth(), 'INVALID_RESPONSE', 200);
      assert.equal(notJson.retryable, false);
    } finally {
      await proxy.close();
    }
  });

  test('sends the credential, extra headers and JSON; refuses bad options', async () => {
    const seen: { method?: string; url?: string; headers: Record<string, unknown>; body: string }[] = [];
    const echo = await fakeServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, headers: req.headers, body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"user":{"userId":"a"},"users":[]}');
      });
    });
    try {
      const client = new PresenceServerClient({ baseUrl: `${echo.url}///`, apiKey: 'k', headers: { 'x-request-id': 'r1' } });
      await client.updatePresence({ userId: 'a', status: 'away' });
      await client.queryPresence(['a', 'b']);
      await client.getOnlineUsers({ limit: 5, cursor: 'a b' });
      assert.equal(seen[0].method, 'POST');
      assert.equal(seen[0].url, '/realtime/presence/update');
      assert.equal(seen[0].headers.authorization, 'Bearer k');
      assert.equal(seen[0].headers['x-request-id'], 'r1');
      assert.equal(seen[0].headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(seen[0].body), { userId: 'a', status: 'away' });
      assert.deepEqual(JSON.parse(seen[1].body), { userIds: ['a', 'b'] });
      assert.equal(seen[2].url, '/realtime/presence/online?limit=5&cursor=a+b');
    } finally {
      await echo.close();
    }
    assert.throws(() => new PresenceServerClient({ baseUrl: 'localhost:8080' }), TypeError);
    assert.throws(() => new PresenceServerClient({ baseUrl: 'http://x', apiKey: 'a', token: 'b' }), /not both/);
    assert.throws(() => new PresenceServerClient({ baseUrl: 'http://x', apiKey: '' }), TypeError);
    assert.throws(() => new PresenceServerClient({ baseUrl: 'http://x', headers: { Authorization: 'x' } }), TypeError);
    assert.throws(() => new PresenceServerClient({ baseUrl: 'http://x', timeoutMs: 0 }), TypeError);
  });
});
