/**
 * The HTTP API: presence reads and writes for backends (API key) and users (their JWT), plus
 * health, readiness and Prometheus metrics. Everything is answered here — including every
 * failure — so the request listener can never throw into the HTTP server.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { HeartbeatRequest as HeartbeatBody, Meta, QueryPresenceRequest as QueryBody, UpdatePresenceRequest as UpdateBody } from '@presence/protocol';
import { HeartbeatRequest, QueryPresenceRequest, StatusFields, UpdatePresenceRequest } from '@presence/protocol/schema';
import { apiKeyMatches, bearerToken, channelAllowed, originAllowed } from '../auth/access.js';
import type { Identity, Viewer } from '../auth/identity.js';
import type { TokenVerifier } from '../auth/tokens.js';
import { isDevMode, type ServerConfig } from '../config/config.js';
import { PresenceError, isPresenceError } from '../errors.js';
import type { Logger } from '../log.js';
import { EXPOSITION_CONTENT_TYPE, type PresenceMetrics } from '../metrics/index.js';
import type { PresenceQueries, UserPatch, ViewerId } from '../presence/service.js';
import type { Heartbeat, HeartbeatAnswer } from '../protocol-v1/heartbeat.js';
import { assertChannelName, assertUserId, isPlainObject } from '../presence/validation.js';
import { compile, expected, invalidField, unknownFields } from '../schema-checks.js';
import type { AdminStats } from './admin-stats.js';
import { RequestAbortedError, readJsonBody } from './body.js';
import { openApiDocument } from './openapi.js';
import { HttpRateLimits, RateLimitedError, clientAddress } from './rate-limits.js';
import { PUSHER_API_PREFIX } from './pusher-api.js';
import { Router, decodeParam } from './router.js';
import { REALTIME_PATH } from '../transport/websocket.js';

export interface HttpApiDeps {
  queries: PresenceQueries;
  config: ServerConfig;
  /** Verifies user JWTs; absent when no JWT key is configured (then only the API key works). */
  verifier?: TokenVerifier;
  /** `registry` is what `GET /metrics` renders; `httpRequests` counts every response. */
  metrics: Pick<PresenceMetrics, 'registry' | 'httpRequests'> & Partial<Pick<PresenceMetrics, 'unloadBeacons'>>;
  /**
   * False when the metrics have a port of their own (`PRESENCE_METRICS_PORT`): `/metrics` is then
   * not a route here, and answers 404 like any unknown path. @default true
   */
  serveMetrics?: boolean;
  log: Logger;
  /** Figures for the operations dashboard (`GET /realtime/admin/stats`); the route is 404 without it. */
  adminStats?: () => AdminStats | Promise<AdminStats>;
  /** False while the store is unreachable; `/readyz` answers 503 then, with this error's code when one is given (OVERLOADED). */
  isReady(): boolean | PresenceError;
  /** The clock of the rate limits' token buckets. @default Date.now */
  now?: () => number;
  /** HTTP sessions (`/realtime/heartbeat`); the route is 404 without it. */
  sessions?: HttpSessions;
  /** Pusher's HTTP API (`/apps/…`, http/pusher-api.ts), when the Pusher endpoint is on. */
  pusherApi?: (req: IncomingMessage, res: ServerResponse) => void;
}

/** What the HTTP session routes need from the node. */
export interface HttpSessions {
  /** One heartbeat; throws PresenceError. */
  heartbeat(identity: Identity, heartbeat: Heartbeat): HeartbeatAnswer;
  /** The unload beacon; throws PresenceError for a bad token, else whether the session was found. */
  unload(sessionToken: string): boolean;
}

export const ROUTES = {
  channelPresence: '/realtime/channels/:id/presence',
  updatePresence: '/realtime/presence/update',
  userPresence: '/realtime/users/:id/presence',
  queryPresence: '/realtime/presence/query',
  userChannels: '/realtime/users/:id/channels',
  onlineUsers: '/realtime/presence/online',
  heartbeat: '/realtime/heartbeat',
  disconnect: '/realtime/disconnect',
  adminStats: '/realtime/admin/stats',
  health: '/healthz',
  ready: '/readyz',
  metrics: '/metrics',
  openapi: '/realtime/openapi.json',
} as const;

