import type {
  AdminStats,
  ChannelPresenceResponse,
  ErrorResponse,
  HeartbeatRequest,
  HeartbeatResponse,
  Member,
  OnlineUsersResponse,
  QueryPresenceResponse,
  SelfPresence,
  UpdatePresenceRequest,
  UpdatePresenceResponse,
  UserChannel,
  UserChannelsResponse,
  UserPresence,
  UserPresenceResponse,
} from '@presence/protocol';
import { PresenceApiError, parseRetryAfter } from './errors.js';

/**
 * Every operation of the HTTP API, by its `operationId` in the OpenAPI document (served at
 * `GET /realtime/openapi.json`), with its method and path. The client has one method of the same
 * name for each; a test checks this table against the document a real server serves.
 */
export const OPERATIONS = {
  getChannelPresence: { method: 'GET', path: '/realtime/channels/{id}/presence' },
  updatePresence: { method: 'POST', path: '/realtime/presence/update' },
  getUserPresence: { method: 'GET', path: '/realtime/users/{id}/presence' },
  queryPresence: { method: 'POST', path: '/realtime/presence/query' },
  getUserChannels: { method: 'GET', path: '/realtime/users/{id}/channels' },
  getOnlineUsers: { method: 'GET', path: '/realtime/presence/online' },
  getAdminStats: { method: 'GET', path: '/realtime/admin/stats' },
  getHealth: { method: 'GET', path: '/healthz' },
  getReadiness: { method: 'GET', path: '/readyz' },
  getMetrics: { method: 'GET', path: '/metrics' },
  getOpenApiDocument: { method: 'GET', path: '/realtime/openapi.json' },
  heartbeat: { method: 'POST', path: '/realtime/heartbeat' },
  unloadBeacon: { method: 'POST', path: '/realtime/disconnect' },
} as const satisfies Record<string, { method: 'GET' | 'POST'; path: string }>;

export type OperationId = keyof typeof OPERATIONS;

/**
 * Operations of the document that are not HTTP calls a backend makes: the WebSocket upgrade
 * (`GET /realtime`) belongs to `@presence/client`.
 */
export const NOT_HTTP_OPERATIONS = ['connectWebSocket'] as const;

export interface PresenceServerClientOptions {
  /** Where the server is, e.g. `https://presence.example.com` (without `/realtime`). */
  baseUrl: string;
  /**
   * The server's `PRESENCE_API_KEY`: a trusted backend that may read and change any user. Omit it
   * only for a server in development mode (no auth configured), or when `token` is given.
   */
  apiKey?: string;
  /**
   * A user's JWT instead of the API key: every call is then made as that user (their own presence
   * only, privacy applied to others). Give `apiKey` or `token`, not both.
   */
  token?: string;
  /** The `fetch` to use. @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Milliseconds before a call is abandoned with `TIMEOUT`. @default 10000 */
  timeoutMs?: number;
  /** Extra headers sent with every call (a tracing id, say). `Authorization` cannot be set here. */
  headers?: Record<string, string>;
}

/** One page of a paginated list. */
export interface PageOptions {
  /** Items per page; the server caps it at `PRESENCE_MAX_PAGE_SIZE` (1000). @default 100 */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
}

export type HealthResponse = { status: 'ok' };
export type ReadyResponse = { status: 'ready' };

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * A typed client for the Presence HTTP API. Every method is one request (the `iterate…` helpers
 * one per page) and either resolves with the response body, unwrapped where it is one object
 * (`{user}` → the user), or rejects with a `PresenceApiError`.
 */
export class PresenceServerClient {
  private readonly baseUrl: string;
  private readonly authorization?: string;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;
  private readonly extraHeaders: Record<string, string>;

