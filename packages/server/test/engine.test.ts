/**
 * Unit tests of the presence model (PresenceEngine) driven by a ManualClock: no sockets, no
 * sleeping. Each `describe` is one rule of the Model section of DESIGN.md; every rule has at least
 * one test that fails when the rule is broken.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ClientMessage, Meta, StatusCommand } from '@presence/protocol';
import type { Identity } from '../src/auth/identity.js';
import type { Cluster, NodeOp, SessionSnapshot } from '../src/presence/replication.js';
import { DEFAULT_STATES, resolveConfig, type ServerConfig } from '../src/config/config.js';
import { ManualClock } from '../src/presence/clock.js';
import { decodeCommand } from '../src/presence/commands.js';
import type { Attachment, SessionSink } from '../src/presence/engine.js';
import { PresenceNode } from '../src/presence-node.js';
import type { UserRecord, UserStore } from '../src/store/user-store.js';
import { serverMessages } from './support/harness.js';

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

// Frames are parsed JSON; tests look into them freely.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Frame = any;
type ConfigOverrides = Parameters<typeof resolveConfig>[0];

const TRUSTED = { trusted: true } as const;
const as = (userId: string) => ({ trusted: false, userId }) as const;
const iso = (ms: number) => new Date(ms).toISOString();

/** One socket: a recording sink plus the attachment `connect` returned for it. */
class Client {
  /** Frames not yet taken. */
  frames: Frame[] = [];
  /** Every frame ever received, with the clock time it arrived at. */
  readonly timeline: { at: number; frame: Frame }[] = [];
  closed: { code: number; reason: string } | undefined;
  attachment!: Attachment;
  readonly sink: SessionSink = {
    send: (json) => {
      for (const frame of serverMessages(json)) {
        this.frames.push(frame);
        this.timeline.push({ at: this.world.now(), frame });
      }
    },
    close: (code, reason) => {
      this.closed = { code, reason };
    },
  };

  private refs = 0;

  constructor(readonly world: World) {}

  get sessionId(): string {
    return this.attachment.session.id;
  }
  /** Runs a command the way the SDK sends it: with a ref, so the engine builds the ack's data. */
  send(command: ClientMessage): Frame {
    return this.world.engine.handle(this.attachment, { ref: `r${++this.refs}`, ...command } as ClientMessage);
  }
  join(channel: string, meta?: Meta): Frame {
    return this.send(meta ? { type: 'join', channel, meta } : { type: 'join', channel });
  }
  leave(channel: string): Frame {
    return this.send({ type: 'leave', channel });
  }
  status(fields: Omit<StatusCommand, 'type'>): Frame {
    return this.send({ type: 'status', ...fields });
  }
  typing(channel: string, typing: boolean): Frame {
    return this.send({ type: 'typing', channel, typing });
  }
  watch(...users: string[]): Frame {
    return this.send({ type: 'watch', users });
  }
  disconnect(): void {
    this.world.engine.disconnect(this.attachment);
  }
  /** Returns and forgets the frames received so far (only those of `type`, if given). */
  take(type?: string): Frame[] {
    const frames = this.frames;
    this.frames = [];
    return type ? frames.filter((f) => f.type === type) : frames;
  }
}

interface ConnectOptions {
  sessionId?: string;
  device?: string;
  identity?: Partial<Omit<Identity, 'userId'>>;
}

/** An engine on a manual clock; session ids are predictable. */
class World {
  readonly clock = new ManualClock();
  readonly config: ServerConfig;
  readonly engine: PresenceNode;
  private nextSession = 0;

  constructor(overrides: ConfigOverrides = {}, store?: UserStore) {
    this.config = resolveConfig(overrides);
    this.engine = new PresenceNode({
      config: this.config,
      clock: this.clock,
      store,
      newSessionId: () => `session-${String(++this.nextSession).padStart(4, '0')}`,
    });
  }

  now(): number {
    return this.clock.now();
  }
  advance(ms: number): void {
    this.clock.advance(ms);
  }
  connect(userId: string, options: ConnectOptions = {}): Client {
    const client = new Client(this);
    client.attachment = this.engine.connect(
      {
        identity: { userId, meta: {}, ...options.identity },
        sessionId: options.sessionId,
        device: options.device ?? 'web',
      },
      client.sink,
    );
    return client;
  }
  /** Forgets every frame received so far, so a test can assert on what comes next. */
  flush(...clients: Client[]): void {
    for (const client of clients) client.take();
  }
  member(channel: string, userId: string): Frame {
    return this.engine.channelPresence(channel, { limit: 1000 }).members.find((m) => m.userId === userId);
  }
  get offlineDelay(): number {
    return this.config.offlineDelayMs;
  }
}

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: Frame) => {
    assert.equal(e?.code, code, `expected ${code}, got ${String(e?.code ?? e)}`);
    return true;
  });
}

/** A store that keeps copies, so an unsaved change of a live record is not persisted by accident. */
class SnapshotStore implements UserStore {
  readonly records = new Map<string, UserRecord>();
  get(userId: string): UserRecord | undefined {
    const record = this.records.get(userId);
    return record && structuredClone(record);
  }
  load(): undefined {
    return undefined;
  }
  save(record: UserRecord): void {
    this.records.set(record.userId, structuredClone(record));
  }
  isReady(): boolean {
    return true;
  }
  async close(): Promise<void> {}
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

describe('sessions are merged per user', () => {
  it('welcomes a session with its id, timeouts, limits, states and own presence', () => {
    const w = new World();
    const alice = w.connect('alice');
    const [welcome, ...rest] = alice.take();
    assert.deepEqual(rest, []);
    assert.equal(welcome.type, 'welcome');
    assert.equal(welcome.userId, 'alice');
    assert.equal(welcome.sessionId, alice.sessionId);
    assert.equal(welcome.resumed, false);
    assert.equal(welcome.serverTime, iso(w.now()));
    assert.deepEqual(welcome.timeouts, { heartbeatMs: 20_000, idleMs: 300_000, offlineDelayMs: 30_000, typingMs: 3_000 });
    assert.equal(welcome.limits.maxChannelsPerSession, 100);
    assert.equal(welcome.limits.maxMessageLength, 256);
    assert.deepEqual(welcome.states, DEFAULT_STATES);
    assert.equal(welcome.self.status, 'online');
    assert.equal(welcome.self.manualStatus, null);
    assert.equal(welcome.self.visibility, 'everyone');
    assert.deepEqual(welcome.self.devices, ['web']);
  });

  it('a second tab is no event for others, and closing one of two tabs changes nothing they see', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    bob.watch('alice');
    const tab1 = w.connect('alice');
    tab1.join('room');
    bob.take();

    const tab2 = w.connect('alice');
    tab2.join('room');
    assert.deepEqual(bob.take(), [], 'a second tab must not reach other members or watchers');
    const sync = tab2.take('presence.sync')[0];
    assert.deepEqual(sync.members.map((m: Frame) => m.userId).sort(), ['alice', 'bob']);

    tab1.disconnect();
    w.advance(w.offlineDelay * 3);
    assert.deepEqual(bob.take(), [], 'closing one of two tabs must not reach other members or watchers');
    assert.deepEqual(tab2.take(), []);
    assert.equal(w.member('room', 'alice').status, 'online');
    assert.equal(w.engine.userPresence('alice', TRUSTED).status, 'online');
    assert.deepEqual(w.engine.stats(), { connections: 2, sessions: 2, onlineUsers: 2, channels: 1 });
  });

  it('merges the devices of all sessions, sorted, and announces a device coming and going', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const web = w.connect('alice', { device: 'web' });
    web.join('room');
    w.flush(bob, web);

    const phone = w.connect('alice', { device: 'ios' });
    assert.deepEqual(phone.take('welcome')[0].self.devices, ['ios', 'web']);
    const [update, ...more] = bob.take();
    assert.deepEqual(more, []);
    assert.equal(update.type, 'presence.update');
    assert.deepEqual(update.member.devices, ['ios', 'web']);
    assert.deepEqual(w.engine.userPresence('alice', TRUSTED).devices, ['ios', 'web']);

    // A second web tab adds no device: nothing to tell.
    w.connect('alice', { device: 'web' });
    assert.deepEqual(bob.take(), []);

    phone.disconnect();
    w.advance(w.offlineDelay - 1);
    assert.deepEqual(bob.take(), [], 'the device stays listed during the offline delay');
    w.advance(1);
    const [gone] = bob.take();
    assert.equal(gone.type, 'presence.update');
    assert.deepEqual(gone.member.devices, ['web']);
  });

  it('records a malformed device name as unknown', () => {
    const w = new World();
    const alice = w.connect('alice', { device: 'not a device!' });
    assert.deepEqual(alice.take('welcome')[0].self.devices, ['unknown']);
  });
});

/** Bob and two tabs of Alice in `room`, with the join traffic already taken. */
function bobAndTwoAliceTabs() {
  const w = new World();
  const bob = w.connect('bob');
  bob.join('room');
  const a1 = w.connect('alice');
  a1.join('room');
  const a2 = w.connect('alice');
  a2.join('room');
  w.flush(bob, a1, a2);
  return { w, bob, a1, a2 };
}

// ---------------------------------------------------------------------------------------------
// Manual status, custom states, message, expiry
// ---------------------------------------------------------------------------------------------