/**
 * Routes the read-only dashboard key (`PRESENCE_DASHBOARD_KEY`) may call, as a trusted reader:
 * the dashboard's figures. Every other route refuses it with FORBIDDEN.
 */
const DASHBOARD_KEY_ROUTES: ReadonlySet<string> = new Set([ROUTES.adminStats]);

/** Who sent a request: a viewer of the presence API, or the holder of the read-only dashboard key. */
type Caller = Viewer | { kind: 'dashboard' };

/** Routes under `/realtime/` that need no credentials (and refuse no Origin): documentation. */
const PUBLIC_REALTIME_ROUTES: ReadonlySet<string> = new Set([ROUTES.openapi]);
/**
 * Routes under `/realtime/` whose credential is in the body (Origin is still checked): the unload
 * beacon, whose session token is its capability, since `navigator.sendBeacon` sends no header.
 */
const BODY_CREDENTIAL_ROUTES: ReadonlySet<string> = new Set([ROUTES.disconnect]);
/** A beacon body is `{"sessionToken":"…"}`: a few hundred bytes. */
const MAX_BEACON_BYTES = 4096;

/** Route label for requests that matched no route: raw paths never become label values. */
const UNMATCHED_ROUTE = 'unmatched';
const DEFAULT_PAGE_SIZE = 100;
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const PREFLIGHT_MAX_AGE_SECONDS = 600;

const isUpdate = compile(UpdatePresenceRequest);
const isHeartbeat = compile(HeartbeatRequest);
const isQuery = compile(QueryPresenceRequest);
const isUserIdValue = compile(QueryPresenceRequest.properties.userIds.items);
/** Reported by `parseUpdate` itself: who may write decides before the shape of the rest. */
const UPDATE_USER_ID = new Set(['userId']);

interface Reply {
  status: number;
  json?: unknown;
  text?: string;
  contentType?: string;
}

interface RequestContext {
  req: IncomingMessage;
  query: URLSearchParams;
  /** Raw (percent-encoded) path parameters. */
  params: Record<string, string>;
  /** Set on `/realtime/*` routes only (the others need no credentials). */
  viewer: Viewer;
}

type Handler = (ctx: RequestContext) => Reply | Promise<Reply>;

