export { PresenceClient, type PresenceClientOptions, type PresenceClientEvents, type StatusUpdate } from './client.js';
export { Channel, type ChannelEvents, type ChannelState, type MembersPage, type Occupancy } from './channel.js';
export type { ConnectionStatus, ConnectionLost } from './connection.js';
export { PresenceError, isPresenceError, CLIENT_ERRORS, type ClientErrorCode, type PresenceErrorCode } from './errors.js';
export { TypingIndicator, type TypingOptions } from './typing.js';
export { ACTIVITY_EVENTS, type ActivityOptions, type ActivityTarget, type VisibilitySource } from './activity.js';
export type { UnloadBeaconOptions } from './unload-beacon.js';
export type { ReconnectTriggerOptions } from './reconnect-triggers.js';
export { Backoff, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { systemClock, type Clock } from './clock.js';
export type { WebSocketLike, WebSocketConstructor } from './socket.js';
export type { Member, UserPresence, SelfPresence, MetaPatch } from './types.js';
export type {
  Status,
  ManualStatus,
  Visibility,
  Meta,
  JsonValue,
  WelcomeMessage,
  ErrorCode,
} from '@presence/protocol';