  constructor(options: PresenceServerClientOptions) {
    if (typeof options?.baseUrl !== 'string' || !/^https?:\/\//i.test(options.baseUrl)) {
      throw new TypeError('PresenceServerClient: baseUrl must be an http:// or https:// URL.');
    }
    if (options.apiKey !== undefined && options.token !== undefined) {
      throw new TypeError('PresenceServerClient: give apiKey or token, not both.');
    }
    const credential = options.apiKey ?? options.token;
    if (credential !== undefined && (typeof credential !== 'string' || credential === '')) {
      throw new TypeError('PresenceServerClient: apiKey and token must be non-empty strings.');
    }
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TypeError('PresenceServerClient: no fetch in this runtime; pass options.fetch.');
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new TypeError('PresenceServerClient: timeoutMs must be a positive number.');
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    if (credential !== undefined) this.authorization = `Bearer ${credential}`;
    this.fetchImpl = fetchImpl;
    this.timeoutMs = timeoutMs;
    this.extraHeaders = {};
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      if (name.toLowerCase() === 'authorization') throw new TypeError('PresenceServerClient: set the credential with apiKey or token, not headers.');
      this.extraHeaders[name] = value;
    }
  }

  /** One page of a channel's visible members, by user id. An empty or unknown channel has `count: 0`. */
  getChannelPresence(channel: string, page: PageOptions = {}): Promise<ChannelPresenceResponse> {
    return this.call<ChannelPresenceResponse>('getChannelPresence', { id: channel }, undefined, pageQuery(page));
  }

  /** Every visible member of a channel, fetching page after page of `pageSize`. */
  async *iterateChannelPresence(channel: string, options: { pageSize?: number } = {}): AsyncGenerator<Member, void, undefined> {
    let cursor: string | undefined;
    do {
      const page = await this.getChannelPresence(channel, { limit: options.pageSize, cursor });
      yield* page.members;
      cursor = page.nextCursor;
    } while (cursor !== undefined);
  }

  /**
   * Changes a user's status, state, message, expiry, visibility, meta or contacts, as if the user
   * had sent them; `status: 'offline'` logs them out everywhere. With the API key `userId` is
   * required. Resolves with the presence as stored.
   */
  async updatePresence(update: UpdatePresenceRequest): Promise<SelfPresence> {
    return (await this.call<UpdatePresenceResponse>('updatePresence', {}, update)).user;
  }

  /** Ends every session of the user at once: their sockets close with `LOGGED_OUT` (1000). */
  logout(userId: string): Promise<SelfPresence> {
    return this.updatePresence({ userId, status: 'offline' });
  }

  /** One user's presence (privacy applied for a user token). An unknown user is offline, not an error. */
  async getUserPresence(userId: string): Promise<UserPresence> {
    return (await this.call<UserPresenceResponse>('getUserPresence', { id: userId })).user;
  }

  /** Many users at once (at most `PRESENCE_MAX_QUERY_USERS`, 1000), in the order asked. */
  async queryPresence(userIds: readonly string[]): Promise<UserPresence[]> {
    return (await this.call<QueryPresenceResponse>('queryPresence', {}, { userIds: [...userIds] })).users;
  }

  /** The channels a user is a visible member of, by name; none when offline or invisible. */
  async getUserChannels(userId: string): Promise<UserChannel[]> {
    return (await this.call<UserChannelsResponse>('getUserChannels', { id: userId })).channels;
  }

  /** One page of everyone others see as present, by user id (API key only). */
  getOnlineUsers(page: PageOptions = {}): Promise<OnlineUsersResponse> {
    return this.call<OnlineUsersResponse>('getOnlineUsers', {}, undefined, pageQuery(page));
  }

  /** Everyone present, fetching page after page of `pageSize` (API key only). */
  async *iterateOnlineUsers(options: { pageSize?: number } = {}): AsyncGenerator<UserPresence, void, undefined> {
    let cursor: string | undefined;
    do {
      const page = await this.getOnlineUsers({ limit: options.pageSize, cursor });
      yield* page.users;
      cursor = page.nextCursor;
    } while (cursor !== undefined);
  }

  /** Figures of the operations dashboard (API key only). */
  getAdminStats(): Promise<AdminStats> {
    return this.call<AdminStats>('getAdminStats', {});
  }

  /** Liveness: resolves while the process answers. */
  getHealth(): Promise<HealthResponse> {
    return this.call<HealthResponse>('getHealth', {});
  }

  /** Readiness: resolves when the node can serve, rejects with `NOT_READY` or `OVERLOADED` (503) otherwise. */
  getReadiness(): Promise<ReadyResponse> {
    return this.call<ReadyResponse>('getReadiness', {});
  }

  /** The Prometheus metrics, as text. */
  getMetrics(): Promise<string> {
    return this.call<string>('getMetrics', {}, undefined, undefined, 'text');
  }

  /** The OpenAPI 3.1 document of the server's HTTP API. */
  getOpenApiDocument(): Promise<Record<string, unknown>> {
    return this.call<Record<string, unknown>>('getOpenApiDocument', {});
  }

  /**
   * One heartbeat of an HTTP session, made as the user of `token` (a client built with a user's
   * JWT): a backend that keeps a user present without a WebSocket (a serverless function, a
   * device relay). Browsers use `@presence/client/http` instead.
   */
  heartbeat(body: HeartbeatRequest): Promise<HeartbeatResponse> {
    return this.call<HeartbeatResponse>('heartbeat', {}, body);
  }

  /**
   * Ends one session after the server's unload grace, as the browser's beacon does; the session
   * token is the only credential it needs.
   */
  async unloadBeacon(sessionToken: string): Promise<void> {
    await this.call<undefined>('unloadBeacon', {}, { sessionToken });
  }

  private async call<T>(
    operation: OperationId,
    params: Record<string, string>,
    body?: unknown,
    query?: URLSearchParams,
    as: 'json' | 'text' = 'json',
  ): Promise<T> {
    const { method, path } = OPERATIONS[operation];
    const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = params[name];
      if (typeof value !== 'string') throw new TypeError(`${operation}: "${name}" must be a string.`);
      return encodeURIComponent(value);
    });
    const search = query && query.toString() !== '' ? `?${query}` : '';
    const headers: Record<string, string> = { ...this.extraHeaders, accept: as === 'json' ? 'application/json' : 'text/plain' };
    if (this.authorization) headers.authorization = this.authorization;
    if (body !== undefined) headers['content-type'] = 'application/json';

    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    let response: Response;
    let text: string;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${filled}${search}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
      });
      text = await response.text();
    } catch (error) {
      throw new PresenceApiError({
        code: timedOut ? 'TIMEOUT' : 'NETWORK_ERROR',
        status: 0,
        operation,
        message: timedOut ? `${operation}: no answer within ${this.timeoutMs} ms.` : `${operation}: ${(error as Error)?.message ?? 'the request failed'}.`,
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }

    if (response.ok) {
      if (response.status === 204) return undefined as T;
      if (as === 'text') return text as T;
      try {
        return JSON.parse(text) as T;
      } catch (error) {
        throw new PresenceApiError({ code: 'INVALID_RESPONSE', status: response.status, operation, message: `${operation}: the answer is not JSON.`, cause: error });
      }
    }
    const retryAfter = parseRetryAfter(response.headers.get('retry-after'));
    const error = errorBody(text);
    if (error) {
      throw new PresenceApiError({ code: error.code, status: response.status, operation, message: error.message, retryAfter });
    }
    throw new PresenceApiError({
      code: 'INVALID_RESPONSE',
      status: response.status,
      operation,
      message: `${operation}: HTTP ${response.status} without the API's error body (a proxy in between?).`,
      retryAfter,
    });
  }
}

function pageQuery(page: PageOptions): URLSearchParams {
  const query = new URLSearchParams();
  if (page.limit !== undefined) query.set('limit', String(page.limit));
  if (page.cursor !== undefined) query.set('cursor', page.cursor);
  return query;
}

function errorBody(text: string): ErrorResponse['error'] | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<ErrorResponse> | null;
    const error = parsed?.error;
    if (error && typeof error.code === 'string' && typeof error.message === 'string') return error;
  } catch {
    // Not the API's error body.
  }
  return undefined;
}
