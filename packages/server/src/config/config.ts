import type { Limits, Status, WebhookEventType } from '@presence/protocol';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

/** `json`: one JSON object per line; `pretty`: one readable line per record, for a terminal. */
export type LogFormat = 'json' | 'pretty';

/** Base status a custom state maps to (`offline` makes no sense for a state). */
export type StateBase = Exclude<Status, 'offline'>;

export interface AuthConfig {
  /** HS256 shared secret for user tokens. */
  jwtSecret?: string;
  /** PEM public key (SPKI) for RS256 or ES256 user tokens. */
  jwtPublicKey?: string;
  /** When set, tokens must carry this `aud`. */
  jwtAudience?: string;
  /** When set, tokens must carry this `iss`. */
  jwtIssuer?: string;
  /** Bearer key for trusted backends on the HTTP API (may act for any user). */
  apiKey?: string;
  /**
   * Signs session tokens (the unload beacon's capability). @default derived from `jwtSecret`, else
   * from `apiKey`, else (development mode) a fixed development key, else a random key per process
   */
  sessionSecret?: string;
  /**
   * Read-only bearer key: `GET /realtime/admin/stats` (the dashboard's figures) and nothing else.
   * Refused everywhere else with FORBIDDEN, and on the WebSocket.
   */
  dashboardKey?: string;
}

export interface ServerLimits extends Limits {
  /** Typing channels' and other names' user id limit. */
  maxUserIdLength: number;
  /** Connections this node accepts in total before refusing with 4029. */
  maxConnections: number;
  /** User ids in one `POST /realtime/presence/query`. */
  maxQueryUsers: number;
  /** Members in one page of `GET /realtime/channels/:id/presence`. */
  maxPageSize: number;
  /** Event-loop lag past which new connections are refused with OVERLOADED (1013); 0: off. */
  maxEventLoopLagMs: number;
  /** Unsent bytes over all connections past which new connections are refused with OVERLOADED; 0: off. */
  maxTotalOutboundBytes: number;
  /** HTTP requests per second with the API key, per node (token bucket rate); 0: no limit. */
  httpKeyRateLimit: number;
  /** HTTP requests the API key may send at once (bucket size). */
  httpKeyRateBurst: number;
  /** HTTP requests per second with one user's tokens, per node; 0: no limit. */
  httpUserRateLimit: number;
  /** HTTP requests one user's tokens may send at once. */
  httpUserRateBurst: number;
  /** HTTP requests per second from one client address whose credentials fail, per node; 0: no limit. */
  httpIpRateLimit: number;
  /** Such requests one client address may send at once. */
  httpIpRateBurst: number;
}

/** Webhooks (`PRESENCE_WEBHOOK_*`): every event of `events` is POSTed to every URL. */
export interface WebhookConfig {
  /** Each URL has its own queue, retries, order and metrics. */
  urls: string[];
  /** Each signs its own `v1=` of `Presence-Signature` (several while rotating); ≥ 32 bytes each. */
  secrets: string[];
  /** The event types sent. @default every type but `typing.*` and `channel.member_updated` */
  events: WebhookEventType[];
  /** Events one URL may have waiting; past it the oldest waiting one is dropped. @default 10000 */
  maxBacklog: number;
  /** One attempt's limit, connection to the end of the answer. @default 10000 */
  timeoutMs: number;
  /**
   * An event is retried until it has waited this long, then dead-lettered (its last attempt is
   * at or after this age). @default 3600000
   */
  giveUpMs: number;
}

/**
 * The Pusher Channels endpoint (`PRESENCE_PUSHER_*`, docs/pusher.md): one app, served beside
 * protocol v1 on the same port. Single node only for now (not with `redisUrl`).
 */
export interface PusherConfig {
  /** The app id of the HTTP API's paths (`/apps/:app_id/…`). */
  appId: string;
  /** The public key clients connect with (`/app/:key`) and that signs requests and subscriptions. */
  key: string;
  /** Signs private and presence subscriptions, HTTP API requests and Pusher-format webhooks. */
  secret: string;
  /** Pusher-format webhooks are POSTed to each (`X-Pusher-Signature`); empty: none. */
  webhookUrls: string[];
}

