import type { ClientMessage, ErrorCode, Meta, ServerMessage } from '@presence/protocol';
import type { Identity } from '../auth/identity.js';
import type { SessionTokens } from '../auth/session-tokens.js';
import { PresenceError, isPresenceError } from '../errors.js';
import type { TimerHandle } from '../presence/clock.js';
import type { Attachment, PresenceEngine } from '../presence/engine.js';
import type { Session, SessionSink } from '../presence/state.js';

/**
 * Protocol v1 over HTTP heartbeats (`POST /realtime/heartbeat`), for clients that cannot hold a
 * WebSocket. An HTTP session is an ordinary session of the model: it counts towards the user's
 * sessions, merges into the user, is a member of its channels and goes idle like any other. Only
 * its sink differs: instead of a socket, a buffer of the v1 frames it would have received, kept per
 * channel with their `seq` until a heartbeat acknowledges them. It is attached while heartbeats
 * arrive; two missed intervals detach it, as a closed socket is, and the offline delay runs.
 */

/**
 * Most events one channel keeps for an HTTP session between heartbeats. Past it the client could
 * not catch up event by event anyway: the buffer is dropped and the next answer is one sync.
 */
export const MAX_BUFFERED_EVENTS = 256;

interface BufferedFrame {
  seq: number;
  json: string;
  /** A `presence.sync`: the frames after it build on it, and it replaces all before it. */
  sync: boolean;
  /** Sent in an answer (which may still have been lost on the way). */
  delivered: boolean;
}

interface ChannelBuffer {
  frames: BufferedFrame[];
  /** More events arrived than MAX_BUFFERED_EVENTS: only a sync can help. */
  overflowed: boolean;
  /** `seq` of the latest frame that arrived, kept or not. */
  lastSeq: number;
}

/**
 * The sink of one HTTP session: what a socket would have been sent, waiting for the next
 * heartbeat. Typing is not kept (an HTTP session may type but receives no typing: it would be
 * stale by the time it is fetched), nor anything but `welcome` and the channels' membership frames.
 */
export class HeartbeatSink implements SessionSink {
  /** The latest `welcome` not yet answered: the session was opened, resumed or moved here. */
  welcome: string | undefined = undefined;
  /** Set when the model closed the session (logout, or another node or socket took it over). */
  closed: { code: number; reason: string } | undefined = undefined;
  readonly channels = new Map<string, ChannelBuffer>();

  /** @param onUnload lets go of the session when its page sent the unload beacon. */
  constructor(private readonly onUnload: () => void = () => {}) {}

  unloaded(): void {
    this.onUnload();
  }

  send(json: string, type: ServerMessage['type'], channel?: string, seq?: number): void {
    if (this.closed) return;
    if (type === 'welcome') {
      this.welcome = json;
      return;
    }
    if (channel === undefined || seq === undefined) return;
    if (type === 'presence.sync') {
      this.channels.set(channel, { frames: [{ seq, json, sync: true, delivered: false }], overflowed: false, lastSeq: seq });
      return;
    }
    if (type !== 'presence.join' && type !== 'presence.leave' && type !== 'presence.update') return;
    let buffer = this.channels.get(channel);
    if (!buffer) {
      // No sync was kept for this channel (the session is joining it in this very change): the
      // answer will start with one, which already shows this event's outcome.
      buffer = { frames: [], overflowed: true, lastSeq: seq };
      this.channels.set(channel, buffer);
    }
    buffer.lastSeq = seq;
    if (buffer.overflowed) return;
    if (buffer.frames.length >= MAX_BUFFERED_EVENTS) {
      buffer.overflowed = true;
      buffer.frames = [];
      return;
    }
    buffer.frames.push({ seq, json, sync: false, delivered: false });
  }

  close(code: number, reason: string): void {
    this.closed = { code, reason };
    this.welcome = undefined;
    this.channels.clear();
  }

