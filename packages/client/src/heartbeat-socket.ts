import type { ClientMessage, ErrorCode, HeartbeatResponse, Meta, ServerMessage, UserPresence } from '@presence/protocol';
import { ERRORS, isErrorCode } from '@presence/protocol';
import { Timer, type Clock } from './clock.js';
import { READY_STATE, type WebSocketLike } from './socket.js';

/** The part of `fetch` the HTTP transport uses (the global one in browsers and Node 20). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ status: number; text(): Promise<string> }>;

export interface HeartbeatSocketDeps {
  fetch: FetchLike;
  clock: Clock;
}

type Handler = ((event: never) => void) | null;
type Emit = (event: unknown) => void;

/** A command waiting for the heartbeat (or request) that carries it. */
interface Pending {
  ref: ClientMessage['ref'];
  /** The channel a join named: a refusal in the answer's `errors` fails this command. */
  channel?: string;
  /** Data the ack carries, computed when the answer is in. */
  data?: () => Record<string, unknown>;
}

const JSON_HEADERS = { 'content-type': 'application/json' } as const;
/** Channel-membership messages carry `seq`: the heartbeat acknowledges the last one per channel. */
const SEQ_TYPES: ReadonlySet<string> = new Set(['presence.sync', 'presence.join', 'presence.leave', 'presence.update']);

/**
 * A WebSocket, as far as `PresenceClient` can tell, made of HTTP requests: `POST …/heartbeat`
 * every `intervalMs` (at once when there is something to say), whose answers are handed over as
 * frames of protocol v1 messages. Commands become heartbeat fields (channels, typing, activity) or
 * HTTP API calls (status and meta: `POST …/presence/update`; watched users: `POST …/presence/query`,
 * polled once per interval). Everything above it, from reconnects to member reconciliation, is the
 * WebSocket client's own code.
 */
export class HeartbeatSocket implements WebSocketLike {
  readyState: number = READY_STATE.CONNECTING;
  onopen: Handler = null;
  onmessage: Handler = null;
  onclose: Handler = null;
  onerror: Handler = null;

  private readonly base: string;
  private readonly heartbeatUrl: string;
  private readonly headers: Record<string, string>;
  private readonly device: string | null;
  private sessionId: string | undefined;
  private userId: string | undefined;
  private intervalMs = 10_000;
  private maxChannels = Infinity;
  /** Wanted channels, with channel meta still to send (undefined: nothing new). */
  private readonly channels = new Map<string, Meta | undefined>();
  /**
   * Whether the client has said which channels it wants on this socket. Until it has, heartbeats
   * carry no `channels` (unchanged): the first heartbeat of a reconnect must not empty a resumed
   * session before the client has joined its channels again.
   */
  private channelsKnown = false;
  /** Own channel meta as last seen in the channel's events (for the `channel.meta` ack). */
  private readonly ownChannelMeta = new Map<string, Meta>();
  private readonly acked: Record<string, number> = {};
  /** Channels the client asked to join again: their next answer is a fresh sync. */
  private readonly resync = new Set<string>();
  private typing: Record<string, boolean> = {};
  private activity: 'active' | 'idle' | undefined;
  private queued: Pending[] = [];
  private pongs: ClientMessage['ref'][] = [];
  private readonly watched = new Map<string, string>();
  private lastPollAt = 0;
  private readonly timer: Timer;
  private inFlight = false;
  private again = false;
  private readonly abort = typeof AbortController === 'function' ? new AbortController() : undefined;

  constructor(
    url: string,
    private readonly deps: HeartbeatSocketDeps,
  ) {
    const parsed = new URL(url);
    const params = new URLSearchParams(parsed.search);
    parsed.protocol = parsed.protocol === 'wss:' || parsed.protocol === 'https:' ? 'https:' : 'http:';
    parsed.search = '';
    this.base = parsed.toString().replace(/\/+$/, '');
    const token = params.get('token');
    this.headers = token ? { ...JSON_HEADERS, authorization: `Bearer ${token}` } : { ...JSON_HEADERS };
    // Development mode: who is asking travels in the query, as on the WebSocket.
    const dev = new URLSearchParams();
    for (const name of ['userId', 'name', 'avatar']) {
      const value = params.get(name);
      if (value !== null) dev.set(name, value);
    }
    this.heartbeatUrl = `${this.base}/heartbeat${dev.size > 0 ? `?${dev}` : ''}`;
    this.userId = params.get('userId') ?? undefined;
    this.device = params.get('device');
    this.sessionId = params.get('sessionId') ?? undefined;
    this.timer = new Timer(deps.clock, () => void this.beat());
    this.schedule(0);
  }

