/**
 * HTTP heartbeat sessions in the model (PresenceNode on a ManualClock, no sockets, no HTTP): a
 * session kept by heartbeats is an ordinary session of its user, its sink buffers the v1 frames per
 * channel between heartbeats, and two missed intervals detach it like a closed socket.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ClientMessage, Meta } from '@presence/protocol';
import { resolveConfig } from '../src/config/config.js';
import { ManualClock } from '../src/presence/clock.js';
import type { Attachment, SessionSink } from '../src/presence/engine.js';
import { PresenceNode } from '../src/presence-node.js';
import { MAX_BUFFERED_EVENTS, type Heartbeat, type HeartbeatAnswer } from '../src/protocol-v1/heartbeat.js';
import { serverMessages } from './support/harness.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Frame = any;

const INTERVAL_MS = 10_000;
const OFFLINE_DELAY_MS = 30_000;

/** A WebSocket session: a recording sink. */
class Socket {
  frames: Frame[] = [];
  attachment!: Attachment;
  readonly sink: SessionSink = {
    send: (json) => this.frames.push(...serverMessages(json)),
    close: () => {},
  };
  constructor(private readonly node: PresenceNode) {}
  send(command: ClientMessage): unknown {
    return this.node.handle(this.attachment, command);
  }
  take(type?: string): Frame[] {
    const frames = this.frames;
    this.frames = [];
    return type ? frames.filter((f) => f.type === type) : frames;
  }
  /** Membership events only (no typing, no acks). */
  membership(): Frame[] {
    return this.take().filter((f) => typeof f.type === 'string' && f.type.startsWith('presence.') && f.type !== 'presence.sync');
  }
}

/** An HTTP client: remembers its session id and the last seq it applied per channel. */
class Beater {
  sessionId: string | undefined;
  readonly acked: Record<string, number> = {};
  last!: HeartbeatAnswer;
  constructor(
    private readonly world: World,
    readonly userId: string,
  ) {}
  beat(fields: Omit<Heartbeat, 'sessionId' | 'ack' | 'channels'> & { channels?: (string | { name: string; meta?: Meta })[]; ack?: Record<string, number> } = {}): Frame[] {
    const heartbeat: Heartbeat = { ...fields, ack: fields.ack ?? { ...this.acked }, channels: undefined };
    if (this.sessionId) heartbeat.sessionId = this.sessionId;
    if (fields.channels) heartbeat.channels = new Map(fields.channels.map((c) => (typeof c === 'string' ? [c, undefined] : [c.name, c.meta])));
    else delete heartbeat.channels;
    this.last = this.world.node.heartbeat({ userId: this.userId, meta: {} }, heartbeat);
    this.sessionId = this.last.sessionId;
    const events = this.last.events.map((json) => JSON.parse(json) as Frame);
    for (const event of events) if (typeof event.seq === 'number') this.acked[event.channel] = event.seq;
    return events;
  }
}

class World {
  readonly clock = new ManualClock();
  readonly node: PresenceNode;
  private nextSession = 0;
  constructor(overrides: Parameters<typeof resolveConfig>[0] = {}) {
    this.node = new PresenceNode({
      config: resolveConfig({ offlineDelayMs: OFFLINE_DELAY_MS, httpHeartbeatIntervalMs: INTERVAL_MS, ...overrides }),
      clock: this.clock,
      newSessionId: () => `session-${String(++this.nextSession).padStart(4, '0')}`,
    });
  }
  socket(userId: string, channel?: string): Socket {
    const socket = new Socket(this.node);
    socket.attachment = this.node.connect({ identity: { userId, meta: {} }, device: 'web' }, socket.sink);
    if (channel) socket.send({ type: 'join', channel });
    socket.take();
    return socket;
  }
  beater(userId: string): Beater {
    return new Beater(this, userId);
  }
  members(channel: string): string[] {
    return this.node.channelPresence(channel, { limit: 100 }).members.map((m) => m.userId);
  }
}