describe('manual status', () => {
  const room = bobAndTwoAliceTabs;

  it('an update without a ref gets no ack data (self is built only for an ack), yet is announced', () => {
    const { bob, a1 } = room();
    const engine = a1.world.engine;
    assert.equal(engine.handle(a1.attachment, { type: 'status', status: 'busy' }), undefined);
    assert.equal(engine.handle(a1.attachment, { type: 'meta', meta: { title: 'CTO' } }), undefined);
    const updates = bob.take('presence.update');
    assert.equal(updates.length, 2);
    assert.equal(updates[0].member.status, 'busy');
    assert.deepEqual(updates[1].member.meta, { title: 'CTO' });
  });

  it('away and busy apply to every session of the user; status online returns to automatic', () => {
    const { bob, a1, a2 } = room();

    const ack = a1.status({ status: 'away' });
    assert.equal(ack.self.status, 'away');
    assert.equal(ack.self.manualStatus, 'away');
    const [away] = bob.take();
    assert.equal(away.type, 'presence.update');
    assert.equal(away.member.status, 'away');
    assert.equal(a2.take('presence.update')[0].member.status, 'away', "the user's other session is told too");

    a1.status({ status: 'busy' });
    assert.deepEqual(bob.take().map((f) => [f.type, f.member.status]), [['presence.update', 'busy']]);

    // A manual status wins over activity.
    a2.send({ type: 'activity' });
    assert.deepEqual(bob.take(), []);

    const back = a2.status({ status: 'online' });
    assert.equal(back.self.manualStatus, null);
    assert.deepEqual(bob.take().map((f) => [f.type, f.member.status]), [['presence.update', 'online']]);
  });

  it('invisible is a leave for others and status online a join again', () => {
    const { w, bob, a1 } = room();
    a1.status({ status: 'invisible' });
    const [leave] = bob.take();
    assert.equal(leave.type, 'presence.leave');
    assert.equal(leave.userId, 'alice');
    assert.equal(w.engine.channelPresence('room', { limit: 10 }).count, 1);

    a1.status({ status: 'online' });
    const [join] = bob.take();
    assert.equal(join.type, 'presence.join');
    assert.equal(join.member.userId, 'alice');
    assert.equal(join.member.status, 'online');
  });

  it('the manual status outlives the sessions and is in welcome.self', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.status({ status: 'busy' });
    alice.send({ type: 'logout' });
    bob.take();

    const again = w.connect('alice');
    const self = again.take('welcome')[0].self;
    assert.equal(self.manualStatus, 'busy');
    assert.equal(self.status, 'busy');
    again.join('room');
    assert.equal(bob.take('presence.join')[0].member.status, 'busy');
  });

  it('custom states show their configured base status (in-call → busy, lunch → away)', () => {
    const { bob, a1 } = room();

    const ack = a1.status({ state: 'in-call' });
    assert.equal(ack.self.state, 'in-call');
    let [update] = bob.take();
    assert.equal(update.member.status, 'busy');
    assert.equal(update.member.state, 'in-call');

    a1.status({ state: 'lunch' });
    [update] = bob.take();
    assert.equal(update.member.status, 'away');
    assert.equal(update.member.state, 'lunch');

    a1.status({ state: null });
    [update] = bob.take();
    assert.equal(update.member.status, 'online');
    assert.equal('state' in update.member, false);

    a1.status({ state: 'in-call' });
    bob.take();
    a1.status({ status: 'online' });
    [update] = bob.take();
    assert.equal(update.member.status, 'online');
    assert.equal('state' in update.member, false, 'status online clears the state too');
  });

  it('refuses a state that is not configured and changes nothing (UNKNOWN_STATE)', () => {
    const { bob, a1 } = room();
    a1.status({ status: 'busy' });
    bob.take();
    for (const state of ['napping', 'toString', '__proto__', 'constructor']) {
      throwsCode(() => a1.status({ state, message: 'zzz' }), 'UNKNOWN_STATE');
    }
    assert.deepEqual(bob.take(), []);
    const self = a1.status({});
    assert.equal(self.self.manualStatus, 'busy');
    assert.equal('message' in self.self, false);
  });

  it('counts the message length in code points: 256 emoji fit, 257 characters do not (MESSAGE_TOO_LONG)', () => {
    const { bob, a1 } = room();
    const emoji = '😀'.repeat(256);
    assert.equal(emoji.length, 512);
    a1.status({ message: emoji });
    assert.equal(bob.take()[0].member.message, emoji);

    throwsCode(() => a1.status({ message: '😀'.repeat(257) }), 'MESSAGE_TOO_LONG');
    throwsCode(() => a1.status({ message: 'x'.repeat(257) }), 'MESSAGE_TOO_LONG');
    assert.deepEqual(bob.take(), []);

    a1.status({ message: null });
    assert.equal('message' in bob.take()[0].member, false);
  });

  it('clears status, state and message when expiresAt passes, telling members and watchers', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const carol = w.connect('carol');
    carol.watch('alice');
    const alice = w.connect('alice');
    alice.join('room');
    w.flush(bob, carol, alice);
    const timers = w.clock.pendingTimers;

    const expiresAt = iso(w.now() + 60_000);
    alice.status({ status: 'busy', state: 'in-call', message: 'standup', expiresAt });
    const [set] = bob.take();
    assert.deepEqual(
      [set.member.status, set.member.state, set.member.message, set.member.expiresAt],
      ['busy', 'in-call', 'standup', expiresAt],
    );
    assert.equal(carol.take()[0].user.message, 'standup');

    w.advance(59_999);
    assert.deepEqual(bob.take(), []);
    assert.deepEqual(carol.take(), []);

    w.advance(1);
    const [cleared, ...more] = bob.take();
    assert.deepEqual(more, []);
    assert.equal(cleared.type, 'presence.update');
    assert.equal(cleared.member.status, 'online');
    for (const field of ['state', 'message', 'expiresAt']) assert.equal(field in cleared.member, false, field);
    const [watched] = carol.take();
    assert.equal(watched.type, 'user.update');
    assert.equal(watched.user.status, 'online');
    assert.equal('message' in watched.user, false);
    assert.equal(w.clock.pendingTimers, timers, 'the expiry timer is gone');
    const self = alice.status({});
    assert.equal(self.self.manualStatus, null);
  });

  it('an expiring invisible status brings the user back as a join', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.status({ status: 'invisible', expiresAt: iso(w.now() + 1000) });
    assert.equal(bob.take().at(-1).type, 'presence.leave');
    w.advance(1000);
    const [join] = bob.take();
    assert.equal(join.type, 'presence.join');
    assert.equal(join.member.lastSeen, iso(w.now()));
  });

  it('refuses an expiry that is not a future ISO 8601 time (INVALID_EXPIRY)', () => {
    const { w, bob, a1 } = room();
    for (const expiresAt of [
      iso(w.now()),
      iso(w.now() - 1),
      '2020-01-01T00:00:00Z',
      '2099-01-01T00:00:00', // no zone
      '2099-13-45T00:00:00Z',
      'tomorrow',
    ]) {
      throwsCode(() => a1.status({ status: 'busy', expiresAt }), 'INVALID_EXPIRY');
    }
    assert.deepEqual(bob.take(), []);
    assert.equal(a1.status({}).self.manualStatus, null);
  });
});

// ---------------------------------------------------------------------------------------------
// Idle
// ---------------------------------------------------------------------------------------------

