/**
 * Wire protocol v1: every message that crosses the WebSocket, as one tagged union per direction.
 * The server and the clients both import these types, so a field renamed here breaks both builds.
 */

/** Status as other users see it. `invisible` never appears here: it is shown as `offline`. */
export type Status = 'online' | 'away' | 'busy' | 'offline';

/** What a user can set by hand. `online` in a `status` command clears the manual status. */
export type ManualStatus = 'away' | 'busy' | 'invisible';

/** Who may see a user's presence outside shared channels. */
export type Visibility = 'everyone' | 'contacts' | 'nobody';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type Meta = { [key: string]: JsonValue };

/** One user's presence merged over all their sessions, as seen by another user. */
export interface UserPresence {
  userId: string;
  status: Status;
  /** Custom state name from configuration (e.g. `in-call`); absent when none or offline. */
  state?: string;
  /** Custom status text; absent when none or offline. */
  message?: string;
  /** When the manual status, state and message clear by themselves (ISO 8601). */
  expiresAt?: string;
  meta: Meta;
  /** When the user was last online: last activity or disconnect (ISO 8601), `null` if never seen. */
  lastSeen: string | null;
  /** Last activity of any session (ISO 8601), when known. */
  lastActive?: string;
  /** Distinct device kinds of the user's sessions, sorted (`web`, `ios`, …); empty when offline. */
  devices: string[];
}

/** The user's own presence, as returned to themselves: also tells which manual status is set. */
export interface SelfPresence extends UserPresence {
  manualStatus: ManualStatus | null;
  visibility: Visibility;
}

/** A channel member: a user (not a session) with their per-channel meta. */
export interface Member extends UserPresence {
  channelMeta: Meta;
  /** When the user last became visible in the channel: their first join, or their last return from invisible if later. */
  joinedAt: string;
}

export type Ref = number | string;

// ---------------------------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------------------------

interface Command {
  /** Echoed by the `ack` or `error` that answers this command. */
  ref?: Ref;
}

export interface JoinCommand extends Command {
  type: 'join';
  channel: string;
  meta?: Meta;
}
export interface LeaveCommand extends Command {
  type: 'leave';
  channel: string;
}
export interface StatusCommand extends Command {
  type: 'status';
  /** `online` clears the manual status (and state); `away`, `busy`, `invisible` set it. */
  status?: 'online' | ManualStatus;
  /** A configured custom state, or `null` to clear it. */
  state?: string | null;
  /** Custom text (≤ 256 chars), or `null` to clear it. */
  message?: string | null;
  /** ISO 8601 time after which status, state and message clear; absent or `null`: never. */
  expiresAt?: string | null;
  /** Who may see this user's presence outside shared channels. */
  visibility?: Visibility;
}
export interface MetaCommand extends Command {
  type: 'meta';
  meta: Meta;
}
export interface ChannelMetaCommand extends Command {
  type: 'channel.meta';
  channel: string;
  meta: Meta;
}
export interface ActivityCommand extends Command {
  type: 'activity';
}
export interface IdleCommand extends Command {
  type: 'idle';
}
export interface TypingCommand extends Command {
  type: 'typing';
  channel: string;
  typing: boolean;
}
export interface WatchCommand extends Command {
  type: 'watch';
  users: string[];
}
export interface UnwatchCommand extends Command {
  type: 'unwatch';
  users: string[];
}
export interface PingCommand extends Command {
  type: 'ping';
}
export interface LogoutCommand extends Command {
  type: 'logout';
}

export type ClientMessage =
  | JoinCommand
  | LeaveCommand
  | StatusCommand
  | MetaCommand
  | ChannelMetaCommand
  | ActivityCommand
  | IdleCommand
  | TypingCommand
  | WatchCommand
  | UnwatchCommand
  | PingCommand
  | LogoutCommand;

export type ClientMessageType = ClientMessage['type'];

export const CLIENT_MESSAGE_TYPES: readonly ClientMessageType[] = [
  'join',
  'leave',
  'status',
  'meta',
  'channel.meta',
  'activity',
  'idle',
  'typing',
  'watch',
  'unwatch',
  'ping',
  'logout',
];

// ---------------------------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------------------------

export interface Timeouts {
  heartbeatMs: number;
  idleMs: number;
  offlineDelayMs: number;
  typingMs: number;
}

export interface Limits {
  maxFrameBytes: number;
  maxMetaBytes: number;
  maxMetaDepth: number;
  maxMetaKeys: number;
  maxMessageLength: number;
  maxChannelNameLength: number;
  maxChannelsPerSession: number;
  maxSessionsPerUser: number;
  maxWatchedUsers: number;
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  maxOutboundBufferBytes: number;
}

/** Sent once, first, on every connection. */
export interface WelcomeMessage {
  type: 'welcome';
  userId: string;
  sessionId: string;
  /** True when `sessionId` named a session still inside its offline delay and it was resumed. */
  resumed: boolean;
  serverTime: string;
  timeouts: Timeouts;
  limits: Limits;
  /** Custom states the server accepts, with the status each maps to. */
  states: Record<string, Exclude<Status, 'offline'>>;
  /** The user's own presence as stored (manual status survives reconnects). */
  self: SelfPresence;
}

/** Full state of a channel: on join, on resume, and whenever the server resyncs. To the joiner. */
export interface PresenceSyncMessage {
  type: 'presence.sync';
  channel: string;
  members: Member[];
  seq: number;
}
/** A user became a member (first session joined, or came back from invisible). To members. */
export interface PresenceJoinMessage {
  type: 'presence.join';
  channel: string;
  member: Member;
  seq: number;
}
/** A user stopped being a member (last session left, offline delay ran out, or went invisible). */
export interface PresenceLeaveMessage {
  type: 'presence.leave';
  channel: string;
  userId: string;
  lastSeen: string | null;
  seq: number;
}
/** Status, meta or channel meta of a member changed. To all members, the user's own sessions too. */
export interface PresenceUpdateMessage {
  type: 'presence.update';
  channel: string;
  member: Member;
  seq: number;
}
/** Typing started or stopped. To the channel's other members (never to the typer). */
export interface TypingMessage {
  type: 'typing';
  channel: string;
  userId: string;
  typing: boolean;
}
/** Answer to `watch`: the current presence of the watched users (privacy applied). */
export interface UserSyncMessage {
  type: 'user.sync';
  users: UserPresence[];
}
/** A watched user's presence changed (privacy applied). */
export interface UserUpdateMessage {
  type: 'user.update';
  user: UserPresence;
}
export interface AckMessage {
  type: 'ack';
  ref: Ref;
  [data: string]: unknown;
}
export interface ErrorMessage {
  type: 'error';
  ref?: Ref;
  code: string;
  message: string;
}
export interface PongMessage {
  type: 'pong';
  ref?: Ref;
  serverTime: string;
}

export type ServerMessage =
  | WelcomeMessage
  | PresenceSyncMessage
  | PresenceJoinMessage
  | PresenceLeaveMessage
  | PresenceUpdateMessage
  | TypingMessage
  | UserSyncMessage
  | UserUpdateMessage
  | AckMessage
  | ErrorMessage
  | PongMessage;

export type ServerMessageType = ServerMessage['type'];

/** A frame from the server is one message or a batch of them (clients must accept both). */
export type ServerFrame = ServerMessage | ServerMessage[];