export const DEFAULT_WEBHOOK_SETTINGS = {
  maxBacklog: 10_000,
  timeoutMs: 10_000,
  giveUpMs: 3_600_000,
} as const;

/**
 * Large rooms (docs/protocol.md, "Large rooms"). Thresholds count a channel's visible members; a
 * mode starts at its threshold and ends at 0.9 of it, so a room near the line does not flap.
 */
export interface LargeRoomSettings {
  /**
   * From this many visible members, a channel's joins, leaves and updates reach each member once
   * per window, as one frame of the window's events. 0: never. @default 200
   */
  windowMembers: number;
  /** The window of large channels, and the pace of occupancy counts. @default 250 */
  windowMs: number;
  /**
   * From this many visible members, connections that opted in (`features=occupancy`) receive
   * counts and a sample (`presence.occupancy`) instead of the member list. 0: never. @default 5000
   */
  occupancyMembers: number;
  /** Members in an occupancy sample. @default 50 */
  sampleSize: number;
  /** An occupancy sample changes at most this often. @default 2000 */
  sampleIntervalMs: number;
}

export const DEFAULT_LARGE_ROOMS: LargeRoomSettings = {
  windowMembers: 200,
  windowMs: 250,
  occupancyMembers: 5000,
  sampleSize: 50,
  sampleIntervalMs: 2000,
};

export interface ServerConfig {
  /** @default 8080 */
  port: number;
  /** @default '0.0.0.0' */
  host: string;
  /** No activity for this long makes a session idle (→ `away`). @default 300000 */
  idleTimeoutMs: number;
  /** How long a user stays present after their last session drops. @default 30000 */
  offlineDelayMs: number;
  /**
   * Multi-node anti-entropy: every interval each node compares the other nodes' stored state with
   * what it applied and re-reads any that moved without a message. @default 5000
   */
  syncIntervalMs: number;
  /**
   * Multi-node lease lifetime. A node renews it every third of it; a node that stops renewing is
   * declared down within `nodeLeaseMs * 4/3`, and its users then get the offline delay. @default 3000
   */
  nodeLeaseMs: number;
  /** This node's id in the cluster (logs, metrics, Redis keys). @default a random UUID */
  nodeId?: string;
  /** Prefix of every Redis key and the bus channel, so several clusters can share a Redis. @default 'presence' */
  redisPrefix: string;
  /**
   * Testing only: added to this node's wall clock, to show that no cluster decision depends on
   * it (the cluster stamps times on Redis's clock). @default 0
   */
  clockSkewMs: number;
  /** Typing ends after this long without a refresh. @default 3000 */
  typingTimeoutMs: number;
  /** Server ping interval; two silent intervals close the socket. @default 20000 */
  heartbeatIntervalMs: number;
  /**
   * How often an HTTP session (`POST /realtime/heartbeat`) is asked to beat; two missed intervals
   * detach it, then the offline delay runs. @default 10000
   */
  httpHeartbeatIntervalMs: number;
  /**
   * After an unload beacon (`POST /realtime/disconnect`), how long the session waits for a resume
   * (a reload) before it ends, without the offline delay. @default 3000
   */
  unloadGraceMs: number;
  auth: AuthConfig;
  /** Custom states and the status each maps to. */
  states: Record<string, StateBase>;
  /** Allowed `Origin` values for WebSocket upgrades and CORS; empty: any. */
  allowedOrigins: string[];
  /** When set, nodes share presence through this Redis. Not with `redisClusterNodes`. */
  redisUrl?: string;
  /**
   * When set, nodes share presence through this Redis Cluster (sharded pub/sub, Redis 7 or later):
   * seed nodes as `redis://` or `rediss://` URLs, all with the same scheme and credentials. Not with
   * `redisUrl`.
   */
  redisClusterNodes?: string[];
  /**
   * Single node: user records (status, state, message, meta, privacy, lastSeen) are kept in this
   * directory and survive restarts, `kill -9` included (at most the last second is lost). Unset:
   * in memory. Cannot be combined with `redisUrl` or `redisClusterNodes`, where records live in Redis.
   */
  dataDir?: string;
  /** Set when `PRESENCE_WEBHOOK_URLS` is: single node only for now (not with Redis). */
  webhooks?: WebhookConfig;
  /** Set when `PRESENCE_PUSHER_APP_ID`, `_KEY` and `_SECRET` are: the Pusher endpoint is on. */
  pusher?: PusherConfig;
  /** @default 'info' */
  logLevel: LogLevel;
  /** @default 'json' */
  logFormat: LogFormat;
  /**
   * When set, `/metrics` is served on this port (same `host`) and no longer on `port`, so the
   * scrape endpoint can stay on an internal network. `0` picks a free port. @default unset
   */
  metricsPort?: number;
  /** `NODE_ENV=production`: refuse to start without auth. */
  production: boolean;
  /** permessage-deflate on the WebSocket. @default false */
  permessageDeflate: boolean;
  /**
   * Reverse proxies in front of the server that append to `X-Forwarded-For`: the client address
   * of per-address HTTP rate limits is read that many entries from the right. 0: the TCP peer.
   * @default 0
   */
  trustProxyHops: number;
  largeRooms: LargeRoomSettings;
  limits: ServerLimits;
}

