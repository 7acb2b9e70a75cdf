/**
 * The OpenAPI 3.1 document of the HTTP API, served at `GET /realtime/openapi.json`. Bodies come
 * from the protocol schemas (`@presence/protocol/schema`) the server decodes with, so the document
 * cannot drift from what the server accepts and answers; `docs/schema/openapi.json` is a copy
 * (`npm run schema`), and a test checks both.
 */
import { ERRORS, type ErrorCode } from '@presence/protocol';
import {
  AdminStats,
  ChannelName,
  ChannelPresenceResponse,
  DisconnectRequest,
  ErrorResponse,
  HealthResponse,
  HeartbeatRequest,
  HeartbeatResponse,
  ManualStatusFields,
  OnlineUsersResponse,
  QueryPresenceRequest,
  QueryPresenceResponse,
  ReadyResponse,
  UpdatePresenceRequest,
  UpdatePresenceResponse,
  UserChannelsResponse,
  UserId,
  UserPresenceResponse,
  WEBHOOK_EVENTS,
  toJsonSchema,
} from '@presence/protocol/schema';
import { Kind, type TSchema } from '@sinclair/typebox';
import { EXPOSITION_CONTENT_TYPE } from '../metrics/index.js';
import type { ROUTES } from './api.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const COMPONENTS = '#/components/schemas/';
const RETRY_AFTER: JsonObject = {
  description: 'Seconds until the rate limit admits a request again.',
  schema: { type: 'integer', minimum: 1 },
};
const API_KEY = 'apiKey';
const USER_TOKEN = 'userToken';

/** Failures every `/realtime/*` route that needs credentials may answer, besides its own. */
const AUTHENTICATED_ERRORS: ErrorCode[] = ['UNAUTHORIZED', 'TOKEN_EXPIRED', 'ORIGIN_FORBIDDEN', 'RATE_LIMITED', 'INTERNAL'];
/** Failures of reading a JSON body. */
const BODY_ERRORS: ErrorCode[] = ['UNSUPPORTED_MEDIA_TYPE', 'INVALID_JSON', 'FRAME_TOO_LARGE'];

export interface OpenApiOptions {
  /** The templates of `api.ts`; one operation is written per route, the types see to that. */
  routes: typeof ROUTES;
  /** Where the WebSocket endpoint is (`/realtime`). */
  realtimePath: string;
}