describe('idle', () => {
  const IDLE = 300_000;

  function room() {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    w.flush(bob, alice);
    return { w, bob, alice };
  }
  const statuses = (frames: Frame[]) => frames.map((f) => `${f.type}:${f.member?.userId}:${f.member?.status}`);

  it('no activity for idleTimeoutMs turns a user away; activity turns them online', () => {
    const { w, bob, alice } = room();
    w.advance(1000);
    bob.send({ type: 'activity' }); // keep bob out of the picture
    w.advance(IDLE - 1001);
    assert.deepEqual(bob.take(), []);
    w.advance(1);
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:away']);
    alice.send({ type: 'activity' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:online']);
  });

  it('activity postpones the idle timeout', () => {
    const { w, bob, alice } = room();
    w.advance(IDLE / 2);
    alice.send({ type: 'activity' });
    bob.send({ type: 'activity' });
    w.advance(IDLE / 2);
    assert.deepEqual(bob.take(), []);
    w.advance(IDLE / 2 - 1);
    assert.deepEqual(bob.take(), []);
    w.advance(1);
    assert.deepEqual(statuses(bob.take()).sort(), ['presence.update:alice:away', 'presence.update:bob:away']);
  });

  it('an explicit idle turns away at once, until the next activity', () => {
    const { bob, alice } = room();
    alice.send({ type: 'idle' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:away']);
    alice.send({ type: 'idle' });
    assert.deepEqual(bob.take(), []);
    alice.send({ type: 'activity' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:online']);
  });

  it('with two sessions the user is away only when both are idle (explicit idle)', () => {
    const { w, bob, alice } = room();
    const tab2 = w.connect('alice');
    alice.send({ type: 'idle' });
    assert.deepEqual(bob.take(), []);
    tab2.send({ type: 'idle' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:away']);
    alice.send({ type: 'activity' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:online']);
  });

  it('with two sessions the user is away only when both are idle (timeout)', () => {
    const { w, bob } = room();
    w.advance(IDLE / 2);
    const tab2 = w.connect('alice');
    bob.send({ type: 'activity' });
    w.advance(IDLE / 2);
    assert.deepEqual(bob.take(), [], 'the first tab timed out, the second did not');
    tab2.send({ type: 'activity' });
    w.advance(IDLE - 1);
    assert.deepEqual(statuses(bob.take()), ['presence.update:bob:away']);
    w.advance(1);
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:away']);
  });
});

// ---------------------------------------------------------------------------------------------
// Offline delay
// ---------------------------------------------------------------------------------------------

describe('offline delay', () => {
  function room(overrides?: ConfigOverrides) {
    const w = new World(overrides);
    const bob = w.connect('bob');
    bob.join('room');
    bob.watch('alice');
    const alice = w.connect('alice');
    alice.join('room');
    w.flush(bob, alice);
    return { w, bob, alice };
  }

  it('others see the leave only when offlineDelayMs has passed after the last session dropped', () => {
    const { w, bob, alice } = room();
    const t0 = w.now();
    alice.disconnect();
    w.advance(w.offlineDelay - 1);
    assert.deepEqual(bob.take(), []);
    assert.equal(w.member('room', 'alice').status, 'online');
    assert.equal(w.engine.stats().onlineUsers, 2);

    w.advance(1);
    const [leave, update, ...more] = bob.take();
    assert.deepEqual(more, []);
    assert.deepEqual(leave, { type: 'presence.leave', channel: 'room', userId: 'alice', lastSeen: iso(t0), seq: leave.seq });
    assert.equal(update.type, 'user.update');
    assert.equal(update.user.status, 'offline');
    assert.equal(update.user.lastSeen, iso(t0));
    assert.deepEqual(w.engine.stats(), { connections: 1, sessions: 1, onlineUsers: 1, channels: 1 });
  });

  it('a reconnect with the same sessionId inside the window resumes it without any event', () => {
    const { w, bob, alice } = room();
    alice.join('room2');
    alice.watch('carol');
    bob.join('room2');
    w.flush(bob, alice);

    alice.disconnect();
    w.advance(w.offlineDelay - 1);
    const again = w.connect('alice', { sessionId: alice.sessionId });
    const [welcome, ...rest] = again.take();
    assert.equal(welcome.type, 'welcome');
    assert.equal(welcome.resumed, true);
    assert.equal(welcome.sessionId, alice.sessionId);
    const syncs = rest.filter((f) => f.type === 'presence.sync');
    assert.deepEqual(syncs.map((s) => s.channel).sort(), ['room', 'room2']);
    for (const sync of syncs) {
      assert.deepEqual(sync.members.map((m: Frame) => m.userId).sort(), ['alice', 'bob']);
      assert.equal(sync.seq, 2, 'the current seq: two joins so far in each channel');
    }
    assert.deepEqual(rest.find((f) => f.type === 'user.sync').users.map((u: Frame) => u.userId), ['carol']);

    w.advance(w.offlineDelay * 3);
    assert.deepEqual(bob.take(), [], 'no leave, join, offline or online at others');
    assert.deepEqual(again.take(), []);
    assert.deepEqual(w.engine.stats(), { connections: 2, sessions: 2, onlineUsers: 2, channels: 2 });
  });

  it('the idle clock stops while a session is detached, so the window stays silent', () => {
    const { w, bob, alice } = room({ idleTimeoutMs: 1000, offlineDelayMs: 5000 });
    w.advance(600);
    alice.disconnect();
    const aboutAlice = () => bob.take().filter((f) => f.userId === 'alice' || f.member?.userId === 'alice' || f.user?.userId === 'alice');
    w.advance(3000);
    assert.deepEqual(aboutAlice(), [], 'no away while alice is merely reconnecting');
    const again = w.connect('alice', { sessionId: alice.sessionId });
    again.send({ type: 'activity' });
    w.advance(900);
    assert.deepEqual(aboutAlice(), []);
    w.advance(200);
    const [update] = aboutAlice().filter((f) => f.type === 'presence.update');
    assert.equal(update?.member.status, 'away', 'idle resumes counting once the session is back');
  });

  it('a reconnect with a new session inside the window that joins again causes no event', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    bob.watch('alice');
    const alice = w.connect('alice');
    alice.join('room', { mode: 'editing' });
    w.flush(bob);

    alice.disconnect();
    w.advance(w.offlineDelay / 2);
    const reloaded = w.connect('alice');
    assert.notEqual(reloaded.sessionId, alice.sessionId);
    reloaded.join('room', { mode: 'editing' });
    w.advance(w.offlineDelay * 3);
    assert.deepEqual(bob.take(), []);
    assert.deepEqual(w.member('room', 'alice').channelMeta, { mode: 'editing' });
  });

  it('a reconnect after the window is a new session and a new join', () => {
    const { w, bob, alice } = room();
    alice.disconnect();
    w.advance(w.offlineDelay);
    assert.equal(bob.take()[0].type, 'presence.leave');

    const again = w.connect('alice', { sessionId: alice.sessionId });
    const welcome = again.take('welcome')[0];
    assert.equal(welcome.resumed, false);
    assert.notEqual(welcome.sessionId, alice.sessionId, 'an ended id is not reused: the server mints a new one');
    assert.deepEqual(again.take(), [], 'no channel is remembered');
    assert.deepEqual(bob.take().map((f) => [f.type, f.user.status]), [['user.update', 'online']]);
    again.join('room');
    assert.equal(bob.take()[0].type, 'presence.join');
  });

  it('logout is an immediate leave and closes every session with 1000 LOGGED_OUT', () => {
    const { w, bob, alice } = room();
    const tab2 = w.connect('alice');
    tab2.join('room');
    w.flush(bob, alice, tab2);
    w.advance(1000);

    assert.equal(alice.send({ type: 'logout', ref: 7 }), undefined);
    assert.deepEqual(alice.take(), [{ type: 'ack', ref: 7 }]);
    assert.deepEqual(alice.closed, { code: 1000, reason: 'LOGGED_OUT' });
    assert.deepEqual(tab2.closed, { code: 1000, reason: 'LOGGED_OUT' });
    assert.deepEqual(tab2.take(), []);
    const [leave, update, ...more] = bob.take();
    assert.deepEqual(more, []);
    assert.deepEqual([leave.type, leave.userId, leave.lastSeen], ['presence.leave', 'alice', iso(w.now())]);
    assert.deepEqual([update.type, update.user.status], ['user.update', 'offline']);
    assert.deepEqual(w.engine.stats(), { connections: 1, sessions: 1, onlineUsers: 1, channels: 1 });

    // The transport reports the closes afterwards: nothing happens any more.
    alice.disconnect();
    tab2.disconnect();
    w.advance(w.offlineDelay * 2);
    assert.deepEqual(bob.take(), []);
    assert.equal(w.engine.stats().sessions, 1);
  });

  it('with offlineDelayMs 0 a disconnect is an immediate leave', () => {
    const { w, bob, alice } = room({ offlineDelayMs: 0 });
    alice.disconnect();
    const frames = bob.take();
    assert.deepEqual(frames.map((f) => f.type), ['presence.leave', 'user.update']);
    assert.equal(frames[0].lastSeen, iso(w.now()));
    assert.equal(w.engine.stats().sessions, 1);
  });

  it('a resume while the old socket is still open closes it with 4000 and ignores its late close', () => {
    const { w, bob, alice } = room();
    const again = w.connect('alice', { sessionId: alice.sessionId });
    assert.equal(again.take('welcome')[0].resumed, true);
    assert.deepEqual(alice.closed, { code: 4000, reason: 'SESSION_REPLACED' });
    alice.disconnect();
    assert.equal(alice.send({ type: 'leave', channel: 'room' }), undefined, 'a late frame of the old socket is ignored');
    w.advance(w.offlineDelay * 2);
    assert.deepEqual(bob.take(), []);
    assert.equal(w.member('room', 'alice').status, 'online');
    assert.deepEqual(w.engine.stats(), { connections: 2, sessions: 2, onlineUsers: 2, channels: 1 });
  });
});

// ---------------------------------------------------------------------------------------------
// lastSeen
// ---------------------------------------------------------------------------------------------

describe('lastSeen', () => {
  it('is the disconnect time, not the end of the offline delay', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    w.advance(10_000);
    alice.send({ type: 'activity' });
    const active = w.now();
    w.advance(10_000);
    const gone = w.now();
    alice.disconnect();
    w.advance(w.offlineDelay);
    assert.equal(bob.take('presence.leave')[0].lastSeen, iso(gone));
    const view = w.engine.userPresence('alice', TRUSTED);
    assert.equal(view.status, 'offline');
    assert.equal(view.lastSeen, iso(gone));
    assert.equal(view.lastActive, iso(active));
  });

  it('moves with activity while online (stored at once, carried by the next event)', () => {
    const store = new SnapshotStore();
    const w = new World({}, store);
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    assert.equal(w.engine.userPresence('alice', TRUSTED).lastSeen, iso(w.now()));
    w.advance(5000);
    alice.send({ type: 'activity' });
    const active = w.now();
    assert.equal(store.get('alice')!.lastSeenAt, active);
    assert.equal(store.get('alice')!.lastActiveAt, active);
    w.flush(bob);
    w.advance(5000);
    alice.status({ message: 'hi' }); // not activity itself
    const [update] = bob.take();
    assert.equal(update.member.lastSeen, iso(active));
    assert.equal(update.member.lastActive, iso(active));
    assert.equal(w.engine.userPresence('alice', TRUSTED).lastSeen, iso(active));
  });

  it('freezes when the user goes invisible: activity while invisible does not move it', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.join('room');
    w.advance(1000);
    alice.send({ type: 'activity' });
    const active = w.now();
    w.advance(1000);
    const hidden = w.now();
    alice.status({ status: 'invisible' });
    w.advance(1000);
    alice.send({ type: 'activity' });
    alice.typing('room', true);
    w.connect('alice'); // a new tab is no sign of life either
    let view = w.engine.userPresence('alice', TRUSTED);
    assert.equal(view.lastSeen, iso(hidden));
    assert.equal(view.lastActive, iso(active));

    alice.disconnect();
    w.advance(w.offlineDelay * 2);
    view = w.engine.userPresence('alice', TRUSTED);
    assert.equal(view.lastSeen, iso(hidden));
    assert.equal(view.lastActive, iso(active));
  });

  it('is persisted to the store at disconnect, at logout and when going invisible', () => {
    const store = new SnapshotStore();
    const w = new World({}, store);
    const alice = w.connect('alice');
    w.advance(5000);
    alice.disconnect();
    assert.equal(store.get('alice')!.lastSeenAt, w.now(), 'disconnect');

    const bob = w.connect('bob');
    w.advance(5000);
    bob.send({ type: 'logout' });
    assert.equal(store.get('bob')!.lastSeenAt, w.now(), 'logout');

    const carol = w.connect('carol');
    w.advance(5000);
    carol.status({ status: 'invisible' });
    assert.equal(store.get('carol')!.lastSeenAt, w.now(), 'invisible');

    // A new engine on the same store (a restart) still knows when bob was last seen.
    const restarted = new PresenceNode({ config: w.config, clock: w.clock, store });
    assert.equal(restarted.userPresence('bob', TRUSTED).lastSeen, iso(w.now() - 5000));
  });
});

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

describe('channels', () => {
  it('membership is per user: join and leave fire on the first join and the last leave only', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const a1 = w.connect('alice');
    const a2 = w.connect('alice');
    w.flush(bob);

    assert.deepEqual(a1.join('room'), {});
    assert.deepEqual(bob.take().map((f) => [f.type, f.member.userId]), [['presence.join', 'alice']]);
    assert.deepEqual(a1.take('presence.join'), [], 'the joiner gets a sync, not its own join');
    a2.join('room');
    assert.deepEqual(bob.take(), [], 'second session joining');
    assert.deepEqual(a1.leave('room'), {});
    assert.deepEqual(bob.take(), [], 'one of two sessions leaving');
    assert.equal(w.engine.channelPresence('room', { limit: 10 }).count, 2);

    w.advance(1000);
    a2.leave('room');
    const [leave, ...more] = bob.take();
    assert.deepEqual(more, []);
    assert.deepEqual([leave.type, leave.userId, leave.lastSeen], ['presence.leave', 'alice', iso(w.now())]);
    assert.equal(w.engine.channelPresence('room', { limit: 10 }).count, 1);
  });

  it('join meta is the member channelMeta; channel.meta merges it and sends presence.update to all', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('doc');
    const alice = w.connect('alice');
    w.flush(bob);
    const joinedAt = iso(w.now());

    alice.join('doc', { mode: 'viewing', cursor: 1 });
    const [join] = bob.take();
    assert.deepEqual(join.member.channelMeta, { mode: 'viewing', cursor: 1 });
    assert.equal(join.member.joinedAt, joinedAt);
    assert.deepEqual(join.member.meta, {}, 'channel meta is not user meta');
    const sync = alice.take('presence.sync')[0];
    assert.deepEqual(sync.members.find((m: Frame) => m.userId === 'alice').channelMeta, { mode: 'viewing', cursor: 1 });

    w.advance(1000);
    const ack = alice.send({ type: 'channel.meta', channel: 'doc', meta: { mode: 'editing', cursor: null } });
    assert.deepEqual(ack, { channelMeta: { mode: 'editing' } });
    const [update] = bob.take();
    assert.equal(update.type, 'presence.update');
    assert.deepEqual(update.member.channelMeta, { mode: 'editing' });
    assert.equal(update.member.joinedAt, joinedAt);
    assert.equal(alice.take('presence.update').length, 1, "the member's own sessions are told too");

    alice.send({ type: 'channel.meta', channel: 'doc', meta: { mode: 'editing' } });
    assert.deepEqual(bob.take(), [], 'an unchanged channel meta is no event');

    // A second session joining with meta merges into the member's channel meta.
    const tab2 = w.connect('alice');
    tab2.join('doc', { cursor: 9 });
    assert.deepEqual(bob.take()[0].member.channelMeta, { mode: 'editing', cursor: 9 });
    assert.deepEqual(w.member('doc', 'alice').channelMeta, { mode: 'editing', cursor: 9 });
    throwsCode(() => alice.send({ type: 'channel.meta', channel: 'doc', meta: { blob: 'x'.repeat(3000) } }), 'META_TOO_LARGE');
  });

  it('numbers the presence events of a channel one by one; presence.sync carries the current seq', () => {
    const w = new World();
    const obs = w.connect('obs');
    obs.join('room');
    const startSeq = obs.take('presence.sync')[0].seq;
    const alice = w.connect('alice');
    const bob = w.connect('bob');

    alice.join('room'); // join
    alice.typing('room', true); // not a presence event
    alice.status({ status: 'away' }); // update
    alice.send({ type: 'channel.meta', channel: 'room', meta: { x: 1 } }); // update
    bob.join('room'); // join
    bob.join('elsewhere'); // another channel's seq
    alice.status({ status: 'invisible' }); // leave
    alice.status({ status: 'online' }); // join
    alice.leave('room'); // leave
    bob.disconnect();
    w.advance(w.offlineDelay); // leave

    const events = obs.take().filter((f) => f.type.startsWith('presence.'));
    assert.deepEqual(
      events.map((f) => f.type),
      ['presence.join', 'presence.update', 'presence.update', 'presence.join', 'presence.leave', 'presence.join', 'presence.leave', 'presence.leave'],
    );
    assert.deepEqual(
      events.map((f) => f.seq),
      events.map((_, i) => startSeq + 1 + i),
    );
    const late = w.connect('late');
    late.join('room');
    assert.equal(late.take('presence.sync')[0].seq, startSeq + events.length + 1, 'current seq, after its own join');
    assert.equal(obs.take('presence.join')[0].seq, startSeq + events.length + 1);
  });

  it('refuses leave, typing and channel.meta on a channel the session has not joined (NOT_IN_CHANNEL)', () => {
    const w = new World();
    const alice = w.connect('alice');
    const other = w.connect('alice');
    other.join('room'); // joined by another session of the same user only
    for (const channel of ['nowhere', 'room']) {
      throwsCode(() => alice.leave(channel), 'NOT_IN_CHANNEL');
      throwsCode(() => alice.typing(channel, true), 'NOT_IN_CHANNEL');
      throwsCode(() => alice.send({ type: 'channel.meta', channel, meta: {} }), 'NOT_IN_CHANNEL');
    }
  });

  it('refuses malformed channel names (INVALID_CHANNEL)', () => {
    const w = new World();
    const alice = w.connect('alice');
    for (const channel of ['', 'a b', 'a/b', 'émoji', 'x'.repeat(129), 'tab\t']) {
      throwsCode(() => alice.join(channel), 'INVALID_CHANNEL');
      throwsCode(() => w.engine.channelPresence(channel, { limit: 1 }), 'INVALID_CHANNEL');
    }
    assert.deepEqual(alice.join('Az09_:.@-' + 'x'.repeat(119)), {});
    assert.equal(w.engine.stats().channels, 1);
  });

  it('limits the channels per session (TOO_MANY_CHANNELS), leaving nothing behind', () => {
    const w = new World({ limits: { maxChannelsPerSession: 2 } });
    const alice = w.connect('alice');
    alice.join('c1');
    alice.join('c2');
    alice.join('c2'); // joining again is not a new channel
    throwsCode(() => alice.join('c3'), 'TOO_MANY_CHANNELS');
    assert.equal(w.engine.channelPresence('c3', { limit: 1 }).count, 0);
    assert.equal(w.engine.stats().channels, 2);
    alice.leave('c1');
    alice.join('c3');
    // The limit is per session: another tab has its own.
    const tab2 = w.connect('alice');
    tab2.join('c4');
    tab2.join('c5');
    assert.equal(w.engine.stats().channels, 4);
  });

  it("enforces the token's channel allowlist (CHANNEL_FORBIDDEN)", () => {
    const w = new World();
    const alice = w.connect('alice', { identity: { channels: ['doc:*', 'lobby'] } });
    alice.join('doc:42');
    alice.join('lobby');
    for (const channel of ['chat:1', 'lobby2', 'xdoc:1']) throwsCode(() => alice.join(channel), 'CHANNEL_FORBIDDEN');
    const none = w.connect('bob', { identity: { channels: [] } });
    throwsCode(() => none.join('lobby'), 'CHANNEL_FORBIDDEN');
    assert.equal(w.engine.channelPresence('chat:1', { limit: 1 }).count, 0);
  });

  it('channelPresence lists visible members by user id, in pages; unknown channels are empty', () => {
    const w = new World();
    for (const id of ['dave', 'bob', 'carol', 'alice']) w.connect(id).join('room');
    const first = w.engine.channelPresence('room', { limit: 3 });
    assert.equal(first.count, 4);
    assert.deepEqual(first.members.map((m) => m.userId), ['alice', 'bob', 'carol']);
    const second = w.engine.channelPresence('room', { limit: 3, cursor: first.nextCursor });
    assert.deepEqual(second.members.map((m) => m.userId), ['dave']);
    assert.equal(second.nextCursor, undefined);
    assert.deepEqual(w.engine.channelPresence('unknown', { limit: 3 }), { channel: 'unknown', count: 0, statuses: { online: 0, away: 0, busy: 0 }, members: [] });
  });
});

describe('joinedAt is when the member last became visible in the channel', () => {
  /** alice's joinedAt as the HTTP list, a fresh sync of `observer` and the given events show it. */
  function joinedAtEverywhere(w: World, observer: Client, events: Frame[]): { list: string; sync: string; events: string[] } {
    observer.join('room');
    const [sync] = observer.take('presence.sync');
    return {
      list: w.member('room', 'alice').joinedAt,
      sync: sync.members.find((m: Frame) => m.userId === 'alice').joinedAt,
      events: events.filter((f) => f.member?.userId === 'alice').map((f) => `${f.type} ${f.member.joinedAt}`),
    };
  }

  it('a join while invisible counts from the return to visible, and every return resets it', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.status({ status: 'invisible' });
    alice.join('room');
    w.advance(3000);
    const shown = w.now();
    alice.status({ status: 'online' });
    assert.deepEqual(joinedAtEverywhere(w, bob, bob.take()), { list: iso(shown), sync: iso(shown), events: [`presence.join ${iso(shown)}`] });

    w.advance(1000);
    alice.send({ type: 'meta', meta: { name: 'Alice' } });
    assert.deepEqual(bob.take().map((f) => `${f.type} ${f.member.joinedAt}`), [`presence.update ${iso(shown)}`], 'an update keeps it');

    alice.status({ status: 'invisible' });
    w.advance(2000);
    const again = w.now();
    alice.status({ status: 'busy' });
    assert.deepEqual(joinedAtEverywhere(w, bob, bob.take().filter((f) => f.type !== 'presence.leave')), {
      list: iso(again),
      sync: iso(again),
      events: [`presence.join ${iso(again)}`],
    });

    // A later join while visible counts from itself; a second session's join changes nothing.
    w.advance(500);
    alice.join('other');
    assert.equal(w.member('other', 'alice').joinedAt, iso(w.now()));
    w.advance(500);
    w.connect('alice').join('room');
    assert.equal(w.member('room', 'alice').joinedAt, iso(again));
  });

  it('a user who was visible at the join keeps the join time until they hide', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    const joined = w.now();
    alice.join('room');
    w.advance(1000);
    alice.status({ status: 'away' });
    assert.equal(w.member('room', 'alice').joinedAt, iso(joined));
  });

  it('an expiring invisible status resets it to the expiry time', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.status({ status: 'invisible', expiresAt: iso(w.now() + 1000) });
    alice.join('room');
    w.advance(1000);
    const [join] = bob.take('presence.join');
    assert.equal(join.member.joinedAt, iso(w.now()));
    assert.equal(w.member('room', 'alice').joinedAt, iso(w.now()));
  });

  it('on another node it comes from the replicated record, not from when that node heard of it', () => {
    const clock = new ManualClock();
    const store = new SnapshotStore();
    const engine = new PresenceNode({ config: resolveConfig({}), clock, store, cluster: stubCluster('b', ['a', 'b']) });
    const frames: Frame[] = [];
    const bob = engine.connect({ identity: { userId: 'bob', meta: {} }, device: 'web' }, { send: (json) => frames.push(...serverMessages(json)), close: () => {} });
    engine.handle(bob, { type: 'join', channel: 'room' });
    const invisibleJoin = clock.now();
    const record = (manual: UserRecord['manual'], shownAt?: number): UserRecord => ({
      userId: 'alice',
      manual,
      meta: {},
      visibility: 'everyone',
      contacts: [],
      lastSeenAt: invisibleJoin,
      lastActiveAt: invisibleJoin,
      ...(shownAt === undefined ? {} : { shownAt }),
    });
    const hidden = { status: 'invisible' as const, state: null, message: null, expiresAt: null };
    const automatic = { status: null, state: null, message: null, expiresAt: null };
    const session: SessionSnapshot = { id: 'alice-on-a', userId: 'alice', device: 'web', idle: false, attached: true, channels: { room: { meta: {}, joinedAt: invisibleJoin } } };
    // Alice joined on node a while invisible: this node holds her record as the shared store does.
    store.save(record(hidden));
    engine.applyOps('a', [{ op: 'session', session }]);
    assert.deepEqual(frames.filter((f) => f.type === 'presence.join'), [], 'invisible: no join');
    clock.advance(3000);
    const shown = clock.now();
    // This node hears of it 400 ms late: the join time is node a's stamp all the same.
    clock.advance(400);
    frames.length = 0;
    engine.applyRecord(record(automatic, shown));
    const joins = frames.filter((f) => f.type === 'presence.join');
    assert.deepEqual(joins.map((f) => f.member.joinedAt), [iso(shown)]);
    assert.equal(engine.channelPresence('room', { limit: 10 }).members.find((m) => m.userId === 'alice')!.joinedAt, iso(shown));

    // A node that missed the time out of sight (it read only the newest record) updates it.
    clock.advance(1000);
    const later = clock.now() - 200;
    frames.length = 0;
    engine.applyRecord(record(automatic, later));
    assert.deepEqual(frames.map((f) => `${f.type} ${f.member?.joinedAt}`), [`presence.update ${iso(later)}`]);
    assert.equal(engine.channelPresence('room', { limit: 10 }).members.find((m) => m.userId === 'alice')!.joinedAt, iso(later));
  });
});

// ---------------------------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------------------------

describe('snapshots agree with events', () => {
  it('the first presence.sync plus every later event rebuilds exactly the current member list', () => {
    const w = new World({ idleTimeoutMs: 5_000 });
    const observer = w.connect('observer');
    observer.join('room');
    const members = new Map<string, Frame>();
    let seq = 0;
    const apply = () => {
      for (const f of observer.take()) {
        if (f.type === 'presence.sync') {
          members.clear();
          for (const m of f.members) members.set(m.userId, m);
          seq = f.seq;
          continue;
        }
        if (!String(f.type).startsWith('presence.')) continue;
        assert.equal(f.seq, seq + 1, 'no gap in seq');
        seq = f.seq;
        if (f.type === 'presence.leave') members.delete(f.userId);
        else members.set(f.member.userId, f.member);
      }
    };
    const alice = w.connect('alice', { device: 'web' });
    alice.join('room', { mode: 'viewing' });
    const bob = w.connect('bob');
    bob.join('room');
    w.advance(1000);
    alice.send({ type: 'activity' }); // moves timestamps without an event
    bob.status({ status: 'busy', message: 'In a call' });
    w.advance(6000); // both idle: alice away, bob stays busy
    alice.send({ type: 'channel.meta', channel: 'room', meta: { mode: 'editing' } });
    const phone = w.connect('alice', { device: 'ios' });
    phone.join('room');
    bob.send({ type: 'meta', meta: { name: 'Bob' } });
    bob.status({ status: 'invisible' });
    w.advance(500);
    bob.status({ status: 'online' });
    phone.disconnect();
    w.advance(w.offlineDelay + 1);
    alice.send({ type: 'activity' });
    const carol = w.connect('carol');
    carol.join('room');
    carol.leave('room');
    apply();
    const snapshot = w.engine.channelPresence('room', { limit: 100 }).members;
    assert.deepEqual(
      [...members.values()].sort((a, b) => a.userId.localeCompare(b.userId)),
      snapshot,
      'events applied to the first sync equal the HTTP snapshot',
    );
    observer.join('room'); // a resync
    const [sync] = observer.take('presence.sync');
    assert.deepEqual(sync.members.sort((a: Frame, b: Frame) => a.userId.localeCompare(b.userId)), snapshot);
    assert.equal(sync.seq, seq);
  });
});

describe('typing', () => {
  const TYPING = 3_000;

  const room = bobAndTwoAliceTabs;
  const typingFrames = (c: Client) => c.take('typing').map((f) => `${f.userId}:${f.typing}`);

  it("goes to the channel's other members only, never to the typer's own sessions", () => {
    const { bob, a1, a2 } = room();
    assert.deepEqual(a1.typing('room', true), {});
    assert.deepEqual(bob.take(), [{ type: 'typing', channel: 'room', userId: 'alice', typing: true }]);
    assert.deepEqual(a1.take(), []);
    assert.deepEqual(a2.take(), []);
  });

  it('a refresh within the timeout sends nothing; expiry after typingTimeoutMs without refresh sends typing:false', () => {
    const { w, bob, a1, a2 } = room();
    a1.typing('room', true);
    bob.take();
    w.advance(TYPING - 1);
    a2.typing('room', true); // any session of the user refreshes
    assert.deepEqual(bob.take(), []);
    w.advance(TYPING - 1);
    assert.deepEqual(bob.take(), []);
    w.advance(1);
    assert.deepEqual(typingFrames(bob), ['alice:false']);
    assert.deepEqual(a1.take(), []);
  });

  it('ends on an explicit typing:false, which is sent once', () => {
    const { bob, a1 } = room();
    a1.typing('room', false);
    assert.deepEqual(bob.take(), [], 'no transition');
    a1.typing('room', true);
    a1.typing('room', false);
    a1.typing('room', false);
    assert.deepEqual(typingFrames(bob), ['alice:true', 'alice:false']);
  });

  it('ends when the typer leaves the channel', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.typing('room', true);
    bob.take();
    alice.leave('room');
    assert.deepEqual(bob.take().map((f) => f.type === 'typing' ? `typing:${f.typing}` : f.type), ['typing:false', 'presence.leave']);
    w.advance(TYPING * 2);
    assert.deepEqual(bob.take(), []);
  });

  it('ends at once when the typer disconnects, before the offline delay', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.typing('room', true);
    bob.take();
    alice.disconnect();
    assert.deepEqual(typingFrames(bob), ['alice:false']);
    w.advance(TYPING * 2);
    assert.deepEqual(bob.take(), []);
  });

  it("is never broadcast for an invisible user", () => {
    const { w, bob, a1 } = room();
    a1.status({ status: 'invisible' });
    bob.take();
    a1.typing('room', true);
    w.advance(TYPING * 2);
    a1.typing('room', true);
    a1.typing('room', false);
    assert.deepEqual(bob.take(), []);
  });

  it('going invisible while typing sends typing:false, then presence.leave', () => {
    const { bob, a1 } = room();
    a1.typing('room', true);
    bob.take();
    a1.status({ status: 'invisible' });
    assert.deepEqual(
      bob.take().map((f) => (f.type === 'typing' ? `typing:${f.typing}` : f.type)),
      ['typing:false', 'presence.leave'],
    );
  });

  it('typing counts as activity', () => {
    const { w, bob, a1, a2 } = room();
    a1.send({ type: 'idle' });
    a2.send({ type: 'idle' });
    assert.equal(bob.take()[0].member.status, 'away');
    w.advance(1000);
    a1.typing('room', true);
    const update = bob.take().find((f) => f.type === 'presence.update');
    assert.equal(update.member.status, 'online');
  });
});