export function createHttpApi(deps: HttpApiDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { queries, config, verifier, metrics, log } = deps;
  const limits = config.limits;
  const devMode = isDevMode(config);
  const defaultPageSize = Math.min(DEFAULT_PAGE_SIZE, limits.maxPageSize);
  const rateLimits = new HttpRateLimits(limits, deps.now ?? Date.now);

  const router = new Router<Handler>()
    .add('GET', ROUTES.channelPresence, async ({ params, query, viewer }) => {
      const channel = assertChannelName(decodeParam(params.id), limits);
      if (viewer.kind === 'user' && !channelAllowed(viewer.identity.channels, channel)) {
        throw new PresenceError('CHANNEL_FORBIDDEN');
      }
      const page: { limit: number; cursor?: string } = { limit: parseLimit(query.get('limit'), defaultPageSize, limits.maxPageSize) };
      const cursor = query.get('cursor');
      if (cursor) page.cursor = cursor;
      // In a cluster, a channel no client of this node is in is read from the shared state first.
      await queries.loadChannel(channel);
      const result = queries.channelPresence(channel, page);
      const body: Record<string, unknown> = {
        channel: result.channel,
        count: result.count,
        statuses: result.statuses,
        members: result.members,
      };
      if (result.nextCursor !== undefined) body.nextCursor = result.nextCursor;
      return { status: 200, json: body };
    })
    .add('POST', ROUTES.updatePresence, async ({ req, viewer }) => {
      const body = await readJsonObject(req, limits.maxFrameBytes);
      const { userId, patch } = parseUpdate(body, viewer, limits, devMode);
      await queries.loadUsers([userId]);
      return { status: 200, json: { user: queries.updateUser(userId, patch) } };
    })
    .add('GET', ROUTES.userPresence, async ({ params, viewer }) => {
      const userId = assertUserId(decodeParam(params.id), limits);
      await queries.loadUsers([userId]);
      return { status: 200, json: { user: queries.userPresence(userId, viewerId(viewer)) } };
    })
    .add('POST', ROUTES.queryPresence, async ({ req, viewer }) => {
      const body = await readJsonObject(req, limits.maxFrameBytes);
      const { userIds } = parseQuery(body, limits);
      await queries.loadUsers(userIds);
      return { status: 200, json: { users: queries.queryUsers(userIds, viewerId(viewer)) } };
    })
    .add('GET', ROUTES.userChannels, async ({ params, viewer }) => {
      const userId = assertUserId(decodeParam(params.id), limits);
      // Where someone is goes beyond what user-level privacy lets others see: only the user and
      // trusted backends may list it (co-members still see each other in the channels themselves).
      if (viewer.kind === 'user' && viewer.identity.userId !== userId) {
        throw new PresenceError('FORBIDDEN', 'A user token may only list its own channels.');
      }
      await queries.loadUserChannels(userId);
      return { status: 200, json: { userId, channels: queries.userChannels(userId) } };
    })
    .add('GET', ROUTES.onlineUsers, async ({ query, viewer }) => {
      // Everyone's presence, without the viewer's privacy: for backends only.
      if (viewer.kind === 'user') throw new PresenceError('FORBIDDEN', 'The online list needs the API key.');
      const page: { limit: number; cursor?: string } = { limit: parseLimit(query.get('limit'), defaultPageSize, limits.maxPageSize) };
      const cursor = query.get('cursor');
      if (cursor) page.cursor = cursor;
      const result = await queries.onlineUsers(page);
      const body: Record<string, unknown> = { count: result.count, users: result.users };
      if (result.nextCursor !== undefined) body.nextCursor = result.nextCursor;
      return { status: 200, json: body };
    })
    .add('POST', ROUTES.heartbeat, async ({ req, query, viewer }) => {
      if (!deps.sessions) throw new PresenceError('NOT_FOUND', 'HTTP sessions are not enabled on this server.');
      const identity = heartbeatIdentity(viewer, query, devMode, limits);
      const heartbeat = parseHeartbeat(await readJsonObject(req, limits.maxFrameBytes));
      await queries.prepareConnect(identity.userId, heartbeat.sessionId);
      return { status: 200, text: heartbeatJson(deps.sessions.heartbeat(identity, heartbeat)), contentType: JSON_CONTENT_TYPE };
    })
    .add('POST', ROUTES.disconnect, async ({ req }) => {
      if (!deps.sessions) throw new PresenceError('NOT_FOUND', 'HTTP sessions are not enabled on this server.');
      const body = await readJsonBody(req, MAX_BEACON_BYTES, { anyContentType: true });
      if (!isPlainObject(body) || typeof body.sessionToken !== 'string') {
        throw new PresenceError('INVALID_MESSAGE', 'The body must be {"sessionToken": "<the session token>"}.');
      }
      // Throws for a forged or expired token; an ended session is no error (nothing left to do).
      deps.sessions.unload(body.sessionToken);
      countBeacon();
      return { status: 204 };
    })
    .add('GET', ROUTES.adminStats, async ({ viewer }) => {
      // Channel names and per-node figures are for operators: the API key, never a user's token.
      if (viewer.kind === 'user') throw new PresenceError('FORBIDDEN', 'The admin stats need the API key or the dashboard key.');
      if (!deps.adminStats) throw new PresenceError('NOT_FOUND', 'Admin stats are not enabled on this server.');
      return { status: 200, json: await deps.adminStats() };
    })
    .add('GET', ROUTES.health, () => ({ status: 200, json: { status: 'ok' } }))
    .add('GET', ROUTES.ready, () => {
      let ready: boolean | PresenceError = false;
      try {
        ready = deps.isReady();
      } catch (error) {
        log.warn('readiness check failed', { err: error });
      }
      if (ready instanceof PresenceError) throw ready;
      if (!ready) throw new PresenceError('NOT_READY');
      return { status: 200, json: { status: 'ready' } };
    })
    .add('GET', ROUTES.openapi, () => ({ status: 200, json: (openApi ??= openApiDocument({ routes: ROUTES, realtimePath: REALTIME_PATH })) }));
  let openApi: ReturnType<typeof openApiDocument> | undefined;
  if (deps.serveMetrics ?? true) {
    router.add('GET', ROUTES.metrics, async () => ({
      status: 200,
      text: await metrics.registry.metrics(),
      contentType: EXPOSITION_CONTENT_TYPE,
    }));
  }

  async function authenticate(req: IncomingMessage): Promise<Caller> {
    if (devMode) return { kind: 'trusted' };
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) {
      throw new PresenceError('UNAUTHORIZED', 'Send "Authorization: Bearer <API key or user token>".');
    }
    if (apiKeyMatches(config.auth.apiKey, token)) return { kind: 'trusted' };
    if (apiKeyMatches(config.auth.dashboardKey, token)) return { kind: 'dashboard' };
    if (!verifier) throw new PresenceError('UNAUTHORIZED', 'The API key is invalid.');
    try {
      return { kind: 'user', identity: await verifier.verify(token) };
    } catch (error) {
      if (isPresenceError(error)) throw error;
      // The verifier promises PresenceErrors only; anything else is its bug, but the answer to the
      // caller is still "not authenticated" — failing closed, never a 500 that hints at internals.
      log.warn('token verification failed unexpectedly', { err: error });
      throw new PresenceError('UNAUTHORIZED', 'Invalid token.');
    }
  }

  /**
   * Who is asking, charged to their bucket: the API key's, the user's, or (when the credentials
   * fail, and in development mode) the client address's. Over its limit: RATE_LIMITED.
   */
  async function admit(req: IncomingMessage): Promise<Caller> {
    if (devMode) {
      rateLimits.take('dev', clientAddress(req, config.trustProxyHops));
      return { kind: 'trusted' };
    }
    let viewer: Caller;
    try {
      viewer = await authenticate(req);
    } catch (error) {
      // Failed credentials cost the address: guessing keys or replaying dead tokens is slowed
      // down, while callers with valid credentials from the same address are not held back.
      if (isPresenceError(error)) rateLimits.take('ip', clientAddress(req, config.trustProxyHops));
      throw error;
    }
    if (viewer.kind === 'user') rateLimits.take('user', viewer.identity.userId);
    else if (viewer.kind === 'dashboard') rateLimits.take('dashboard', 'dashboard-key');
    else rateLimits.take('key', 'api-key');
    return viewer;
  }

  async function handle(req: IncomingMessage, res: ServerResponse, state: { route: string }): Promise<void> {
    const { path, query } = splitUrl(req.url ?? '/');
    const origin = singleHeader(req.headers.origin);
    const corsOk = origin !== undefined && originAllowed(config.allowedOrigins, origin);
    if (corsOk) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
    } else if (origin !== undefined) {
      // The answer depends on Origin even when it is refused, so caches must not share it.
      res.setHeader('Vary', 'Origin');
    }

    const method = (req.method ?? 'GET').toUpperCase();
    if (method === 'OPTIONS') {
      const known = router.templateOf(path);
      if (!known) throw new PresenceError('NOT_FOUND');
      state.route = known.template;
      if (origin !== undefined && !corsOk) throw new PresenceError('ORIGIN_FORBIDDEN');
      const headers: OutgoingHttpHeaders = { Allow: [...known.allow, 'OPTIONS'].join(', ') };
      if (corsOk) {
        headers['Access-Control-Allow-Methods'] = 'GET, POST';
        headers['Access-Control-Allow-Headers'] = 'Authorization, Content-Type';
        headers['Access-Control-Max-Age'] = String(PREFLIGHT_MAX_AGE_SECONDS);
      }
      sendEmpty(res, 204, headers, state.route);
      return;
    }

    const match = router.match(method, path);
    if (match.kind === 'not-found') throw new PresenceError('NOT_FOUND', `No route for ${path.length > 200 ? 'this path' : path}.`);
    state.route = match.template;
    if (match.kind === 'method-not-allowed') {
      res.setHeader('Allow', [...match.allow, 'OPTIONS'].join(', '));
      throw new PresenceError('METHOD_NOT_ALLOWED', `${match.template} accepts ${match.allow.join(', ')}.`);
    }

    let viewer: Viewer = { kind: 'trusted' };
    if (match.template.startsWith('/realtime/') && !PUBLIC_REALTIME_ROUTES.has(match.template)) {
      // Browsers enforce CORS only by hiding responses; refusing here also stops side effects of
      // requests a foreign page could send without a preflight (dev mode has no credentials).
      if (origin !== undefined && !corsOk) throw new PresenceError('ORIGIN_FORBIDDEN');
      if (BODY_CREDENTIAL_ROUTES.has(match.template)) {
        // The beacon carries its credential in the body: only its sender's address is limited.
        rateLimits.take('ip', clientAddress(req, config.trustProxyHops));
      } else {
        const caller = await admit(req);
        if (caller.kind === 'dashboard') {
          if (!DASHBOARD_KEY_ROUTES.has(match.template)) {
            throw new PresenceError('FORBIDDEN', 'The dashboard key is read-only: it reads GET /realtime/admin/stats and nothing else.');
          }
          // A trusted reader on the routes above, none of which writes.
          viewer = { kind: 'trusted' };
        } else {
          viewer = caller;
        }
      }
    }

    const reply = await match.handler({ req, query, params: match.params, viewer });
    sendReply(res, reply, state.route);
  }

  function sendReply(res: ServerResponse, reply: Reply, route: string): void {
    if (reply.status === 204) {
      sendEmpty(res, 204, { 'Cache-Control': 'no-store' }, route);
      return;
    }
    const isText = reply.text !== undefined;
    const body = isText ? reply.text! : JSON.stringify(reply.json);
    send(res, reply.status, body, reply.contentType ?? (isText ? 'text/plain; charset=utf-8' : JSON_CONTENT_TYPE), {}, route);
  }

  function sendError(res: ServerResponse, error: PresenceError, route: string): void {
    const headers: OutgoingHttpHeaders = {};
    if (error.code === 'UNAUTHORIZED' || error.code === 'TOKEN_EXPIRED') {
      headers['WWW-Authenticate'] =
        error.code === 'TOKEN_EXPIRED' ? 'Bearer realm="presence", error="invalid_token"' : 'Bearer realm="presence"';
    }
    // The unread rest of an oversized body must not be parsed as the next request on this connection.
    if (error.code === 'FRAME_TOO_LARGE') headers.Connection = 'close';
    if (error.code === 'NOT_READY' || error.code === 'OVERLOADED') headers['Retry-After'] = '1';
    if (error instanceof RateLimitedError) headers['Retry-After'] = String(error.retryAfterSeconds);
    // A page on another origin may read when to retry (Retry-After is not a CORS-safelisted header).
    if (headers['Retry-After'] !== undefined && res.hasHeader('Access-Control-Allow-Origin')) headers['Access-Control-Expose-Headers'] = 'Retry-After';
    const body = JSON.stringify({ error: { code: error.code, message: error.message } });
    send(res, error.httpStatus, body, 'application/json; charset=utf-8', headers, route);
  }

  function sendEmpty(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, route: string): void {
    if (res.headersSent || res.destroyed) return;
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
    res.statusCode = status;
    count(route, status);
    res.end();
  }

  function send(
    res: ServerResponse,
    status: number,
    body: string,
    contentType: string,
    headers: OutgoingHttpHeaders,
    route: string,
  ): void {
    if (res.headersSent || res.destroyed) return;
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
    res.statusCode = status;
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    // Presence goes stale in seconds; no intermediary should serve it from a cache.
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // Counted before the bytes leave, so a scrape right after a response already includes it.
    count(route, status);
    res.end(body);
  }

  function countBeacon(): void {
    try {
      metrics.unloadBeacons?.inc();
    } catch (error) {
      log.warn('could not count an unload beacon', { err: error });
    }
  }

  function count(route: string, status: number): void {
    try {
      metrics.httpRequests.inc({ route, status: String(status) });
    } catch (error) {
      log.warn('could not count HTTP request', { err: error });
    }
  }

  return (req, res) => {
    if (deps.pusherApi && req.url?.startsWith(PUSHER_API_PREFIX)) {
      deps.pusherApi(req, res);
      return;
    }
    // A client reset must not surface as an unhandled 'error' event.
    req.on('error', noop);
    const state = { route: UNMATCHED_ROUTE };
    handle(req, res, state).catch((error: unknown) => {
      try {
        if (error instanceof RequestAbortedError) {
          log.debug('HTTP request aborted by the client', { method: req.method, route: state.route });
          if (!res.headersSent) res.destroy();
          return;
        }
        if (isPresenceError(error)) {
          sendError(res, error, state.route);
          return;
        }
        log.error('HTTP request failed', { err: error, method: req.method, route: state.route });
        if (res.headersSent) {
          res.destroy();
          return;
        }
        sendError(res, new PresenceError('INTERNAL', 'Internal server error.'), state.route);
      } catch (secondary) {
        // Last resort: the listener must never throw into the HTTP server.
        log.error('HTTP error response failed', { err: secondary });
        res.destroy();
      }
    });
  };
}

