/**
 * `PRESENCE_DASHBOARD_KEY`, the read-only key: it reads `GET /realtime/admin/stats` and is refused
 * by every other route (FORBIDDEN, with no side effect) and by the WebSocket (UNAUTHORIZED / 4001),
 * against real servers over loopback.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { ConfigError, HELP_TEXT, loadConfig } from '../src/config/env.js';
import { ROUTES } from '../src/http/api.js';
import { configSecrets } from '../src/log.js';
import { TestClient, httpJson, startTestServer } from './support/harness.js';

const API_KEY = 'the-api-key-0123456789abcdef';
const DASHBOARD_KEY = 'the-dashboard-key-0123456789';
const JWT_SECRET = 'dashboard-key-test-secret-0123456789abcdef';

const userToken = (userId: string) =>
  new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));

/** One request per route of the API that needs credentials, with a body where it takes one. */
const CALLS: { route: string; method: string; path: string; body?: unknown }[] = [
  { route: ROUTES.channelPresence, method: 'GET', path: '/realtime/channels/room:lobby/presence' },
  { route: ROUTES.updatePresence, method: 'POST', path: ROUTES.updatePresence, body: { userId: 'ada', status: 'offline' } },
  { route: ROUTES.userPresence, method: 'GET', path: '/realtime/users/ada/presence' },
  { route: ROUTES.queryPresence, method: 'POST', path: ROUTES.queryPresence, body: { userIds: ['ada'] } },
  { route: ROUTES.userChannels, method: 'GET', path: '/realtime/users/ada/channels' },
  { route: ROUTES.onlineUsers, method: 'GET', path: ROUTES.onlineUsers },
  { route: ROUTES.heartbeat, method: 'POST', path: ROUTES.heartbeat, body: { channels: ['room:lobby'] } },
];

describe('the dashboard key', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let ada: TestClient;

  before(async () => {
    server = await startTestServer({ auth: { apiKey: API_KEY, jwtSecret: JWT_SECRET, dashboardKey: DASHBOARD_KEY } });
    ada = await TestClient.connect(server, { token: await userToken('ada') });
    assert.equal((await ada.request({ type: 'join', channel: 'room:lobby' })).type, 'ack');
  });
  after(async () => {
    await ada?.close();
    await server?.shutdown();
  });

  it('reads the admin stats: 200, the same figures as with the API key', async () => {
    const withKey = await httpJson(server, ROUTES.adminStats, { bearer: DASHBOARD_KEY });
    assert.equal(withKey.status, 200);
    assert.equal(withKey.headers.get('cache-control'), 'no-store');
    const withApiKey = await httpJson(server, ROUTES.adminStats, { bearer: API_KEY });
    assert.equal(withApiKey.status, 200);
    const figures = (body: { connections: number; sessions: number; onlineUsers: number; channels: number; topChannels: unknown }) => ({
      connections: body.connections,
      sessions: body.sessions,
      onlineUsers: body.onlineUsers,
      channels: body.channels,
      topChannels: body.topChannels,
    });
    assert.deepEqual(figures(withKey.body), { connections: 1, sessions: 1, onlineUsers: 1, channels: 1, topChannels: [{ channel: 'room:lobby', members: 1 }] });
    assert.deepEqual(figures(withKey.body), figures(withApiKey.body));
  });

  it('is refused by every other route with 403 FORBIDDEN, and changes nothing', async () => {
    const covered = new Set(CALLS.map((c) => c.route));
    for (const route of Object.values(ROUTES)) {
      // The unload beacon reads no header at all: its credential is the session token in the body.
      if (route.startsWith('/realtime/') && route !== ROUTES.adminStats && route !== ROUTES.openapi && route !== ROUTES.disconnect) {
        assert.ok(covered.has(route), `route ${route} needs a case here`);
      }
    }
    for (const call of CALLS) {
      const answer = await httpJson(server, call.path, { method: call.method, body: call.body, bearer: DASHBOARD_KEY });
      assert.equal(answer.status, 403, `${call.method} ${call.path}: ${answer.text}`);
      assert.equal(answer.body.error.code, 'FORBIDDEN', `${call.method} ${call.path}`);
      assert.match(answer.body.error.message, /dashboard key is read-only/);
    }
    // The update that would have logged ada out did not happen.
    const adaNow = await httpJson(server, '/realtime/users/ada/presence', { bearer: API_KEY });
    assert.equal(adaNow.body.user.status, 'online');
    assert.equal(ada.ws.readyState, ada.ws.OPEN);
    // A key that differs in one character is no key at all: 401.
    const near = await httpJson(server, ROUTES.adminStats, { bearer: `${DASHBOARD_KEY.slice(0, -1)}X` });
    assert.equal(near.status, 401);
    assert.equal(near.body.error.code, 'UNAUTHORIZED');
  });

  it('leaves the routes without credentials as they are', async () => {
    for (const path of [ROUTES.health, ROUTES.ready, ROUTES.metrics, ROUTES.openapi]) {
      assert.equal((await httpJson(server, path, { bearer: DASHBOARD_KEY })).status, 200, path);
    }
  });

  it('opens no WebSocket: UNAUTHORIZED and close code 4001, in the query or the Authorization header', async () => {
    const viaQuery = await TestClient.connect(server, { token: DASHBOARD_KEY });
    const viaHeader = await TestClient.connect(server, {}, { headers: { authorization: `Bearer ${DASHBOARD_KEY}` } });
    for (const client of [viaQuery, viaHeader]) {
      const error = client.messages.find((m) => m.type === 'error');
      assert.ok(error && error.type === 'error', JSON.stringify(client.messages));
      assert.equal(error.code, 'UNAUTHORIZED');
      assert.equal(client.messages.some((m) => m.type === 'welcome'), false);
      assert.equal((await client.closed).code, 4001);
    }
    const stats = (await httpJson(server, ROUTES.adminStats, { bearer: DASHBOARD_KEY })).body;
    assert.equal(stats.connections, 1, 'only ada');
  });

  it('is never written to the logs', () => {
    assert.ok(configSecrets(server.config).includes(DASHBOARD_KEY));
  });
});

