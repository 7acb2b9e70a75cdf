/**
 * The unload beacon in real Chromium, with the server's default 30 s offline delay and 3 s unload
 * grace: closing a user's only tab makes others see the leave within the grace plus a second, and
 * the server counts the beacon; closing one of two tabs, or reloading, shows nobody anything; and
 * the same over the HTTP transport.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { build } from 'esbuild';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { resolveConfig } from '../../server/src/config/config.js';
import { silentLogger } from '../../server/src/log.js';
import { startServer, type RunningServer } from '../../server/src/server.js';
import { WAIT_MS, launchChromium } from './support/browser.js';

interface LogEntry {
  event: 'sync' | 'join' | 'leave' | 'update';
  userId: string;
  at: number;
}

/** The server's default unload grace: the tests run on the defaults. */
const GRACE_MS = resolveConfig().unloadGraceMs;
const OFFLINE_DELAY_MS = resolveConfig().offlineDelayMs;

let publicDir: string;
let browser: Browser;
let server: RunningServer;
const contexts: BrowserContext[] = [];

before(async () => {
  publicDir = await mkdtemp(join(tmpdir(), 'presence-beacon-'));
  await build({
    entryPoints: { beacon: fileURLToPath(new URL('./support/beacon-page.ts', import.meta.url)) },
    outdir: publicDir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    logLevel: 'warning',
  });
  await writeFile(join(publicDir, 'beacon.html'), '<!doctype html><html><head><meta charset="utf-8"><title>beacon</title><script type="module" src="/beacon.js"></script></head><body></body></html>\n');
  // The defaults of the issue: a 30 s offline delay and a 3 s unload grace; HTTP heartbeats every second.
  server = await startServer(resolveConfig({ port: 0, host: '127.0.0.1', httpHeartbeatIntervalMs: 1000, limits: { maxEventLoopLagMs: 0 } }), { log: silentLogger, publicDir });
  browser = await launchChromium();
});

after(async () => {
  for (const context of contexts) await context.close().catch(() => undefined);
  await browser?.close();
  await server?.shutdown();
  if (publicDir) await rm(publicDir, { recursive: true, force: true });
});

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext();
  contexts.push(context);
  return context;
}

/** A tab of `user` in `channel`, joined. */
async function tab(context: BrowserContext, user: string, channel: string, transport: 'ws' | 'http' = 'ws'): Promise<Page> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${server.url}/beacon?user=${user}&channel=${channel}&transport=${transport}`);
  await page.waitForSelector('body[data-joined]', { state: 'attached', timeout: WAIT_MS }).catch((error: Error) => {
    throw new Error(`${user}'s tab did not join: ${error.message} ${errors.join('; ')}`);
  });
  return page;
}

const logOf = (page: Page) => page.evaluate(() => (window as unknown as { presenceLog: LogEntry[] }).presenceLog);

/** What `watcher` saw happen to `userId` after its first member list. */
async function eventsAbout(watcher: Page, userId: string): Promise<string[]> {
  return (await logOf(watcher)).filter((entry) => entry.userId === userId && entry.event !== 'sync').map((entry) => entry.event);
}

async function waitForEvent(watcher: Page, userId: string, event: LogEntry['event']): Promise<LogEntry> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const found = (await logOf(watcher)).find((entry) => entry.userId === userId && entry.event === event);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${event} of ${userId}: ${JSON.stringify(await logOf(watcher))}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function beaconCount(): Promise<number> {
  const text = await fetch(`${server.url}/metrics`).then((response) => response.text());
  return Number(/^presence_unload_beacons_total (\d+)$/m.exec(text)?.[1] ?? NaN);
}

describe('the unload beacon in Chromium (30 s offline delay, 3 s grace)', () => {
  it('closing A\'s only tab: B sees A leave within the grace plus a second, and the server counted one beacon', async (t) => {
    const pageB = await tab(await newContext(), 'bea', 'room:close');
    const pageA = await tab(await newContext(), 'ada', 'room:close');
    await waitForEvent(pageB, 'ada', 'join');
    const before = await beaconCount();
    const closedAt = Date.now();
    await pageA.close();
    const leave = await waitForEvent(pageB, 'ada', 'leave');
    const took = leave.at - closedAt;
    t.diagnostic(`B saw the leave ${took} ms after A's tab closed`);
    assert.ok(took < GRACE_MS + 1000, `B saw the leave ${took} ms after the tab closed (grace ${GRACE_MS} ms, offline delay ${OFFLINE_DELAY_MS} ms)`);
    assert.equal(await beaconCount(), before + 1);
    // Closing hides the page first, and a hidden page reports its user idle: B may see A turn away
    // in the moment before the leave. No other join or leave.
    assert.deepEqual((await eventsAbout(pageB, 'ada')).filter((event) => event !== 'update'), ['join', 'leave']);
  });

  it('closing one of A\'s two tabs: no event at all', async () => {
    const pageB = await tab(await newContext(), 'bea', 'room:two');
    const contextA = await newContext();
    const first = await tab(contextA, 'ada', 'room:two');
    await tab(contextA, 'ada', 'room:two');
    await waitForEvent(pageB, 'ada', 'join');
    const before = await beaconCount();
    await first.close();
    await new Promise((resolve) => setTimeout(resolve, GRACE_MS + 1500));
    assert.equal(await beaconCount(), before + 1, 'the closed tab sent its beacon');
    assert.deepEqual(await eventsAbout(pageB, 'ada'), ['join'], 'no leave, no update');
  });

  it('reloading A\'s tab: no event at all', async () => {
    const pageB = await tab(await newContext(), 'bea', 'room:reload');
    const pageA = await tab(await newContext(), 'ada', 'room:reload');
    await waitForEvent(pageB, 'ada', 'join');
    await pageA.reload();
    await pageA.waitForSelector('body[data-joined]', { state: 'attached', timeout: WAIT_MS });
    await new Promise((resolve) => setTimeout(resolve, GRACE_MS + 1500));
    assert.deepEqual(await eventsAbout(pageB, 'ada'), ['join'], 'no leave, no join, no update');
  });

  it('a tab on the HTTP transport: B sees A join, and A leave within the grace plus a second of closing it', async (t) => {
    const pageB = await tab(await newContext(), 'bea', 'room:http');
    const pageA = await tab(await newContext(), 'hal', 'room:http', 'http');
    await waitForEvent(pageB, 'hal', 'join');
    assert.deepEqual((await logOf(pageA)).filter((entry) => entry.event === 'sync').map((entry) => entry.userId).sort(), ['bea', 'hal'], 'A over HTTP got the member list');
    const before = await beaconCount();
    const closedAt = Date.now();
    await pageA.close();
    const leave = await waitForEvent(pageB, 'hal', 'leave');
    t.diagnostic(`B saw the leave ${leave.at - closedAt} ms after A's HTTP tab closed`);
    assert.ok(leave.at - closedAt < GRACE_MS + 1000, `B saw the leave ${leave.at - closedAt} ms after the tab closed`);
    assert.equal(await beaconCount(), before + 1);
  });
});
