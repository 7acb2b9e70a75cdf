import type {
  AckMessage,
  ManualStatus,
  Meta,
  SelfPresence as WireSelfPresence,
  ServerMessage,
  StatusCommand,
  UserPresence as WireUserPresence,
  Visibility,
  WelcomeMessage,
} from '@presence/protocol';
import { ActivityMonitor, type ActivityOptions, type ActivityTarget, type VisibilitySource } from './activity.js';
import type { BackoffOptions } from './backoff.js';
import { Channel, type ChannelHost } from './channel.js';
import { systemClock, type Clock } from './clock.js';
import { CommandQueue, type Command, type Delivery } from './commands.js';
import { Connection, type ConnectionLost, type ConnectionStatus } from './connection.js';
import { Emitter } from './emitter.js';
import { PresenceError, isPresenceError } from './errors.js';
import { OwnPresence } from './own-presence.js';
import { ReconnectTriggers, type ReconnectTriggerOptions } from './reconnect-triggers.js';
import type { WebSocketConstructor } from './socket.js';
import type { TypingOptions } from './typing.js';
import { createUnloadBeacon, type UnloadBeacon, type UnloadBeaconOptions } from './unload-beacon.js';
import type { MetaPatch, SelfPresence, UserPresence } from './types.js';
import { WatchList } from './watch-list.js';

export interface PresenceClientOptions extends TypingOptions {
  /** The realtime endpoint, e.g. `wss://presence.example.com/realtime`. */
  url: string;
  /**
   * Returns a user token (JWT). Called before every connect and reconnect, so it can hand out a
   * fresh one; after a `4001` close (expired or refused token) the client reconnects with a new one.
   */
  getToken?: () => string | Promise<string>;
  /** Development mode only (a server without auth): connect as this user without a token. */
  userId?: string;
  /** Device kind shown to others in `devices` (`web`, `ios`, …). */
  device?: string;
  /** More query parameters for the connect URL. */
  params?: Record<string, string>;
  /**
   * Large rooms: in a channel past the server's occupancy threshold, receive counts and a sample
   * (`channel.occupancy`, `channel.members`) instead of the whole member list. `false` keeps the
   * whole list in every channel (at its cost in large rooms). @default true
   */
  occupancy?: boolean;
  /**
   * The WebSocket implementation. Browsers have one; in Node 20 pass the `ws` package's class.
   * @default globalThis.WebSocket
   */
  WebSocket?: WebSocketConstructor;
  /** Connect in the constructor; otherwise call `connect()`. @default true */
  autoConnect?: boolean;
  /** Reconnect backoff. @default { initialDelayMs: 500, maxDelayMs: 30000, factor: 2, jitter: 0.5 } */
  reconnect?: BackoffOptions;
  /**
   * A reconnect waiting out its backoff tries at once when the browser reports `online` or the page
   * becomes visible again. `false` turns it off. On by default where a `window` or `document` exists.
   */
  reconnectOn?: false | ReconnectTriggerOptions;
  /** A connection attempt that has not been welcomed after this long is abandoned. @default 10000 */
  connectTimeoutMs?: number;
  /** After this long without any message from the server, the client sends `ping`. @default 20000 */
  pingAfterMs?: number;
  /** No message at all within this long after a `ping`: the connection is dead, reconnect. @default 10000 */
  pongTimeoutMs?: number;
  /** Least delay before reconnecting after a `4008` (rate limited), `4029` (full) or `1013` (overloaded) close, plus up to as much again at random. @default 5000 */
  slowDownDelayMs?: number;
  /**
   * Browser activity detection (input, scrolling, and `visibilitychange` → idle). `false` turns
   * it off. On by default where a `document` exists; off in Node.
   */
  activity?: false | ActivityOptions;
  /**
   * The unload beacon: on `pagehide` (when the page is not kept in the back/forward cache) the
   * client sends `navigator.sendBeacon` to `…/realtime/disconnect`, so others see this tab leave
   * after the server's short unload grace instead of its offline delay. `false` turns it off. On
   * by default where `pagehide` and `navigator.sendBeacon` exist; off in Node.
   */
  unloadBeacon?: false | UnloadBeaconOptions;
  /** Time and timers. Tests pass a manual clock. @default the system clock */
  clock?: Clock;
  /** Randomness for the backoff's jitter. @default Math.random */
  random?: () => number;
}