// ---------------------------------------------------------------------------------------------
// Watching and privacy
// ---------------------------------------------------------------------------------------------

describe('watching users', () => {
  it('answers watch with user.sync, sends user.update on changes, and nothing after unwatch', () => {
    const w = new World();
    const alice = w.connect('alice', { identity: { meta: { name: 'Alice' } } });
    const bob = w.connect('bob');
    w.flush(bob);

    assert.deepEqual(bob.watch('alice', 'nobody-yet', 'alice'), { watching: 2 });
    const [sync] = bob.take();
    assert.equal(sync.type, 'user.sync');
    assert.deepEqual(sync.users.map((u: Frame) => [u.userId, u.status]), [
      ['alice', 'online'],
      ['nobody-yet', 'offline'],
    ]);
    assert.deepEqual(sync.users[0].meta, { name: 'Alice' });
    assert.deepEqual(sync.users[1], { userId: 'nobody-yet', status: 'offline', meta: {}, lastSeen: null, devices: [] });

    alice.status({ status: 'busy', message: 'deep work' });
    let [update] = bob.take();
    assert.equal(update.type, 'user.update');
    assert.equal(update.user.status, 'busy');
    assert.equal(update.user.message, 'deep work');
    alice.send({ type: 'meta', meta: { avatar: 'a.png' } });
    [update] = bob.take();
    assert.deepEqual(update.user.meta, { name: 'Alice', avatar: 'a.png' });
    w.connect('nobody-yet');
    assert.equal(bob.take()[0].user.status, 'online');

    assert.deepEqual(bob.send({ type: 'unwatch', users: ['alice'] }), { watching: 1 });
    alice.status({ status: 'away' });
    alice.send({ type: 'logout' });
    assert.deepEqual(bob.take(), []);
  });

  it('limits the watched users per session (TOO_MANY_WATCHES)', () => {
    const w = new World({ limits: { maxWatchedUsers: 3 } });
    const bob = w.connect('bob');
    bob.watch('a', 'b');
    bob.watch('a', 'b', 'c'); // only c is new
    throwsCode(() => bob.watch('d'), 'TOO_MANY_WATCHES');
    bob.send({ type: 'unwatch', users: ['a'] });
    assert.deepEqual(bob.watch('d'), { watching: 3 });
    throwsCode(() => bob.watch(''), 'INVALID_USER_ID');
  });
});