const types = (frames: Frame[]) => frames.map((f) => f.type);

describe('an HTTP heartbeat session', () => {
  it('opens with welcome and joins its channels: a member like any other, seen joining by others', () => {
    const w = new World();
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    const events = alice.beat({ channels: ['room'], device: 'web' });
    assert.deepEqual(types(events), ['welcome', 'presence.sync']);
    assert.equal(events[0].userId, 'alice');
    assert.equal(events[0].sessionId, alice.sessionId);
    assert.deepEqual(events[1].members.map((m: Frame) => m.userId).sort(), ['alice', 'bob']);
    assert.equal(alice.last.intervalMs, INTERVAL_MS);
    assert.match(alice.last.sessionToken, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    assert.deepEqual(w.members('room'), ['alice', 'bob']);
    const [join] = bob.membership();
    assert.equal(join.type, 'presence.join');
    assert.equal(join.member.userId, 'alice');
    assert.deepEqual(join.member.devices, ['web']);
  });

  it('answers the events since the acknowledged seq, once, and nothing when nothing happened', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    assert.deepEqual(alice.beat(), [], 'nothing happened');
    const carol = w.socket('carol', 'room');
    carol.send({ type: 'status', status: 'busy' });
    const events = alice.beat();
    assert.deepEqual(types(events), ['presence.join', 'presence.update']);
    assert.equal(events[1].seq, events[0].seq + 1);
    assert.deepEqual(alice.beat(), [], 'acknowledged events are not sent again');
  });

  it('sends unacknowledged events again (an answer lost on the way)', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    const before = { ...alice.acked };
    w.socket('carol', 'room');
    const lost = alice.beat();
    assert.deepEqual(types(lost), ['presence.join']);
    const again = alice.beat({ ack: before });
    assert.deepEqual(again, lost);
  });

  it('answers a presence.sync when the ack is missing, behind what is kept, or ahead of the channel', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    w.socket('carol', 'room');
    const seq = alice.acked.room;
    assert.deepEqual(types(alice.beat({ ack: {} })), ['presence.sync'], 'no ack: the client asks for the state');
    alice.acked.room = seq + 50;
    assert.deepEqual(types(alice.beat()), ['presence.sync'], 'an ack from another seq space');
    assert.deepEqual(alice.beat(), []);
  });

  it('keeps at most MAX_BUFFERED_EVENTS events per channel, then answers one sync', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    const carol = w.socket('carol', 'room');
    for (let i = 0; i <= MAX_BUFFERED_EVENTS; i += 1) carol.send({ type: 'channel.meta', channel: 'room', meta: { i } });
    const events = alice.beat();
    assert.deepEqual(types(events), ['presence.sync']);
    assert.equal(events[0].members.find((m: Frame) => m.userId === 'carol').channelMeta.i, MAX_BUFFERED_EVENTS);
  });

  it('takes channels as the complete set: absent is unchanged, a listed set leaves the others', () => {
    const w = new World();
    const bob = w.socket('bob', 'a');
    const alice = w.beater('alice');
    alice.beat({ channels: ['a', { name: 'b', meta: { mode: 'viewing' } }] });
    bob.take();
    alice.beat();
    assert.deepEqual(w.members('a'), ['alice', 'bob']);
    assert.deepEqual(w.members('b'), ['alice']);
    assert.deepEqual(types(alice.beat({ channels: [{ name: 'b', meta: { mode: 'editing' } }] })), ['presence.update']);
    assert.deepEqual(w.members('a'), ['bob']);
    assert.equal(w.node.channelPresence('b', { limit: 10 }).members[0].channelMeta.mode, 'editing');
    assert.deepEqual(types(bob.membership()), ['presence.leave'], 'the leave is immediate');
  });

  it('reports refused channel changes and typing in `errors` and applies the rest', () => {
    const w = new World({ limits: { maxChannelsPerSession: 2 } });
    const alice = w.beater('alice');
    alice.beat({ channels: ['ok', 'bad name!'], typing: { elsewhere: true } });
    assert.deepEqual(
      alice.last.errors.map((e) => [e.channel, e.code]),
      [
        ['bad name!', 'INVALID_CHANNEL'],
        ['elsewhere', 'NOT_IN_CHANNEL'],
      ],
    );
    assert.deepEqual(w.members('ok'), ['alice']);
    assert.throws(() => alice.beat({ channels: ['a', 'b', 'c'] }), { code: 'TOO_MANY_CHANNELS' });
    assert.deepEqual(w.members('ok'), ['alice'], 'a refused heartbeat changes nothing');
  });

  it('may type, seen by others, but receives no typing', () => {
    const w = new World();
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.take();
    alice.beat({ typing: { room: true } });
    assert.deepEqual(bob.take('typing').map((t) => [t.userId, t.typing]), [['alice', true]]);
    bob.send({ type: 'typing', channel: 'room', typing: true });
    assert.deepEqual(alice.beat(), []);
    alice.beat({ typing: { room: false } });
    assert.deepEqual(bob.take('typing').map((t) => [t.userId, t.typing]), [['alice', false]]);
  });

  it('goes idle and back from `activity`, as others see it', () => {
    const w = new World();
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.take();
    alice.beat({ activity: 'idle' });
    assert.deepEqual(bob.membership().map((f) => f.member.status), ['away']);
    alice.beat({ activity: 'active' });
    assert.deepEqual(bob.membership().map((f) => f.member.status), ['online']);
  });

  it('goes idle after the idle timeout when the heartbeats report no activity', () => {
    const w = new World({ idleTimeoutMs: 25_000 });
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.send({ type: 'idle' });
    for (let t = 0; t < 3; t += 1) {
      w.clock.advance(INTERVAL_MS);
      alice.beat();
    }
    assert.equal(w.node.userPresence('alice', { trusted: true }).status, 'away');
  });

  it('merges into the user: a tab over HTTP beside a socket is one member, and counts towards the session limit', () => {
    const w = new World({ limits: { maxSessionsPerUser: 2 } });
    const bob = w.socket('bob', 'room');
    w.socket('alice', 'room');
    bob.take();
    const http = w.beater('alice');
    http.beat({ channels: ['room'], device: 'web' });
    assert.deepEqual(bob.membership(), [], 'a second session of a member is no event');
    assert.equal(w.node.stats().sessions, 3);
    assert.throws(() => w.beater('alice').beat({ channels: ['room'] }), { code: 'TOO_MANY_SESSIONS' });
  });

  it('is detached after two missed intervals; the offline delay then runs, and a heartbeat inside it resumes with no event', () => {
    const w = new World();
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.take();
    w.clock.advance(2 * INTERVAL_MS - 1);
    assert.equal(w.node.stats().connections, 2, 'still attached');
    w.clock.advance(1);
    assert.equal(w.node.stats().connections, 1, 'detached');
    w.clock.advance(OFFLINE_DELAY_MS - 1000);
    assert.deepEqual(bob.membership(), [], 'no leave inside the offline delay');
    const events = alice.beat();
    assert.deepEqual(types(events), ['welcome', 'presence.sync']);
    assert.equal(events[0].resumed, true);
    assert.equal(events[0].sessionId, alice.sessionId);
    w.clock.advance(OFFLINE_DELAY_MS);
    alice.beat();
    assert.deepEqual(bob.membership(), [], 'resumed: no leave, no join');
  });

  it('leaves after two missed intervals plus the offline delay', () => {
    const w = new World();
    const bob = w.socket('bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.take();
    w.clock.advance(2 * INTERVAL_MS + OFFLINE_DELAY_MS - 1);
    assert.deepEqual(bob.membership(), []);
    w.clock.advance(1);
    const [leave] = bob.membership();
    assert.equal(leave.type, 'presence.leave');
    assert.equal(leave.userId, 'alice');
    const fresh = alice.beat();
    assert.equal(fresh[0].resumed, false, 'an ended session is not resumed');
    assert.notEqual(fresh[0].sessionId, undefined);
  });

  it('after a logout, a heartbeat of that session is LOGGED_OUT', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    w.node.logout('alice');
    assert.throws(() => alice.beat(), { code: 'LOGGED_OUT' });
    assert.deepEqual(w.members('room'), []);
  });

  it('a heartbeat naming another user\'s session id gets a session of its own', () => {
    const w = new World();
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    const mallory = w.beater('mallory');
    mallory.sessionId = alice.sessionId;
    mallory.beat({ channels: ['elsewhere'] });
    assert.notEqual(mallory.sessionId, alice.sessionId);
    assert.deepEqual(alice.beat(), [], 'alice\'s session is untouched');
  });
});

