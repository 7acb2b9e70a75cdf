/**
 * Browser activity detection with injected event targets and a manual clock, against a real
 * server: input becomes throttled `activity`, a hidden page becomes `idle` (→ away for others).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ACTIVITY_EVENTS } from '../src/index.js';
import { devClient } from './support/clients.js';
import { ManualClock } from './support/clocks.js';
import { FakeDocument, FakeTarget } from './support/dom.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { newTap, tappedWebSocket } from './support/sockets.js';
import { nextEvent, until } from './support/wait.js';

let server: TestServer;
before(async () => {
  server = await startPresenceServer();
});
after(() => server.shutdown());

const signals = (tap: ReturnType<typeof newTap>) => tap.sent.filter((m) => m.type === 'activity' || m.type === 'idle').map((m) => m.type);

describe('activity detection', () => {
  test('input is reported at most once per throttle interval; hidden → idle → away; visible → online', async () => {
    const clock = new ManualClock();
    const tap = newTap();
    const target = new FakeTarget();
    const page = new FakeDocument();
    const observer = await Observer.connect(server.wsUrl, 'act-obs');
    await observer.request({ type: 'watch', users: ['act-ada'] });
    const ada = devClient(server.wsUrl, 'act-ada', {
      clock,
      WebSocket: tappedWebSocket(tap),
      activity: { target, visibility: page, throttleMs: 10_000 },
      pingAfterMs: 3_600_000,
    });
    try {
      assert.equal(target.listenerCount, ACTIVITY_EVENTS.length);
      assert.equal(page.listenerCount, 1);
      await nextEvent(ada, 'connected');
      // Connecting counts as activity: input right after is not reported again.
      target.dispatch('pointermove');
      target.dispatch('keydown');
      clock.advance(9_999);
      target.dispatch('scroll');
      assert.deepEqual(signals(tap), []);
      clock.advance(1);
      target.dispatch('pointerdown');
      target.dispatch('touchstart');
      target.dispatch('wheel');
      assert.deepEqual(signals(tap), ['activity']);

      page.setVisibility('hidden');
      assert.deepEqual(signals(tap), ['activity', 'idle']);
      await observer.waitFor((m) => m.type === 'user.update' && m.user.userId === 'act-ada' && m.user.status === 'away');
      // Back from idle, the first input is reported at once, whatever the throttle.
      page.setVisibility('visible');
      assert.deepEqual(signals(tap), ['activity', 'idle', 'activity']);
      await observer.waitFor((m) => m.type === 'user.update' && m.user.userId === 'act-ada' && m.user.status === 'online' && observer.messages.indexOf(m) > 2);
    } finally {
      ada.close();
      await observer.close();
    }
    assert.equal(target.listenerCount, 0);
    assert.equal(page.listenerCount, 0);
  });

  test('a client that reconnects while the page is hidden tells the new session it is idle', async () => {
    const tap = newTap();
    const target = new FakeTarget();
    const page = new FakeDocument();
    page.visibilityState = 'hidden';
    const ada = devClient(server.wsUrl, 'act-bob', { WebSocket: tappedWebSocket(tap), activity: { target, visibility: page } });
    try {
      await nextEvent(ada, 'connected');
      await until(() => server.engine.userPresence('act-bob', { trusted: true }).status === 'away', 'the session is idle');
      assert.deepEqual(signals(tap), ['idle']);
    } finally {
      ada.close();
    }
  });

  test('activity: false registers nothing', async () => {
    const target = new FakeTarget();
    const page = new FakeDocument();
    const ada = devClient(server.wsUrl, 'act-carol', { activity: false });
    ada.close();
    assert.equal(target.listenerCount + page.listenerCount, 0);
    const withTargets = devClient(server.wsUrl, 'act-carol', { activity: { target, visibility: page }, autoConnect: false });
    assert.equal(target.listenerCount, 0, 'listeners are added on connect, not at construction');
    withTargets.connect();
    assert.equal(target.listenerCount, ACTIVITY_EVENTS.length);
    withTargets.close();
    assert.equal(target.listenerCount + page.listenerCount, 0);
  });
});