describe('privacy', () => {
  function setup(identity: ConnectOptions['identity']) {
    const w = new World();
    const alice = w.connect('alice', { identity: { meta: { name: 'Alice' }, ...identity } });
    alice.join('room');
    alice.status({ state: 'in-call', message: 'secret' });
    const friend = w.connect('friend');
    friend.watch('alice');
    const stranger = w.connect('stranger');
    stranger.watch('alice');
    const member = w.connect('member');
    member.join('room');
    w.flush(alice, friend, stranger, member);
    return { w, alice, friend, stranger, member };
  }
  const hidden = { userId: 'alice', status: 'offline', meta: {}, lastSeen: null, devices: [] };

  it('visibility nobody: watchers and non-trusted queries see the hidden view; trusted and co-members see all', () => {
    const { w, alice, friend, stranger, member } = setup({ visibility: 'nobody' });
    assert.deepEqual(w.engine.userPresence('alice', as('stranger')), hidden);
    assert.deepEqual(w.engine.queryUsers(['alice', 'member'], as('friend'))[0], hidden);
    assert.equal(w.engine.queryUsers(['alice', 'member'], as('friend'))[1].status, 'online');
    assert.equal(w.engine.userPresence('alice', as('alice')).status, 'busy', 'the user sees themselves');
    const trusted = w.engine.userPresence('alice', TRUSTED);
    assert.deepEqual([trusted.status, trusted.state, trusted.message, trusted.meta], ['busy', 'in-call', 'secret', { name: 'Alice' }]);

    const late = w.connect('late');
    late.watch('alice');
    assert.deepEqual(late.take('user.sync')[0].users, [hidden]);

    alice.status({ status: 'away' });
    assert.deepEqual(friend.take(), []);
    assert.deepEqual(stranger.take(), []);
    assert.equal(member.take('presence.update')[0].member.status, 'away', 'channel co-members still see each other');
    assert.equal(w.member('room', 'alice').message, 'secret');
  });

  it('visibility contacts: only contacts see the user', () => {
    const { w, alice, friend, stranger, member } = setup({ visibility: 'contacts', contacts: ['friend'] });
    assert.equal(w.engine.userPresence('alice', as('friend')).status, 'busy');
    assert.deepEqual(w.engine.userPresence('alice', as('stranger')), hidden);
    alice.status({ status: 'away' });
    assert.equal(friend.take()[0].user.status, 'away');
    assert.deepEqual(stranger.take(), []);
    assert.equal(member.take('presence.update')[0].member.status, 'away');
    assert.equal(w.engine.userPresence('alice', TRUSTED).status, 'away');
  });

  it('changing visibility tells watchers who lose sight the hidden view, and those who gain it the real one', () => {
    const { w, alice, friend, stranger } = setup({ contacts: ['friend'] });
    alice.status({ visibility: 'contacts' });
    assert.equal(friend.take()[0].user.status, 'busy');
    assert.deepEqual(stranger.take(), [{ type: 'user.update', user: hidden }]);
    w.engine.updateUser('alice', { contacts: ['friend', 'stranger'] });
    assert.equal(stranger.take()[0].user.status, 'busy');
    alice.status({ visibility: 'everyone' });
    assert.equal(w.engine.userPresence('alice', as('nobody-at-all')).status, 'busy');
  });
});

// ---------------------------------------------------------------------------------------------
// Invisible is indistinguishable from offline
// ---------------------------------------------------------------------------------------------

