/**
 * The demo and the dashboard in real Chromium, against real servers in this process serving the
 * pages built by this test (so no prior `npm run build` is needed).
 *
 * Demo: two browser contexts are two users. Dashboard: a two-node cluster (over the in-process
 * hub) with an API key, users connected from Node with tokens, and the figures the page shows
 * compared with the server's; and a single node with webhooks to a receiver that refuses some.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import type { Browser, Page } from 'playwright-core';
import WebSocket from 'ws';
import { PresenceClient } from '../../client/src/index.js';
import { MemoryHub, MemoryService } from '../../server/src/cluster/memory-service.js';
import { DEFAULT_WEBHOOK_EVENT_TYPES } from '@presence/protocol';
import { resolveConfig } from '../../server/src/config/config.js';
import type { AdminStats } from '../../server/src/http/admin-stats.js';
import { silentLogger } from '../../server/src/log.js';
import { startServer, type RunningServer } from '../../server/src/server.js';
import { buildWeb } from '../scripts/build.js';
import { ARTIFACTS, DOC_IMAGES, WAIT_MS, launchChromium } from './support/browser.js';

const OFFLINE_DELAY_MS = 2000;
const TYPING_TIMEOUT_MS = 1500;
const API_KEY = 'dashboard-test-key-0123456789';
const DASHBOARD_KEY = 'dashboard-read-only-key-0123456789';
const JWT_SECRET = 'dashboard-test-secret-0123456789abcdef';

let publicDir: string;
let browser: Browser;
const cleanups: (() => Promise<unknown> | void)[] = [];

before(async () => {
  publicDir = await mkdtemp(join(tmpdir(), 'presence-web-'));
  await buildWeb(publicDir);
  browser = await launchChromium();
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await browser?.close();
  if (publicDir) await rm(publicDir, { recursive: true, force: true });
});

/** The two pictures the README shows; the other screenshots are test artifacts only. */
const README_IMAGES = new Set(['demo.png', 'dashboard.png']);

async function screenshot(page: Page, name: string): Promise<void> {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  if (process.env.PRESENCE_UPDATE_SCREENSHOTS === '1' && README_IMAGES.has(name)) await copyFile(path, join(DOC_IMAGES, name));
}

/** A user from Node with the real client (no page), for company in the room. */
async function nodeClient(options: ConstructorParameters<typeof PresenceClient>[0]): Promise<PresenceClient> {
  const client = new PresenceClient({ WebSocket: WebSocket as never, activity: false, ...options });
  cleanups.push(() => client.close());
  return client;
}

async function signIn(page: Page, baseUrl: string, name: string, avatar: string | undefined, room: string): Promise<void> {
  await page.goto(`${baseUrl}/`);
  await page.getByLabel('Your name', { exact: true }).fill(name);
  if (avatar) {
    // The radio button is drawn as its picture: click the picture, as a person would.
    await page.locator('label.avatar-choice', { hasText: avatar }).click();
    assert.equal(await page.getByLabel(avatar, { exact: true }).isChecked(), true);
  }
  await page.getByLabel('Room', { exact: true }).selectOption(room);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.getByRole('status').filter({ hasText: 'connected' }).waitFor({ timeout: WAIT_MS });
}

