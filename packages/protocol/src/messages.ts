/**
 * Wire protocol v1: every message that crosses the WebSocket, as one tagged union per direction.
 * The server and the clients both import these types, so a field renamed here breaks both builds.
 *
 * The types are derived from the schemas in `schema.ts` (type-only imports: nothing of the schema
 * library reaches code that imports this module), so a field added to a schema is a field of the
 * type. Field documentation lives in the schemas' descriptions, which the JSON Schema and the
 * OpenAPI document carry too.
 */
import type { Static } from '@sinclair/typebox';
import type * as S from './schema.js';

/** Status as other users see it. `invisible` never appears here: it is shown as `offline`. */
export type Status = Static<typeof S.Status>;

/** What a user can set by hand. `online` in a `status` command clears the manual status. */
export type ManualStatus = Static<typeof S.ManualStatus>;

/** Who may see a user's presence outside shared channels. */
export type Visibility = Static<typeof S.Visibility>;

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type Meta = { [key: string]: JsonValue };

/** One user's presence merged over all their sessions, as seen by another user. */
export interface UserPresence extends Static<typeof S.UserPresence> {}

/** The user's own presence, as returned to themselves: also tells which manual status is set. */
export interface SelfPresence extends Static<typeof S.SelfPresence> {}

/** A channel member: a user (not a session) with their per-channel meta. */
/** A channel member. `joinedAt`: when the user last became visible in the channel (their first join, or their last return from invisible if later). */
export interface Member extends Static<typeof S.Member> {}

export type Ref = Static<typeof S.Ref>;

// ---------------------------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------------------------

export interface JoinCommand extends Static<typeof S.JoinCommand> {}
export interface LeaveCommand extends Static<typeof S.LeaveCommand> {}
/** `status` sets the manual status, state, message, expiry and visibility (see `schema.ts`). */
export interface StatusCommand extends Static<typeof S.StatusCommand> {}
export interface MetaCommand extends Static<typeof S.MetaCommand> {}
export interface ChannelMetaCommand extends Static<typeof S.ChannelMetaCommand> {}
export interface ActivityCommand extends Static<typeof S.ActivityCommand> {}
export interface IdleCommand extends Static<typeof S.IdleCommand> {}
export interface TypingCommand extends Static<typeof S.TypingCommand> {}
export interface WatchCommand extends Static<typeof S.WatchCommand> {}
export interface UnwatchCommand extends Static<typeof S.UnwatchCommand> {}
export interface PingCommand extends Static<typeof S.PingCommand> {}
/** `members` pages through a joined channel's visible members; answered by `presence.page`. */
export interface MembersCommand extends Static<typeof S.MembersCommand> {}
export interface LogoutCommand extends Static<typeof S.LogoutCommand> {}

/** Every command (a type test checks it is the schema's `ClientMessage`). */
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
  | MembersCommand
  | LogoutCommand;

export type ClientMessageType = ClientMessage['type'];

/** Every command type (a test checks it against the schemas). */
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
  'members',
  'logout',
];

// ---------------------------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------------------------

export interface Timeouts extends Static<typeof S.Timeouts> {}
export interface Limits extends Static<typeof S.Limits> {}

/** Sent once, first, on every connection. */
export interface WelcomeMessage extends Static<typeof S.WelcomeMessage> {}
/** Full state of a channel: on join, on resume, and whenever the server resyncs. To the joiner. */
export interface PresenceSyncMessage extends Static<typeof S.PresenceSyncMessage> {}
/** A user became a member (first session joined, or came back from invisible). To members. */
export interface PresenceJoinMessage extends Static<typeof S.PresenceJoinMessage> {}
/** A user stopped being a member (last session left, offline delay ran out, or went invisible). */
export interface PresenceLeaveMessage extends Static<typeof S.PresenceLeaveMessage> {}
/** Status, meta or channel meta of a member changed. To all members, the user's own sessions too. */
export interface PresenceUpdateMessage extends Static<typeof S.PresenceUpdateMessage> {}
/** Visible members of a channel by status. */
export interface StatusCounts extends Static<typeof S.StatusCounts> {}
/** Occupancy mode: counts, and a sample of members with its diffs, instead of the member list. */
export interface PresenceOccupancyMessage extends Static<typeof S.PresenceOccupancyMessage> {}
/** Answer to `members`: one page of a channel's visible members. */
export interface PresencePageMessage extends Static<typeof S.PresencePageMessage> {}
/** Typing started or stopped. To the channel's other members (never to the typer). */
export interface TypingMessage extends Static<typeof S.TypingMessage> {}
/** Answer to `watch`: the current presence of the watched users (privacy applied). */
export interface UserSyncMessage extends Static<typeof S.UserSyncMessage> {}
/** A watched user's presence changed (privacy applied). */
export interface UserUpdateMessage extends Static<typeof S.UserUpdateMessage> {}
/** A command with a `ref` succeeded. Data a command adds is typed where known, open otherwise. */
export interface AckMessage extends Static<typeof S.AckMessage> {
  [data: string]: unknown;
}
export interface ErrorMessage extends Static<typeof S.ErrorMessage> {}
export interface PongMessage extends Static<typeof S.PongMessage> {}
/** A renewed `sessionToken`, sent before the previous one expires (an additive v1 message). */
export interface SessionTokenMessage extends Static<typeof S.SessionTokenMessage> {}