describe('invisible leaks nothing', () => {
  type Mode = 'disconnect' | 'logout' | 'invisible';

  /**
   * One world per mode, driven at the same clock times. Observers: a channel member, a watcher,
   * and later a new joiner and a new watcher. At t0 user X disconnects, logs out, or goes
   * invisible; afterwards the invisible X keeps doing things. Returns all that observers saw.
   */
  function observe(mode: Mode) {
    const w = new World();
    const member = w.connect('member');
    member.join('room');
    const watcher = w.connect('watcher');
    watcher.watch('x');
    const x = w.connect('x', { identity: { meta: { name: 'X' } } });
    x.join('room', { cursor: 1 });
    x.status({ state: 'in-call', message: 'private' });
    w.advance(5000);
    x.typing('room', true);
    w.advance(1000);

    const t0 = w.now();
    if (mode === 'disconnect') x.disconnect();
    if (mode === 'logout') x.send({ type: 'logout' });
    if (mode === 'invisible') x.status({ status: 'invisible' });
    w.advance(w.offlineDelay + 1000);

    let phone: Client | undefined;
    if (mode === 'invisible') {
      x.typing('room', true);
      x.send({ type: 'activity' });
      x.send({ type: 'channel.meta', channel: 'room', meta: { cursor: 2 } });
      x.join('room2', { here: true });
      x.join('secret');
      x.watch('member');
      phone = w.connect('x', { device: 'ios' });
      phone.join('room');
      phone.typing('room', true);
    }
    w.advance(1000);
    member.join('room2');
    const joiner = w.connect('joiner');
    joiner.join('room');
    const lateWatcher = w.connect('late-watcher');
    lateWatcher.watch('x', 'member');
    if (mode === 'invisible') {
      x.send({ type: 'idle' });
      x.typing('room2', true);
      w.advance(w.config.typingTimeoutMs * 2);
    }
    const snapshot = () => ({
      stats: (({ onlineUsers, channels }) => ({ onlineUsers, channels }))(w.engine.stats()),
      room: w.engine.channelPresence('room', { limit: 100 }),
      room2: w.engine.channelPresence('room2', { limit: 100 }),
      secret: w.engine.channelPresence('secret', { limit: 100 }),
      trusted: w.engine.userPresence('x', TRUSTED),
      asMember: w.engine.userPresence('x', as('member')),
      query: w.engine.queryUsers(['x', 'member'], as('joiner')),
    });
    const during = snapshot();

    // Finally the invisible X really leaves too: still nothing to see.
    if (mode === 'invisible') {
      x.disconnect();
      phone!.disconnect();
    }
    w.advance(w.offlineDelay * 2);
    const after = snapshot();

    const observers = { member, watcher, joiner, lateWatcher };
    // Minted session ids count X's sessions, which is not what is compared: each observer's is named
    // after it (and so is its session token, which is signed over the id).
    const named = (name: string, e: { at: number; frame: Frame }) =>
      e.frame.type === 'welcome' ? { ...e, frame: { ...e.frame, sessionId: `${name}'s session`, sessionToken: `${name}'s token` } } : e;
    const seen = Object.fromEntries(Object.entries(observers).map(([name, c]) => [name, c.timeline.map((e) => named(name, e))]));
    return { t0, seen, during, after };
  }

  const frames = (seen: Record<string, { at: number; frame: Frame }[]>) =>
    Object.fromEntries(Object.entries(seen).map(([name, timeline]) => [name, timeline.map((e) => e.frame)]));

  it('observers see exactly what they would see if X had gone offline', () => {
    const offline = observe('disconnect');
    const invisible = observe('invisible');
    assert.deepEqual(frames(invisible.seen), frames(offline.seen));
    assert.deepEqual(invisible.during, offline.during);
    assert.deepEqual(invisible.after, offline.after);

    // Sanity: the comparison is about something.
    const leave = offline.seen.member.find((e) => e.frame.type === 'presence.leave')!.frame;
    assert.deepEqual([leave.userId, leave.lastSeen], ['x', iso(offline.t0)]);
    assert.equal(offline.during.trusted.status, 'offline');
    assert.equal(offline.during.trusted.lastSeen, iso(offline.t0));
    assert.equal('state' in offline.during.trusted || 'message' in offline.during.trusted, false);
    assert.deepEqual(offline.during.stats, { onlineUsers: 4, channels: 2 });
    assert.equal(offline.during.room.count, 2);
    assert.equal(offline.during.secret.count, 0);
  });

  it('with the same timing as a logout (an immediate, explicit offline)', () => {
    const logout = observe('logout');
    const invisible = observe('invisible');
    assert.deepEqual(invisible.seen, logout.seen);
    assert.deepEqual(invisible.during, logout.during);
    assert.deepEqual(invisible.after, logout.after);
  });
});

// ---------------------------------------------------------------------------------------------
// Session limits and resume
// ---------------------------------------------------------------------------------------------

describe('session limits and resume', () => {
  it('refuses a session over the limit (TOO_MANY_SESSIONS), but evicts a lingering detached one first', () => {
    const w = new World({ limits: { maxSessionsPerUser: 2 } });
    const a1 = w.connect('alice');
    const a2 = w.connect('alice');
    throwsCode(() => w.connect('alice'), 'TOO_MANY_SESSIONS');
    assert.deepEqual(w.engine.stats(), { connections: 2, sessions: 2, onlineUsers: 1, channels: 0 });

    a2.disconnect();
    const a3 = w.connect('alice');
    assert.equal(a3.take('welcome')[0].resumed, false);
    assert.deepEqual(w.engine.stats(), { connections: 2, sessions: 2, onlineUsers: 1, channels: 0 });
    // The lingering session was evicted: its id resumes nothing, and the limit holds again.
    throwsCode(() => w.connect('alice', { sessionId: a2.sessionId }), 'TOO_MANY_SESSIONS');
    a1.send({ type: 'logout' });
    assert.deepEqual(w.engine.stats(), { connections: 0, sessions: 0, onlineUsers: 0, channels: 0 });
  });

  it('a resume with a token that allows fewer channels leaves the ones no longer allowed', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room:1');
    bob.join('secret:1');
    const alice = w.connect('alice', { identity: { channels: ['room:*', 'secret:*'] } });
    alice.join('room:1');
    alice.join('secret:1');
    alice.disconnect();
    bob.take();
    const again = w.connect('alice', { sessionId: alice.sessionId, identity: { channels: ['room:*'] } });
    assert.equal(again.take('welcome')[0].resumed, true);
    assert.deepEqual(bob.take().map((f) => [f.type, f.channel]), [['presence.leave', 'secret:1']]);
    assert.deepEqual(w.engine.channelPresence('room:1', { limit: 10 }).members.map((m) => m.userId).sort(), ['alice', 'bob']);
    throwsCode(() => again.send({ type: 'typing', channel: 'secret:1', typing: true }), 'NOT_IN_CHANNEL');
  });

  it('does not resume a session of another user', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.join('room');
    const stolen = w.connect('mallory', { sessionId: alice.sessionId });
    const welcome = stolen.take('welcome')[0];
    assert.equal(welcome.resumed, false);
    assert.equal(welcome.userId, 'mallory');
    assert.notEqual(welcome.sessionId, alice.sessionId);
    assert.equal(alice.closed, undefined);
    assert.deepEqual(stolen.take(), []);
    assert.equal(w.member('room', 'alice').status, 'online');
    throwsCode(() => stolen.leave('room'), 'NOT_IN_CHANNEL');

    // Not while alice's session lingers either.
    alice.disconnect();
    const again = w.connect('mallory', { sessionId: alice.sessionId });
    assert.equal(again.take('welcome')[0].resumed, false);
    assert.notEqual(again.sessionId, alice.sessionId);
    const back = w.connect('alice', { sessionId: alice.sessionId });
    assert.equal(back.take('welcome')[0].resumed, true);
  });

  it('mints the id of every new session: a client-proposed unknown id, well-formed or not, is never adopted', () => {
    const w = new World();
    for (const proposed of ['client-chosen-id', 'bad id!', 'short']) {
      const client = w.connect('alice', { sessionId: proposed });
      assert.equal(client.take('welcome')[0].resumed, false);
      assert.match(client.sessionId, /^session-/);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP path
// ---------------------------------------------------------------------------------------------

describe('updateUser (HTTP API)', () => {
  it("changes an offline user's meta and status, which apply when they connect", () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    bob.watch('carol');
    w.flush(bob);

    const self = w.engine.updateUser('carol', { meta: { name: 'Carol' }, status: 'busy', message: 'on leave' });
    assert.equal(self.status, 'offline');
    assert.equal(self.manualStatus, 'busy');
    assert.deepEqual(self.meta, { name: 'Carol' });
    const [update] = bob.take();
    assert.equal(update.type, 'user.update');
    assert.deepEqual([update.user.status, update.user.meta], ['offline', { name: 'Carol' }]);
    assert.equal('message' in update.user, false, 'an offline user shows no message');

    const carol = w.connect('carol');
    assert.equal(carol.take('welcome')[0].self.manualStatus, 'busy');
    carol.join('room');
    const join = bob.take('presence.join')[0];
    assert.deepEqual([join.member.status, join.member.message, join.member.meta], ['busy', 'on leave', { name: 'Carol' }]);
  });

  it('status, message and meta in one request are one presence.update, not one per field', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    w.flush(bob);
    w.engine.updateUser('alice', { status: 'busy', message: 'In a call', meta: { name: 'Alice' } });
    const updates = bob.take('presence.update');
    assert.equal(updates.length, 1);
    assert.deepEqual([updates[0].member.status, updates[0].member.message, updates[0].member.meta], ['busy', 'In a call', { name: 'Alice' }]);
  });

  it("status 'offline' logs the user out at once", () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    w.flush(bob);
    const self = w.engine.updateUser('alice', { status: 'offline' });
    assert.equal(self.status, 'offline');
    assert.deepEqual(alice.closed, { code: 1000, reason: 'LOGGED_OUT' });
    assert.deepEqual(bob.take().map((f) => f.type), ['presence.leave']);
    assert.equal(w.engine.stats().sessions, 1);
    assert.equal(w.engine.updateUser('alice', { status: 'offline' }).status, 'offline', 'offline again is fine');
  });

  it('reaches WebSocket members and watchers exactly like the same update sent over the socket', () => {
    const run = (viaHttp: boolean) => {
      const w = new World();
      const bob = w.connect('bob');
      bob.join('room');
      bob.watch('alice');
      const alice = w.connect('alice');
      alice.join('room');
      w.flush(bob);
      w.advance(1000);
      if (viaHttp) {
        w.engine.updateUser('alice', { status: 'away', state: 'lunch', message: 'back at 2' });
        w.engine.updateUser('alice', { meta: { name: 'Alice' } });
      } else {
        alice.status({ status: 'away', state: 'lunch', message: 'back at 2' });
        alice.send({ type: 'meta', meta: { name: 'Alice' } });
      }
      return bob.take();
    };
    const http = run(true);
    assert.equal(http.length, 4);
    assert.deepEqual(http, run(false));
  });

  it('refuses an invalid patch as a whole, changing nothing', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.send({ type: 'meta', meta: { bio: 'x'.repeat(1500) } });
    w.flush(bob);

    throwsCode(() => w.engine.updateUser('alice', { status: 'busy', meta: { more: 'y'.repeat(1000) } }), 'META_TOO_LARGE');
    throwsCode(() => w.engine.updateUser('alice', { status: 'busy', contacts: [''] }), 'INVALID_USER_ID');
    throwsCode(() => w.engine.updateUser('alice', { status: 'offline', state: 'napping' }), 'UNKNOWN_STATE');
    throwsCode(() => w.engine.updateUser('', { status: 'busy' }), 'INVALID_USER_ID');
    assert.deepEqual(bob.take(), []);
    assert.equal(alice.closed, undefined);
    assert.equal(w.member('room', 'alice').status, 'online');
  });
});

// ---------------------------------------------------------------------------------------------
// Meta
// ---------------------------------------------------------------------------------------------

