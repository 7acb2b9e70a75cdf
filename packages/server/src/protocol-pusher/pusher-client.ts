import type { Meta } from '@presence/protocol';
import { isPresenceError } from '../errors.js';
import type { Attachment } from '../presence/engine.js';
import type { SessionSink } from '../presence/state.js';
import type { ServerLimits } from '../config/config.js';
import { assertMetaWithinLimits, isPlainObject } from '../presence/validation.js';
import { parseChannel, type PusherChannel } from './channel-names.js';
import { PUSHER_CODES, PusherError, pusherCodeFor } from './errors.js';
import { errorFrame, frame } from './frames.js';
import type { PusherProtocol } from './pusher-protocol.js';
import { sameSecret, subscriptionAuth } from './signatures.js';

/** Where a Pusher connection's frames go; the transport implements it over the WebSocket. */
export interface PusherSocket {
  /** Queues one Pusher message (one WebSocket frame: Pusher has no batches). */
  send(json: string): void;
  /** Closes with a close code of the server's own; the socket picks the Pusher code for it. */
  close(code: number, reason: string): void;
}

/** Client events per second and connection, as on Pusher. */
export const CLIENT_EVENTS_PER_SECOND = 10;
/** Largest client event `data`, as on Pusher. */
export const MAX_CLIENT_EVENT_BYTES = 10 * 1024;
const MAX_EVENT_NAME_LENGTH = 200;
/** The device kind Pusher sessions show in `devices`. */
export const PUSHER_DEVICE = 'pusher';

interface Subscription {
  readonly channel: PusherChannel;
  /** Presence channels: the user the connection is a member as. */
  readonly userId?: string;
}

/**
 * The sink of an engine session that a Pusher connection holds (one per user it subscribed to a
 * presence channel as). Protocol v1's frames are not for it: the Pusher listener writes its own.
 */
export class PusherSessionSink implements SessionSink {
  constructor(readonly client: PusherClient) {}

  send(): void {}

  /** The model ends the session (a logout, a terminate): the whole connection goes. */
  close(code: number, reason: string): void {
    this.client.socket.close(code, reason);
  }
}

/**
 * One connection on `/app/:key`: its subscriptions, and the engine sessions of the users it is a
 * presence member as. A connection has no user until its first presence subscription, whose
 * signed `channel_data` names one; that opens (or reuses) its session, so every presence channel
 * of the connection counts towards one user, merged with their other tabs and devices.
 */
export class PusherClient {
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly sessions = new Map<string, { attachment: Attachment; userInfo: string }>();
  private eventWindowStart = 0;
  private eventsInWindow = 0;
  private ended = false;

  constructor(
    private readonly protocol: PusherProtocol,
    readonly socket: PusherSocket,
    readonly socketId: string,
  ) {}

  /** The user this connection is a member as in the channel, if it is. */
  userIn(channel: string): string | undefined {
    return this.subscriptions.get(channel)?.userId;
  }

  /** Runs one parsed message. Never throws: failures become `pusher:error` frames. */
  receive(message: unknown): void {
    if (this.ended) return;
    try {
      if (!isPlainObject(message) || typeof message.event !== 'string') {
        throw new PusherError(PUSHER_CODES.INVALID_MESSAGE, 'a Pusher message is a JSON object with an "event" string');
      }
      const { event } = message;
      switch (event) {
        case 'pusher:ping':
          this.socket.send(frame('pusher:pong', undefined, '{}'));
          return;
        case 'pusher:pong':
          return;
        case 'pusher:subscribe':
          this.subscribe(message.data);
          return;
        case 'pusher:unsubscribe':
          this.unsubscribe(message.data);
          return;
        default:
          if (event.startsWith('client-')) this.clientEvent(event, message.channel, message.data);
          else throw new PusherError(PUSHER_CODES.INVALID_MESSAGE, `unsupported event ${JSON.stringify(event.slice(0, 64))}: clients send pusher:subscribe, pusher:unsubscribe, pusher:ping and client- events`);
      }
    } catch (error) {
      this.fail(error);
    }
  }