describe('demo page', () => {
  let server: RunningServer;

  before(async () => {
    server = await startServer(
      resolveConfig({ port: 0, host: '127.0.0.1', offlineDelayMs: OFFLINE_DELAY_MS, typingTimeoutMs: TYPING_TIMEOUT_MS }),
      { log: silentLogger, publicDir },
    );
    cleanups.push(() => server.shutdown());
  });

  it('shows two users each other: join, typing, busy with a message, invisible, and leaving after the offline delay', async () => {
    const grace = await nodeClient({ url: `${server.url.replace('http', 'ws')}/realtime`, userId: 'grace-hopper', device: 'ios', params: { name: 'Grace Hopper' } });
    await grace.join('room:lobby');
    await grace.setStatus({ state: 'lunch', message: 'Back at 2' });

    const contextA = await browser.newContext({ viewport: { width: 1180, height: 820 } });
    const contextB = await browser.newContext({ viewport: { width: 420, height: 860 } });
    cleanups.push(() => contextA.close().catch(() => undefined));
    const pageA = await contextA.newPage();
    const pageB = await contextB.newPage();
    const errors: string[] = [];
    for (const page of [pageA, pageB]) page.on('pageerror', (error) => errors.push(error.message));

    await signIn(pageA, server.url, 'Ada Lovelace', 'Wave', 'lobby');
    const membersA = pageA.getByRole('list', { name: 'Members of #lobby' });
    await membersA.locator('[data-user="ada-lovelace"]').waitFor({ timeout: WAIT_MS });
    await membersA.locator('[data-user="grace-hopper"]').filter({ hasText: 'Back at 2' }).waitFor({ timeout: WAIT_MS });

    // A watches users across rooms: one who is here, one never seen.
    for (const who of ['Grace Hopper', 'linus']) {
      await pageA.getByLabel('Name or user id to watch').fill(who);
      await pageA.getByRole('button', { name: 'Watch', exact: true }).click();
    }
    const watched = pageA.getByRole('list', { name: 'Watched users' });
    await watched.locator('[data-user="grace-hopper"][data-status="away"]').waitFor({ timeout: WAIT_MS });
    await watched.locator('[data-user="linus"]').filter({ hasText: 'never seen' }).waitFor({ timeout: WAIT_MS });

    // B joins: A sees B.
    await signIn(pageB, server.url, 'Bob', undefined, 'lobby');
    const bobAtA = membersA.locator('[data-user="bob"]');
    await bobAtA.waitFor({ timeout: WAIT_MS });
    assert.equal(await bobAtA.locator('.initials').textContent(), 'B', 'no picture chosen: initials');
    assert.equal(await membersA.locator('[data-user="ada-lovelace"] img').getAttribute('src'), 'avatars/wave.svg');

    // B types: A sees the typing line, then it goes once B pauses.
    const typingAtA = pageA.getByTestId('typing');
    await pageB.getByLabel('Message to #lobby').pressSequentially('Hello there', { delay: 30 });
    await typingAtA.filter({ hasText: 'Bob is typing…' }).waitFor({ timeout: WAIT_MS });
    await pageA.waitForFunction(() => document.querySelector('[data-testid="typing"]')?.textContent === '', undefined, { timeout: WAIT_MS });

    // B turns busy with a message: A sees both.
    await pageB.getByLabel('Status', { exact: true }).selectOption('busy');
    await pageB.getByLabel('Status message').fill('In a call');
    await pageB.getByRole('button', { name: 'Set status' }).click();
    await membersA.locator('[data-user="bob"][data-status="busy"]').filter({ hasText: 'Busy' }).filter({ hasText: 'In a call' }).waitFor({ timeout: WAIT_MS });
    await screenshot(pageA, 'demo.png');
    await screenshot(pageB, 'demo-narrow.png');

    // B goes invisible: A sees B leave, with a last-seen line.
    await pageB.getByLabel('Status', { exact: true }).selectOption('invisible');
    await pageB.getByRole('button', { name: 'Set status' }).click();
    await bobAtA.waitFor({ state: 'detached', timeout: WAIT_MS });
    const leftAtA = pageA.getByRole('list', { name: 'Recently left' });
    await leftAtA.locator('[data-user="bob"]').filter({ hasText: 'last seen' }).waitFor({ timeout: WAIT_MS });
    assert.equal(server.engine.channelPresence('room:lobby', { limit: 10 }).members.some((m) => m.userId === 'bob'), false);

    // B comes back, then closes the page: A sees B leave only after the offline delay.
    await pageB.getByRole('button', { name: 'Clear' }).click();
    await bobAtA.waitFor({ timeout: WAIT_MS });
    await leftAtA.locator('[data-user="bob"]').waitFor({ state: 'detached', timeout: WAIT_MS });
    const closedAt = Date.now();
    await contextB.close();
    await bobAtA.waitFor({ state: 'detached', timeout: WAIT_MS + OFFLINE_DELAY_MS });
    const elapsed = Date.now() - closedAt;
    assert.ok(elapsed >= OFFLINE_DELAY_MS, `Bob left ${elapsed} ms after his page closed, before the ${OFFLINE_DELAY_MS} ms offline delay`);
    await leftAtA.locator('[data-user="bob"]').filter({ hasText: /last seen (just now|\d+ s ago)/ }).waitFor({ timeout: WAIT_MS });
    await screenshot(pageA, 'demo-left.png');

    assert.deepEqual(errors, [], 'no errors in the pages');
  });

  it('is keyboard-usable: every control has a label and the join form works without a mouse', async () => {
    const context = await browser.newContext();
    cleanups.push(() => context.close().catch(() => undefined));
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    // The name field takes the focus as soon as the page has rendered.
    await page.waitForFunction(() => document.activeElement?.getAttribute('autocomplete') === 'nickname', undefined, { timeout: WAIT_MS });
    await page.keyboard.type('Keyboard Kim');
    await page.keyboard.press('Enter');
    await page.getByRole('status').filter({ hasText: 'connected' }).waitFor({ timeout: WAIT_MS });
    await page.getByRole('list', { name: 'Members of #lobby' }).locator('[data-user="keyboard-kim"]').waitFor({ timeout: WAIT_MS });
    // Tab through the page: every control is reachable, and a room switch works with Enter.
    const reached: string[] = [];
    for (let i = 0; i < 40 && !reached.includes('#design'); i++) {
      await page.keyboard.press('Tab');
      reached.push(
        await page.evaluate(() => {
          const el = document.activeElement as HTMLInputElement | null;
          return el?.getAttribute('aria-label') ?? el?.labels?.[0]?.textContent ?? el?.textContent?.trim() ?? '';
        }),
      );
    }
    for (const control of ['Status', 'Status message', 'Clear after', 'Set status', 'Sign out', 'Name or user id to watch', '#design']) {
      assert.ok(reached.includes(control), `Tab reaches "${control}" (reached: ${reached.join(' | ')})`);
    }
    await page.keyboard.press('Enter');
    await page.getByRole('list', { name: 'Members of #design' }).locator('[data-user="keyboard-kim"]').waitFor({ timeout: WAIT_MS });

    // A configured custom state with a message and an expiry, as the user sees it.
    await page.getByLabel('Status', { exact: true }).selectOption({ label: 'Focus (busy)' });
    await page.getByLabel('Status message').fill('Deep work');
    await page.getByLabel('Clear after').selectOption('1h');
    await page.getByRole('button', { name: 'Set status' }).click();
    await page.locator('.me').filter({ hasText: /Busy · Focus · “Deep work” · until \d/ }).waitFor({ timeout: WAIT_MS });
    const kim = server.engine.userPresence('keyboard-kim', { trusted: true });
    assert.equal(kim.state, 'focus');
    assert.equal(kim.status, 'busy');
    const expiresIn = Date.parse(kim.expiresAt ?? '') - Date.now();
    assert.ok(expiresIn > 50 * 60_000 && expiresIn <= 60 * 60_000, `expires in ${expiresIn} ms`);

    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => {
          const control = el as HTMLInputElement;
          if (control.type === 'hidden') return false;
          const labelled = control.labels && control.labels.length > 0;
          return !labelled && !control.getAttribute('aria-label') && !(el.tagName === 'BUTTON' && el.textContent?.trim());
        })
        .map((el) => el.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unlabelled, []);
  });
});