/** A patch of the user's manual presence; absent fields keep their value, `null` clears. */
export interface StatusUpdate<State extends string = string> {
  /** `online` clears the manual status and state; `away`, `busy`, `invisible` set it. */
  status?: 'online' | ManualStatus;
  /** A custom state configured on the server (see `welcome.states`), or `null`. */
  state?: State | null;
  /** Custom text, ≤ 256 characters, or `null`. */
  message?: string | null;
  /** When status, state and message clear by themselves; absent or `null`: never. */
  expiresAt?: Date | string | null;
  visibility?: Visibility;
}

export interface PresenceClientEvents<UserMeta extends Meta = Meta, State extends string = string> {
  status(status: ConnectionStatus): void;
  /** A connection was established (the first, or a reconnect). */
  connected(welcome: WelcomeMessage): void;
  /** The connection ended for good: logged out (here or on another device), replaced, forbidden, refused token. */
  ended(reason: PresenceError): void;
  /** This user's own presence changed. */
  self(self: SelfPresence<UserMeta, State>): void;
  /** A watched user's presence changed. */
  user(user: UserPresence<UserMeta, State>, previous: UserPresence<UserMeta, State>): void;
  /** The map of watched users changed. */
  users(users: ReadonlyMap<string, UserPresence<UserMeta, State>>): void;
  /** Something failed that the client recovered from, or that no promise reports. */
  error(error: PresenceError): void;
}

const DEFAULT_TYPING_TIMEOUT_MS = 3000;
const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
const DEFAULT_ACTIVITY_THROTTLE_MS = 30_000;

/**
 * The Presence client: one logical session over reconnects. Create it once per user and page
 * (or process), join channels, set the user's status, watch contacts, and `close()` when done.
 *
 * The type parameters describe the application's data: `UserMeta` is what users set with
 * `setMeta` (name, avatar, …), `ChannelMeta` what members set per channel (cursor, mode, …), and
 * `State` the custom states configured on the server. Declare them as `type` aliases of JSON
 * (an `interface` has no index signature, so it does not fit `Meta`).
 */
export class PresenceClient<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string> extends Emitter<
  PresenceClientEvents<UserMeta, State>
