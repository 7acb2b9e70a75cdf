/**
 * `@presence/node`: the server SDK of Presence. A typed client for the HTTP API, user tokens the
 * server accepts, and webhook verification. It uses only `fetch`, WebCrypto and `jose`, so it
 * runs on Node 20+ and on Deno, Bun and edge runtimes.
 */
export {
  PresenceServerClient,
  OPERATIONS,
  NOT_HTTP_OPERATIONS,
  type OperationId,
  type PresenceServerClientOptions,
  type PageOptions,
  type HealthResponse,
  type ReadyResponse,
} from './client.js';
export { PresenceApiError, type PresenceApiErrorCode, type ClientErrorCode } from './errors.js';
export { createUserToken, type UserTokenClaims, type UserTokenKey } from './tokens.js';
export {
  verifyWebhook,
  signWebhook,
  WebhookVerificationError,
  WEBHOOK_SIGNATURE_HEADER,
  DEFAULT_WEBHOOK_TOLERANCE_SEC,
  type WebhookEvent,
  type WebhookVerificationErrorCode,
  type VerifyWebhookOptions,
  type RawBody,
} from './webhooks.js';
export type {
  AdminStats,
  ChannelPresenceResponse,
  Member,
  Meta,
  OnlineUsersResponse,
  SelfPresence,
  Status,
  UpdatePresenceRequest,
  UserChannel,
  UserPresence,
  Visibility,
} from '@presence/protocol';