describe('dashboard page', () => {
  const hub = new MemoryHub();
  const nodes: RunningServer[] = [];

  before(async () => {
    for (const nodeId of ['node-a', 'node-b']) {
      const config = resolveConfig({
        port: 0,
        host: '127.0.0.1',
        nodeId,
        offlineDelayMs: OFFLINE_DELAY_MS,
        auth: { apiKey: API_KEY, jwtSecret: JWT_SECRET, dashboardKey: DASHBOARD_KEY },
      });
      const node = await startServer(config, { log: silentLogger, publicDir, sharedService: new MemoryService(hub) });
      nodes.push(node);
      cleanups.push(() => node.shutdown());
    }
  });

  const token = (userId: string, name: string) =>
    new SignJWT({ name }).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setExpirationTime('10m').sign(new TextEncoder().encode(JWT_SECRET));

  async function stats(node: RunningServer, key = API_KEY): Promise<{ status: number; body: AdminStats }> {
    const response = await fetch(`${node.url}/realtime/admin/stats`, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    return { status: response.status, body: (await response.json()) as AdminStats };
  }

  it('asks for the API key, then shows the server\'s figures, busiest channels and one row per node', async () => {
    const people: [RunningServer, string, string[], string?][] = [
      [nodes[0], 'ada', ['room:lobby', 'doc:42']],
      [nodes[0], 'grace', ['room:lobby', 'room:design']],
      [nodes[0], 'linus', ['room:lobby']],
      [nodes[1], 'barbara', ['room:lobby', 'room:design']],
      [nodes[1], 'ken', ['room:support']],
      [nodes[1], 'margaret', ['room:lobby'], 'invisible'],
    ];
    for (const [node, userId, channels, status] of people) {
      const client = await nodeClient({ url: `${node.url.replace('http', 'ws')}/realtime`, getToken: () => token(userId, userId) });
      if (status === 'invisible') await client.setStatus('invisible');
      for (const channel of channels) await client.join(channel);
    }

    // The endpoint itself: the API key, never a user's token.
    assert.equal((await stats(nodes[0], '')).status, 401);
    assert.equal((await stats(nodes[0], 'wrong-key')).status, 401);
    assert.equal((await stats(nodes[0], await token('ada', 'Ada'))).status, 403);

    // Both nodes agree on the cluster-wide figures once replication settled.
    const deadline = Date.now() + WAIT_MS;
    let expected: AdminStats;
    for (;;) {
      expected = (await stats(nodes[0])).body;
      const other = (await stats(nodes[1])).body;
      // Another node's row is as of its last lease renewal (a third of the lease): wait for both rows' connections.
      const rowsCurrent = expected.cluster?.nodes.reduce((sum, n) => sum + n.connections, 0) === 6;
      if (expected.onlineUsers === 5 && other.onlineUsers === 5 && expected.cluster?.nodes.every((n) => n.lease === 'live') && expected.cluster.nodes.length === 2 && rowsCurrent) break;
      if (Date.now() > deadline) assert.fail(`cluster did not settle: ${JSON.stringify(expected)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(expected.connections, 3);
    assert.equal(expected.channels, 4, 'lobby, design, support, doc:42');
    assert.deepEqual(expected.topChannels.slice(0, 2), [
      { channel: 'room:lobby', members: 4 },
      { channel: 'room:design', members: 2 },
    ]);
    assert.deepEqual(
      expected.cluster!.nodes.map((n) => [n.nodeId, n.self, n.connections, n.sessions, n.users]),
      [
        ['node-a', true, 3, 3, 3],
        ['node-b', false, 3, 3, 2],
      ],
    );

    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    cleanups.push(() => context.close().catch(() => undefined));
    const page = await context.newPage();
    await page.goto(`${nodes[0].url}/dashboard`);
    const keyField = page.getByLabel('API key');
    await keyField.waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#stats').isVisible(), false, 'no figures without the key');

    await keyField.fill('wrong-key');
    await keyField.press('Enter');
    await page.getByText('The server refused that key').waitFor({ timeout: WAIT_MS });
    await keyField.fill(API_KEY);
    await page.getByRole('button', { name: 'Show stats' }).click();
    await page.locator('#stats').waitFor({ timeout: WAIT_MS });

    // A string, not a function: the test runner's transpiler would wrap inner functions in helpers
    // that do not exist in the page.
    const shown = async () =>
      (await page.evaluate(`(() => {
        const stat = (name) => document.querySelector('[data-stat="' + name + '"]')?.textContent ?? '';
        const rows = (table) =>
          [...document.querySelectorAll('#' + table + ' tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? ''));
        return {
          connections: stat('connections'),
          sessions: stat('sessions'),
          onlineUsers: stat('onlineUsers'),
          channels: stat('channels'),
          eventsIn: stat('eventsIn'),
          channelRows: rows('channels-table'),
          nodeRows: rows('nodes-table'),
        };
      })()`)) as Record<string, unknown>;
    const want = {
      connections: String(expected.connections),
      sessions: String(expected.sessions),
      onlineUsers: String(expected.onlineUsers),
      channels: String(expected.channels),
      channelRows: expected.topChannels.map((c) => [c.channel, String(c.members)]),
      nodeRows: expected.cluster!.nodes.map((n) => [n.self ? `${n.nodeId} (this node)` : n.nodeId, n.lease, String(n.connections), String(n.sessions), String(n.users)]),
    };
    const until = Date.now() + WAIT_MS;
    let seen = await shown();
    while (JSON.stringify({ ...seen, eventsIn: undefined }) !== JSON.stringify({ ...want, eventsIn: undefined }) || seen.eventsIn === '–') {
      if (Date.now() > until) assert.deepEqual(seen, { ...want, eventsIn: seen.eventsIn }, 'the dashboard shows the server\'s figures');
      await new Promise((resolve) => setTimeout(resolve, 200));
      seen = await shown();
    }

    // Live: a new user shows up without reloading.
    const newcomer = await nodeClient({ url: `${nodes[0].url.replace('http', 'ws')}/realtime`, getToken: () => token('katherine', 'Katherine') });
    await newcomer.join('room:lobby');
    await page.waitForFunction(() => document.querySelector('[data-stat="connections"]')?.textContent === '4', undefined, { timeout: WAIT_MS });
    await page.locator('#channels-table tbody tr').first().filter({ hasText: 'room:lobby' }).filter({ hasText: '5' }).waitFor({ timeout: WAIT_MS });
    // Some traffic for the rate chart: meta updates fan out to the lobby on both nodes.
    for (let i = 0; i < 16; i++) {
      await newcomer.setMeta({ draft: i });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await page.waitForFunction(() => (document.querySelector('#rates-chart polyline')?.getAttribute('points') ?? '').split(' ').length >= 5, undefined, {
      timeout: WAIT_MS,
    });
    await screenshot(page, 'dashboard-api-key.png');

    // The key stays in this tab: a new tab (new session storage) asks again.
    const again = await context.newPage();
    await again.goto(`${nodes[0].url}/dashboard`);
    await again.getByLabel('API key').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in local storage');
  });

  it('works with the read-only dashboard key, and draws rates, errors, lag, memory and unsent bytes with axes and units', async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    cleanups.push(() => context.close().catch(() => undefined));
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${nodes[0].url}/dashboard`);
    const keyField = page.getByLabel('Dashboard key or API key');
    await keyField.waitFor({ timeout: WAIT_MS });
    assert.match((await page.locator('#key-reason').textContent()) ?? '', /PRESENCE_DASHBOARD_KEY/);
    await keyField.fill(DASHBOARD_KEY);
    await page.getByRole('button', { name: 'Show stats' }).click();
    await page.locator('#stats').waitFor({ timeout: WAIT_MS });

    // The same key is refused by the rest of the API, whoever holds the page.
    const elsewhere = await fetch(`${nodes[0].url}/realtime/presence/online`, { headers: { Authorization: `Bearer ${DASHBOARD_KEY}` } });
    assert.equal(elsewhere.status, 403);

    // Traffic and errors for the charts: meta updates fan out; bad joins and unknown commands are
    // answered with INVALID_CHANNEL and UNKNOWN_TYPE.
    const writer = await nodeClient({ url: `${nodes[0].url.replace('http', 'ws')}/realtime`, getToken: () => token('dorothy', 'Dorothy') });
    await writer.join('room:lobby');
    const raw = new WebSocket(`${nodes[0].url.replace('http', 'ws')}/realtime?token=${await token('mallory', 'Mallory')}`);
    cleanups.push(() => raw.close());
    await new Promise((resolve, reject) => raw.once('open', resolve).once('error', reject));
    for (let i = 0; i < 30; i++) {
      await writer.setMeta({ step: i });
      raw.send(JSON.stringify({ type: 'join', channel: 'no spaces allowed' }));
      if (i % 3 === 0) raw.send(JSON.stringify({ type: 'shout' }));
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    const codes = page.locator('#errors-table tbody tr');
    await codes.filter({ hasText: 'INVALID_CHANNEL' }).filter({ hasText: '30' }).waitFor({ timeout: WAIT_MS });
    await codes.filter({ hasText: 'UNKNOWN_TYPE' }).filter({ hasText: '10' }).waitFor({ timeout: WAIT_MS });
    await page.locator('#errors-legend').filter({ hasText: 'INVALID_CHANNEL' }).waitFor({ timeout: WAIT_MS });
    // Every chart has drawn a line of several answers.
    await page.waitForFunction(
      (ids) => ids.every((id) => [...document.querySelectorAll(`#${id} polyline`)].some((line) => (line.getAttribute('points') ?? '').split(' ').length >= 5)),
      ['rates-chart', 'errors-chart', 'lag-chart', 'memory-chart', 'outbound-chart'],
      { timeout: WAIT_MS },
    );

    // A string, not a function: see "shown" above.
    const axes = (await page.evaluate(`(() => Object.fromEntries(
      ['rates-chart', 'errors-chart', 'lag-chart', 'memory-chart', 'outbound-chart'].map((id) => {
        const svg = document.getElementById(id);
        const texts = (selector) => [...svg.querySelectorAll(selector)].map((t) => t.textContent);
        return [id, { unit: texts('.axis-unit'), values: texts('.value-tick'), times: texts('.time-tick'), label: svg.getAttribute('aria-label') }];
      }),
    ))()`)) as Record<string, { unit: string[]; values: string[]; times: string[]; label: string }>;
    const units: Record<string, RegExp> = {
      'rates-chart': /^events\/s$/,
      'errors-chart': /^errors\/s$/,
      'lag-chart': /^ms$/,
      'memory-chart': /^MiB$/,
      'outbound-chart': /^(bytes|KiB|MiB)$/,
    };
    for (const [id, axis] of Object.entries(axes)) {
      assert.equal(axis.unit.length, 1, `${id}: one unit title`);
      assert.match(axis.unit[0], units[id], `${id}: unit`);
      assert.deepEqual(axis.times, ['−60 s', '−45 s', '−30 s', '−15 s', 'now'], `${id}: time axis`);
      const values = axis.values.map((v) => Number(v.replace(/,/g, '')));
      assert.ok(values.length >= 2 && values[0] === 0, `${id}: value axis from 0: ${axis.values.join(' ')}`);
      assert.ok(values.every((v, i) => i === 0 || v > values[i - 1]), `${id}: increasing ticks: ${axis.values.join(' ')}`);
      assert.ok(axis.label.length > 20, `${id}: described for screen readers`);
    }
    // The memory the page shows is a process's, not nonsense: from 10 MiB to 10 GiB.
    const memory = (await page.locator('#memory-legend').textContent()) ?? '';
    const rss = Number(/resident \(RSS\): ([\d.,]+) MiB/.exec(memory)?.[1].replace(/,/g, ''));
    assert.ok(rss > 10 && rss < 10_240, `RSS shown: ${memory}`);
    // The errors chart's top is above the busiest code's rate (about 3.3 errors/s of INVALID_CHANNEL).
    const errorTop = Number(axes['errors-chart'].values.at(-1));
    assert.ok(errorTop >= 2, `errors axis up to ${errorTop}`);
    assert.match((await page.locator('#scope').textContent()) ?? '', /event-loop lag, memory and unsent bytes are this node's/);
    await screenshot(page, 'dashboard.png');
    assert.deepEqual(errors, [], 'no errors in the page');
  });

  it('the demo, on a server with tokens: refused without one, works with a pasted token', async () => {
    const context = await browser.newContext();
    cleanups.push(() => context.close().catch(() => undefined));
    const page = await context.newPage();
    await page.goto(`${nodes[1].url}/`);
    await page.getByLabel('Your name', { exact: true }).fill('Nobody');
    await page.getByRole('button', { name: 'Join' }).click();
    await page.getByRole('alert').filter({ hasText: 'UNAUTHORIZED' }).waitFor({ timeout: WAIT_MS });

    await page.getByLabel('Your name', { exact: true }).fill('Hedy Lamarr');
    await page.getByText('The server requires a token?').click();
    await page.getByLabel('User token (JWT)').fill(await token('hedy', 'H.'));
    await page.getByRole('button', { name: 'Join' }).click();
    const members = page.getByRole('list', { name: 'Members of #lobby' });
    // The token's subject is the user id; the name picked in the form becomes meta.name.
    await members.locator('[data-user="hedy"]').filter({ hasText: 'Hedy Lamarr' }).waitFor({ timeout: WAIT_MS });
    await members.locator('[data-user="barbara"]').waitFor({ timeout: WAIT_MS });
  });
});

describe('dashboard page, webhooks', () => {
  it('shows one row per webhook URL with its backlog and dead letters, and the last dead letter', async () => {
    // A receiver on loopback that refuses status changes for good (400) and takes the rest.
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const event = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type: string };
        res.writeHead(event.type === 'user.status' ? 400 : 204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/presence`;
    const config = resolveConfig({
      port: 0,
      host: '127.0.0.1',
      offlineDelayMs: OFFLINE_DELAY_MS,
      auth: { apiKey: API_KEY, jwtSecret: JWT_SECRET },
      webhooks: { urls: [`${hookUrl}?token=not-for-the-page`], secrets: ['s'.repeat(32)], events: [...DEFAULT_WEBHOOK_EVENT_TYPES], maxBacklog: 100, timeoutMs: 5000, giveUpMs: 60_000 },
    });
    const node = await startServer(config, { log: silentLogger, publicDir });
    cleanups.push(() => node.shutdown());
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('ada').setExpirationTime('10m').sign(new TextEncoder().encode(JWT_SECRET));
    const ada = await nodeClient({ url: `${node.url.replace('http', 'ws')}/realtime`, getToken: () => token });
    await ada.join('room:lobby');
    await ada.setStatus('busy');

    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    cleanups.push(() => context.close().catch(() => undefined));
    const page = await context.newPage();
    await page.goto(`${node.url}/dashboard`);
    await page.getByLabel('API key').fill(API_KEY);
    await page.getByRole('button', { name: 'Show stats' }).click();
    const row = page.locator('#webhooks-table tbody tr').filter({ hasText: hookUrl });
    await row.waitFor({ timeout: WAIT_MS });
    // user.online, member_joined, occupied delivered; user.status refused.
    await page.waitForFunction(
      () => [...document.querySelectorAll('#webhooks-table tbody td')].map((td) => td.textContent).join('|').endsWith('|3|1|1|0'),
      undefined,
      { timeout: WAIT_MS },
    );
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual(cells, [hookUrl, '0', '–', '3', '1', '1', '0']);
    assert.equal(await row.getAttribute('class'), 'alert', 'a URL with dead letters stands out');
    assert.match((await page.locator('#webhooks-dead').textContent()) ?? '', /^Last dead letter: user\.status \S+ to http:\/\/127\.0\.0\.1:\d+\/hooks\/presence, http 400 after 1 attempt, at /);
    assert.ok(!(await page.content()).includes('not-for-the-page'), 'the query string (a token) never reaches the page');
    await screenshot(page, 'dashboard-webhooks.png');
  });
});