describe('the unload beacon (PresenceNode.unload)', () => {
  const GRACE_MS = 3000;
  const tokenOf = (socket: Socket & { welcome?: Frame }): string => socket.welcome.sessionToken;
  /** A socket whose welcome is kept for its token. */
  const connect = (w: World, userId: string, channel: string): Socket & { welcome?: Frame } => {
    const socket = new Socket(w.node) as Socket & { welcome?: Frame };
    socket.attachment = w.node.connect({ identity: { userId, meta: {} }, device: 'web' }, socket.sink);
    socket.welcome = socket.take('welcome')[0];
    socket.send({ type: 'join', channel });
    socket.take();
    return socket;
  };

  it('welcome carries a session token bound to the session and its user', () => {
    const w = new World();
    const alice = connect(w, 'alice', 'room');
    const claims = w.node.sessionTokens.verify(tokenOf(alice), w.clock.now());
    assert.equal(claims.sessionId, alice.attachment.session.id);
    assert.equal(claims.userId, 'alice');
    assert.ok(claims.expiresAt >= w.clock.now() + 30 * 60_000 + OFFLINE_DELAY_MS, 'valid for at least the renewal period plus the offline delay');
  });

  it('closing the only tab: the user leaves after the grace, not after the offline delay', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const bob = connect(w, 'bob', 'room');
    const alice = connect(w, 'alice', 'room');
    bob.take();
    assert.equal(w.node.unload(tokenOf(alice)), true);
    w.node.disconnect(alice.attachment);
    w.clock.advance(GRACE_MS - 1);
    assert.deepEqual(bob.membership(), []);
    w.clock.advance(1);
    const [leave] = bob.membership();
    assert.equal(leave?.type, 'presence.leave');
    assert.equal(leave.userId, 'alice');
    assert.equal(leave.lastSeen, new Date(w.clock.now() - GRACE_MS).toISOString(), 'lastSeen is the close, not the end of the grace');
    assert.equal(w.node.stats().sessions, 1);
  });

  it('closing one of two tabs ends that session only, and nobody sees anything', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const bob = connect(w, 'bob', 'room');
    const tab1 = connect(w, 'alice', 'room');
    connect(w, 'alice', 'room');
    bob.take();
    w.node.unload(tokenOf(tab1));
    w.node.disconnect(tab1.attachment);
    w.clock.advance(GRACE_MS);
    assert.equal(w.node.stats().sessions, 2, 'the tab\'s session ended');
    w.clock.advance(OFFLINE_DELAY_MS);
    assert.deepEqual(bob.membership(), []);
    assert.deepEqual(w.members('room'), ['alice', 'bob']);
  });

  it('a resume inside the grace (a reload) cancels it with no event', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const bob = connect(w, 'bob', 'room');
    const alice = connect(w, 'alice', 'room');
    bob.take();
    w.node.unload(tokenOf(alice));
    w.node.disconnect(alice.attachment);
    w.clock.advance(GRACE_MS - 500);
    const reloaded = new Socket(w.node);
    reloaded.attachment = w.node.connect({ identity: { userId: 'alice', meta: {} }, sessionId: alice.attachment.session.id, device: 'web' }, reloaded.sink);
    assert.equal(reloaded.attachment.resumed, true);
    w.clock.advance(OFFLINE_DELAY_MS * 2);
    assert.deepEqual(bob.membership(), []);
    assert.deepEqual(w.members('room'), ['alice', 'bob']);
  });

  it('a socket still open when the grace runs out ends at its close, without the offline delay', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const bob = connect(w, 'bob', 'room');
    const alice = connect(w, 'alice', 'room');
    bob.take();
    w.node.unload(tokenOf(alice));
    w.clock.advance(GRACE_MS * 2);
    assert.deepEqual(bob.membership(), [], 'alive while the socket is open');
    w.node.disconnect(alice.attachment);
    assert.deepEqual(types(bob.membership()), ['presence.leave']);
  });

  it('an HTTP session lets go at once (no heartbeat will come) and ends after the grace', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const bob = connect(w, 'bob', 'room');
    const alice = w.beater('alice');
    alice.beat({ channels: ['room'] });
    bob.take();
    w.node.unload(alice.last.sessionToken);
    assert.equal(w.node.stats().connections, 1, 'detached');
    w.clock.advance(GRACE_MS);
    assert.deepEqual(types(bob.membership()), ['presence.leave']);
  });

  it('refuses forged and expired tokens; an ended session\'s token is a no-op', () => {
    const w = new World({ unloadGraceMs: GRACE_MS });
    const alice = connect(w, 'alice', 'room');
    const token = tokenOf(alice);
    assert.throws(() => w.node.unload(`${token}x`), { code: 'UNAUTHORIZED' });
    assert.throws(() => w.node.unload('djEuMS5hLmI.AAAA'), { code: 'UNAUTHORIZED' });
    const [payload, mac] = token.split('.');
    const otherUser = Buffer.from(Buffer.from(payload, 'base64url').toString().replace(/alice$/, 'bob')).toString('base64url');
    assert.throws(() => w.node.unload(`${otherUser}.${mac}`), { code: 'UNAUTHORIZED' }, 'the user id is signed');
    w.clock.advance(2 * 60 * 60_000);
    assert.throws(() => w.node.unload(token), { code: 'TOKEN_EXPIRED' });
    const fresh = w.node.sessionTokens.issue('session-9999', 'alice', w.clock.now()).token;
    assert.equal(w.node.unload(fresh), false, 'no such session: nothing to do');
  });

  it('tokens of one secret verify on every node with it, and on no other', () => {
    const a = new World({ auth: { jwtSecret: 'x'.repeat(40) } });
    const b = new World({ auth: { jwtSecret: 'x'.repeat(40) } });
    const c = new World({ auth: { jwtSecret: 'y'.repeat(40) } });
    const d = new World({ auth: { jwtSecret: 'y'.repeat(40), sessionSecret: 'z'.repeat(40) } });
    const token = a.node.sessionTokens.issue('session-0001', 'alice', a.clock.now()).token;
    assert.equal(b.node.sessionTokens.verify(token, b.clock.now()).userId, 'alice');
    assert.throws(() => c.node.sessionTokens.verify(token, c.clock.now()), { code: 'UNAUTHORIZED' });
    assert.throws(() => d.node.sessionTokens.verify(c.node.sessionTokens.issue('session-0001', 'alice', c.clock.now()).token, d.clock.now()), { code: 'UNAUTHORIZED' });
    assert.equal(d.node.sessionTokens.source, 'PRESENCE_SESSION_SECRET');
    assert.equal(new World().node.sessionTokens.source, 'development');
  });
});