/** Every server message (a type test checks it is the schema's `ServerMessage`). */
export type ServerMessage =
  | WelcomeMessage
  | PresenceSyncMessage
  | PresenceJoinMessage
  | PresenceLeaveMessage
  | PresenceUpdateMessage
  | PresenceOccupancyMessage
  | PresencePageMessage
  | TypingMessage
  | UserSyncMessage
  | UserUpdateMessage
  | AckMessage
  | ErrorMessage
  | PongMessage
  | SessionTokenMessage;

export type ServerMessageType = ServerMessage['type'];

/** A frame from the server is one message or a batch of them (clients must accept both). */
export type ServerFrame = ServerMessage | ServerMessage[];

// ---------------------------------------------------------------------------------------------
// HTTP API bodies
// ---------------------------------------------------------------------------------------------

/** `{"error":{"code","message"}}`: every HTTP error. */
export interface ErrorResponse extends Static<typeof S.ErrorResponse> {}
/** `GET /realtime/channels/:id/presence`. */
export interface ChannelPresenceResponse extends Static<typeof S.ChannelPresenceResponse> {}
/** `POST /realtime/presence/update` body. */
export interface UpdatePresenceRequest extends Static<typeof S.UpdatePresenceRequest> {}
export interface UpdatePresenceResponse extends Static<typeof S.UpdatePresenceResponse> {}
/** `GET /realtime/users/:id/presence`. */
export interface UserPresenceResponse extends Static<typeof S.UserPresenceResponse> {}
/** `POST /realtime/presence/query` body. */
export interface QueryPresenceRequest extends Static<typeof S.QueryPresenceRequest> {}
export interface QueryPresenceResponse extends Static<typeof S.QueryPresenceResponse> {}
/** One channel of a user in `UserChannelsResponse`. */
export interface UserChannel extends Static<typeof S.UserChannel> {}
/** `GET /realtime/users/:id/channels`. */
export interface UserChannelsResponse extends Static<typeof S.UserChannelsResponse> {}
/** `GET /realtime/presence/online`. */
export interface OnlineUsersResponse extends Static<typeof S.OnlineUsersResponse> {}
/** `POST /realtime/heartbeat` body: one heartbeat of an HTTP session. */
export interface HeartbeatRequest extends Static<typeof S.HeartbeatRequest> {}
/** `POST /realtime/heartbeat` answer. */
export interface HeartbeatResponse extends Static<typeof S.HeartbeatResponse> {}
/** `POST /realtime/disconnect` body: the unload beacon. */
export interface DisconnectRequest extends Static<typeof S.DisconnectRequest> {}
/** One node of a cluster in `AdminStats`. */
export interface AdminNodeRow extends Static<typeof S.AdminNodeRow> {}
/** `GET /realtime/admin/stats`: figures for the operations dashboard. */
export interface AdminStats extends Static<typeof S.AdminStats> {}
/** One webhook URL in `AdminStats`. */
export interface AdminWebhookTarget extends Static<typeof S.AdminWebhookTarget> {}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/** The body of one webhook POST: one event (see docs/webhooks.md). */
export type WebhookEvent = Static<typeof S.WebhookEvent>;
export type WebhookEventType = WebhookEvent['type'];
/** The event of one type, e.g. `WebhookEventOf<'user.offline'>`. */
export type WebhookEventOf<T extends WebhookEventType> = Extract<WebhookEvent, { type: T }>;

/** Every webhook event type (a test checks it against the schemas). */
export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  'user.online',
  'user.offline',
  'user.status',
  'user.meta',
  'channel.member_joined',
  'channel.member_left',
  'channel.member_updated',
  'channel.occupied',
  'channel.vacated',
  'typing.started',
  'typing.stopped',
];

/** What is sent when `PRESENCE_WEBHOOK_EVENTS` is not set: all but typing and member updates. */
export const DEFAULT_WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  'user.online',
  'user.offline',
  'user.status',
  'user.meta',
  'channel.member_joined',
  'channel.member_left',
  'channel.occupied',
  'channel.vacated',
];

/**
 * The header that signs a webhook: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
 * one `v1=` per configured secret (several while a secret is rotated).
 */
export const WEBHOOK_SIGNATURE_HEADER = 'Presence-Signature';
