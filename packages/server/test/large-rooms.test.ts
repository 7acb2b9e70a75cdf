/**
 * Large rooms (docs/protocol.md, "Large rooms"), on the model with a manual clock: windowed
 * delivery past PRESENCE_LARGE_CHANNEL_MEMBERS, occupancy mode past PRESENCE_OCCUPANCY_ONLY_MEMBERS
 * for connections that opted in, the thresholds' hysteresis, and the `members` command.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ClientMessage, Member } from '@presence/protocol';
import { resolveConfig } from '../src/config/config.js';
import { ManualClock } from '../src/presence/clock.js';
import { decodeCommand } from '../src/presence/commands.js';
import type { Attachment } from '../src/presence/engine.js';
import type { SessionSink, WindowFrame } from '../src/presence/state.js';
import { PresenceNode } from '../src/presence-node.js';
import { TestClient, httpJson, sleep, startTestServer } from './support/harness.js';

// Frames are parsed JSON; tests look into them freely.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Frame = any;

const WINDOW = 250;
const SAMPLE_INTERVAL = 2000;

/** One socket: every frame it was sent (a frame is one message or an array of them). */
class Socket {
  /** Frames as sent, parsed: each one message or an array. */
  frames: Frame[] = [];
  /** The window objects handed to `sendWindow`, to check that receivers share one. */
  windows: WindowFrame[] = [];
  attachment!: Attachment;
  readonly sink: SessionSink;
  private refs = 0;

  constructor(
    readonly world: World,
    readonly userId: string,
    occupancy: boolean,
  ) {
    this.sink = {
      send: (json) => {
        this.frames.push(JSON.parse(json));
      },
      sendWindow: (frame) => {
        this.windows.push(frame);
        this.frames.push(JSON.parse(frame.text));
      },
      close: () => {},
      occupancy,
    };
  }

  send(command: ClientMessage): unknown {
    return this.world.node.handle(this.attachment, { ref: `r${++this.refs}`, ...command } as ClientMessage);
  }

  /** The messages received since the last call (frames flattened), optionally of one type. */
  take(type?: string): Frame[] {
    const messages = this.frames.flatMap((f) => (Array.isArray(f) ? f : [f]));
    this.frames = [];
    this.windows = [];
    return type ? messages.filter((m) => m.type === type) : messages;
  }
}

class World {
  readonly clock = new ManualClock();
  readonly node: PresenceNode;
  private sessions = 0;

  constructor(largeRooms: { windowMembers?: number; occupancyMembers?: number; sampleSize?: number }) {
    const config = resolveConfig({
      offlineDelayMs: 1000,
      largeRooms: { windowMembers: 0, occupancyMembers: 0, windowMs: WINDOW, sampleIntervalMs: SAMPLE_INTERVAL, ...largeRooms },
    });
    this.node = new PresenceNode({ config, clock: this.clock, newSessionId: () => `session-${String(++this.sessions).padStart(4, '0')}` });
  }

  connect(userId: string, options: { occupancy?: boolean; contacts?: string[] } = {}): Socket {
    const socket = new Socket(this, userId, options.occupancy === true);
    socket.attachment = this.node.connect({ identity: { userId, meta: { name: userId }, ...(options.contacts ? { contacts: options.contacts } : {}) }, device: 'web' }, socket.sink);
    return socket;
  }

  /** `n` users u0…u(n-1), each in `channel`. */
  fill(channel: string, n: number, from = 0, options: { occupancy?: boolean } = {}): Socket[] {
    const sockets: Socket[] = [];
    for (let i = from; i < from + n; i += 1) {
      const socket = this.connect(`u${String(i).padStart(3, '0')}`, options);
      socket.send({ type: 'join', channel });
      sockets.push(socket);
    }
    return sockets;
  }

  count(channel: string): number {
    return this.node.channelPresence(channel, { limit: 1 }).count;
  }
}

/** What a v1 client makes of its messages: the member list of one channel, checking seq on the way. */
class V1View {
  members = new Map<string, Member>();
  seq = -1;