function noop(): void {}

function splitUrl(url: string): { path: string; query: URLSearchParams } {
  let target = url;
  if (!target.startsWith('/')) {
    // Absolute-form request targets (`GET http://host/path`) are legal, mostly from proxies.
    try {
      const parsed = new URL(target);
      target = parsed.pathname + parsed.search;
    } catch {
      target = '/';
    }
  }
  const q = target.indexOf('?');
  return q === -1
    ? { path: target, query: new URLSearchParams() }
    : { path: target.slice(0, q), query: new URLSearchParams(target.slice(q + 1)) };
}

function singleHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function parseLimit(raw: string | null, fallback: number, max: number): number {
  if (raw === null || raw === '') return fallback;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1) {
    throw new PresenceError('INVALID_MESSAGE', '"limit" must be a positive integer.');
  }
  // Asking for more than the maximum is not an error: the caller gets full pages and a cursor.
  return Math.min(Number(raw), max);
}

async function readJsonObject(req: IncomingMessage, maxBytes: number): Promise<Record<string, unknown>> {
  const body = await readJsonBody(req, maxBytes);
  if (!isPlainObject(body)) throw new PresenceError('INVALID_MESSAGE', 'The request body must be a JSON object.');
  return body;
}

function viewerId(viewer: Viewer): ViewerId {
  return viewer.kind === 'trusted' ? { trusted: true } : { trusted: false, userId: viewer.identity.userId };
}