  // WebSocketLike ------------------------------------------------------------------------------

  send(data: string): void {
    if (this.readyState !== READY_STATE.OPEN) return;
    const command = JSON.parse(data) as ClientMessage;
    switch (command.type) {
      case 'join': {
        const known = this.channels.has(command.channel);
        if (!known && this.channels.size >= this.maxChannels) {
          this.refuse(command.ref, 'TOO_MANY_CHANNELS', `at most ${this.maxChannels} channels per session`);
          return;
        }
        this.channels.set(command.channel, mergeMeta(this.channels.get(command.channel), command.meta));
        this.channelsKnown = true;
        // A join of a joined channel asks for its member list again.
        if (known) this.resync.add(command.channel);
        this.queue({ ref: command.ref, channel: command.channel }, true);
        return;
      }
      case 'leave':
        this.channels.delete(command.channel);
        this.channelsKnown = true;
        this.resync.delete(command.channel);
        delete this.acked[command.channel];
        this.queue({ ref: command.ref }, true);
        return;
      case 'channel.meta': {
        const name = command.channel;
        if (!this.channels.has(name)) {
          this.refuse(command.ref, 'NOT_IN_CHANNEL', `the session has not joined "${name}"`);
          return;
        }
        this.channels.set(name, mergeMeta(this.channels.get(name), command.meta));
        this.queue({ ref: command.ref, data: () => ({ channelMeta: this.ownChannelMeta.get(name) ?? {} }) }, true);
        return;
      }
      case 'typing':
        this.typing[command.channel] = command.typing;
        this.queue({ ref: command.ref }, true);
        return;
      case 'activity':
      case 'idle':
        this.activity = command.type === 'idle' ? 'idle' : 'active';
        this.queue({ ref: command.ref }, false);
        return;
      case 'ping':
        this.pongs.push(command.ref);
        this.schedule(0);
        return;
      case 'status':
      case 'meta': {
        const { type: _type, ref, ...fields } = command;
        void this.request('/presence/update', { ...fields, ...(this.userId ? { userId: this.userId } : {}) }, ref, (answer) => ({
          self: (answer as { user: unknown }).user,
        }));
        return;
      }
      case 'logout':
        void this.request('/presence/update', { status: 'offline', ...(this.userId ? { userId: this.userId } : {}) }, command.ref, () => ({})).then((ok) => {
          if (ok) this.finish(1000, 'LOGGED_OUT');
        });
        return;
      case 'watch':
        for (const id of command.users) if (!this.watched.has(id)) this.watched.set(id, '');
        void this.poll(command.users, true).then((ok) => {
          if (ok && command.ref !== undefined) this.deliver([{ type: 'ack', ref: command.ref, watching: this.watched.size }]);
        });
        return;
      case 'unwatch': {
        for (const id of command.users) this.watched.delete(id);
        const { ref } = command;
        if (ref !== undefined) this.answerLater([{ type: 'ack', ref, watching: this.watched.size }]);
        return;
      }
    }
  }

  close(): void {
    if (this.readyState === READY_STATE.CLOSED) return;
    this.readyState = READY_STATE.CLOSED;
    this.timer.cancel();
    this.abort?.abort();
  }

  // Heartbeats ---------------------------------------------------------------------------------

