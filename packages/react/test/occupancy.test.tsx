/** @jsxRuntime automatic @jsxImportSource react */
/**
 * useOccupancy against a real server with tiny large-room thresholds: counts from the member list,
 * then as the server counts a room in occupancy mode (usePresence then gives the sample), and back.
 */
import './support/jsdom.js';
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { cleanup, render, screen, waitFor } from '@testing-library/react';
import WebSocket from 'ws';
import type { PresenceClientOptions } from '@presence/client';
import { PresenceProvider, useOccupancy, usePresence } from '../src/index.js';
import { Observer } from '../../client/test/support/observer.js';
import { startPresenceServer, type TestServer } from '../../client/test/support/server.js';

let server: TestServer;
const observers: Observer[] = [];
before(async () => {
  server = await startPresenceServer({ offlineDelayMs: 60_000, largeRooms: { windowMembers: 2, occupancyMembers: 4, windowMs: 20, sampleSize: 2, sampleIntervalMs: 50 } });
});
afterEach(() => cleanup());
after(async () => {
  for (const observer of observers) await observer.close();
  await server.shutdown();
});

const WAIT = { timeout: 8000 };
const text = (prefix: string) => screen.getByText(new RegExp(`^${prefix}:`)).textContent;

function options(userId: string): PresenceClientOptions {
  return { url: server.wsUrl, userId, WebSocket, activity: false, reconnectOn: false, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } };
}

async function observe(userId: string, channel: string): Promise<Observer> {
  const observer = await Observer.connect(server.wsUrl, userId);
  observers.push(observer);
  await observer.request({ type: 'join', channel });
  return observer;
}

describe('useOccupancy', () => {
  test('counts the members, then shows what the server counts in occupancy mode, with the sample in usePresence', async () => {
    let renders = 0;
    function Header() {
      renders += 1;
      const { mode, count, statuses } = useOccupancy('hall');
      const sample = usePresence('hall', { select: ({ members }) => members.length });
      return (
        <p>
          occ:{mode}/{count}/{statuses.online}/{statuses.busy}/{sample}
        </p>
      );
    }
    const bob = await observe('oc-bob', 'hall');
    render(
      <PresenceProvider options={options('oc-ada')}>
        <Header />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('occ'), 'occ:members/2/2/0/2'), WAIT);
    await observe('oc-carol', 'hall');
    await bob.request({ type: 'status', status: 'busy' });
    await waitFor(() => assert.equal(text('occ'), 'occ:members/3/2/1/3'), WAIT);
    const dave = await observe('oc-dave', 'hall');
    // Four visible: occupancy mode, the sample of two in usePresence.
    await waitFor(() => assert.equal(text('occ'), 'occ:occupancy/4/3/1/2'), WAIT);
    const before = renders;
    await dave.request({ type: 'status', status: 'invisible' });
    // Three visible: 3 ≤ 0.9 × 4, the whole list again.
    await waitFor(() => assert.equal(text('occ'), 'occ:members/3/2/1/3'), WAIT);
    assert.ok(renders - before <= 3, `a few renders for one change, not one per message (${renders - before})`);
  });
});
