/**
 * The presence events as one typed stream: protocol v1 is one listener of it, and a second
 * listener sees the same changes. Restricted to what one session subscribes to (its channels and
 * its watches), the events map one to one and in order onto the v1 frames that session receives.
 * Event ids name the change: every node that emits the same change gives it the same id.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ServerMessage } from '@presence/protocol';
import { resolveConfig } from '../src/config/config.js';
import { ManualClock } from '../src/presence/clock.js';
import type { Attachment } from '../src/presence/engine.js';
import type { PresenceEvent } from '../src/presence/events.js';
import type { Session, SessionSink } from '../src/presence/state.js';
import { mayView } from '../src/presence/user-presence.js';
import { PresenceNode } from '../src/presence-node.js';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { ClusterNode, eventually } from './support/cluster-nodes.js';

/** The frames that carry a change others made (not answers: welcome, sync, ack, pong, user.sync). */
const CHANGE_FRAMES = new Set(['presence.join', 'presence.leave', 'presence.update', 'typing', 'user.update']);

class Tab implements SessionSink {
  readonly frames: ServerMessage[] = [];
  attachment?: Attachment;
  /** What the second listener says this session should have received, in order. */
  readonly expected: string[] = [];
  send(json: string): void {
    for (const frame of [JSON.parse(json) as ServerMessage].flat()) this.frames.push(frame);
  }
  close(): void {}
  get session(): Session {
    return this.attachment!.session;
  }
  changeFrames(): string[] {
    return this.frames.filter((f) => CHANGE_FRAMES.has(f.type)).map(describeFrame);
  }
}

function describeFrame(frame: ServerMessage): string {
  switch (frame.type) {
    case 'presence.join':
    case 'presence.update':
      return `${frame.type} ${frame.channel} ${frame.member.userId} #${frame.seq} ${frame.member.status} ${frame.member.joinedAt}`;
    case 'presence.leave':
      return `presence.leave ${frame.channel} ${frame.userId} #${frame.seq} ${frame.lastSeen}`;
    case 'typing':
      return `typing ${frame.channel} ${frame.userId} ${frame.typing}`;
    case 'user.update':
      return `user.update ${frame.user.userId} ${frame.user.status}`;
    default:
      return frame.type;
  }
}

/**
 * The second listener: for each event, which of the tabs subscribe to it, and the v1 frame it
 * stands for. It reads the model's state as the event is emitted (who is in the channel, who
 * watches whom), as any listener may.
 */
function expectFromEvents(node: PresenceNode, tabs: Tab[]): (event: PresenceEvent) => void {
  const { state, watchers } = node.engine;
  const iso = (ms: number) => new Date(ms).toISOString();
  return (event) => {
    for (const tab of tabs) {
      if (!tab.attachment) continue; // still connecting: its welcome carries the state
      const session = tab.session;
      if (!session.sink || state.sessions.get(session.id) !== session) continue;
      if ('channel' in event) {
        const channel = state.channels.get(event.channel);
        const inChannel = channel !== undefined && session.channels.has(event.channel) && channel.members.get(session.user.record.userId)?.sessions.has(session);
        if (!inChannel) continue;
        switch (event.type) {
          case 'member.joined':
          case 'member.updated':
          case 'member.meta':
            if (event.answered === session) continue;
            tab.expected.push(`${event.type === 'member.joined' ? 'presence.join' : 'presence.update'} ${event.channel} ${event.userId} #${event.seq} ${event.view.status} ${iso(event.joinedAt)}`);
            break;
          case 'member.left':
            tab.expected.push(`presence.leave ${event.channel} ${event.userId} #${event.seq} ${event.lastSeen}`);
            break;
          case 'typing.started':
          case 'typing.stopped':
            if (event.userId === session.user.record.userId) continue;
            tab.expected.push(`typing ${event.channel} ${event.userId} ${event.type === 'typing.started'}`);
            break;
        }
      } else {
        if (!watchers.watchersOf(event.userId)?.has(session)) continue;
        const user = state.users.get(event.userId)!;
        if (mayView(user.record, session.user.record.userId)) tab.expected.push(`user.update ${event.userId} ${event.view.status}`);
        else if (event.privacyChanged) tab.expected.push(`user.update ${event.userId} offline`);
      }
    }
  };
}