  /** The socket closed: subscriptions end, and each session starts its offline delay. */
  closed(): void {
    if (this.ended) return;
    this.ended = true;
    for (const { channel } of this.subscriptions.values()) this.protocol.removeSubscriber(channel, this);
    this.subscriptions.clear();
    for (const { attachment } of this.sessions.values()) this.protocol.engine.disconnect(attachment);
    this.sessions.clear();
    this.protocol.forget(this);
  }

  /** Reports activity for sessions that reported none since `staleBefore` (see PusherProtocol). */
  keepActive(staleBefore: number): void {
    for (const { attachment } of this.sessions.values()) {
      if (attachment.session.sink !== attachment.sink || attachment.session.lastActivityAt >= staleBefore) continue;
      this.protocol.engine.handle(attachment, { type: 'activity' });
    }
  }

  // Subscriptions -------------------------------------------------------------------------------

  private subscribe(data: unknown): void {
    const { config, engine } = this.protocol;
    const limits = engine.config.limits;
    if (!isPlainObject(data)) throw new PusherError(PUSHER_CODES.INVALID_MESSAGE, 'pusher:subscribe needs data {channel, auth?, channel_data?}');
    const channel = parseChannel(data.channel, limits.maxChannelNameLength);
    try {
      let member: { userId: string; userInfo: Meta | undefined; userInfoJson: string } | undefined;
      if (channel.kind !== 'public') {
        const channelData = channel.kind === 'presence' ? data.channel_data : undefined;
        if (channel.kind === 'presence' && typeof channelData !== 'string') {
          throw new PusherError(PUSHER_CODES.UNAUTHORIZED, `${channel.name}: a presence subscription needs channel_data, signed with auth`);
        }
        const expected = subscriptionAuth(config.key, config.secret, this.socketId, channel.name, channelData as string | undefined);
        if (typeof data.auth !== 'string' || !sameSecret(data.auth, expected)) {
          throw new PusherError(PUSHER_CODES.UNAUTHORIZED, `${channel.name}: invalid signature; auth must be key:HMAC-SHA256(secret, "socket_id:channel${channel.kind === 'presence' ? ':channel_data' : ''}")`);
        }
        if (channel.kind === 'presence') member = parseChannelData(channelData as string, limits);
      }
      const existing = this.subscriptions.get(channel.name);
      if (existing && existing.userId !== member?.userId) this.leave(existing);
      else if (existing && channel.kind !== 'presence') {
        this.succeeded(channel);
        return;
      }
      if (!existing && this.subscriptions.size >= limits.maxChannelsPerSession) {
        throw new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, `at most ${limits.maxChannelsPerSession} channels per connection`);
      }
      // In a cluster, the channel's messages from other nodes come here before anything is answered.
      const following = this.protocol.prepareSubscription(channel);
      if (!member) {
        const subscribed = (): void => {
          this.subscriptions.set(channel.name, { channel });
          this.protocol.addSubscriber(channel, this);
          this.succeeded(channel);
        };
        this.after([following], subscribed, channel);
        return;
      }
      const { userId } = member;
      const joined = (): void => {
        // Checked before a session opens: a refused subscription leaves no session behind.
        if (this.protocol.occupancyMode(channel.base)) {
          throw new PusherError(PUSHER_CODES.OVER_CAPACITY, `${channel.name}: the channel shows occupancy instead of its members (large rooms), and Pusher clients need the whole member list`);
        }
        const opened = !this.hasSession(userId);
        const attachment = this.sessionOf(userId, member.userInfo, member.userInfoJson);
        let answer: ReturnType<typeof engine.handle>;
        try {
          // The model answers the join with the channel's members (PusherProtocol.sync).
          answer = engine.handle(attachment, { type: 'join', channel: channel.base });
        } catch (error) {
          if (opened) this.endSession(userId);
          throw error;
        }
        this.subscriptions.set(channel.name, { channel, userId });
        this.protocol.addSubscriber(channel, this);
        if (answer instanceof Promise) {
          answer.then(undefined, (error: unknown) => {
            if (this.subscriptions.get(channel.name)?.userId === userId) {
              this.subscriptions.delete(channel.name);
              this.protocol.removeSubscriber(channel, this);
            }
            if (opened) this.endSession(userId);
            this.refuse(channel, error);
          });
        }
      };
      // Records of users this node has not seen come from the shared store first, and in a cluster
      // the channel's members on other nodes (so the join is answered at once, and the occupancy
      // check sees the whole channel).
      this.after([following, engine.loadUsers([userId]), engine.replication.prepareChannel(channel.base)], joined, channel);
    } catch (error) {
      this.refuse(channel, error);
    }
  }

  /** Runs `then` now, or once every wait is over; a failure (thrown or awaited) refuses the subscription. */
  private after(waits: (Promise<void> | undefined)[], then: () => void, channel: PusherChannel): void {
    const pending = waits.filter((wait): wait is Promise<void> => wait !== undefined);
    if (pending.length === 0) {
      then();
      return;
    }
    Promise.all(pending)
      .then(() => {
        if (!this.ended) then();
      })
      .then(undefined, (error: unknown) => this.refuse(channel, error));
  }

  /** Whether the connection holds a live session of this user. */
  private hasSession(userId: string): boolean {
    const known = this.sessions.get(userId);
    return known !== undefined && known.attachment.session.sink === known.attachment.sink;
  }

  /**
   * Ends the user's session on this connection at once (its first subscription was refused): no
   * offline delay, so a refused user never looks present.
   */
  private endSession(userId: string): void {
    const known = this.sessions.get(userId);
    if (!known) return;
    this.sessions.delete(userId);
    if (known.attachment.session.channels.size === 0) this.protocol.engine.endSession(known.attachment);
    else this.protocol.engine.disconnect(known.attachment);
  }

  private unsubscribe(data: unknown): void {
    if (!isPlainObject(data) || typeof data.channel !== 'string') {
      throw new PusherError(PUSHER_CODES.INVALID_MESSAGE, 'pusher:unsubscribe needs data {channel}');
    }
    const subscription = this.subscriptions.get(data.channel);
    if (subscription) this.leave(subscription);
  }

  /** Ends a subscription; a presence member leaves the channel at once, as on an explicit leave. */
  private leave(subscription: Subscription): void {
    const { channel, userId } = subscription;
    this.subscriptions.delete(channel.name);
    this.protocol.removeSubscriber(channel, this);
    const session = userId === undefined ? undefined : this.sessions.get(userId);
    if (session && session.attachment.session.channels.has(channel.base)) {
      this.protocol.engine.handle(session.attachment, { type: 'leave', channel: channel.base });
    }
  }

  /**
   * The engine session of `userId` on this connection, opened at its first presence subscription.
   * A later subscription with other `user_info` merges it into the user's meta.
   */
  private sessionOf(userId: string, userInfo: Meta | undefined, userInfoJson: string): Attachment {
    const { engine } = this.protocol;
    const known = this.sessions.get(userId);
    if (known && known.attachment.session.sink === known.attachment.sink) {
      if (userInfo !== undefined && userInfoJson !== known.userInfo) {
        engine.handle(known.attachment, { type: 'meta', meta: userInfo });
        known.userInfo = userInfoJson;
      }
      return known.attachment;
    }
    const attachment = engine.connect({ identity: { userId, meta: userInfo ?? {} }, device: PUSHER_DEVICE }, new PusherSessionSink(this));
    this.sessions.set(userId, { attachment, userInfo: userInfoJson });
    return attachment;
  }

  private succeeded(channel: PusherChannel): void {
    this.socket.send(frame('pusher_internal:subscription_succeeded', channel.name, '{}'));
  }

  // Client events ------------------------------------------------------------------------------

  private clientEvent(event: string, channelName: unknown, data: unknown): void {
    const refuse = (why: string) => new PusherError(PUSHER_CODES.CLIENT_EVENT_REFUSED, `${event.slice(0, 64)}: ${why}`);
    if (event.length > MAX_EVENT_NAME_LENGTH) throw refuse(`event names are at most ${MAX_EVENT_NAME_LENGTH} characters`);
    const subscription = typeof channelName === 'string' ? this.subscriptions.get(channelName) : undefined;
    if (!subscription) throw refuse('the connection is not subscribed to that channel');
    if (subscription.channel.kind === 'public') throw refuse('client events are only for private and presence channels');
    const now = this.protocol.engine.clock.now();
    if (now - this.eventWindowStart >= 1000) {
      this.eventWindowStart = now;
      this.eventsInWindow = 0;
    }
    if (this.eventsInWindow >= CLIENT_EVENTS_PER_SECOND) {
      throw new PusherError(PUSHER_CODES.CLIENT_EVENT_RATE_LIMIT, `at most ${CLIENT_EVENTS_PER_SECOND} client events per second; this one was dropped`);
    }
    this.eventsInWindow += 1;
    const text = typeof data === 'string' ? data : JSON.stringify(data ?? null);
    if (Buffer.byteLength(text) > MAX_CLIENT_EVENT_BYTES) throw refuse(`data is at most ${MAX_CLIENT_EVENT_BYTES} bytes`);
    this.protocol.relay(this, subscription.channel, event, text, subscription.userId);
  }

  // Errors -------------------------------------------------------------------------------------

  /** A refused subscription: `pusher:error`, and `pusher:subscription_error` on the channel (what Echo's `.error()` hears). */
  private refuse(channel: PusherChannel, error: unknown): void {
    const refusal = toPusherError(error, this.protocol);
    this.socket.send(errorFrame(refusal.code, refusal.message));
    const status = refusal.code === PUSHER_CODES.UNAUTHORIZED ? 401 : refusal.code === PUSHER_CODES.OVER_CAPACITY ? 503 : 400;
    this.socket.send(frame('pusher:subscription_error', channel.name, JSON.stringify({ type: 'AuthError', error: refusal.message, status, code: refusal.code })));
  }

  private fail(error: unknown): void {
    const refusal = toPusherError(error, this.protocol);
    this.socket.send(errorFrame(refusal.code, refusal.message));
  }
}