describe('user meta', () => {
  it('starts from the token claims and merges updates, null removing a key', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice', { identity: { meta: { name: 'Alice', avatar: 'a.png' } } });
    alice.join('room');
    assert.deepEqual(w.member('room', 'alice').meta, { name: 'Alice', avatar: 'a.png' });
    w.flush(bob);

    const ack = alice.send({ type: 'meta', meta: { avatar: null, title: 'CTO', tags: ['x', 'y'] } });
    assert.deepEqual(ack.self.meta, { name: 'Alice', title: 'CTO', tags: ['x', 'y'] });
    const [update] = bob.take();
    assert.equal(update.type, 'presence.update');
    assert.deepEqual(update.member.meta, { name: 'Alice', title: 'CTO', tags: ['x', 'y'] });

    alice.send({ type: 'meta', meta: { title: 'CTO' } });
    alice.send({ type: 'meta', meta: { gone: null } });
    assert.deepEqual(bob.take(), [], 'an update that changes nothing is no event');
  });

  it('refuses meta over the size, depth or key limits (META_TOO_LARGE), changing nothing', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.send({ type: 'meta', meta: { keep: 1 } });
    const tooMany = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, i]));
    for (const meta of [
      { big: 'x'.repeat(2048) },
      { a: { b: { c: { d: 1 } } } },
      { a: [[[1]]] },
      tooMany, // 32 new keys + `keep`
    ] as Meta[]) {
      throwsCode(() => alice.send({ type: 'meta', meta }), 'META_TOO_LARGE');
    }
    // At the limits exactly is fine.
    alice.send({ type: 'meta', meta: { a: { b: { c: 1 } } } });
    assert.deepEqual(w.engine.userPresence('alice', TRUSTED).meta, { keep: 1, a: { b: { c: 1 } } });
    throwsCode(() => alice.join('room', { big: 'x'.repeat(3000) }), 'META_TOO_LARGE');
    assert.equal(w.engine.channelPresence('room', { limit: 1 }).count, 0, 'a refused join leaves nothing behind');
  });

  it('refuses __proto__ and friends (INVALID_MESSAGE) and keeps Object.prototype clean', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.join('room');
    const attacks = [
      '{"__proto__": {"polluted": true}}',
      '{"nested": {"__proto__": {"polluted": true}}}',
      '{"constructor": {"prototype": {"polluted": true}}}',
    ];
    for (const json of attacks) {
      const meta = JSON.parse(json) as Meta;
      throwsCode(() => alice.send({ type: 'meta', meta }), 'INVALID_MESSAGE');
      throwsCode(() => alice.send({ type: 'channel.meta', channel: 'room', meta }), 'INVALID_MESSAGE');
      throwsCode(() => alice.join('room2', meta), 'INVALID_MESSAGE');
      throwsCode(() => w.engine.updateUser('alice', { meta }), 'INVALID_MESSAGE');
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
    assert.deepEqual(w.engine.userPresence('alice', TRUSTED).meta, {});
    throwsCode(() => alice.send({ type: 'meta', meta: [] as unknown as Meta }), 'INVALID_MESSAGE');
    throwsCode(() => alice.send({ type: 'meta', meta: { n: Number.NaN } }), 'INVALID_MESSAGE');
  });
});

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

describe('decodeCommand', () => {
  it('refuses malformed commands (INVALID_MESSAGE)', () => {
    for (const value of [
      null,
      [],
      'join',
      42,
      {},
      { type: 7 },
      { type: 'join' },
      { type: 'join', channel: 5 },
      { type: 'join', channel: 'a', meta: [] },
      { type: 'join', channel: 'a', meta: 'x' },
      { type: 'leave' },
      { type: 'status', status: 'offline' },
      { type: 'status', status: 'invisible', message: 5 },
      { type: 'status', state: {} },
      { type: 'status', expiresAt: 1234 },
      { type: 'status', visibility: 'friends' },
      { type: 'meta' },
      { type: 'meta', meta: null },
      { type: 'channel.meta', channel: 'a' },
      { type: 'typing', channel: 'a' },
      { type: 'typing', channel: 'a', typing: 'yes' },
      { type: 'watch' },
      { type: 'watch', users: 'alice' },
      { type: 'unwatch', users: [1] },
      { type: 'ping', ref: {} },
      { type: 'ping', ref: Number.POSITIVE_INFINITY },
      { type: 'ping', ref: 'r'.repeat(65) },
    ]) {
      throwsCode(() => decodeCommand(value), 'INVALID_MESSAGE');
    }
  });

  it('refuses unknown types (UNKNOWN_TYPE)', () => {
    for (const type of ['subscribe', 'JOIN', 'presence.sync', '']) {
      throwsCode(() => decodeCommand({ type }), 'UNKNOWN_TYPE');
    }
  });

  it('passes well-formed commands through', () => {
    for (const value of [
      { type: 'join', channel: 'a' },
      { type: 'join', channel: 'a', meta: { x: 1 }, ref: 1 },
      { type: 'status', status: 'online', state: null, message: null, expiresAt: null, ref: 'r' },
      { type: 'typing', channel: 'a', typing: false },
      { type: 'watch', users: [] },
      { type: 'logout' },
    ]) {
      assert.equal(decodeCommand(value), value);
    }
  });

  it('answers ping with pong carrying the ref and the server time', () => {
    const w = new World();
    const alice = w.connect('alice');
    w.flush(alice);
    assert.equal(alice.send({ type: 'ping', ref: 'p1' }), undefined);
    assert.deepEqual(alice.take(), [{ type: 'pong', ref: 'p1', serverTime: iso(w.now()) }]);
  });
});

// ---------------------------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------------------------

describe('no leaks', () => {
  it('leaves no timer and no count behind once every user has logged out or expired', () => {
    const w = new World();
    const users = ['u1', 'u2', 'u3', 'u4', 'u5'].map((id) => [w.connect(id), w.connect(id, { device: 'ios' })]);
    users.forEach(([a, b], i) => {
      a.join('room');
      b.join(`own-${i}`);
      a.watch('u1', 'u2', 'nobody');
      a.typing('room', true);
      b.typing(`own-${i}`, true);
      a.send({ type: 'channel.meta', channel: 'room', meta: { i } });
    });
    const [[u1a, u1b], [u2a, u2b], [u3a, u3b], [u4a, u4b], [u5a, u5b]] = users;
    u1a.status({ status: 'busy', message: 'until noon', expiresAt: iso(w.now() + 60_000) });
    u2a.status({ status: 'invisible' });
    u2a.typing('room', true);
    u3a.send({ type: 'idle' });
    w.advance(1000);
    assert.ok(w.clock.pendingTimers > 0);

    u1a.send({ type: 'logout' }); // logout with an expiry still pending
    u2a.disconnect(); // an invisible user expiring
    u2b.disconnect();
    u3a.disconnect(); // one session expires, the other logs out
    u3b.send({ type: 'logout' });
    u4a.disconnect(); // a resume, then a logout
    w.connect('u4', { sessionId: u4a.sessionId }).send({ type: 'logout' });
    u4b.disconnect();
    u5a.disconnect(); // both expire
    u5b.disconnect();
    void u1b;
    w.advance(w.offlineDelay);
    w.advance(60_000); // past u1's expiry

    assert.equal(w.clock.pendingTimers, 0);
    assert.deepEqual(w.engine.stats(), { connections: 0, sessions: 0, onlineUsers: 0, channels: 0 });
    for (const i of [0, 1, 2, 3, 4]) assert.equal(w.engine.channelPresence(`own-${i}`, { limit: 1 }).count, 0);
    assert.equal(w.engine.channelPresence('room', { limit: 1 }).count, 0);
    assert.deepEqual(w.engine.inspect(), { users: 0, sessions: 0, remoteSessions: 0, channels: 0, watchedUsers: 0, typing: 0 }, 'no live state left');
    // Records outlive the live state: what the users set is still known.
    assert.equal(w.engine.userPresence('u1', TRUSTED).status, 'offline');
    assert.notEqual(w.engine.userPresence('u5', TRUSTED).lastSeen, null);
  });

  it('a user released from memory comes back with their record intact', () => {
    const w = new World();
    const bob = w.connect('bob');
    const alice = w.connect('alice');
    alice.status({ status: 'busy', message: 'focus' });
    alice.send({ type: 'meta', meta: { name: 'Alice' } });
    alice.disconnect();
    w.advance(w.offlineDelay);
    assert.equal(w.engine.inspect().users, 1, 'only bob is live');
    // Watching keeps a user in memory (so changes can be compared and announced); unwatching frees it.
    bob.watch('alice');
    assert.equal(w.engine.inspect().users, 2);
    bob.send({ type: 'unwatch', users: ['alice'] });
    assert.equal(w.engine.inspect().users, 1);
    bob.watch('alice');
    bob.take();
    const again = w.connect('alice');
    assert.equal(again.take('welcome')[0].self.manualStatus, 'busy');
    const [update] = bob.take('user.update');
    assert.deepEqual([update.user.status, update.user.message, update.user.meta], ['busy', 'focus', { name: 'Alice' }]);
  });

  it('dispose clears every timer', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.join('room');
    w.connect('bob').join('room');
    alice.typing('room', true);
    alice.status({ status: 'busy', expiresAt: iso(w.now() + 60_000) });
    alice.disconnect();
    w.engine.dispose();
    assert.equal(w.clock.pendingTimers, 0);
    assert.deepEqual(w.engine.stats(), { connections: 0, sessions: 0, onlineUsers: 0, channels: 0 });
  });
});

// ---------------------------------------------------------------------------------------------
// Corners found by the model-based tests (model.test.ts), each kept as a plain example
// ---------------------------------------------------------------------------------------------

/** A cluster that only answers who this node is and which nodes hold a lease; what it is given to publish goes to `publish`. */
function stubCluster(nodeId: string, nodes: string[], publish: (op: NodeOp) => void = () => {}): Cluster {
  // It delivers every channel, as if a session of this node were in each.
  return { nodeId, start: async () => {}, publish, flush: () => {}, clockOffsetMs: 0, isReady: () => true, nodes: () => nodes, close: async () => {}, loadChannel: () => undefined, followsChannel: () => true, listOnline: () => {}, readOnline: async () => [], readNodeStats: async () => new Map() };
}