describe('presence events', () => {
  it('restricted to one session, the stream maps one to one and in order onto its v1 frames (joins, tabs, invisible, idle, typing, logout, offline delay)', async () => {
    const clock = new ManualClock();
    const config = resolveConfig({ offlineDelayMs: 5_000, idleTimeoutMs: 60_000, typingTimeoutMs: 3_000 });
    let n = 0;
    const node = new PresenceNode({ config, clock, newSessionId: () => `session-${++n}-xxxxxxxx` });
    const tabs: Tab[] = [];
    const events: PresenceEvent[] = [];
    node.subscribe((event) => events.push(event));
    node.subscribe(expectFromEvents(node, tabs));
    const open = (userId: string, device = 'web'): Tab => {
      const tab = new Tab();
      tabs.push(tab);
      tab.attachment = node.connect({ identity: { userId, meta: {} }, device }, tab);
      return tab;
    };
    const send = async (tab: Tab, command: Record<string, unknown>) => node.handle(tab.attachment!, command as never);

    const ada = open('ada');
    const bob = open('bob');
    const cy = open('cy', 'ios');
    await send(ada, { type: 'join', channel: 'room' });
    await send(bob, { type: 'join', channel: 'room' });
    await send(bob, { type: 'join', channel: 'doc:1', meta: { mode: 'viewing' } });
    await send(cy, { type: 'watch', users: ['ada', 'bob'] });
    await send(cy, { type: 'join', channel: 'doc:1' });
    // A second tab of ada's: no event for others; the tab joins a channel ada is new to.
    const ada2 = open('ada', 'desktop');
    await send(ada2, { type: 'join', channel: 'doc:1', meta: { mode: 'editing' } });
    await send(ada2, { type: 'channel.meta', channel: 'doc:1', meta: { cursor: 4 } });
    await send(bob, { type: 'status', status: 'busy', message: 'In a call' });
    await send(bob, { type: 'meta', meta: { name: 'Bob' } });
    // Typing: started, refreshed (no event), stopped by timeout.
    await send(ada, { type: 'typing', channel: 'room', typing: true });
    clock.advance(1_000);
    await send(ada, { type: 'typing', channel: 'room', typing: true });
    clock.advance(3_500);
    // Invisible: a leave everywhere, typing never shown; back into sight: a join.
    await send(bob, { type: 'status', status: 'invisible' });
    await send(bob, { type: 'typing', channel: 'room', typing: true });
    clock.advance(2_000);
    await send(bob, { type: 'status', status: 'online' });
    // Idle: the client says so, then activity.
    await send(ada, { type: 'idle' });
    await send(ada2, { type: 'idle' });
    await send(ada, { type: 'activity' });
    // Offline delay: ada's tabs close, one comes back inside the delay (nothing), then both go.
    node.disconnect(ada2.attachment!);
    clock.advance(1_000);
    node.disconnect(ada.attachment!);
    clock.advance(2_000);
    const ada3 = open('ada');
    await send(ada3, { type: 'join', channel: 'room' });
    node.disconnect(ada3.attachment!);
    clock.advance(5_001);
    // Leaving a channel, then logout.
    await send(cy, { type: 'leave', channel: 'doc:1' });
    await send(bob, { type: 'typing', channel: 'doc:1', typing: true });
    await send(bob, { type: 'logout' });
    clock.advance(10_000);

    const kinds = new Set(events.map((e) => e.type));
    for (const kind of ['user.online', 'user.offline', 'user.status', 'user.meta', 'member.joined', 'member.left', 'member.updated', 'member.meta', 'typing.started', 'typing.stopped']) {
      assert.ok(kinds.has(kind as PresenceEvent['type']), `the scenario produced ${kind}`);
    }
    assert.ok(tabs.reduce((sum, tab) => sum + tab.expected.length, 0) > 30, 'the tabs saw a lot');
    for (const tab of [ada, ada2, bob, cy, ada3]) {
      assert.deepEqual(tab.changeFrames(), tab.expected, `frames of ${tab.session.user.record.userId}'s ${tab.session.device} tab`);
    }
    // Per channel, seq runs without a gap over the events.
    const seqs = new Map<string, number>();
    for (const event of events) {
      if (!('seq' in event)) continue;
      assert.equal(event.seq, (seqs.get(event.channel) ?? 0) + 1, `seq of ${event.channel}`);
      seqs.set(event.channel, event.seq);
    }
    assert.ok(events.every((e) => e.local), 'every change was made on this node');
    assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'no two events share an id');
  });

  it('an invisible user produces exactly what going offline produces', () => {
    const run = (goAway: (node: PresenceNode, tab: Tab) => void): string[] => {
      const clock = new ManualClock();
      const node = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 0 }), clock });
      const seen: string[] = [];
      node.subscribe((event) => seen.push(`${event.type} ${'channel' in event ? event.channel : ''} ${event.userId} ${'view' in event ? event.view.status : ''}`));
      const tab = new Tab();
      tab.attachment = node.connect({ identity: { userId: 'ada', meta: {} } }, tab);
      void node.handle(tab.attachment!, { type: 'join', channel: 'room' });
      void node.handle(tab.attachment!, { type: 'join', channel: 'doc' });
      seen.length = 0;
      goAway(node, tab);
      return seen;
    };
    const invisible = run((node, tab) => void node.handle(tab.attachment!, { type: 'status', status: 'invisible' }));
    const offline = run((node, tab) => node.disconnect(tab.attachment!));
    assert.deepEqual(invisible, offline);
    assert.deepEqual(offline, ['member.left room ada offline', 'member.left doc ada offline', 'user.offline  ada offline']);
  });

  it('every node that emits the same change gives it the same id', async () => {
    const hub = new MemoryHub();
    const a = await ClusterNode.start({ service: new MemoryService(hub) });
    const b = await ClusterNode.start({ service: new MemoryService(hub) });
    try {
      const onA: PresenceEvent[] = [];
      const onB: PresenceEvent[] = [];
      a.engine.subscribe((event) => onA.push(event));
      b.engine.subscribe((event) => onB.push(event));
      const watcher = await b.connect('obs');
      await b.send(watcher, { type: 'join', channel: 'room' });
      await b.send(watcher, { type: 'watch', users: ['ada'] });
      const adaEvents = (events: PresenceEvent[]) => events.filter((e) => e.userId === 'ada').map((e) => `${e.type} ${e.id}`);
      // One change at a time, each seen by node b before the next: b then emits each on its own
      // (changes that reach b together may be announced together, as one).
      const step = async (what: string, change: () => Promise<unknown>) => {
        const before = adaEvents(onB).filter((e) => e.startsWith(`${what} `)).length;
        await change();
        await eventually(() => adaEvents(onB).filter((e) => e.startsWith(`${what} `)).length > before, 5_000, `${what} on node b`);
      };
      const ada = await a.connect('ada');
      await step('member.joined', () => a.send(ada, { type: 'join', channel: 'room' }));
      await step('member.updated', () => a.send(ada, { type: 'status', status: 'busy', message: 'In a call' }));
      await step('user.meta', () => a.send(ada, { type: 'meta', meta: { name: 'Ada' } }));
      await step('typing.started', () => a.send(ada, { type: 'typing', channel: 'room', typing: true }));
      await step('member.left', () => a.send(ada, { type: 'leave', channel: 'room' }));
      await step('user.offline', () => a.send(ada, { type: 'logout' }));
      const idsOnA = adaEvents(onA);
      const idsOnB = adaEvents(onB);
      for (const kind of ['member.joined', 'member.updated', 'user.status', 'user.meta', 'typing.started', 'member.left', 'user.offline']) {
        assert.ok(idsOnB.some((e) => e.startsWith(`${kind} `)), `node b emitted ${kind}`);
      }
      for (const e of idsOnB) assert.ok(idsOnA.includes(e), `${e} (node b) was emitted by node a with the same id: ${idsOnA.join(', ')}`);
      assert.ok(onA.filter((e) => e.userId === 'ada').every((e) => e.local), 'node a made these changes');
      assert.ok(onB.filter((e) => e.userId === 'ada').every((e) => !e.local), 'node b did not');
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