describe('the dashboard key, with user tokens and no API key', () => {
  it('reads the stats, which nobody could read before; user tokens are still refused there', async () => {
    const server = await startTestServer({ auth: { jwtSecret: JWT_SECRET, dashboardKey: DASHBOARD_KEY } });
    after(() => server.shutdown());
    assert.equal((await httpJson(server, ROUTES.adminStats, { bearer: DASHBOARD_KEY })).status, 200);
    const user = await httpJson(server, ROUTES.adminStats, { bearer: await userToken('ada') });
    assert.equal(user.status, 403);
    assert.equal(user.body.error.code, 'FORBIDDEN');
    const online = await httpJson(server, ROUTES.onlineUsers, { bearer: DASHBOARD_KEY });
    assert.equal(online.status, 403);
    assert.equal(online.body.error.code, 'FORBIDDEN');
  });
});

describe('the dashboard key\'s rate limit', () => {
  it('has a bucket of its own: a dashboard that runs out never holds back the API key', async () => {
    const server = await startTestServer({
      auth: { apiKey: API_KEY, dashboardKey: DASHBOARD_KEY },
      // Next to no refill, so a slow machine cannot turn the fourth request into a success.
      limits: { httpKeyRateLimit: 0.01, httpKeyRateBurst: 3 },
    });
    after(() => server.shutdown());
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await httpJson(server, ROUTES.adminStats, { bearer: DASHBOARD_KEY })).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    const limited = await httpJson(server, ROUTES.adminStats, { bearer: DASHBOARD_KEY });
    assert.equal(limited.body.error.code, 'RATE_LIMITED');
    assert.match(limited.body.error.message, /the dashboard key/);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal((await httpJson(server, ROUTES.adminStats, { bearer: API_KEY })).status, 200, 'the API key has its own bucket');
  });
});

describe('startServer with a dashboard key', () => {
  it('refuses one equal to the API key, or without any other credential', async () => {
    await assert.rejects(startTestServer({ auth: { apiKey: API_KEY, dashboardKey: API_KEY } }), /dashboardKey must differ from auth.apiKey/);
    await assert.rejects(startTestServer({ auth: { dashboardKey: DASHBOARD_KEY } }), /needs another credential/);
  });
});

describe('PRESENCE_DASHBOARD_KEY', () => {
  const refused = (env: Record<string, string>, message: RegExp) =>
    assert.throws(
      () => loadConfig(env, []),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.equal(error.variable, 'PRESENCE_DASHBOARD_KEY');
        assert.match(error.message, message);
        for (const value of Object.values(env)) assert.ok(!error.message.includes(value), 'the message never shows a key');
        return true;
      },
    );

  it('is unset by default, and taken verbatim with another credential', () => {
    assert.equal(loadConfig({}, []).auth.dashboardKey, undefined);
    assert.equal(loadConfig({ PRESENCE_DASHBOARD_KEY: '  ' }, []).auth.dashboardKey, undefined, 'empty means unset');
    assert.equal(loadConfig({ PRESENCE_API_KEY: API_KEY, PRESENCE_DASHBOARD_KEY: ` ${DASHBOARD_KEY}` }, []).auth.dashboardKey, ` ${DASHBOARD_KEY}`);
    assert.equal(loadConfig({ PRESENCE_JWT_SECRET: JWT_SECRET, PRESENCE_DASHBOARD_KEY: DASHBOARD_KEY }, []).auth.dashboardKey, DASHBOARD_KEY);
    assert.ok(HELP_TEXT.includes('PRESENCE_DASHBOARD_KEY'));
  });

  it('is refused shorter than 16 characters, equal to the API key, or as the only credential', () => {
    refused({ PRESENCE_API_KEY: API_KEY, PRESENCE_DASHBOARD_KEY: 'fifteen-chars-x' }, /is 15 characters; it must be at least 16/);
    assert.equal(loadConfig({ PRESENCE_API_KEY: API_KEY, PRESENCE_DASHBOARD_KEY: 'sixteen-chars-xy' }, []).auth.dashboardKey, 'sixteen-chars-xy');
    refused({ PRESENCE_API_KEY: API_KEY, PRESENCE_DASHBOARD_KEY: API_KEY }, /equals PRESENCE_API_KEY/);
    refused({ PRESENCE_DASHBOARD_KEY: DASHBOARD_KEY }, /no other auth is: the server runs in development mode/);
    refused({ NODE_ENV: 'production', PRESENCE_DASHBOARD_KEY: DASHBOARD_KEY }, /development mode/);
  });
});
