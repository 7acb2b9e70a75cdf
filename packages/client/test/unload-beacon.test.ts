/**
 * The unload beacon of the browser SDK, against a real server: `pagehide` sends the session token
 * to `/realtime/disconnect`, and the server ends the session after its grace; a page kept in the
 * back/forward cache sends nothing; close() removes the listener; the token follows renewals.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { beaconUrl } from '../src/unload-beacon.js';
import { devClient } from './support/clients.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { nextEvent } from './support/wait.js';

const GRACE_MS = 300;

/** `window` for pagehide: dispatches the event with its `persisted` flag. */
class FakeWindow {
  private readonly listeners = new Set<(event: unknown) => void>();
  addEventListener(type: string, listener: (event: unknown) => void): void {
    if (type === 'pagehide') this.listeners.add(listener);
  }
  removeEventListener(type: string, listener: (event: unknown) => void): void {
    if (type === 'pagehide') this.listeners.delete(listener);
  }
  pagehide(persisted: boolean): void {
    for (const listener of [...this.listeners]) listener({ type: 'pagehide', persisted });
  }
  get listenerCount(): number {
    return this.listeners.size;
  }
}

let server: TestServer;
before(async () => {
  server = await startPresenceServer({ offlineDelayMs: 30_000, unloadGraceMs: GRACE_MS });
});
after(() => server.shutdown());

describe('the unload beacon', () => {
  test('beaconUrl turns the realtime URL into the disconnect endpoint', () => {
    assert.equal(beaconUrl('wss://presence.example.com/realtime?token=x'), 'https://presence.example.com/realtime/disconnect');
    assert.equal(beaconUrl('ws://127.0.0.1:8080/realtime/'), 'http://127.0.0.1:8080/realtime/disconnect');
  });

  test('pagehide sends the session token; the server ends the session after its grace, not the 30 s offline delay', async () => {
    const window = new FakeWindow();
    const sent: { url: string; body: string }[] = [];
    const send = (url: string, body: string): boolean => {
      sent.push({ url, body });
      void fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body });
      return true;
    };
    const observer = await Observer.connect(server.wsUrl, 'beacon-obs');
    const client = devClient(server.wsUrl, 'beacon-ada', { unloadBeacon: { target: window, send } });
    try {
      await observer.request({ type: 'join', channel: 'room:beacon' });
      const [welcome] = await nextEvent(client, 'connected');
      await client.join('room:beacon');
      await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'beacon-ada');

      window.pagehide(true);
      assert.equal(sent.length, 0, 'a page kept in the back/forward cache may come back: no beacon');

      window.pagehide(false);
      assert.equal(sent.length, 1);
      assert.equal(sent[0].url, `http://127.0.0.1:${server.port}/realtime/disconnect`);
      assert.deepEqual(JSON.parse(sent[0].body), { sessionToken: welcome.sessionToken });
      const hiddenAt = Date.now();
      client.close(); // the page goes: its socket closes
      await observer.waitFor((m) => m.type === 'presence.leave' && m.userId === 'beacon-ada', GRACE_MS + 1500);
      assert.ok(Date.now() - hiddenAt < GRACE_MS + 1000);
      assert.equal(window.listenerCount, 0, 'close() removed the pagehide listener');
    } finally {
      client.close();
      await observer.close();
    }
  });

  test('follows the renewed token of `session.token`', async () => {
    const window = new FakeWindow();
    const sent: string[] = [];
    const client = devClient(server.wsUrl, 'beacon-renewed', { unloadBeacon: { target: window, send: (_url, body) => sent.push(body) > 0 } });
    try {
      await nextEvent(client, 'connected');
      const renewed = { type: 'session.token', sessionToken: 'renewed-token', expiresAt: new Date().toISOString() } as const;
      (client as unknown as { route(message: unknown): void }).route(renewed);
      window.pagehide(false);
      assert.deepEqual(sent.map((body) => JSON.parse(body) as unknown), [{ sessionToken: 'renewed-token' }]);
    } finally {
      client.close();
    }
  });

  test('sends nothing while not connected, and is off with unloadBeacon: false', () => {
    const window = new FakeWindow();
    const sent: string[] = [];
    const idle = devClient(server.wsUrl, 'beacon-idle', { autoConnect: false, unloadBeacon: { target: window, send: (_url, body) => sent.push(body) > 0 } });
    idle.connect();
    window.pagehide(false);
    assert.deepEqual(sent, [], 'no session yet');
    idle.close();
    assert.equal(window.listenerCount, 0);
    const off = devClient(server.wsUrl, 'beacon-off', { unloadBeacon: false });
    off.close();
  });
});