  private queue(pending: Pending, now: boolean): void {
    this.queued.push(pending);
    if (now) this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.readyState === READY_STATE.CLOSED) return;
    if (this.inFlight) {
      if (delayMs === 0) this.again = true;
      return;
    }
    this.timer.arm(delayMs);
  }

  private async beat(): Promise<void> {
    if (this.readyState === READY_STATE.CLOSED) return;
    this.inFlight = true;
    this.again = false;
    const carried = this.queued;
    const pongs = this.pongs;
    this.queued = [];
    this.pongs = [];
    const body: Record<string, unknown> = {
      ...(this.sessionId ? { sessionId: this.sessionId } : {}),
      ...(this.device ? { device: this.device } : {}),
      ack: Object.fromEntries(Object.entries(this.acked).filter(([name]) => !this.resync.has(name))),
    };
    if (this.channelsKnown) body.channels = [...this.channels].map(([name, meta]) => (meta === undefined ? name : { name, meta }));
    if (Object.keys(this.typing).length > 0) body.typing = this.typing;
    if (this.activity) body.activity = this.activity;
    const sentMeta = new Map(this.channels);
    this.typing = {};
    this.activity = undefined;
    this.resync.clear();

    let answer: HeartbeatResponse;
    try {
      const response = await this.deps.fetch(this.heartbeatUrl, { method: 'POST', headers: this.headers, body: JSON.stringify(body), signal: this.abort?.signal });
      const text = await response.text();
      if (this.readyState === READY_STATE.CLOSED) return;
      if (response.status !== 200) {
        this.failed(response.status, text);
        return;
      }
      answer = JSON.parse(text) as HeartbeatResponse;
    } catch {
      if (this.readyState !== READY_STATE.CLOSED) this.finish(1006, '');
      return;
    } finally {
      this.inFlight = false;
    }
    // What was sent is applied: channel meta is not sent again, unless changed meanwhile.
    for (const [name, meta] of sentMeta) if (meta !== undefined && this.channels.get(name) === meta) this.channels.set(name, undefined);
    this.sessionId = answer.sessionId;
    this.intervalMs = answer.intervalMs;

    const messages: ServerMessage[] = [];
    for (const event of answer.events) {
      if (event.type === 'welcome') {
        this.userId = event.userId;
        this.maxChannels = event.limits.maxChannelsPerSession;
      }
      if (SEQ_TYPES.has(event.type)) {
        const { channel, seq } = event as { channel: string; seq: number };
        if (this.channels.has(channel)) this.acked[channel] = seq;
        this.noteOwnMeta(event);
      }
      messages.push(event);
    }
    messages.push({ type: 'session.token', sessionToken: answer.sessionToken, expiresAt: new Date(this.deps.clock.now() + 30 * 60_000).toISOString() });
    const refused = new Map((answer.errors ?? []).map((error) => [error.channel, error]));
    for (const pending of carried) {
      const error = pending.channel === undefined ? undefined : refused.get(pending.channel);
      if (error) {
        refused.delete(pending.channel!);
        // The join did not happen: the channel is not wanted any more.
        this.channels.delete(pending.channel!);
        messages.push({ type: 'error', ...(pending.ref !== undefined ? { ref: pending.ref } : {}), code: error.code, message: error.message });
      } else if (pending.ref !== undefined) {
        messages.push({ type: 'ack', ref: pending.ref, ...pending.data?.() });
      }
    }
    // Refusals no command here waits for (a typing signal for a channel left meanwhile).
    for (const error of refused.values()) messages.push({ type: 'error', code: error.code, message: error.message });
    for (const ref of pongs) messages.push({ type: 'pong', ...(ref !== undefined ? { ref } : {}), serverTime: new Date(this.deps.clock.now()).toISOString() });

    if (this.readyState === READY_STATE.CONNECTING) {
      this.readyState = READY_STATE.OPEN;
      (this.onopen as Emit | null)?.({});
    }
    this.deliver(messages);
    if (this.watched.size > 0 && this.deps.clock.now() - this.lastPollAt >= this.intervalMs) void this.poll([...this.watched.keys()], false);
    this.schedule(this.again ? 0 : this.intervalMs);
  }

  /** Hands messages over as one frame (also an empty one: it tells the client the server is there). */
  private deliver(messages: ServerMessage[]): void {
    if (this.readyState === READY_STATE.CLOSED) return;
    (this.onmessage as Emit | null)?.({ data: JSON.stringify(messages) });
  }

  private noteOwnMeta(event: ServerMessage): void {
    if (event.type === 'presence.sync') {
      const own = event.members.find((member) => member.userId === this.userId);
      if (own) this.ownChannelMeta.set(event.channel, own.channelMeta);
    } else if ((event.type === 'presence.join' || event.type === 'presence.update') && event.member.userId === this.userId) {
      this.ownChannelMeta.set(event.channel, event.member.channelMeta);
    }
  }

  /** A refused heartbeat: its error, then the close the same error gives a WebSocket. */
  private failed(status: number, text: string): void {
    let code: ErrorCode = status >= 500 ? 'INTERNAL' : 'INVALID_MESSAGE';
    let message = `the heartbeat was answered ${status}`;
    try {
      const error = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
      if (isErrorCode(error?.code)) code = error.code;
      if (typeof error?.message === 'string') message = error.message;
    } catch {
      // Not our JSON (a proxy's page): the status decides.
    }
    if (code === 'LOGGED_OUT') {
      this.finish(1000, code);
      return;
    }
    this.deliver([{ type: 'error', code, message }]);
    const spec = ERRORS[code] as { close?: number };
    this.finish(spec.close ?? (status >= 500 ? 1011 : 1008), code);
  }

  /** Ends this "socket" as a closed WebSocket would: the client reconnects (a new one) or ends. */
  private finish(code: number, reason: string): void {
    if (this.readyState === READY_STATE.CLOSED) return;
    this.close();
    (this.onclose as Emit | null)?.({ code, reason });
  }

  private refuse(ref: ClientMessage['ref'], code: ErrorCode, message: string): void {
    this.answerLater([{ type: 'error', ...(ref !== undefined ? { ref } : {}), code, message }]);
  }

  /** An answer known at once still comes after `send` returns, as from a socket (the client files the ref after sending). */
  private answerLater(messages: ServerMessage[]): void {
    queueMicrotask(() => this.deliver(messages));
  }

  // Requests beside the heartbeat ---------------------------------------------------------------

  /** One HTTP API call answering one command; false when it failed (the error was delivered). */
  private async request(path: string, body: unknown, ref: ClientMessage['ref'], data: (answer: unknown) => Record<string, unknown>): Promise<boolean> {
    try {
      const response = await this.deps.fetch(`${this.base}${path}`, { method: 'POST', headers: this.headers, body: JSON.stringify(body), signal: this.abort?.signal });
      const text = await response.text();
      if (this.readyState === READY_STATE.CLOSED) return false;
      const parsed = JSON.parse(text) as { error?: { code: string; message: string } };
      if (response.status !== 200) {
        const code = isErrorCode(parsed.error?.code) ? parsed.error.code : 'INTERNAL';
        this.deliver([{ type: 'error', ...(ref !== undefined ? { ref } : {}), code, message: parsed.error?.message ?? '' }]);
        return false;
      }
      if (ref !== undefined) this.deliver([{ type: 'ack', ref, ...data(parsed) }]);
      return true;
    } catch {
      // The network is gone, as a WebSocket's would be: the client reconnects and sends it again.
      this.finish(1006, '');
      return false;
    }
  }

  /** Reads watched users: `user.sync` of them all (a `watch`), or `user.update` for those that changed. */
  private async poll(ids: readonly string[], sync: boolean): Promise<boolean> {
    this.lastPollAt = this.deps.clock.now();
    try {
      const response = await this.deps.fetch(`${this.base}/presence/query`, { method: 'POST', headers: this.headers, body: JSON.stringify({ userIds: ids }), signal: this.abort?.signal });
      const text = await response.text();
      if (this.readyState === READY_STATE.CLOSED || response.status !== 200) return false;
      const users = (JSON.parse(text) as { users: UserPresence[] }).users;
      const changed: ServerMessage[] = [];
      for (const user of users) {
        const before = this.watched.get(user.userId);
        // Unwatched while the answer was on its way.
        if (before === undefined) continue;
        const json = JSON.stringify(user);
        if (!sync && before !== json) changed.push({ type: 'user.update', user });
        this.watched.set(user.userId, json);
      }
      this.deliver(sync ? [{ type: 'user.sync', users: users.filter((user) => this.watched.has(user.userId)) }] : changed);
      return true;
    } catch {
      this.finish(1006, '');
      return false;
    }
  }
}

function mergeMeta(before: Meta | undefined, patch: Meta | undefined): Meta | undefined {
  if (patch === undefined) return before;
  return before === undefined ? patch : { ...before, ...patch };
}