  apply(messages: Frame[], channel: string): void {
    for (const m of messages) {
      if (m.channel !== channel) continue;
      if (m.type === 'presence.sync') {
        this.members = new Map(m.members.map((x: Member) => [x.userId, x]));
        this.seq = m.seq;
      } else if (m.type === 'presence.join' || m.type === 'presence.update' || m.type === 'presence.leave') {
        assert.equal(m.seq, this.seq + 1, `seq gap: ${this.seq} then ${m.seq}`);
        this.seq = m.seq;
        if (m.type === 'presence.leave') this.members.delete(m.userId);
        else this.members.set(m.member.userId, m.member);
      }
    }
  }

  sorted(): Member[] {
    return [...this.members.values()].sort((a, b) => (a.userId < b.userId ? -1 : 1));
  }
}

function snapshot(world: World, channel: string): Member[] {
  return world.node.channelPresence(channel, { limit: 1000 }).members;
}

describe('windowed delivery in large channels', () => {
  it('below the threshold every change goes out at once; from it, once per window as one frame shared by every receiver', () => {
    const world = new World({ windowMembers: 5 });
    const sockets = world.fill('room', 4);
    for (const s of sockets) s.take();
    // Still per event: a status change reaches the others at once.
    sockets[1].send({ type: 'status', status: 'busy' });
    assert.equal(sockets[0].take('presence.update').length, 1);
    for (const s of sockets) s.take();

    // The fifth member makes five: that join still goes out at once; the channel is windowed from
    // the close of its first window.
    const [fifth] = world.fill('room', 1, 4);
    assert.equal(sockets[0].take('presence.join').length, 1);
    world.clock.advance(WINDOW);
    for (const s of [...sockets, fifth]) s.take();
    sockets[1].send({ type: 'status', status: 'away' });
    sockets[2].send({ type: 'status', status: 'busy' });
    sockets[1].send({ type: 'status', status: 'online' });
    for (const s of [...sockets, fifth]) assert.deepEqual(s.frames, [], 'nothing before the window closes');
    world.clock.advance(WINDOW - 1);
    assert.deepEqual(sockets[0].frames, []);
    world.clock.advance(1);
    const receivers = [...sockets, fifth];
    const shared = receivers[0].windows[0];
    assert.ok(shared, 'the window came as one frame');
    for (const s of receivers) {
      assert.equal(s.frames.length, 1, 'one frame per window');
      assert.ok(Array.isArray(s.frames[0]));
      assert.equal(s.windows[0], shared, 'every receiver is handed the same frame object (one encoding)');
    }
    const messages = sockets[0].take();
    // u001 went away and back online: one update with the last state; u002 busy.
    assert.deepEqual(
      messages.map((m) => [m.type, m.member.userId, m.member.status]),
      [
        ['presence.update', 'u001', 'online'],
        ['presence.update', 'u002', 'busy'],
      ],
    );
  });

  it('keeps per-receiver seq gap-free, and a late joiner starts from the last window', () => {
    const world = new World({ windowMembers: 3 });
    const sockets = world.fill('room', 3);
    world.clock.advance(WINDOW);
    const views = sockets.map((s) => {
      const view = new V1View();
      view.apply(s.take(), 'room');
      return view;
    });
    sockets[0].send({ type: 'status', status: 'busy' });
    const [late] = world.fill('room', 1, 3);
    const lateView = new V1View();
    const lateFirst = late.take();
    lateView.apply(lateFirst, 'room');
    const sync = lateFirst.find((m) => m.type === 'presence.sync');
    // The joiner's list is the one everybody holds: neither u000's pending change nor the joiner.
    assert.equal(sync.members.find((m: Member) => m.userId === 'u000').status, 'online');
    assert.equal(sync.members.length, 3);
    world.clock.advance(WINDOW);
    for (const [i, s] of [...sockets, late].entries()) {
      const view = i < 3 ? views[i] : lateView;
      view.apply(s.take(), 'room');
      assert.deepEqual(view.sorted(), snapshot(world, 'room'));
    }
    assert.equal(lateView.seq, views[0].seq);
  });

  it('a change undone inside one window sends nothing', () => {
    const world = new World({ windowMembers: 3 });
    const sockets = world.fill('room', 4);
    world.clock.advance(WINDOW);
    for (const s of sockets) s.take();
    sockets[2].send({ type: 'meta', meta: { mood: 'x' } });
    sockets[2].send({ type: 'meta', meta: { mood: null } });
    sockets[1].send({ type: 'channel.meta', channel: 'room', meta: { cursor: 1 } });
    sockets[1].send({ type: 'channel.meta', channel: 'room', meta: { cursor: null } });
    world.clock.advance(WINDOW);
    for (const s of sockets) assert.deepEqual(s.frames, [], 'no frame at all');
  });

  it('a leave and a rejoin inside one window are no leave and no join: one update with the new joinedAt', () => {
    const world = new World({ windowMembers: 3 });
    const sockets = world.fill('room', 4);
    world.clock.advance(WINDOW);
    for (const s of sockets) s.take();
    sockets[3].send({ type: 'leave', channel: 'room' });
    world.clock.advance(10);
    sockets[3].send({ type: 'join', channel: 'room' });
    world.clock.advance(WINDOW);
    const messages = sockets[0].take();
    assert.deepEqual(
      messages.map((m) => m.type),
      ['presence.update'],
    );
    assert.equal(messages[0].member.joinedAt, snapshot(world, 'room').find((m) => m.userId === 'u003')!.joinedAt);
  });

  it('a leave inside the window is a leave with its lastSeen', () => {
    const world = new World({ windowMembers: 3 });
    const sockets = world.fill('room', 4);
    world.clock.advance(WINDOW);
    for (const s of sockets) s.take();
    sockets[3].send({ type: 'leave', channel: 'room' });
    assert.deepEqual(sockets[0].frames, []);
    world.clock.advance(WINDOW);
    const [leave] = sockets[0].take();
    assert.equal(leave.type, 'presence.leave');
    assert.equal(leave.userId, 'u003');
    assert.equal(typeof leave.lastSeen, 'string');
  });

  it('going invisible closes the window at once: nobody, a joiner included, is shown an invisible user', () => {
    const world = new World({ windowMembers: 3 });
    const sockets = world.fill('room', 4);
    world.clock.advance(WINDOW);
    for (const s of sockets) s.take();
    sockets[1].send({ type: 'status', status: 'busy' });
    sockets[3].send({ type: 'status', status: 'invisible' });
    assert.equal(world.count('room'), 3, 'counted nowhere');
    // The window closed with the change before it.
    assert.deepEqual(
      sockets[0].take().map((m) => `${m.type} ${m.userId ?? m.member.userId}`),
      ['presence.update u001', 'presence.leave u003'],
    );
    const [late] = world.fill('room', 1, 9);
    const sync = late.take('presence.sync')[0];
    assert.ok(!sync.members.some((m: Member) => m.userId === 'u003'), 'a joiner is not shown the invisible user');
  });

  it('ends at 0.9 of the threshold and starts again at it, seq running on without a gap', () => {
    const world = new World({ windowMembers: 10 });
    const sockets = world.fill('room', 10);
    world.clock.advance(WINDOW);
    const view = new V1View();
    view.apply(sockets[0].take(), 'room');
    // 10 → 9: 9 is 0.9 × 10, which ends the windows when this one closes.
    sockets[9].send({ type: 'leave', channel: 'room' });
    assert.deepEqual(sockets[0].frames, [], 'windowed until the window closes');
    world.clock.advance(WINDOW);
    view.apply(sockets[0].take(), 'room');
    assert.equal(view.members.size, 9);
    sockets[8].send({ type: 'status', status: 'busy' });
    const immediate = sockets[0].take();
    assert.equal(immediate.length, 1, 'per event again');
    view.apply(immediate, 'room');
    world.fill('room', 1, 20);
    view.apply(sockets[0].take(), 'room');
    world.clock.advance(WINDOW);
    sockets[8].send({ type: 'status', status: 'away' });
    assert.deepEqual(sockets[0].frames, [], 'windowed again at N');
    world.clock.advance(WINDOW);
    view.apply(sockets[0].take(), 'room');
    assert.deepEqual(view.sorted(), snapshot(world, 'room'));
  });

  it('with hysteresis: between 0.9 N and N the mode stays what it was', () => {
    const world = new World({ windowMembers: 20 });
    const sockets = world.fill('room', 19);
    for (const s of sockets) s.take();
    sockets[0].send({ type: 'status', status: 'busy' });
    assert.equal(sockets[1].take().length, 1, '19 < 20: per event');
    world.fill('room', 1, 19);
    world.clock.advance(WINDOW);
    sockets[18].send({ type: 'leave', channel: 'room' });
    world.clock.advance(WINDOW);
    for (const s of sockets) s.take();
    // 19 members, 19 > 0.9 × 20 = 18: still windowed.
    sockets[0].send({ type: 'status', status: 'away' });
    assert.deepEqual(sockets[1].frames, []);
    world.clock.advance(WINDOW);
    assert.equal(sockets[1].take().length, 1);
  });
});