describe('corners found by the model-based tests', () => {
  const statuses = (frames: Frame[]) => frames.map((f) => `${f.type}:${f.member?.userId ?? f.userId}:${f.member?.status ?? ''}`);

  it('a session back from idle goes idle again after the timeout', () => {
    const w = new World({ idleTimeoutMs: 1000 });
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    w.advance(1000);
    w.flush(bob);
    alice.send({ type: 'activity' });
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:online']);
    w.advance(1000);
    assert.deepEqual(statuses(bob.take()), ['presence.update:alice:away'], 'idle a second time');
  });

  it('a resumed socket gets its sync before the event its resume causes (a new device)', () => {
    const w = new World();
    const alice = w.connect('alice', { device: 'web' });
    alice.join('room');
    const bob = w.connect('bob');
    bob.join('room');
    const sessionId = alice.sessionId;
    alice.disconnect();
    const back = w.connect('alice', { sessionId, device: 'ios' });
    const frames = back.take().filter((f) => String(f.type).startsWith('presence.'));
    assert.deepEqual(frames.map((f) => f.type), ['presence.sync', 'presence.update']);
    assert.equal(frames[1].seq, frames[0].seq + 1, 'the update follows the sync without a gap');
    assert.deepEqual(frames[1].member.devices, ['ios']);
  });

  it('a session joining again with new meta gets the update too, so its seq has no gap', () => {
    const w = new World();
    const alice = w.connect('alice');
    alice.join('room');
    const [first] = alice.take('presence.sync');
    alice.join('room', { cursor: 3 });
    const frames = alice.take().filter((f) => String(f.type).startsWith('presence.'));
    assert.deepEqual(frames.map((f) => [f.type, f.seq]), [['presence.update', first.seq + 1], ['presence.sync', first.seq + 1]]);
    assert.deepEqual(frames[0].member.channelMeta, { cursor: 3 });
  });

  it("another node's write of a record whose meta did not change is no update (model-cluster.test.ts)", () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.send({ type: 'meta', meta: { name: 'Alice' } });
    w.flush(bob);
    // As a record arrives from the shared store: decoded anew, so every object is a copy.
    const record = structuredClone(w.engine.userPresence('alice', TRUSTED));
    w.engine.applyRecord({
      userId: 'alice',
      manual: { status: null, state: null, message: null, expiresAt: null },
      meta: record.meta,
      visibility: 'everyone',
      contacts: [],
      lastSeenAt: w.now() + 1000,
      lastActiveAt: w.now() + 1000,
    });
    assert.deepEqual(bob.take(), [], 'only lastSeen moved: nothing to announce');
  });

  it("a move learnt from the new owner's whole state (its claim missed) wins once the old owner is gone (model-cluster.test.ts)", () => {
    const clock = new ManualClock();
    // Node b's view: a and b hold leases; c has crashed and is no longer registered.
    const cluster = stubCluster('b', ['a', 'b']);
    const engine = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 1000 }), clock, cluster });
    const ann = (attached: boolean): SessionSnapshot => ({ id: 'ann-session', userId: 'ann', device: 'web', idle: false, attached, channels: { room: { meta: {}, joinedAt: clock.now() } } });
    engine.applyOps('c', [{ op: 'session', session: ann(true) }]);
    // Ann's client moved from c to a; b missed a's claim and reads ann's whole shard instead.
    engine.applyUser('ann', [{ node: 'a', session: ann(true) }]);
    engine.nodeDown('c');
    clock.advance(5000);
    assert.deepEqual(engine.channelPresence('room', { limit: 10 }).members.map((m) => m.userId), ['ann'], "ann is a's now: c's death does not end her session");
  });

  it("a node that reads a crashed owner's stale state and the new owner's keeps the one with more moves, in either order (model-cluster.test.ts)", () => {
    for (const order of ['stale first', 'stale last'] as const) {
      const clock = new ManualClock();
      // A new node c's view: b crashed but its lease has not run out, so c reads b's stored state
      // (ann's session, as it was before her client moved) and a's (the same session, moved once).
      const cluster = stubCluster('c', ['a', 'b', 'c']);
      const engine = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 1000 }), clock, cluster });
      const ann = (moves?: number): SessionSnapshot => ({ id: 'ann-session', userId: 'ann', device: 'web', idle: false, attached: true, channels: { room: { meta: {}, joinedAt: clock.now() } }, ...(moves ? { moves } : {}) });
      const reads: Array<[string, SessionSnapshot]> = [['b', ann()], ['a', ann(1)]];
      for (const [node, snapshot] of order === 'stale first' ? reads : reads.reverse()) engine.applyUser('ann', [{ node, session: snapshot }]);
      engine.nodeDown('b');
      clock.advance(5000);
      assert.deepEqual(engine.channelPresence('room', { limit: 10 }).members.map((m) => m.userId), ['ann'], `${order}: ann is a's, b's death does not end her session`);
    }
  });

  it("another node's session of the same user in the same channel re-publishes ours only when the channel meta changed (model-cluster.test.ts)", async () => {
    const clock = new ManualClock();
    const published: NodeOp[] = [];
    const cluster = stubCluster('b', ['a', 'b'], (op) => published.push(op));
    const engine = new PresenceNode({ config: resolveConfig({}), clock, cluster });
    const ours = engine.connect({ identity: { userId: 'ann', meta: {} }, device: 'web' }, { send: () => {}, close: () => {} });
    await engine.handle(ours, { type: 'join', channel: 'room' });
    // A meta set on node a carries a version from node a's clock, above ours.
    const theirs = (meta: Meta, idle: boolean): SessionSnapshot => ({ id: 'ann-on-a', userId: 'ann', device: 'ios', idle, attached: true, channels: { room: { meta, joinedAt: clock.now(), ...(Object.keys(meta).length > 0 ? { metaVersion: 5 } : {}) } } });
    // Ops are published at the end of the turn.
    const publishedNow = async () => {
      await Promise.resolve();
      return published.splice(0).map((op) => (op.op === 'session' ? `${op.session.id} ${JSON.stringify(op.session.channels.room?.meta)}` : op.op));
    };
    await publishedNow();
    engine.applyOps('a', [{ op: 'session', session: theirs({}, false) }]);
    engine.applyOps('a', [{ op: 'session', session: theirs({}, true) }]);
    assert.deepEqual(await publishedNow(), [], 'nothing of ours changed (answering made two nodes exchange ops forever)');
    engine.applyOps('a', [{ op: 'session', session: theirs({ cursor: 1 }, true) }]);
    assert.deepEqual(await publishedNow(), [`${ours.session.id} {"cursor":1}`], 'ours carries the new channel meta');
    engine.applyOps('a', [{ op: 'session', session: theirs({ cursor: 1 }, false) }]);
    assert.deepEqual(await publishedNow(), []);
  });

  it("a copy of a session from before it ended (a logout here, or its owner's end) does not bring it back; a later move of it does (model-cluster.test.ts)", async () => {
    const clock = new ManualClock();
    const cluster = stubCluster('b', ['a', 'b', 'c'], () => {});
    const engine = new PresenceNode({ config: resolveConfig({}), clock, cluster });
    const copy = (id: string, moves?: number): SessionSnapshot => ({ id, userId: 'ann', device: 'web', idle: false, attached: true, channels: { room: { meta: {}, joinedAt: clock.now() } }, ...(moves ? { moves } : {}) });
    const members = () => engine.channelPresence('room', { limit: 10 }).members.map((m) => m.userId);
    engine.applyOps('a', [{ op: 'session', session: copy('ann-on-a') }]);
    assert.deepEqual(members(), ['ann']);
    engine.logout('ann');
    assert.deepEqual(members(), []);
    // A shard read that started before the logout landed.
    engine.applyUser('ann', [{ node: 'a', session: copy('ann-on-a') }]);
    assert.deepEqual(members(), [], 'the logged-out session stays ended');
    // Its owner's end, then a late copy of another session of hers.
    engine.applyOps('c', [{ op: 'session', session: copy('ann-on-c') }]);
    engine.applyOps('c', [{ op: 'end', sessionId: 'ann-on-c', userId: 'ann' }]);
    engine.applyOps('c', [{ op: 'session', session: copy('ann-on-c') }]);
    assert.deepEqual(members(), [], 'ended by its owner, it stays ended');
    // A client that resumed it elsewhere as it ended moved it: that copy wins.
    engine.applyOps('a', [{ op: 'session', session: copy('ann-on-c', 1), claim: true }]);
    assert.deepEqual(members(), ['ann']);
  });

  it("a stale copy of the user's other session does not put back a channel meta changed since; a rejoin's empty meta replaces the old membership's (model-cluster.test.ts, fuzz.test.ts)", async () => {
    const clock = new ManualClock();
    const published: NodeOp[] = [];
    const cluster = stubCluster('b', ['a', 'b'], (op) => published.push(op));
    const engine = new PresenceNode({ config: resolveConfig({}), clock, cluster });
    const theirs = (meta: Meta, metaVersion: number): SessionSnapshot => ({ id: 'ann-on-a', userId: 'ann', device: 'ios', idle: false, attached: true, channels: { room: { meta, joinedAt: clock.now(), metaVersion } } });
    engine.applyOps('a', [{ op: 'session', session: theirs({ mode: 3 }, 1) }]);
    // ann opens a session here and joins with meta: merged into what node a set, a newer version.
    const ours = engine.connect({ identity: { userId: 'ann', meta: {} }, device: 'web' }, { send: () => {}, close: () => {} });
    await engine.handle(ours, { type: 'join', channel: 'room', meta: { cursor: 'A', mode: 'A' } });
    await Promise.resolve();
    const meta = () => engine.channelPresence('room', { limit: 10 }).members[0]?.channelMeta;
    assert.deepEqual(meta(), { mode: 'A', cursor: 'A' });
    const lastOurs = () => published.filter((op) => op.op === 'session' && op.session.id === ours.session.id).at(-1) as Extract<NodeOp, { op: 'session' }>;
    assert.ok((lastOurs().session.channels.room.metaVersion ?? 0) > 1, 'published with a newer version');
    // Node a's copy published before it saw our join arrives late: it is older, and changes nothing.
    published.length = 0;
    engine.applyOps('a', [{ op: 'session', session: theirs({ mode: 3 }, 1) }]);
    await Promise.resolve();
    assert.deepEqual(meta(), { mode: 'A', cursor: 'A' }, 'the stale copy did not win');
    assert.deepEqual(published, [], 'and nothing was published again');
    // Node a's own later change wins over ours.
    engine.applyOps('a', [{ op: 'session', session: theirs({ mode: 'B' }, 9) }]);
    await Promise.resolve();
    assert.deepEqual(meta(), { mode: 'B' });
    // Node a's session leaves; ours leaves and joins again without meta in one turn: the new
    // membership's empty meta must win over the old one's wherever the leave was never seen.
    engine.applyOps('a', [{ op: 'end', sessionId: 'ann-on-a', userId: 'ann' }]);
    published.length = 0;
    await engine.handle(ours, { type: 'leave', channel: 'room' });
    await engine.handle(ours, { type: 'join', channel: 'room' });
    await Promise.resolve();
    assert.deepEqual(meta(), {});
    assert.ok((lastOurs().session.channels.room.metaVersion ?? 0) > 9, 'the new membership is newer than every meta seen');
  });

  it('a record read back with a status whose expiry passed (nobody could write the clearing) does not bring it back for a moment (model-cluster.test.ts)', () => {
    const w = new World();
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    const expiresAt = w.now() + 1000;
    alice.status({ status: 'invisible', expiresAt: iso(expiresAt) });
    w.advance(1000);
    w.flush(bob);
    assert.equal(w.engine.userPresence('alice', TRUSTED).status, 'online', 'expired here');
    // The shared service comes back still holding the status: this node reads it back.
    w.engine.applyRecord({
      userId: 'alice',
      manual: { status: 'invisible', state: null, message: null, expiresAt },
      meta: {},
      visibility: 'everyone',
      contacts: [],
      lastSeenAt: expiresAt - 1000,
      lastActiveAt: expiresAt - 1000,
    });
    assert.deepEqual(bob.take(), [], 'no leave and join again');
    assert.equal(w.engine.userPresence('alice', TRUSTED).status, 'online');
  });

  it('a status that expires the instant the offline delay ends causes no flash of presence', () => {
    const w = new World({ offlineDelayMs: 1000 });
    const bob = w.connect('bob');
    bob.join('room');
    const alice = w.connect('alice');
    alice.join('room');
    alice.status({ status: 'invisible', expiresAt: iso(w.now() + 1000) });
    alice.disconnect();
    w.flush(bob);
    w.advance(1000);
    assert.deepEqual(bob.take(), [], 'no join and leave in the same instant');
    assert.equal(w.engine.userPresence('alice', TRUSTED).status, 'offline');
  });
});