export const DEFAULT_STATES: Record<string, StateBase> = {
  'in-call': 'busy',
  presenting: 'busy',
  focus: 'busy',
  lunch: 'away',
};

export const DEFAULT_LIMITS: ServerLimits = {
  maxFrameBytes: 64 * 1024,
  maxMetaBytes: 2048,
  maxMetaDepth: 4,
  maxMetaKeys: 32,
  maxMessageLength: 256,
  maxChannelNameLength: 128,
  maxChannelsPerSession: 100,
  maxSessionsPerUser: 10,
  maxWatchedUsers: 1000,
  rateLimitPerSecond: 50,
  rateLimitBurst: 100,
  maxOutboundBufferBytes: 1024 * 1024,
  maxUserIdLength: 128,
  maxConnections: 100_000,
  maxQueryUsers: 1000,
  maxPageSize: 1000,
  maxEventLoopLagMs: 500,
  maxTotalOutboundBytes: 256 * 1024 * 1024,
  // A backend acting for many users; sized so that normal use is never throttled.
  httpKeyRateLimit: 1000,
  httpKeyRateBurst: 2000,
  // One person's browser tabs and devices: a few requests a second, a page load's worth at once.
  httpUserRateLimit: 20,
  httpUserRateBurst: 100,
  httpIpRateLimit: 20,
  httpIpRateBurst: 100,
};

export const DEFAULT_CONFIG: ServerConfig = {
  port: 8080,
  host: '0.0.0.0',
  idleTimeoutMs: 300_000,
  offlineDelayMs: 30_000,
  syncIntervalMs: 5_000,
  nodeLeaseMs: 3_000,
  redisPrefix: 'presence',
  clockSkewMs: 0,
  typingTimeoutMs: 3_000,
  heartbeatIntervalMs: 20_000,
  httpHeartbeatIntervalMs: 10_000,
  unloadGraceMs: 3_000,
  auth: {},
  states: DEFAULT_STATES,
  allowedOrigins: [],
  logLevel: 'info',
  logFormat: 'json',
  production: false,
  permessageDeflate: false,
  trustProxyHops: 0,
  largeRooms: DEFAULT_LARGE_ROOMS,
  limits: DEFAULT_LIMITS,
};

/** True when neither user tokens nor an API key are configured: insecure development mode. */
export function isDevMode(config: Pick<ServerConfig, 'auth'>): boolean {
  return !config.auth.jwtSecret && !config.auth.jwtPublicKey && !config.auth.apiKey;
}

/** Deep-ish merge for programmatic use and tests: `limits`, `auth` and `largeRooms` merge field by field. */
export function resolveConfig(overrides: Partial<Omit<ServerConfig, 'limits' | 'auth' | 'largeRooms'>> & {
  limits?: Partial<ServerLimits>;
  auth?: AuthConfig;
  largeRooms?: Partial<LargeRoomSettings>;
} = {}): ServerConfig {
  return {
    ...DEFAULT_CONFIG,
    ...overrides,
    auth: { ...DEFAULT_CONFIG.auth, ...overrides.auth },
    largeRooms: { ...DEFAULT_LARGE_ROOMS, ...overrides.largeRooms },
    limits: { ...DEFAULT_LIMITS, ...overrides.limits },
  };
}