/**
 * Checks an update body against its schema and who may apply it. Value checks that need the
 * presence model (meta limits, configured states, message length, expiry) are left to
 * `updateUser`, which throws its own PresenceErrors.
 */
function parseUpdate(
  body: Record<string, unknown>,
  viewer: Viewer,
  limits: Pick<ServerConfig['limits'], 'maxUserIdLength'>,
  devMode: boolean,
): { userId: string; patch: UserPatch } {
  const valid = isUpdate(body);
  // A misspelt field silently doing nothing is worse than a clear refusal.
  const unknown = valid ? undefined : unknownFields(UpdatePresenceRequest, body)[0];
  if (unknown !== undefined) throw new PresenceError('INVALID_MESSAGE', `Unknown field "${unknown}".`);

  let userId: string;
  if (viewer.kind === 'trusted') {
    if (body.userId === undefined) {
      // In development mode every caller is trusted, and no API key exists to blame.
      throw new PresenceError(
        'INVALID_MESSAGE',
        devMode ? '"userId" is required: with no auth configured (development mode), say which user to update.' : '"userId" is required with an API key.',
      );
    }
    userId = assertUserId(body.userId, limits);
  } else {
    const self = viewer.identity.userId;
    if (body.userId !== undefined && body.userId !== self) {
      throw new PresenceError('FORBIDDEN', 'A user token may only update its own presence.');
    }
    if (body.contacts !== undefined) {
      // Contacts decide who may see whom; letting users write their own would let anyone add
      // themselves to someone else's audience by the reverse edge. Only backends set them.
      throw new PresenceError('FORBIDDEN', '"contacts" can only be set with the API key.');
    }
    userId = self;
  }

  // The status fields are the `status` command's schema, so both entry points accept the same values.
  if (!valid) throw updateFieldError(body);
  const { userId: _, contacts, ...fields } = body as UpdateBody;
  const patch: UserPatch = fields;
  for (const key of Object.keys(patch) as (keyof UserPatch)[]) if (patch[key] === undefined) delete patch[key];
  if (contacts !== undefined) patch.contacts = [...contacts];
  return { userId, patch };
}