/** Builds the document; it depends on no configuration, so it is built once. */
export function openApiDocument({ routes, realtimePath }: OpenApiOptions): JsonObject {
  const defs = new Map<string, Json>();
  const schema = (s: TSchema): Json => toJsonSchema(s, COMPONENTS, defs, false);
  const json = (description: string, s: TSchema) => ({ description, content: { 'application/json': { schema: schema(s) } } });

  /** Error responses grouped by HTTP status, each naming its codes. */
  const errors = (codes: ErrorCode[]): JsonObject => {
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of codes) {
      const status = ERRORS[code].http;
      byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
    }
    const out: JsonObject = {};
    for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
      const response: JsonObject = json(`Error ${list.map((c) => `\`${c}\``).join(', ')} (see docs/errors.md).`, ErrorResponse);
      if (list.includes('RATE_LIMITED')) response.headers = { 'Retry-After': RETRY_AFTER };
      out[String(status)] = response;
    }
    return out;
  };

  const pathParam = (name: string, s: TSchema, description: string): JsonObject => ({
    name,
    in: 'path',
    required: true,
    description,
    schema: schema(s),
  });
  const queryParam = (name: string, s: Json, description: string): JsonObject => ({ name, in: 'query', required: false, description, schema: s });

  const anyCaller: Json[] = [{ [API_KEY]: [] }, { [USER_TOKEN]: [] }];
  const publicRoute: Json[] = [];

  const operations: Record<keyof typeof ROUTES, { method: 'get' | 'post'; operation: JsonObject }> = {
    channelPresence: {
      method: 'get',
      operation: {
        operationId: 'getChannelPresence',
        summary: "A channel's visible members, one page at a time",
        description:
          'An empty or unknown channel is `200` with `count: 0`. A user token is refused a channel outside its `channels` allowlist (`CHANNEL_FORBIDDEN`).',
        security: anyCaller,
        parameters: [
          pathParam('id', ChannelName, 'The channel name, percent-encoded.'),
          queryParam('limit', { type: 'integer', minimum: 1 }, 'Members per page (default 100; larger values are capped, not refused).'),
          queryParam('cursor', { type: 'string' }, '`nextCursor` of the previous page.'),
        ],
        responses: {
          '200': json('One page of members.', ChannelPresenceResponse),
          ...errors(['INVALID_CHANNEL', 'INVALID_MESSAGE', 'CHANNEL_FORBIDDEN', ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    updatePresence: {
      method: 'post',
      operation: {
        operationId: 'updatePresence',
        summary: "Change a user's status, state, message, expiry, visibility, meta or contacts",
        description:
          'With the API key any user (`userId` required); with a user token only the own presence, and never `contacts`. A refused request changes nothing.',
        security: anyCaller,
        requestBody: { required: true, content: { 'application/json': { schema: schema(UpdatePresenceRequest) } } },
        responses: {
          '200': json('The presence as stored after the update.', UpdatePresenceResponse),
          ...errors([
            'INVALID_MESSAGE',
            'INVALID_USER_ID',
            'UNKNOWN_STATE',
            'MESSAGE_TOO_LONG',
            'INVALID_EXPIRY',
            'META_TOO_LARGE',
            'FORBIDDEN',
            ...BODY_ERRORS,
            ...AUTHENTICATED_ERRORS,
          ]),
        },
      },
    },
    userPresence: {
      method: 'get',
      operation: {
        operationId: 'getUserPresence',
        summary: "One user's presence, privacy applied",
        security: anyCaller,
        parameters: [pathParam('id', UserId, 'The user id, percent-encoded.')],
        responses: {
          '200': json("The user's presence as the caller may see it.", UserPresenceResponse),
          ...errors(['INVALID_USER_ID', ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    queryPresence: {
      method: 'post',
      operation: {
        operationId: 'queryPresence',
        summary: 'Many users’ presence at once, privacy applied',
        security: anyCaller,
        requestBody: { required: true, content: { 'application/json': { schema: schema(QueryPresenceRequest) } } },
        responses: {
          '200': json('The users in the order asked.', QueryPresenceResponse),
          ...errors(['INVALID_MESSAGE', 'INVALID_USER_ID', 'TOO_MANY_USERS', ...BODY_ERRORS, ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    userChannels: {
      method: 'get',
      operation: {
        operationId: 'getUserChannels',
        summary: 'The channels a user is in',
        description:
          'With the API key any user; with a user token only the own channels (`FORBIDDEN` otherwise). An offline, invisible or unknown user is in no channel: `200` with an empty list.',
        security: anyCaller,
        parameters: [pathParam('id', UserId, 'The user id, percent-encoded.')],
        responses: {
          '200': json("The user's channels, by name.", UserChannelsResponse),
          ...errors(['INVALID_USER_ID', 'FORBIDDEN', ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    onlineUsers: {
      method: 'get',
      operation: {
        operationId: 'getOnlineUsers',
        summary: 'Everyone others see as present, one page at a time',
        description: 'API key only: a user token is refused with `FORBIDDEN`. Invisible users are absent, as if offline.',
        security: [{ [API_KEY]: [] }],
        parameters: [
          queryParam('limit', { type: 'integer', minimum: 1 }, 'Users per page (default 100; larger values are capped, not refused).'),
          queryParam('cursor', { type: 'string' }, '`nextCursor` of the previous page.'),
        ],
        responses: {
          '200': json('One page of present users, by user id.', OnlineUsersResponse),
          ...errors(['INVALID_MESSAGE', 'FORBIDDEN', ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    heartbeat: {
      method: 'post',
      operation: {
        operationId: 'heartbeat',
        summary: 'Keep an HTTP session (for clients without a WebSocket) and fetch what it was sent',
        description:
          "One heartbeat opens, continues or resumes a session of the token's user (in development mode, of `?userId=`), sets its channels, typing and activity, and answers the protocol v1 messages it was sent since the acknowledged `seq`. Send one every `intervalMs`; two missed intervals detach the session, then the offline delay runs. Any node accepts any heartbeat. The API key is refused (`FORBIDDEN`): a session belongs to a user.",
        security: [{ [USER_TOKEN]: [] }],
        parameters: [queryParam('userId', { type: 'string' }, 'Development mode only (no auth configured): whose session.')],
        requestBody: { required: true, content: { 'application/json': { schema: schema(HeartbeatRequest) } } },
        responses: {
          '200': json('The session, its token, the interval and the events since the acknowledged seq.', HeartbeatResponse),
          ...errors(['INVALID_MESSAGE', 'TOO_MANY_CHANNELS', 'TOO_MANY_SESSIONS', 'FORBIDDEN', 'LOGGED_OUT', 'NOT_FOUND', ...BODY_ERRORS, ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    disconnect: {
      method: 'post',
      operation: {
        operationId: 'unloadBeacon',
        summary: 'The unload beacon: end one session after a short grace',
        description:
          'Sent by `navigator.sendBeacon` when a page goes away. No `Authorization` header: the session token in the body is the credential (a capability for that one session). The body is read as JSON whatever the Content-Type (`text/plain` as `sendBeacon` sends a string, or `application/json`), at most 4 KiB. The session ends after `PRESENCE_UNLOAD_GRACE_MS` unless it is resumed meanwhile (a reload), without the offline delay; the user\'s other sessions are untouched. `204` also when the session has already ended.',
        security: [],
        requestBody: {
          required: true,
          content: { 'text/plain': { schema: schema(DisconnectRequest) }, 'application/json': { schema: schema(DisconnectRequest) } },
        },
        responses: {
          '204': { description: 'Accepted: the session ends after the grace unless resumed (or it had already ended).' },
          ...errors(['INVALID_JSON', 'INVALID_MESSAGE', 'UNAUTHORIZED', 'TOKEN_EXPIRED', 'FRAME_TOO_LARGE', 'ORIGIN_FORBIDDEN', 'NOT_FOUND', 'RATE_LIMITED', 'INTERNAL']),
        },
      },
    },
    adminStats: {
      method: 'get',
      operation: {
        operationId: 'getAdminStats',
        summary: 'Figures for the operations dashboard',
        description:
          'The API key, or the read-only `PRESENCE_DASHBOARD_KEY` sent the same way (`Authorization: Bearer …`), which no other route accepts (`FORBIDDEN` there). A user token is refused with `FORBIDDEN`. `NOT_FOUND` when the server runs without the dashboard figures.',
        security: [{ [API_KEY]: [] }],
        responses: {
          '200': json('Figures of this node (and the cluster, in a cluster).', AdminStats),
          ...errors(['FORBIDDEN', 'NOT_FOUND', ...AUTHENTICATED_ERRORS]),
        },
      },
    },
    health: {
      method: 'get',
      operation: {
        operationId: 'getHealth',
        summary: 'Liveness: the process answers',
        security: publicRoute,
        responses: { '200': json('Alive.', HealthResponse) },
      },
    },
    ready: {
      method: 'get',
      operation: {
        operationId: 'getReadiness',
        summary: 'Readiness: the store is reachable and the node is not overloaded or shutting down',
        security: publicRoute,
        responses: { '200': json('Ready for traffic.', ReadyResponse), ...errors(['NOT_READY', 'OVERLOADED', 'MIXED_CLUSTER']) },
      },
    },
    metrics: {
      method: 'get',
      operation: {
        operationId: 'getMetrics',
        summary: 'Prometheus metrics',
        security: publicRoute,
        responses: {
          '200': {
            description: 'The Prometheus text exposition format (docs/http-api.md lists the metrics).',
            content: { [EXPOSITION_CONTENT_TYPE]: { schema: { type: 'string' } } },
          },
        },
      },
    },
    openapi: {
      method: 'get',
      operation: {
        operationId: 'getOpenApiDocument',
        summary: 'This document',
        security: publicRoute,
        responses: {
          '200': { description: 'The OpenAPI 3.1 document of the HTTP API.', content: { 'application/json': { schema: { type: 'object' } } } },
        },
      },
    },
  };

  const paths: JsonObject = {};
  for (const [route, { method, operation }] of Object.entries(operations) as [keyof typeof ROUTES, (typeof operations)[keyof typeof ROUTES]][]) {
    const path = routes[route].replace(/:([A-Za-z]+)/g, '{$1}');
    const item = (paths[path] ??= {}) as JsonObject;
    item[method] = operation;
  }

  paths[realtimePath] = {
    get: {
      operationId: 'connectWebSocket',
      summary: 'Open a WebSocket (protocol v1)',
      description:
        'An HTTP/1.1 upgrade to a WebSocket carrying JSON text frames; docs/protocol.md explains the protocol and docs/schema/protocol.schema.json is the JSON Schema of every frame. Refused connections are still upgraded, then closed with a close code and an `error` frame, because browsers cannot read the status of a refused upgrade.',
      security: publicRoute,
      parameters: [
        queryParam('token', { type: 'string' }, 'The user JWT (or send `Authorization: Bearer`).'),
        queryParam('sessionId', { type: 'string' }, "A previous session's id, to resume it inside its offline delay."),
        queryParam('device', { type: 'string' }, 'Device kind, e.g. `web`, `ios` (1–32 characters of `[A-Za-z0-9_.-]`).'),
        queryParam('userId', { type: 'string' }, 'Development mode only (no auth configured): who connects.'),
        ...Object.entries(ManualStatusFields).map(([field, s]) =>
          queryParam(
            field,
            schema(withoutNull(s)),
            `The \`${field}\` the client last had confirmed, applied only if this server has no record of the user (it restarted and forgot); invalid values are ignored.`,
          ),
        ),
      ],
      responses: { '101': { description: 'Switching Protocols: the WebSocket is open; the first frame is `welcome`.' } },
    },
  };

  // What the server sends to PRESENCE_WEBHOOK_URLS: one POST per event (docs/webhooks.md).
  const webhooks: JsonObject = {};
  for (const [type, body] of Object.entries(WEBHOOK_EVENTS)) {
    webhooks[type] = {
      post: {
        operationId: `webhook_${type.replace(/[.]/g, '_')}`,
        summary: body.description ?? type,
        description:
          'Sent to every URL of `PRESENCE_WEBHOOK_URLS` when the type is in `PRESENCE_WEBHOOK_EVENTS`. At least once: deduplicate by `id`. Verify `Presence-Signature` over the raw body before parsing it (docs/webhooks.md).',
        security: publicRoute,
        parameters: [
          {
            name: 'Presence-Signature',
            in: 'header',
            required: true,
            description: '`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, one `v1=` per configured secret.',
            schema: { type: 'string' },
          },
          { name: 'Presence-Event-Id', in: 'header', required: true, description: 'The `id` of the body.', schema: { type: 'string' } },
          { name: 'Presence-Event-Type', in: 'header', required: true, description: 'The `type` of the body.', schema: { type: 'string' } },
          {
            name: 'Presence-Delivery-Attempt',
            in: 'header',
            required: true,
            description: '1 for the first attempt, then 2, 3 … (restarts at 1 after a server restart).',
            schema: { type: 'integer', minimum: 1 },
          },
        ],
        requestBody: { required: true, content: { 'application/json': { schema: schema(body) } } },
        responses: {
          '2XX': { description: 'Delivered: the event is not sent again (unless the server crashed before it saw this answer).' },
          '4XX': { description: 'Refused for good: the event is dead-lettered, except 408 and 429 (`Retry-After` honoured), which are retried.' },
          '5XX': { description: 'Retried with exponential backoff and jitter, as are timeouts and network errors, until the give-up age.' },
        },
      },
    };
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'Presence HTTP API',
      version: '1',
      description:
        'Presence reads and writes for backends (API key) and users (their JWT), health, readiness and metrics. In development mode (no auth configured) the API is open. docs/http-api.md is the guide; this document is generated from the same schemas the server validates with.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    security: anyCaller,
    paths,
    webhooks,
    components: {
      securitySchemes: {
        [API_KEY]: {
          type: 'http',
          scheme: 'bearer',
          description: '`Authorization: Bearer <PRESENCE_API_KEY>`: a trusted backend, for any user.',
        },
        [USER_TOKEN]: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description: "`Authorization: Bearer <user JWT>`: the user's own presence only, privacy applied to others.",
        },
      },
      schemas: Object.fromEntries([...defs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    },
  };
}

/** A query parameter is a string: a nullable field's `null` does not apply. */
function withoutNull(schema: TSchema): TSchema {
  const members = schema.anyOf as TSchema[] | undefined;
  if (!members) return schema;
  const kept = members.filter((member) => member[Kind] !== 'Null');
  return kept.length === 1 ? { ...kept[0], description: schema.description } : { ...schema, anyOf: kept };
}