describe('occupancy mode in huge channels', () => {
  it('opted-in connections get counts and a sample instead of the list; the others keep v1, windowed', () => {
    const world = new World({ windowMembers: 3, occupancyMembers: 6, sampleSize: 3 });
    const viewer = world.connect('viewer', { occupancy: true });
    viewer.send({ type: 'join', channel: 'room' });
    const plain = world.connect('plain');
    plain.send({ type: 'join', channel: 'room' });
    const others = world.fill('room', 3);
    assert.ok(viewer.take('presence.join').length > 0, 'below the threshold an opted-in connection is an ordinary v1 receiver');
    plain.take();
    world.fill('room', 2, 3);
    // Seven visible: the viewer switches when the window closes.
    world.clock.advance(WINDOW);
    const switched = viewer.take();
    const whole = switched.find((m) => m.type === 'presence.occupancy');
    assert.ok(whole, 'a whole occupancy message at the switch');
    assert.equal(whole.count, 7);
    assert.deepEqual(whole.statuses, { online: 7, away: 0, busy: 0 });
    assert.equal(whole.sample.length, 3);
    assert.deepEqual(whole.typing, []);
    assert.equal(plain.take('presence.join').length, 2, 'the plain connection still gets the members, windowed');

    // An invisible member is counted nowhere, at once: going invisible closes the window.
    others[0].send({ type: 'status', status: 'invisible' });
    const [hidden] = viewer.take();
    assert.equal(hidden.count, 6);
    assert.ok(!JSON.stringify(hidden).includes('"u000"') || hidden.removed?.includes('u000'), 'not kept in the sample');
    assert.deepEqual(
      plain.take().map((m) => m.type),
      ['presence.leave'],
      'the leave goes out at once',
    );
    // Other changes wait for the window.
    others[1].send({ type: 'status', status: 'busy' });
    others[2].send({ type: 'typing', channel: 'room', typing: true });
    assert.deepEqual(viewer.frames, []);
    world.clock.advance(WINDOW);
    const counts = viewer.take();
    assert.deepEqual(
      counts.map((m) => m.type),
      ['presence.occupancy'],
      'no member events and no typing events in occupancy mode',
    );
    assert.equal(counts[0].count, 6);
    assert.deepEqual(counts[0].statuses, { online: 5, away: 0, busy: 1 });
    assert.equal(counts[0].sample, undefined, 'no whole sample after the switch');
    assert.deepEqual(
      plain.take().map((m) => m.type),
      ['typing', 'presence.update'],
    );
  });

  it('the sample changes at most once per interval, as a diff; watched users and contacts come first', () => {
    const world = new World({ occupancyMembers: 4, sampleSize: 2 });
    const members = world.fill('room', 4);
    world.clock.advance(WINDOW);
    const viewer = world.connect('viewer', { occupancy: true, contacts: ['u000'] });
    viewer.send({ type: 'join', channel: 'room' });
    const [first] = viewer.take('presence.occupancy');
    assert.equal(first.type, 'presence.occupancy');
    assert.equal(first.sample[0].userId, 'u000', 'a contact present comes first');
    const watcher = world.connect('watcher', { occupancy: true });
    watcher.send({ type: 'watch', users: ['u002'] });
    watcher.send({ type: 'join', channel: 'room' });
    assert.equal(watcher.take('presence.occupancy')[0].sample[0].userId, 'u002', 'a watched user present comes first');

    // Typing goes into the sample, not as typing events.
    members[3].send({ type: 'typing', channel: 'room', typing: true });
    world.clock.advance(WINDOW);
    assert.deepEqual(viewer.take('typing'), []);
    world.clock.advance(SAMPLE_INTERVAL);
    const diff = viewer.take('presence.occupancy').find((m) => m.typing !== undefined);
    assert.ok(diff, 'a sample diff within the interval');
    assert.deepEqual(diff.typing, ['u003']);
    assert.equal(diff.sample, undefined);
    assert.ok(diff.added.some((m: Member) => m.userId === 'u003'));
    assert.equal(diff.removed.length, 1);

    // Two changes inside one interval: one diff at its end.
    members[1].send({ type: 'status', status: 'busy' });
    world.clock.advance(WINDOW);
    members[1].send({ type: 'status', status: 'away' });
    world.clock.advance(WINDOW);
    const sampleMessages = () => viewer.take('presence.occupancy').filter((m) => m.typing !== undefined);
    assert.deepEqual(sampleMessages(), [], 'not before the interval is over');
    world.clock.advance(SAMPLE_INTERVAL);
    const [changed, ...more] = sampleMessages();
    assert.deepEqual(more, [], 'one diff per interval');
    assert.ok(changed, 'the diff at the end of the interval');
    const u001 = (changed.added ?? []).find((m: Member) => m.userId === 'u001');
    assert.ok(!u001 || u001.status === 'away', 'a changed member of the sample comes with its last state');
  });

  it('ends at 0.9 N with a whole member list, and starts again at N with a whole occupancy message', () => {
    const world = new World({ occupancyMembers: 10 });
    const members = world.fill('room', 9);
    const viewer = world.connect('viewer', { occupancy: true });
    viewer.send({ type: 'join', channel: 'room' });
    // The viewer made ten: its join is answered with the list; occupancy starts as the window closes.
    const view = new V1View();
    view.apply(viewer.take(), 'room');
    assert.equal(view.members.size, 10);
    world.clock.advance(WINDOW);
    const [whole] = viewer.take();
    assert.equal(whole.type, 'presence.occupancy');
    assert.equal(whole.sample.length, 10);
    members[0].send({ type: 'status', status: 'busy' });
    assert.deepEqual(viewer.take(), [], 'no member event in occupancy mode');
    world.clock.advance(WINDOW);
    assert.deepEqual(
      viewer.take().map((m) => [m.type, m.statuses.busy]),
      [['presence.occupancy', 1]],
    );
    members[8].send({ type: 'leave', channel: 'room' });
    world.clock.advance(WINDOW);
    const back = viewer.take();
    const sync = back.find((m) => m.type === 'presence.sync');
    assert.ok(sync, 'a whole member list when the mode ends');
    assert.equal(sync.members.length, 9);
    view.apply(back, 'room');
    members[1].send({ type: 'status', status: 'away' });
    view.apply(viewer.take(), 'room');
    assert.deepEqual(view.sorted(), snapshot(world, 'room'), 'events continue from the sync');
    world.fill('room', 1, 30);
    world.clock.advance(WINDOW);
    assert.ok(
      viewer.take().some((m) => m.type === 'presence.occupancy' && m.sample !== undefined),
      'occupancy again at N',
    );
  });
});