/**
 * Who an HTTP session belongs to: the user of the token; in development mode, `?userId=` (with
 * `name` and `avatar` seeding meta, as on the WebSocket). The API key acts for no session.
 */
function heartbeatIdentity(viewer: Viewer, query: URLSearchParams, devMode: boolean, limits: Pick<ServerConfig['limits'], 'maxUserIdLength'>): Identity {
  if (viewer.kind === 'user') return viewer.identity;
  if (!devMode) throw new PresenceError('FORBIDDEN', 'An HTTP session belongs to a user: send the user\'s token, not the API key.');
  const userId = query.get('userId');
  if (!userId || userId.length > limits.maxUserIdLength) {
    throw new PresenceError('UNAUTHORIZED', `development mode: pass ?userId=<id> (1–${limits.maxUserIdLength} characters)`);
  }
  const meta: Meta = {};
  for (const claim of ['name', 'avatar'] as const) {
    const value = query.get(claim);
    if (value) meta[claim] = value;
  }
  return { userId, meta };
}

/** Checks a heartbeat body's shape; the values (channel names, meta, seq) are the model's to judge. */
function parseHeartbeat(body: Record<string, unknown>): Heartbeat {
  if (!isHeartbeat(body)) {
    const failure = invalidField(HeartbeatRequest, body);
    throw new PresenceError('INVALID_MESSAGE', failure ? `heartbeat: "${failure.field}" must be ${failure.expected}` : 'The request body is not a valid heartbeat.');
  }
  const { sessionId, channels, device, activity, ack, typing } = body as HeartbeatBody;
  const heartbeat: Heartbeat = {};
  if (sessionId !== undefined) heartbeat.sessionId = sessionId;
  if (device !== undefined) heartbeat.device = device;
  if (activity !== undefined) heartbeat.activity = activity;
  if (ack !== undefined) heartbeat.ack = ack;
  if (typing !== undefined) heartbeat.typing = typing;
  if (channels !== undefined) {
    // A name listed twice is one channel; a later entry's meta is merged after an earlier one's.
    heartbeat.channels = new Map();
    for (const entry of channels) {
      const name = typeof entry === 'string' ? entry : entry.name;
      const meta = typeof entry === 'string' ? undefined : entry.meta;
      const before = heartbeat.channels.get(name);
      heartbeat.channels.set(name, meta === undefined ? before : before === undefined ? meta : { ...before, ...meta });
    }
  }
  return heartbeat;
}