  /**
   * Drops what the client acknowledged (`acked`: the seq of the last frame it applied) and says
   * whether the frames left continue exactly from there. False means only a fresh sync will do:
   * no ack (the client asks for one), a gap, an overflow, or an ack from another seq space (the
   * session moved between nodes: seq is per node).
   */
  settle(channel: string, acked: number | undefined): boolean {
    const buffer = this.channels.get(channel);
    if (!buffer || buffer.overflowed) return false;
    const first = buffer.frames[0];
    // No ack: the client asks for the state. A sync not sent yet (this heartbeat's join) is fresh.
    if (acked === undefined) return first?.sync === true && !first.delivered;
    // A sync the client has not applied yet goes (again) with everything after it. One never sent
    // before cannot have been applied, whatever the ack says: the ack is from another node.
    if (first?.sync && (acked < first.seq || !first.delivered)) return true;
    buffer.frames = buffer.frames.filter((frame) => frame.seq > acked);
    const next = buffer.frames[0];
    return next ? next.seq === acked + 1 : acked === buffer.lastSeq;
  }

  /** The frames of a channel for an answer; they stay until acknowledged. */
  take(channel: string, into: string[]): void {
    const buffer = this.channels.get(channel);
    if (!buffer) return;
    for (const frame of buffer.frames) {
      frame.delivered = true;
      into.push(frame.json);
    }
  }
}

/** A heartbeat, decoded: channels as a map of name → meta patch (undefined: no meta given). */
export interface Heartbeat {
  sessionId?: string;
  channels?: Map<string, Meta | undefined>;
  device?: string;
  activity?: 'active' | 'idle';
  ack?: Record<string, number>;
  typing?: Record<string, boolean>;
}

export interface HeartbeatAnswer {
  sessionId: string;
  sessionToken: string;
  intervalMs: number;
  /** Serialized v1 messages, in order. */
  events: string[];
  errors: { channel: string; code: ErrorCode; message: string }[];
}

interface HttpSession {
  readonly attachment: Attachment;
  readonly sink: HeartbeatSink;
  lastBeatAt: number;
  detachTimer: TimerHandle | undefined;
}

/** The HTTP sessions of one node, by session id. */
export class HeartbeatSessions {
  private readonly sessions = new Map<string, HttpSession>();

  constructor(
    private readonly engine: PresenceEngine,
    private readonly tokens: SessionTokens,
  ) {}

  get intervalMs(): number {
    return this.engine.config.httpHeartbeatIntervalMs;
  }

  /** HTTP sessions this node serves (attached, or closed and waiting to tell their client). */
  get size(): number {
    return this.sessions.size;
  }

  /**
   * One heartbeat: opens, resumes or takes over (from another node) the session, brings its
   * channels to the set asked for, passes on typing and activity, and answers what the session
   * was sent since the acknowledged `seq`. Throws PresenceError (TOO_MANY_CHANNELS,
   * TOO_MANY_SESSIONS, LOGGED_OUT) before changing anything.
   */
  beat(identity: Identity, heartbeat: Heartbeat): HeartbeatAnswer {
    return this.engine.causes.local(() => this.beatNow(identity, heartbeat));
  }

  private beatNow(identity: Identity, heartbeat: Heartbeat): HeartbeatAnswer {
    const { engine } = this;
    const max = engine.config.limits.maxChannelsPerSession;
    if (heartbeat.channels && heartbeat.channels.size > max) {
      throw new PresenceError('TOO_MANY_CHANNELS', `at most ${max} channels per session`);
    }
    const entry = this.attach(identity, heartbeat);
    const { attachment, sink } = entry;
    const session = attachment.session;
    const errors: HeartbeatAnswer['errors'] = [];
    const run = (channel: string, command: ClientMessage): void => {
      try {
        void engine.handle(attachment, command);
      } catch (error) {
        if (!isPresenceError(error)) throw error;
        errors.push({ channel, code: error.code, message: error.message });
      }
    };

    if (heartbeat.channels) {
      for (const name of [...session.channels]) if (!heartbeat.channels.has(name)) run(name, { type: 'leave', channel: name });
      for (const [name, meta] of heartbeat.channels) {
        if (!session.channels.has(name)) run(name, meta === undefined ? { type: 'join', channel: name } : { type: 'join', channel: name, meta });
        else if (meta !== undefined) run(name, { type: 'channel.meta', channel: name, meta });
      }
    }
    for (const [name, typing] of Object.entries(heartbeat.typing ?? {})) run(name, { type: 'typing', channel: name, typing });
    if (heartbeat.activity === 'active') run('', { type: 'activity' });
    else if (heartbeat.activity === 'idle') run('', { type: 'idle' });

    const events: string[] = [];
    if (sink.welcome !== undefined) events.push(sink.welcome);
    sink.welcome = undefined;
    for (const name of [...sink.channels.keys()]) if (!session.channels.has(name)) sink.channels.delete(name);
    for (const name of session.channels) {
      const acked = heartbeat.ack !== undefined && Object.hasOwn(heartbeat.ack, name) ? heartbeat.ack[name] : undefined;
      if (!sink.settle(name, acked)) {
        const channel = engine.state.channels.get(name);
        if (channel) engine.output.sync(session, channel);
      }
      sink.take(name, events);
    }
    const { token } = this.tokens.issue(session.id, session.user.record.userId, engine.clock.now());
    return { sessionId: session.id, sessionToken: token, intervalMs: this.intervalMs, events, errors };
  }