describe('the members command', () => {
  it('pages through a joined channel by user id with counts, answered by presence.page with the ref', () => {
    const world = new World({});
    world.fill('room', 5);
    const reader = world.connect('reader');
    reader.send({ type: 'join', channel: 'room' });
    reader.take();
    reader.send({ type: 'members', channel: 'room', limit: 4 });
    const [page] = reader.take();
    assert.equal(page.type, 'presence.page');
    assert.equal(page.ref, 'r2');
    assert.equal(page.count, 6);
    assert.deepEqual(page.statuses, { online: 6, away: 0, busy: 0 });
    assert.deepEqual(
      page.members.map((m: Member) => m.userId),
      ['reader', 'u000', 'u001', 'u002'],
    );
    reader.send({ type: 'members', channel: 'room', cursor: page.nextCursor });
    const [next] = reader.take();
    assert.deepEqual(
      next.members.map((m: Member) => m.userId),
      ['u003', 'u004'],
    );
    assert.equal(next.nextCursor, undefined);
    assert.throws(() => reader.send({ type: 'members', channel: 'elsewhere' }), { code: 'NOT_IN_CHANNEL' });
  });

  it('refuses a malformed members command with INVALID_MESSAGE, naming the field', () => {
    assert.throws(() => decodeCommand({ type: 'members' }), { code: 'INVALID_MESSAGE', message: 'members: "channel" must be a string' });
    assert.throws(() => decodeCommand({ type: 'members', channel: 'room', limit: 0 }), (e: Frame) => e.code === 'INVALID_MESSAGE' && /"limit"/.test(e.message));
    assert.throws(() => decodeCommand({ type: 'members', channel: 'room', cursor: 7 }), (e: Frame) => e.code === 'INVALID_MESSAGE' && /"cursor"/.test(e.message));
    assert.deepEqual(decodeCommand({ type: 'members', channel: 'room', cursor: 'u1', limit: 5 }), { type: 'members', channel: 'room', cursor: 'u1', limit: 5 });
  });
});

