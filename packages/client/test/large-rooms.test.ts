/**
 * The client in large rooms (docs/protocol.md, "Large rooms"), against a real server with tiny
 * thresholds: windowed frames change nothing for it, occupancy mode gives `channel.occupancy` and
 * the sample as `channel.members`, the end of the mode gives the whole list back, and
 * `fetchMembers` pages through the whole list.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { PresenceClient } from '../src/index.js';
import { devClient } from './support/clients.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { tracker } from './support/tracked.js';
import { until } from './support/wait.js';

let server: TestServer;
const { track, closeAll } = tracker();

before(async () => {
  server = await startPresenceServer({ largeRooms: { windowMembers: 3, occupancyMembers: 4, windowMs: 30, sampleSize: 2, sampleIntervalMs: 100 } });
});
after(async () => {
  await closeAll();
  await server.shutdown();
});

async function joined(userId: string, channel: string, options: { occupancy?: boolean } = {}): Promise<PresenceClient> {
  const client = track(devClient(server.wsUrl, userId, options));
  await client.join(channel);
  return client;
}

describe('large rooms', () => {
  test('windowed: the member list stays exact; occupancy: counts and a sample; back to the whole list below 0.9 N', async () => {
    const viewer = await joined('lr-viewer', 'lr-1');
    const plain = await joined('lr-plain', 'lr-1', { occupancy: false });
    const a = await joined('lr-a', 'lr-1');
    // Three visible: windowed, whole lists everywhere.
    const channel = viewer.channel('lr-1');
    await until(() => plain.channel('lr-1').members.size === 3 && channel.members.size === 3, 'three members everywhere');
    assert.deepEqual(channel.occupancy, { mode: 'members', count: 3, statuses: { online: 3, away: 0, busy: 0 } });

    // A fourth: the viewer (features=occupancy, the SDK's default) switches; the plain client keeps the list.
    const b = await joined('lr-b', 'lr-1');
    await a.setStatus('busy');
    await until(() => channel.occupancy.mode === 'occupancy' && channel.occupancy.statuses.busy === 1, 'occupancy mode with the busy member counted');
    assert.equal(channel.occupancy.count, 4);
    assert.equal(channel.members.size, 2, 'the sample');
    await until(() => plain.channel('lr-1').members.size === 4 && plain.channel('lr-1').members.get('lr-a')?.status === 'busy', 'the plain client has the whole list');
    assert.equal(plain.channel('lr-1').occupancy.mode, 'members');

    // Invisible users count nowhere.
    const c = await joined('lr-c', 'lr-1');
    await until(() => channel.occupancy.count === 5, 'five counted');
    await c.setStatus('invisible');
    await b.setStatus('away');
    await until(() => channel.occupancy.count === 4 && channel.occupancy.statuses.away === 1, 'the invisible member uncounted');
    assert.equal(channel.occupancy.mode, 'occupancy', '4 is above 0.9 × 4: still occupancy');

    // The whole list on demand, page by page.
    const first = await channel.fetchMembers({ limit: 3 });
    assert.equal(first.count, 4);
    assert.deepEqual(first.statuses, { online: 2, away: 1, busy: 1 });
    assert.equal(first.members.length, 3);
    const second = await channel.fetchMembers({ cursor: first.nextCursor });
    assert.deepEqual([...first.members, ...second.members].map((m) => m.userId), ['lr-a', 'lr-b', 'lr-plain', 'lr-viewer']);
    assert.equal(second.nextCursor, undefined);

    // 3 visible (≤ 3.6): the whole list again, and events from there.
    await b.channel('lr-1').leave();
    await until(() => channel.occupancy.mode === 'members', 'the whole list back');
    assert.deepEqual([...channel.members.keys()].sort(), ['lr-a', 'lr-plain', 'lr-viewer']);
    await a.setStatus('online');
    await until(() => channel.members.get('lr-a')?.status === 'online', 'events after the sync');
    assert.deepEqual(channel.occupancy.statuses, { online: 3, away: 0, busy: 0 });
  });
});
