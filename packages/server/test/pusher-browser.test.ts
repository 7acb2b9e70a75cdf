/**
 * pusher-js's browser build, unmodified, in real Chromium against the Pusher endpoint: a page
 * joins a presence channel beside a native SDK user, hears the backend's events and whispers to a
 * pusher-js client in Node.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { PresenceChannel } from 'pusher-js';
import { launchChromium } from '../../web/test/support/browser.js';
import { TestClient } from './support/harness.js';
import { APP, eventually, pusherJs, startPusherServer, type PusherTestServer } from './support/pusher.js';

const pusherWebBuild = createRequire(import.meta.url).resolve('pusher-js/dist/web/pusher.min.js');

describe('pusher-js in Chromium', () => {
  let server: PusherTestServer;
  let browser: Browser;
  let page: Page;
  before(async () => {
    server = await startPusherServer({ offlineDelayMs: 300 });
    browser = await launchChromium();
    page = await browser.newPage();
    // tsx keeps function names with a helper that the page does not have.
    await page.evaluate('window.__name = (f) => f');
    // The app's auth endpoint, signing with the `pusher` server library.
    await page.exposeFunction('authorize', (socketId: string, channel: string) =>
      server.backend.authorizeChannel(socketId, channel, channel.startsWith('presence-') ? { user_id: 'page-user', user_info: { name: 'Page' } } : undefined),
    );
    await page.addScriptTag({ path: pusherWebBuild });
  });
  after(async () => {
    await browser?.close();
    await server?.shutdown();
  });

  it('joins a presence channel with a native SDK user, gets triggered events, and whispers to Node', async () => {
    const native = await TestClient.connect({ wsUrl: server.wsUrl }, { userId: 'native', name: 'Native' });
    await native.request({ type: 'join', channel: 'browser.room' });

    await page.evaluate(
      ({ key, port }) => {
        const w = globalThis as unknown as Record<string, unknown> & { Pusher: new (key: string, options: object) => any; authorize: (s: string, c: string) => Promise<object> };
        const log: unknown[] = [];
        w.log = log;
        const pusher = new w.Pusher(key, {
          cluster: 'local',
          wsHost: '127.0.0.1',
          wsPort: port,
          forceTLS: false,
          enabledTransports: ['ws'],
          disableStats: true,
          channelAuthorization: {
            customHandler: ({ socketId, channelName }: { socketId: string; channelName: string }, callback: (e: null, d: object) => void) => {
              void w.authorize(socketId, channelName).then((data) => callback(null, data));
            },
          },
        });
        w.pusher = pusher;
        const room = pusher.subscribe('presence-browser.room');
        room.bind('pusher:subscription_succeeded', (members: { count: number; each: (f: (m: { id: string; info: unknown }) => void) => void }) => {
          const list: unknown[] = [];
          members.each((m) => list.push([m.id, m.info]));
          log.push(['here', members.count, list]);
        });
        room.bind('pusher:member_added', (m: { id: string }) => log.push(['added', m.id]));
        room.bind('pusher:member_removed', (m: { id: string }) => log.push(['removed', m.id]));
        room.bind('order-shipped', (data: unknown) => log.push(['order-shipped', data]));
        room.bind('presence:member_updated', (data: { user_id: string; member: { status: string } }) => log.push(['updated', data.user_id, data.member.status]));
      },
      { key: APP.key, port: server.port },
    );
    const log = () => page.evaluate(() => (globalThis as unknown as { log: unknown[] }).log);
    const waitFor = async (name: string, matches: (e: unknown[]) => boolean = () => true) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const found = ((await log()) as unknown[][]).find((e) => e[0] === name && matches(e));
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`the page never logged ${name}: ${JSON.stringify(await log())}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };

    const here = await waitFor('here');
    assert.deepEqual(here, ['here', 2, [['native', { name: 'Native' }], ['page-user', { name: 'Page' }]]]);
    await eventually(() => (native.messages.some((m) => m.type === 'presence.join' && m.member.userId === 'page-user') ? true : undefined), 'the native user sees the page join');

    // The backend triggers; the native user's status reaches the page as an extra event.
    await server.backend.trigger('presence-browser.room', 'order-shipped', { id: 3 });
    assert.deepEqual(await waitFor('order-shipped'), ['order-shipped', { id: 3 }]);
    await native.request({ type: 'status', status: 'busy' });
    await waitFor('updated', (e) => e[1] === 'native' && e[2] === 'busy');

    // The page whispers to a pusher-js client in Node on the same channel.
    const node = await pusherJs(server, { userId: 'node-user' });
    const channel = node.subscribe('presence-browser.room') as PresenceChannel;
    const heard: unknown[] = [];
    channel.bind('client-wave', (data: unknown, meta: { user_id?: string }) => heard.push([data, meta?.user_id]));
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    await waitFor('added', (e) => e[1] === 'node-user');
    await page.evaluate(() => {
      const w = globalThis as unknown as { pusher: { channel(name: string): { trigger(e: string, d: unknown): boolean } } };
      w.pusher.channel('presence-browser.room').trigger('client-wave', { from: 'page' });
    });
    await eventually(() => heard[0], 'the whisper from the page');
    assert.deepEqual(heard[0], [{ from: 'page' }, 'page-user']);

    await native.close();
    await waitFor('removed', (e) => e[1] === 'native');
    node.disconnect();
  });
});