describe('over real sockets', () => {
  it('a window is one WebSocket frame; features=occupancy switches a connection; members pages', async (t) => {
    const server = await startTestServer({ largeRooms: { windowMembers: 4, occupancyMembers: 6, windowMs: 50, sampleSize: 2 } });
    t.after(() => server.shutdown());
    const plain: TestClient[] = [];
    for (let i = 0; i < 4; i += 1) {
      const client = await TestClient.connect(server, { userId: `p${i}` });
      await client.request({ type: 'join', channel: 'hall' });
      plain.push(client);
    }
    const viewer = await TestClient.connect(server, { userId: 'viewer', features: 'rooms2,occupancy' });
    await viewer.request({ type: 'join', channel: 'hall' });
    const raw: string[] = [];
    plain[0].ws.on('message', (data) => raw.push(data.toString()));
    // Five visible (windowed from the next window); a sixth brings occupancy.
    await sleep(120);
    const sixth = await TestClient.connect(server, { userId: 'p9' });
    await sixth.request({ type: 'join', channel: 'hall' });
    await sleep(120);
    // Two changes inside one window (sent together, a few ms apart at most).
    plain[1].ws.send(JSON.stringify({ type: 'status', status: 'busy' }));
    plain[2].ws.send(JSON.stringify({ type: 'status', status: 'away' }));
    await viewer.waitFor((m) => m.type === 'presence.occupancy' && m.statuses.busy === 1 && m.statuses.away === 1, 3000);
    await plain[0].waitFor((m) => m.type === 'presence.update' && m.member.userId === 'p2', 3000);
    // The two updates share a window (the sixth join crossed the occupancy line and went out at once).
    const frame = raw.find((text) => text.includes('"p1"') && text.includes('"p2"'));
    assert.ok(frame, `both updates in one frame; frames: ${raw.join('\n')}`);
    assert.equal(JSON.parse(frame).length, 2);
    const whole = viewer.ofType('presence.occupancy').find((m) => m.sample !== undefined);
    assert.ok(whole, 'the opted-in connection was switched with a whole message');
    assert.equal(whole.sample!.length, 2);

    viewer.ws.send(JSON.stringify({ type: 'members', channel: 'hall', limit: 4, ref: 'm1' }));
    const page = await viewer.waitFor((m) => m.type === 'presence.page');
    assert.equal(page.type === 'presence.page' && page.ref, 'm1');
    assert.equal(page.type === 'presence.page' && page.members.length, 4);
    assert.equal(page.type === 'presence.page' && page.count, 6);
    // The HTTP API tells the same counts.
    const http = await httpJson(server, '/realtime/channels/hall/presence?limit=1');
    assert.deepEqual(http.body.statuses, { online: 4, away: 1, busy: 1 });
  });
});
