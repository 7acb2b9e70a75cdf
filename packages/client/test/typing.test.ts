/**
 * The typing helper: its timing on a manual clock (no sleeping), then its signals through a real
 * server to another user, and typing of others as seen by the client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TypingIndicator } from '../src/index.js';
import { devClient } from './support/clients.js';
import { ManualClock } from './support/clocks.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { newTap, tappedWebSocket } from './support/sockets.js';
import { nextEvent, until } from './support/wait.js';

function indicator(clock: ManualClock, options: { typingPauseMs?: number; typingRefreshMs?: number; serverTimeoutMs?: number } = {}) {
  const sent: { at: number; typing: boolean }[] = [];
  let connected = true;
  const typing = new TypingIndicator({
    clock,
    serverTimeoutMs: () => options.serverTimeoutMs ?? 3000,
    canSend: () => connected,
    send: (value) => sent.push({ at: clock.now(), typing: value }),
    ...(options.typingPauseMs !== undefined ? { typingPauseMs: options.typingPauseMs } : {}),
    ...(options.typingRefreshMs !== undefined ? { typingRefreshMs: options.typingRefreshMs } : {}),
  });
  return { typing, sent, setConnected: (value: boolean) => (connected = value) };
}

describe('typing helper timing (manual clock)', () => {
  test('true on the first input, silent after, refreshed before the server timeout, false after a pause', () => {
    const clock = new ManualClock();
    const start = clock.now();
    const { typing, sent } = indicator(clock);
    // Keystrokes every 200 ms for 4 s; the server's timeout is 3 s.
    for (let t = 0; t <= 4000; t += 200) {
      typing.input();
      clock.advance(200);
    }
    const rel = sent.map((s) => [s.at - start, s.typing]);
    // Refresh at half the timeout (1.5 s), never more often.
    assert.deepEqual(rel, [
      [0, true],
      [1600, true],
      [3200, true],
    ]);
    // The last keystroke was at 4000; the pause (a third of 3 s) ends it at 5000.
    clock.advance(999 - 200);
    assert.equal(sent.length, 3);
    clock.advance(1);
    assert.deepEqual(sent.map((s) => [s.at - start, s.typing]).at(-1), [5000, false]);
    assert.equal(typing.isTyping, false);
    assert.equal(clock.pending, 0);
  });

  test('stop() (on send, on blur) sends false at once, and only when typing', () => {
    const clock = new ManualClock();
    const { typing, sent } = indicator(clock);
    typing.stop();
    assert.equal(sent.length, 0);
    typing.input();
    clock.advance(100);
    typing.stop();
    assert.deepEqual(sent.map((s) => s.typing), [true, false]);
    assert.equal(clock.pending, 0, 'no pause timer is left behind');
    typing.input();
    assert.deepEqual(sent.map((s) => s.typing), [true, false, true], 'typing again starts again');
  });

  test('whatever the input rhythm, the server hears from a typing user before its timeout runs out', () => {
    const rhythms: [number | undefined, number | undefined][] = [[undefined, undefined], [2500, undefined], [1000, 2800], [200, 100]];
    for (const [pause, refresh] of rhythms) {
      const clock = new ManualClock();
      const { typing, sent } = indicator(clock, { ...(pause ? { typingPauseMs: pause } : {}), ...(refresh ? { typingRefreshMs: refresh } : {}) });
      const pauseMs = pause ?? 1000;
      // Gaps just under the pause: typing never stops, and refreshes are as late as they can be.
      let seed = 7;
      for (let i = 0; i < 200; i += 1) {
        typing.input();
        seed = (seed * 48271) % 2147483647;
        clock.advance(Math.max(1, Math.floor(((seed % 1000) / 1000) * (pauseMs - 1))));
      }
      const trues = sent.filter((s) => s.typing).map((s) => s.at);
      assert.ok(sent.every((s) => s.typing), `no false while typing goes on (pause ${pause}, refresh ${refresh})`);
      for (let i = 1; i < trues.length; i += 1) {
        assert.ok(trues[i] - trues[i - 1] < 3000, `refreshes ${trues[i] - trues[i - 1]} ms apart must stay under the 3 s timeout`);
      }
    }
  });

  test('without a connection nothing is sent, and reset() forgets the state silently', () => {
    const clock = new ManualClock();
    const { typing, sent, setConnected } = indicator(clock);
    setConnected(false);
    typing.input();
    assert.equal(sent.length, 0);
    setConnected(true);
    typing.input();
    typing.reset();
    assert.equal(typing.isTyping, false);
    assert.equal(clock.pending, 0);
    assert.deepEqual(sent.map((s) => s.typing), [true]);
  });
});

describe('typing through a real server', () => {
  let server: TestServer;
  before(async () => {
    server = await startPresenceServer({ typingTimeoutMs: 60_000 });
  });
  after(() => server.shutdown());

  test('others see one start and one stop; the client sends only what the helper decided', async () => {
    const clock = new ManualClock();
    const tap = newTap();
    const observer = await Observer.connect(server.wsUrl, 'ty-bob');
    await observer.request({ type: 'join', channel: 'room:typing' });
    // The manual clock drives every timer of this client: keep liveness pings out of the way.
    const ada = devClient(server.wsUrl, 'ty-ada', { clock, WebSocket: tappedWebSocket(tap), pingAfterMs: 3_600_000 });
    try {
      const room = await ada.join('room:typing');
      assert.equal(ada.welcome?.timeouts.typingMs, 60_000);
      room.typing.input();
      await observer.waitFor((m) => m.type === 'typing' && m.userId === 'ty-ada' && m.typing);
      for (let i = 0; i < 10; i += 1) {
        clock.advance(1000);
        room.typing.input();
      }
      // The pause is a third of the server's 60 s: 20 s of silence ends typing.
      clock.advance(20_000);
      await observer.waitFor((m) => m.type === 'typing' && m.userId === 'ty-ada' && !m.typing);
      const typingSent = tap.sent.filter((m) => m.type === 'typing').map((m) => m.typing);
      assert.deepEqual(typingSent, [true, false]);

      room.typing.input();
      await until(() => tap.sent.filter((m) => m.type === 'typing').length === 3, 'typing starts again');
      room.typing.stop(); // the message was sent
      await observer.barrier();
      assert.deepEqual(
        observer.messages.filter((m) => m.type === 'typing').map((m) => m.type === 'typing' && m.typing),
        [true, false, true, false],
      );
    } finally {
      ada.close();
      await observer.close();
    }
  });

  test('the client shows who else is typing, and forgets it when they leave', async () => {
    const observer = await Observer.connect(server.wsUrl, 'ty-carol');
    const ada = devClient(server.wsUrl, 'ty-dan');
    try {
      const room = await ada.join('room:typing2');
      await observer.request({ type: 'join', channel: 'room:typing2' });
      const started = nextEvent(room, 'typing');
      await observer.request({ type: 'typing', channel: 'room:typing2', typing: true });
      assert.deepEqual(await started, ['ty-carol', true]);
      assert.deepEqual([...room.typingUsers], ['ty-carol']);
      const left = nextEvent(room, 'leave');
      await observer.request({ type: 'leave', channel: 'room:typing2' });
      await left;
      assert.equal(room.typingUsers.size, 0);
    } finally {
      ada.close();
      await observer.close();
    }
  });
});