/** The answer, with the buffered frames spliced in as they were serialized. */
function heartbeatJson(answer: HeartbeatAnswer): string {
  const head = JSON.stringify({ sessionId: answer.sessionId, sessionToken: answer.sessionToken, intervalMs: answer.intervalMs });
  const errors = answer.errors.length > 0 ? `,"errors":${JSON.stringify(answer.errors)}` : '';
  return `${head.slice(0, -1)},"events":[${answer.events.join(',')}]${errors}}`;
}

function updateFieldError(body: Record<string, unknown>): PresenceError {
  const failure = invalidField(UpdatePresenceRequest, body, UPDATE_USER_ID);
  if (!failure) return new PresenceError('INVALID_MESSAGE', 'The request body is not a valid presence update.');
  // Worded as they always were: the status fields like the `status` command's errors.
  const message = Object.hasOwn(StatusFields, failure.field)
    ? `presence update: "${failure.field}" must be ${failure.expected}`
    : `"${failure.field}" must be ${failure.expected}.`;
  return new PresenceError('INVALID_MESSAGE', message);
}

/** Checks a query body: its shape, the cap, then each id (INVALID_USER_ID) in order. */
function parseQuery(body: Record<string, unknown>, limits: Pick<ServerConfig['limits'], 'maxQueryUsers' | 'maxUserIdLength'>): QueryBody {
  const valid = isQuery(body);
  const { userIds } = body;
  if (!Array.isArray(userIds)) {
    throw new PresenceError('INVALID_MESSAGE', `"userIds" must be ${expected(QueryPresenceRequest.properties.userIds)}.`);
  }
  if (userIds.length > limits.maxQueryUsers) {
    throw new PresenceError('TOO_MANY_USERS', `At most ${limits.maxQueryUsers} user ids per query.`);
  }
  for (const [i, id] of userIds.entries()) {
    if (!valid && !isUserIdValue(id)) {
      throw new PresenceError('INVALID_MESSAGE', `"userIds[${i}]" must be ${expected(QueryPresenceRequest.properties.userIds.items)}.`);
    }
    assertUserId(id, limits);
  }
  return { userIds };
}