> {
  private readonly connection: Connection;
  private readonly queue: CommandQueue;
  private readonly own = new OwnPresence();
  private readonly watchList: WatchList;
  private readonly channelMap = new Map<string, Channel<UserMeta, ChannelMeta, State>>();
  private readonly activityMonitor: ActivityMonitor | undefined;
  private readonly beacon: UnloadBeacon | undefined;
  /** The capability the unload beacon carries: from `welcome`, renewed by `session.token`. */
  private sessionToken: string | undefined;
  private readonly reconnectTriggers: ReconnectTriggers | undefined;
  private readonly channelHost: ChannelHost;
  private readonly clock: Clock;
  private activityThrottleMs: number;

  constructor(options: PresenceClientOptions) {
    super();
    checkUrl(options.url);
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof WebSocketClass !== 'function') {
      throw new PresenceError('NO_WEBSOCKET', 'no WebSocket implementation: pass the `WebSocket` option (in Node 20, the `ws` package)');
    }
    this.clock = options.clock ?? systemClock;
    const params: Record<string, string> = { ...options.params };
    if (options.device) params.device = options.device;
    if (options.userId) params.userId = options.userId;
    if (options.occupancy !== false) params.features = 'occupancy';
    this.connection = new Connection({
      url: options.url,
      ...(options.getToken ? { getToken: options.getToken } : {}),
      params,
      // A server that restarted learns the own status before it announces us: an invisible user
      // never flashes online, a busy one never shows online first.
      connectParams: () => this.own.connectHints(this.clock.now()),
      WebSocket: WebSocketClass,
      clock: this.clock,
      random: options.random ?? Math.random,
      backoff: options.reconnect ?? {},
      connectTimeoutMs: positive(options.connectTimeoutMs, 10_000, 'connectTimeoutMs'),
      pingAfterMs: positive(options.pingAfterMs, 20_000, 'pingAfterMs'),
      pongTimeoutMs: positive(options.pongTimeoutMs, 10_000, 'pongTimeoutMs'),
      slowDownDelayMs: positive(options.slowDownDelayMs, 5_000, 'slowDownDelayMs'),
      // "Get a new token once; if a fresh token is refused too, stop" (docs/errors.md, 4001).
      maxUnauthorized: 2,
    });
    this.queue = new CommandQueue((message) => this.connection.send(message));
    const host = {
      clock: this.clock,
      submit: (command: Command, delivery: Delivery) => this.queue.submit(command, delivery),
      sendNow: (command: Command) => this.queue.sendNow(command),
    };
    this.watchList = new WatchList(host);
    this.channelHost = {
      ...host,
      typingOptions: { typingPauseMs: options.typingPauseMs, typingRefreshMs: options.typingRefreshMs },
      ownUserId: () => this.userId,
      isConnected: () => this.connection.phase === 'open',
      serverTypingTimeoutMs: () => this.connection.welcome?.timeouts.typingMs ?? DEFAULT_TYPING_TIMEOUT_MS,
    };
    this.activityThrottleMs = options.activity ? options.activity.throttleMs ?? DEFAULT_ACTIVITY_THROTTLE_MS : DEFAULT_ACTIVITY_THROTTLE_MS;
    this.activityMonitor = this.createActivityMonitor(options.activity);
    this.beacon = createUnloadBeacon(options.url, options.unloadBeacon, () => (this.connection.phase === 'open' ? this.sessionToken : undefined));
    this.reconnectTriggers = this.createReconnectTriggers(options.reconnectOn);

    this.connection.on('status', (status) => this.emit('status', status));
    this.connection.on('welcome', (welcome) => this.welcomed(welcome));
    this.connection.on('message', (message) => this.route(message));
    this.connection.on('lost', (info) => this.lost(info));
    this.connection.on('ended', (reason) => this.ended(reason));
    this.connection.on('error', (error) => this.emit('error', error));
    this.watchList.on('update', (user, previous) => this.emit('user', user as UserPresence<UserMeta, State>, previous as UserPresence<UserMeta, State>));
    this.watchList.on('change', () => this.emit('users', this.users));

    if (options.autoConnect !== false) this.connect();
  }

  // State --------------------------------------------------------------------------------------

  get status(): ConnectionStatus {
    return this.connection.status;
  }

  /** The user this client is connected as (known after the first `welcome`). */
  get userId(): string | undefined {
    return this.connection.welcome?.userId;
  }

  /** The session id the client resumes on reconnect. */
  get sessionId(): string | undefined {
    return this.connection.sessionId;
  }

  /** The latest `welcome`: timeouts, limits and custom states of the server. */
  get welcome(): WelcomeMessage | undefined {
    return this.connection.welcome;
  }

  /** This user's own presence, including the manual status and visibility. */
  get self(): SelfPresence<UserMeta, State> | null {
    return this.own.self as SelfPresence<UserMeta, State> | null;
  }

  /** Watched users by id. */
  get users(): ReadonlyMap<string, UserPresence<UserMeta, State>> {
    return this.watchList.users as ReadonlyMap<string, UserPresence<UserMeta, State>>;
  }

  /** Channels this client has handles for, by name. */
  get channels(): ReadonlyMap<string, Channel<UserMeta, ChannelMeta, State>> {
    return this.channelMap;
  }

  // Lifecycle ----------------------------------------------------------------------------------

  /** Connects (or reconnects after `close()` or a final disconnect). Does nothing when already under way. */
  connect(): void {
    this.activityMonitor?.start();
    this.beacon?.start();
    this.reconnectTriggers?.start();
    this.connection.start();
  }

  /**
   * Closes the connection and removes every timer and listener the client registered. Pending
   * commands fail with CLIENT_CLOSED. The server keeps the session for its offline delay, so
   * `connect()` soon after resumes it; channels and watches are restored.
   */
  close(): void {
    this.connection.close();
    this.stopLocalWork();
    this.queue.failAll(new PresenceError('CLIENT_CLOSED', 'the client was closed'));
  }

  /**
   * Ends every session of this user at once (all tabs and devices): others see them offline
   * immediately. Forgets channels, watches and status, and ends with an `ended` event (code
   * LOGGED_OUT), as a logout on another device does. Without a connection the client just
   * closes, and the server lets the session go after its offline delay.
   */
  async logout(): Promise<void> {
    if (this.connection.phase === 'open') {
      try {
        await this.queue.submit({ type: 'logout' }, 'durable');
      } catch (error) {
        // The close that ends the logout may overtake the answer; that is success too.
        if (!isPresenceError(error) || (error.code !== 'LOGGED_OUT' && error.code !== 'CLIENT_CLOSED')) throw error;
      }
    }
    // Unless the server's close has already ended the client (and said so), end it here.
    if (this.connection.phase === 'ended') return;
    this.close();
    this.forget();
    this.emit('ended', new PresenceError('LOGGED_OUT', 'logged out by this client', { closeCode: 1000 }));
  }

  // Channels -----------------------------------------------------------------------------------

  /** The handle of a channel (created on first use; joining is separate). */
  channel(name: string): Channel<UserMeta, ChannelMeta, State> {
    let channel = this.channelMap.get(name);
    if (!channel) {
      channel = new Channel<UserMeta, ChannelMeta, State>(name, this.channelHost);
      this.channelMap.set(name, channel);
    }
    return channel;
  }

  /** Joins a channel (queued while disconnected); resolves once its member list has arrived. */
  join(name: string, meta?: MetaPatch<ChannelMeta>): Promise<Channel<UserMeta, ChannelMeta, State>> {
    return this.channel(name).join(meta);
  }

  // Own presence -------------------------------------------------------------------------------

  /** Sets the manual status, custom state, message and expiry (a patch), or just a status. */
  async setStatus(update: StatusUpdate<State> | 'online' | ManualStatus): Promise<SelfPresence<UserMeta, State>> {
    const patch = typeof update === 'string' ? { status: update } : update;
    const command: Omit<StatusCommand, 'ref'> = { type: 'status' };
    if (patch.status !== undefined) command.status = patch.status;
    if (patch.state !== undefined) command.state = patch.state;
    if (patch.message !== undefined) command.message = patch.message;
    if (patch.expiresAt !== undefined) command.expiresAt = patch.expiresAt instanceof Date ? patch.expiresAt.toISOString() : patch.expiresAt;
    if (patch.visibility !== undefined) command.visibility = patch.visibility;
    const ack = await this.queue.submit(command, 'durable');
    const self = selfOf(ack);
    this.own.statusConfirmed(self);
    return this.emitSelf(self);
  }

  /** Merges into the user's meta (name, avatar, …); `null` removes a key. */
  async setMeta(meta: MetaPatch<UserMeta>): Promise<SelfPresence<UserMeta, State>> {
    const patch = meta as Meta;
    const ack = await this.queue.submit({ type: 'meta', meta: patch }, 'durable');
    const self = selfOf(ack);
    this.own.metaConfirmed(self, patch);
    return this.emitSelf(self);
  }

  /** Tells the server the user is active (when activity detection is off or not in a browser). */
  reportActivity(): void {
    this.signal('activity');
  }

  /** Tells the server the user is idle. */
  reportIdle(): void {
    this.signal('idle');
  }

  // Watching users -----------------------------------------------------------------------------

  /** Watches users outside any channel; resolves with their presence. */
  watch(userIds: readonly string[]): Promise<UserPresence<UserMeta, State>[]> {
    return this.watchList.watch(userIds) as Promise<UserPresence<UserMeta, State>[]>;
  }

  unwatch(userIds: readonly string[]): Promise<void> {
    return this.watchList.unwatch(userIds);
  }

  // Internals ----------------------------------------------------------------------------------

  private welcomed(welcome: WelcomeMessage): void {
    this.sessionToken = welcome.sessionToken;
    this.own.welcomed(welcome);
    this.emitSelf(welcome.self);
    // Restore first, so that the application's queued commands apply on top of it.
    for (const command of this.own.restoreCommands(welcome, this.clock.now())) {
      this.queue.sendNow(command).then(
        (ack) => {
          const self = selfOf(ack);
          if (command.type === 'status') this.own.statusConfirmed(self);
          else if (command.type === 'meta') this.own.metaConfirmed(self, command.meta);
          this.emitSelf(self);
        },
        (error: unknown) => this.reportUnlessDisconnected(error),
      );
    }
    for (const channel of this.channelMap.values()) channel.restore(welcome.resumed, welcome.timeouts.offlineDelayMs);
    this.watchList.restore(welcome.resumed, welcome.timeouts.offlineDelayMs);
    if (this.activityMonitor) {
      this.activityThrottleMs = Math.min(this.activityThrottleMs, welcome.timeouts.idleMs / 3 || DEFAULT_IDLE_TIMEOUT_MS / 3);
      // A new session starts active; a hidden page must say otherwise.
      if (this.activityMonitor.connected() === 'idle') {
        this.queue.sendNow({ type: 'idle' }).catch((error: unknown) => this.reportUnlessDisconnected(error));
      }
    }
    this.queue.open();
    this.emit('connected', welcome);
  }

  private route(message: ServerMessage): void {
    switch (message.type) {
      case 'ack':
        this.queue.answer(message);
        return;
      case 'error':
        if (this.queue.answer(message)) return;
        // TOKEN_EXPIRED without ref announces a close the connection handles by itself.
        if (message.code !== 'TOKEN_EXPIRED') this.emit('error', new PresenceError(message.code as PresenceError['code'], message.message));
        return;
      case 'presence.sync':
        for (const member of message.members) this.observeSelf(member);
        this.channelMap.get(message.channel)?.applySync(message);
        return;
      case 'presence.join':
      case 'presence.update':
        this.observeSelf(message.member);
        this.channelMap.get(message.channel)?.applyEvent(message);
        return;
      case 'presence.leave':
        this.channelMap.get(message.channel)?.applyEvent(message);
        return;
      case 'presence.occupancy':
        this.channelMap.get(message.channel)?.applyOccupancy(message);
        return;
      case 'presence.page':
        this.queue.answer(message);
        return;
      case 'typing':
        this.channelMap.get(message.channel)?.applyTyping(message);
        return;
      case 'user.sync':
        for (const user of message.users) this.observeSelf(user);
        this.watchList.applySync(message);
        return;
      case 'user.update':
        this.observeSelf(message.user);
        this.watchList.applyUpdate(message);
        return;
      case 'session.token':
        this.sessionToken = message.sessionToken;
        return;
      case 'pong':
      case 'welcome':
        return;
    }
  }

  private lost(_info: ConnectionLost): void {
    this.queue.connectionLost();
    for (const channel of this.channelMap.values()) channel.connectionLost();
  }

  private ended(reason: PresenceError): void {
    this.stopLocalWork();
    this.queue.failAll(reason);
    // Logged out (here or on another device): nothing of this user's presence is to be restored.
    if (reason.code === 'LOGGED_OUT') this.forget();
    this.emit('ended', reason);
  }

  /** Stops timers and listeners; the application's state stays for a later `connect()`. */
  private stopLocalWork(): void {
    this.activityMonitor?.stop();
    this.beacon?.stop();
    this.reconnectTriggers?.stop();
    this.watchList.dispose();
    for (const channel of this.channelMap.values()) {
      channel.dispose();
      channel.connectionLost();
    }
  }

  private forget(): void {
    for (const channel of this.channelMap.values()) if (channel.state !== 'idle') channel.reset();
    this.watchList.clear();
    this.own.clear();
  }

  private observeSelf(presence: WireUserPresence): void {
    if (this.own.observed(presence)) this.emitSelf(this.own.self!);
  }

  private emitSelf(self: WireSelfPresence): SelfPresence<UserMeta, State> {
    const typed = self as SelfPresence<UserMeta, State>;
    this.emit('self', typed);
    return typed;
  }

  private signal(type: 'activity' | 'idle'): void {
    this.queue.submit({ type }, 'ephemeral').catch((error: unknown) => this.reportUnlessDisconnected(error));
  }

  /** For commands no promise reports: what the server refused is worth telling; a lost connection is not. */
  private reportUnlessDisconnected(error: unknown): void {
    if (isPresenceError(error) && error.refusedByServer) this.emit('error', error);
  }

  private createActivityMonitor(options: false | ActivityOptions | undefined): ActivityMonitor | undefined {
    if (options === false) return undefined;
    const g = globalThis as { document?: VisibilitySource; addEventListener?: unknown };
    const visibility = options?.visibility ?? g.document;
    const target = options?.target ?? (typeof g.addEventListener === 'function' ? (globalThis as unknown as ActivityTarget) : visibility);
    if (!target && !visibility) return undefined;
    return new ActivityMonitor({
      clock: this.clock,
      ...(target ? { target } : {}),
      ...(visibility ? { visibility } : {}),
      throttleMs: () => this.activityThrottleMs,
      report: (signal) => this.signal(signal),
    });
  }

  private createReconnectTriggers(options: false | ReconnectTriggerOptions | undefined): ReconnectTriggers | undefined {
    if (options === false) return undefined;
    const g = globalThis as { document?: VisibilitySource; addEventListener?: unknown };
    const online = options?.online ?? (typeof g.addEventListener === 'function' ? (globalThis as unknown as ActivityTarget) : undefined);
    const visibility = options?.visibility ?? g.document;
    if (!online && !visibility) return undefined;
    return new ReconnectTriggers({ ...(online ? { online } : {}), ...(visibility ? { visibility } : {}) }, () => this.connection.retryNow());
  }
}

function selfOf(ack: AckMessage): WireSelfPresence {
  return (ack as AckMessage & { self: WireSelfPresence }).self;
}

function checkUrl(url: unknown): void {
  let parsed: URL | undefined;
  try {
    parsed = typeof url === 'string' ? new URL(url) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:')) {
    throw new PresenceError('INVALID_OPTION', `url must be a ws:// or wss:// URL (got ${JSON.stringify(url)})`);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!(typeof value === 'number' && value > 0 && Number.isFinite(value))) {
    throw new PresenceError('INVALID_OPTION', `${name} must be a positive number of milliseconds (got ${String(value)})`);
  }
  return value;
}