function toPusherError(error: unknown, protocol: PusherProtocol): PusherError {
  if (error instanceof PusherError) return error;
  if (isPresenceError(error)) return new PusherError(pusherCodeFor(error.code), error.message);
  protocol.log?.error('pusher message failed', { err: error });
  return new PusherError(PUSHER_CODES.RECONNECT, 'internal error; it is logged');
}

/** `channel_data` of a presence subscription: `{"user_id": string | number, "user_info"?: object}`. */
function parseChannelData(text: string, limits: ServerLimits): { userId: string; userInfo: Meta | undefined; userInfoJson: string } {
  const { maxUserIdLength } = limits;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, 'channel_data is not JSON');
  }
  if (!isPlainObject(value)) throw new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, 'channel_data must be a JSON object {user_id, user_info?}');
  const raw = value.user_id;
  const userId = typeof raw === 'number' && Number.isFinite(raw) ? String(raw) : raw;
  if (typeof userId !== 'string' || userId === '' || userId.length > maxUserIdLength) {
    throw new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, `channel_data.user_id must be a string of 1–${maxUserIdLength} characters or a number`);
  }
  const info = value.user_info;
  if (info !== undefined && info !== null && !isPlainObject(info)) {
    throw new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, 'channel_data.user_info must be a JSON object (it becomes the user\'s meta)');
  }
  const userInfo = info === undefined || info === null ? undefined : (info as Meta);
  // Checked here, before any session opens: user_info becomes the user's meta, with meta's limits.
  if (userInfo !== undefined) assertMetaWithinLimits(userInfo, limits);
  return { userId, userInfo, userInfoJson: userInfo === undefined ? '' : JSON.stringify(userInfo) };
}