  /** The live HTTP session this heartbeat continues, or a session connected (opened, resumed, claimed) for it. */
  private attach(identity: Identity, heartbeat: Heartbeat): HttpSession {
    const { engine } = this;
    const now = engine.clock.now();
    let entry = heartbeat.sessionId === undefined ? undefined : this.sessions.get(heartbeat.sessionId);
    // Someone else's id is not theirs to continue: connect below mints them a session of their own.
    if (entry && entry.attachment.session.user.record.userId !== identity.userId) entry = undefined;
    if (entry?.sink.closed?.reason === 'LOGGED_OUT') {
      throw new PresenceError('LOGGED_OUT', 'This session was logged out; start a new one only when the user signs in again.');
    }
    if (entry && !this.isLive(entry)) {
      // Replaced (the client beat on another node, or a socket resumed the id): connect below takes
      // it back, without anyone seeing a leave or join.
      this.forget(entry);
      entry = undefined;
    }
    if (!entry) {
      let id: string | undefined;
      const sink = new HeartbeatSink(() => {
        if (id !== undefined) this.detach(id);
      });
      // A heartbeat that names no device keeps the session's (a move to this node is no change).
      const known = heartbeat.sessionId === undefined ? undefined : engine.state.sessions.get(heartbeat.sessionId);
      const device = heartbeat.device ?? (known?.user.record.userId === identity.userId ? known.device : undefined);
      const attachment = engine.connect({ identity, sessionId: heartbeat.sessionId, device }, sink);
      entry = { attachment, sink, lastBeatAt: now, detachTimer: undefined };
      id = attachment.session.id;
      this.sessions.set(id, entry);
    }
    entry.lastBeatAt = now;
    this.armDetach(entry);
    return entry;
  }

  /**
   * Ends the attachment of an HTTP session now, as a closed socket would (the unload beacon: its
   * page is gone, no heartbeat will come). False when this node serves no such HTTP session.
   */
  detach(sessionId: string): boolean {
    const entry = this.sessions.get(sessionId);
    if (!entry) return false;
    this.forget(entry);
    if (this.isLive(entry)) this.engine.disconnect(entry.attachment);
    return true;
  }

  /** Forgets every HTTP session (shutdown; the engine is disposed with them). */
  dispose(): void {
    for (const entry of this.sessions.values()) this.engine.clock.clearTimer(entry.detachTimer);
    this.sessions.clear();
  }

  private isLive(entry: HttpSession): boolean {
    const session: Session = entry.attachment.session;
    return !entry.sink.closed && this.engine.state.sessions.get(session.id) === session && session.sink === entry.sink;
  }

  private forget(entry: HttpSession): void {
    this.engine.clock.clearTimer(entry.detachTimer);
    entry.detachTimer = undefined;
    if (this.sessions.get(entry.attachment.session.id) === entry) this.sessions.delete(entry.attachment.session.id);
  }

  /**
   * One timer per session, re-armed lazily: a heartbeat only moves `lastBeatAt`. When two
   * intervals pass without one, the session is detached (its offline delay starts), or, if the
   * model already closed it, forgotten.
   */
  private armDetach(entry: HttpSession): void {
    if (entry.detachTimer) return;
    const { clock } = this.engine;
    const check = (): void => {
      entry.detachTimer = undefined;
      if (this.sessions.get(entry.attachment.session.id) !== entry) return;
      const left = entry.lastBeatAt + 2 * this.intervalMs - clock.now();
      if (left > 0) {
        entry.detachTimer = clock.setTimer(left, check);
        return;
      }
      this.forget(entry);
      if (this.isLive(entry)) this.engine.disconnect(entry.attachment);
    };
    entry.detachTimer = clock.setTimer(entry.lastBeatAt + 2 * this.intervalMs - clock.now(), check);
  }
}
