import { parseArgs as tokenizeArgs } from 'node:util';
import { DEFAULT_WEBHOOK_EVENT_TYPES } from '@presence/protocol';
import { DEFAULT_CONFIG, DEFAULT_STATES, DEFAULT_WEBHOOK_SETTINGS, type ServerLimits } from './config.js';

/*
 * Every setting the server reads: the environment variables with their defaults and help, the
 * command-line flags, and the `--help` text built from them. `env.ts` parses them; tests and the
 * docs check the configuration table against this list.
 */

export const MAX_TIMER_MS = 2_147_483_647;
export const MAX_INT = Number.MAX_SAFE_INTEGER;

export const MIN_DASHBOARD_KEY_LENGTH = 16;

export interface LimitSpec {
  env: string;
  min: number;
  max: number;
  help: string;
}

// `satisfies` makes a new ServerLimits field a compile error until it gets a variable here.
export const LIMIT_VARS = {
  maxFrameBytes: {
    env: 'PRESENCE_MAX_FRAME_BYTES',
    min: 256,
    // ws' own default; anything above it is certainly a typo.
    max: 100 * 1024 * 1024,
    help: 'Largest inbound WebSocket frame or HTTP body, in bytes.',
  },
  maxMetaBytes: { env: 'PRESENCE_MAX_META_BYTES', min: 2, max: MAX_TIMER_MS, help: 'Largest user or channel meta, serialized JSON bytes after merging.' },
  maxMetaDepth: { env: 'PRESENCE_MAX_META_DEPTH', min: 1, max: 64, help: 'Deepest nesting of meta objects/arrays.' },
  maxMetaKeys: { env: 'PRESENCE_MAX_META_KEYS', min: 1, max: MAX_TIMER_MS, help: 'Most keys in one meta, counted over every nesting level.' },
  maxMessageLength: { env: 'PRESENCE_MAX_MESSAGE_LENGTH', min: 0, max: MAX_TIMER_MS, help: 'Longest custom status message, in characters (0 disables messages).' },
  maxChannelNameLength: { env: 'PRESENCE_MAX_CHANNEL_NAME_LENGTH', min: 1, max: MAX_TIMER_MS, help: 'Longest channel name.' },
  maxChannelsPerSession: { env: 'PRESENCE_MAX_CHANNELS_PER_SESSION', min: 1, max: MAX_TIMER_MS, help: 'Channels one session may join.' },
  maxSessionsPerUser: { env: 'PRESENCE_MAX_SESSIONS_PER_USER', min: 1, max: MAX_TIMER_MS, help: 'Sessions one user may have on this node (more are refused with 4029).' },
  maxWatchedUsers: { env: 'PRESENCE_MAX_WATCHED_USERS', min: 0, max: MAX_TIMER_MS, help: 'Users one session may watch (0 disables watching).' },
  rateLimitPerSecond: { env: 'PRESENCE_RATE_LIMIT', min: 1, max: MAX_TIMER_MS, help: 'Sustained inbound commands per second per session.' },
  rateLimitBurst: { env: 'PRESENCE_RATE_BURST', min: 1, max: MAX_TIMER_MS, help: 'Commands a session may send at once (token bucket size).' },
  maxOutboundBufferBytes: { env: 'PRESENCE_MAX_OUTBOUND_BUFFER_BYTES', min: 1024, max: MAX_INT, help: 'Unsent bytes a connection may have queued before the slow consumer is cut.' },
  maxUserIdLength: { env: 'PRESENCE_MAX_USER_ID_LENGTH', min: 1, max: MAX_TIMER_MS, help: 'Longest user id.' },
  maxConnections: { env: 'PRESENCE_MAX_CONNECTIONS', min: 1, max: MAX_TIMER_MS, help: 'Connections this node accepts in total (more are refused with 4029); capped below the open-files limit.' },
  maxQueryUsers: { env: 'PRESENCE_MAX_QUERY_USERS', min: 1, max: MAX_TIMER_MS, help: 'User ids in one POST /realtime/presence/query.' },
  maxPageSize: { env: 'PRESENCE_MAX_PAGE_SIZE', min: 1, max: MAX_TIMER_MS, help: 'Members per page of GET /realtime/channels/:id/presence.' },
  maxEventLoopLagMs: { env: 'PRESENCE_MAX_EVENT_LOOP_LAG_MS', min: 0, max: MAX_TIMER_MS, help: 'Event-loop lag past which new connections are refused with OVERLOADED (1013) for a second (0: off).' },
  maxTotalOutboundBytes: { env: 'PRESENCE_MAX_TOTAL_OUTBOUND_BYTES', min: 0, max: MAX_INT, help: 'Unsent bytes over all connections past which new connections are refused with OVERLOADED (0: off).' },
  httpKeyRateLimit: { env: 'PRESENCE_HTTP_KEY_RATE_LIMIT', min: 0, max: MAX_TIMER_MS, help: 'HTTP requests per second with the API key, per node (0: no limit).' },
  httpKeyRateBurst: { env: 'PRESENCE_HTTP_KEY_RATE_BURST', min: 1, max: MAX_TIMER_MS, help: 'HTTP requests the API key may send at once (token bucket size).' },
  httpUserRateLimit: { env: 'PRESENCE_HTTP_USER_RATE_LIMIT', min: 0, max: MAX_TIMER_MS, help: 'HTTP requests per second with one user\'s tokens, per node (0: no limit).' },
  httpUserRateBurst: { env: 'PRESENCE_HTTP_USER_RATE_BURST', min: 1, max: MAX_TIMER_MS, help: 'HTTP requests one user\'s tokens may send at once.' },
  httpIpRateLimit: { env: 'PRESENCE_HTTP_IP_RATE_LIMIT', min: 0, max: MAX_TIMER_MS, help: 'HTTP requests per second from one client address without valid credentials, per node (0: no limit).' },
  httpIpRateBurst: { env: 'PRESENCE_HTTP_IP_RATE_BURST', min: 1, max: MAX_TIMER_MS, help: 'HTTP requests without valid credentials one client address may send at once.' },
} as const satisfies Record<keyof ServerLimits, LimitSpec>;

interface VarDoc {
  name: string;
  default: string;
  help: string;
}

export const unset = 'none';

/** Every environment variable loadConfig reads, in help order, with its default and meaning. */
export const CONFIG_VARIABLE_DOCS: readonly VarDoc[] = [
  { name: 'PORT', default: String(DEFAULT_CONFIG.port), help: 'TCP port to listen on (0 picks a free port).' },
  { name: 'HOST', default: DEFAULT_CONFIG.host, help: 'Interface to bind (e.g. 127.0.0.1, ::).' },
  { name: 'PRESENCE_METRICS_PORT', default: unset, help: 'Serve /metrics on this port (same HOST) instead of PORT, which then answers 404 there (0 picks a free port).' },
  { name: 'PRESENCE_IDLE_TIMEOUT_MS', default: String(DEFAULT_CONFIG.idleTimeoutMs), help: 'No activity for this long makes a session idle; all sessions idle means away.' },
  { name: 'PRESENCE_OFFLINE_DELAY_MS', default: String(DEFAULT_CONFIG.offlineDelayMs), help: 'How long a user stays present after their last session drops (0: at once).' },
  { name: 'PRESENCE_SYNC_INTERVAL_MS', default: String(DEFAULT_CONFIG.syncIntervalMs), help: 'Multi-node: how often each node checks the others\' stored state against what it applied (anti-entropy).' },
  { name: 'PRESENCE_NODE_LEASE_MS', default: String(DEFAULT_CONFIG.nodeLeaseMs), help: 'Multi-node: lease lifetime, renewed every third of it; a dead node is detected within 4/3 of it.' },
  { name: 'PRESENCE_NODE_ID', default: 'random', help: 'Multi-node: this node\'s id ([A-Za-z0-9_.-], at most 64).' },
  { name: 'PRESENCE_REDIS_PREFIX', default: DEFAULT_CONFIG.redisPrefix, help: 'Multi-node: prefix of Redis keys and the bus channel, for clusters sharing one Redis.' },
  { name: 'PRESENCE_CLOCK_SKEW_MS', default: '0', help: 'Testing only: shifts this node\'s wall clock to show nothing depends on it.' },
  { name: 'PRESENCE_TYPING_TIMEOUT_MS', default: String(DEFAULT_CONFIG.typingTimeoutMs), help: 'Typing ends after this long without a refresh.' },
  { name: 'PRESENCE_HEARTBEAT_INTERVAL_MS', default: String(DEFAULT_CONFIG.heartbeatIntervalMs), help: 'Server ping interval; two silent intervals close the connection (min 10).' },
  { name: 'PRESENCE_HTTP_HEARTBEAT_INTERVAL_MS', default: String(DEFAULT_CONFIG.httpHeartbeatIntervalMs), help: 'How often HTTP sessions (POST /realtime/heartbeat) beat; two missed intervals detach one (min 100).' },
  { name: 'PRESENCE_UNLOAD_GRACE_MS', default: String(DEFAULT_CONFIG.unloadGraceMs), help: 'After an unload beacon, how long a session waits for a resume (a reload) before it ends (0: at once).' },
  { name: 'PRESENCE_LARGE_CHANNEL_MEMBERS', default: String(DEFAULT_CONFIG.largeRooms.windowMembers), help: 'Visible members from which a channel\'s joins, leaves and updates go out once per window, as one frame (0: never; ends below 0.9 of it).' },
  { name: 'PRESENCE_LARGE_CHANNEL_WINDOW_MS', default: String(DEFAULT_CONFIG.largeRooms.windowMs), help: 'The window of large channels and the pace of occupancy counts (10–60000).' },
  { name: 'PRESENCE_OCCUPANCY_ONLY_MEMBERS', default: String(DEFAULT_CONFIG.largeRooms.occupancyMembers), help: 'Visible members from which connections with features=occupancy get counts and a sample instead of the member list (0: never; ends below 0.9 of it).' },
  { name: 'PRESENCE_OCCUPANCY_SAMPLE', default: String(DEFAULT_CONFIG.largeRooms.sampleSize), help: 'Members in an occupancy sample (0–1000).' },
  { name: 'PRESENCE_OCCUPANCY_SAMPLE_INTERVAL_MS', default: String(DEFAULT_CONFIG.largeRooms.sampleIntervalMs), help: 'An occupancy sample changes at most this often.' },
  { name: 'PRESENCE_JWT_SECRET', default: unset, help: 'HS256 secret for user tokens.' },
  { name: 'PRESENCE_JWT_PUBLIC_KEY', default: unset, help: 'PEM public key (RSA or EC) for RS256/ES256 user tokens; "\\n" escapes are accepted.' },
  { name: 'PRESENCE_JWT_PUBLIC_KEY_FILE', default: unset, help: 'Path to a PEM public key file, instead of PRESENCE_JWT_PUBLIC_KEY.' },
  { name: 'PRESENCE_JWT_AUDIENCE', default: unset, help: 'When set, user tokens must carry this "aud".' },
  { name: 'PRESENCE_JWT_ISSUER', default: unset, help: 'When set, user tokens must carry this "iss".' },
  { name: 'PRESENCE_API_KEY', default: unset, help: 'Bearer key for trusted backends on the HTTP API (may act for any user).' },
  { name: 'PRESENCE_SESSION_SECRET', default: 'derived', help: 'Signs session tokens (unload beacons); default: derived from PRESENCE_JWT_SECRET or PRESENCE_API_KEY. Same value on every node.' },
  { name: 'PRESENCE_DASHBOARD_KEY', default: unset, help: `Read-only bearer key for the dashboard: GET /realtime/admin/stats and nothing else (at least ${MIN_DASHBOARD_KEY_LENGTH} characters, not the API key).` },
  {
    name: 'PRESENCE_STATES',
    default: Object.entries(DEFAULT_STATES).map(([name, base]) => `${name}:${base}`).join(','),
    help: 'Custom states as name:base pairs (base: online|away|busy); empty for none.',
  },
  { name: 'PRESENCE_ALLOWED_ORIGINS', default: 'any', help: 'Comma list of exact origins (https://app.example.com) allowed to connect; * or empty: any.' },
  { name: 'REDIS_URL', default: unset, help: 'redis:// or rediss:// URL; when set, nodes share presence through Redis.' },
  {
    name: 'REDIS_CLUSTER_NODES',
    default: unset,
    help: 'Comma list of Redis Cluster seed nodes (host:port, or redis:// or rediss:// URLs with optional user:password@, the same for all); nodes share presence through the Redis Cluster (Redis 7 or later, sharded pub/sub). Not with REDIS_URL.',
  },
  { name: 'PRESENCE_DATA_DIR', default: unset, help: 'Single node: directory where user records (status, meta, lastSeen) survive restarts; not with REDIS_URL or REDIS_CLUSTER_NODES.' },
  { name: 'PRESENCE_WEBHOOK_URLS', default: unset, help: 'Comma list of http(s) URLs; every webhook event is POSTed to each (own queue, retries, order). Single node only: not with REDIS_URL or REDIS_CLUSTER_NODES.' },
  { name: 'PRESENCE_WEBHOOK_SECRET', default: unset, help: 'Required with PRESENCE_WEBHOOK_URLS: comma list of secrets of at least 32 bytes; each signs its own v1= in Presence-Signature.' },
  { name: 'PRESENCE_WEBHOOK_EVENTS', default: DEFAULT_WEBHOOK_EVENT_TYPES.join(','), help: 'Comma list of webhook event types to send; family.* and * are accepted.' },
  { name: 'PRESENCE_WEBHOOK_MAX_BACKLOG', default: String(DEFAULT_WEBHOOK_SETTINGS.maxBacklog), help: 'Events one URL may have waiting; past it the oldest waiting event is dropped (counted and logged).' },
  { name: 'PRESENCE_WEBHOOK_TIMEOUT_MS', default: String(DEFAULT_WEBHOOK_SETTINGS.timeoutMs), help: 'One delivery attempt may take this long before it counts as failed and is retried.' },
  { name: 'PRESENCE_WEBHOOK_GIVE_UP_MS', default: String(DEFAULT_WEBHOOK_SETTINGS.giveUpMs), help: 'Failed events are retried until they are this old, then dead-lettered.' },
  { name: 'PRESENCE_PUSHER_APP_ID', default: unset, help: 'Turns on the Pusher Channels endpoint (/app/:key, /apps/:app_id/…) with _KEY and _SECRET; 1–64 characters of [A-Za-z0-9_.-]. Single node only: not with REDIS_URL.' },
  { name: 'PRESENCE_PUSHER_KEY', default: unset, help: 'The Pusher app key clients connect with (1–128 characters of [A-Za-z0-9_.-]).' },
  { name: 'PRESENCE_PUSHER_SECRET', default: unset, help: 'The Pusher app secret: signs private and presence subscriptions, HTTP API requests and Pusher webhooks.' },
  { name: 'PRESENCE_PUSHER_WEBHOOK_URLS', default: unset, help: 'Comma list of http(s) URLs that get Pusher-format webhooks (X-Pusher-Signature): channel_occupied, channel_vacated, member_added, member_removed, client_event.' },
  { name: 'LOG_LEVEL', default: DEFAULT_CONFIG.logLevel, help: 'debug | info | warn | error | silent.' },
  { name: 'LOG_FORMAT', default: DEFAULT_CONFIG.logFormat, help: 'json (one JSON object per line) | pretty (readable lines for a terminal).' },
  { name: 'NODE_ENV', default: unset, help: 'production refuses to start without auth (JWT secret, public key or API key).' },
  { name: 'PRESENCE_PERMESSAGE_DEFLATE', default: String(DEFAULT_CONFIG.permessageDeflate), help: 'WebSocket compression (true/false/1/0); costs CPU and memory per connection.' },
  { name: 'PRESENCE_TRUST_PROXY_HOPS', default: String(DEFAULT_CONFIG.trustProxyHops), help: 'Reverse proxies in front that append to X-Forwarded-For; per-address HTTP rate limits read the client address that many entries from the right (0: the TCP peer).' },
  ...Object.entries(LIMIT_VARS).map(([field, spec]) => ({
    name: spec.env,
    default: String(DEFAULT_CONFIG.limits[field as keyof ServerLimits]),
    help: spec.help,
  })),
];

/** Names of every environment variable loadConfig reads. */
export const CONFIG_VARIABLES: readonly string[] = CONFIG_VARIABLE_DOCS.map((d) => d.name);

interface FlagSpec {
  flag: string;
  env: string;
  arg: string;
  /** A valid value: the tests give it to each flag to show the flag is accepted. */
  example: string;
}

/** The command-line flags: each stands for one variable and wins over it. */
export const COMMAND_LINE_FLAGS: readonly FlagSpec[] = [
  { flag: '--port', env: 'PORT', arg: 'N', example: '9000' },
  { flag: '--host', env: 'HOST', arg: 'H', example: '127.0.0.1' },
  { flag: '--metrics-port', env: 'PRESENCE_METRICS_PORT', arg: 'N', example: '9100' },
  { flag: '--log-level', env: 'LOG_LEVEL', arg: 'L', example: 'warn' },
  { flag: '--log-format', env: 'LOG_FORMAT', arg: 'F', example: 'pretty' },
  { flag: '--offline-delay-ms', env: 'PRESENCE_OFFLINE_DELAY_MS', arg: 'N', example: '5000' },
  { flag: '--idle-timeout-ms', env: 'PRESENCE_IDLE_TIMEOUT_MS', arg: 'N', example: '60000' },
  { flag: '--data-dir', env: 'PRESENCE_DATA_DIR', arg: 'DIR', example: './presence-data' },
];

/** Flags that print something and exit instead of starting the server. */
export const INFO_FLAGS = [
  { flag: '--help', short: 'h', help: 'Print this help and exit.' },
  { flag: '--version', short: undefined, help: 'Print the server\'s version and exit.' },
] as const;

function buildHelpText(): string {
  const lines = [
    'Usage: presence-server [options]',
    '',
    'Self-hosted real-time presence server (WebSocket protocol v1 at /realtime, HTTP API).',
    'Configuration comes from the environment; the options below override it.',
    '',
    'Options:',
  ];
  const infoLabel = (f: (typeof INFO_FLAGS)[number]) => (f.short ? `-${f.short}, ${f.flag}` : f.flag);
  const flagWidth = Math.max(...COMMAND_LINE_FLAGS.map((f) => `${f.flag} ${f.arg}`.length), ...INFO_FLAGS.map((f) => infoLabel(f).length)) + 2;
  for (const f of COMMAND_LINE_FLAGS) {
    const doc = CONFIG_VARIABLE_DOCS.find((d) => d.name === f.env);
    lines.push(`  ${`${f.flag} ${f.arg}`.padEnd(flagWidth)}Same as ${f.env} (default: ${doc?.default ?? unset}).`);
  }
  for (const f of INFO_FLAGS) lines.push(`  ${infoLabel(f).padEnd(flagWidth)}${f.help}`);
  lines.push('  Options also accept the --option=value form.', '', 'Environment:');
  for (const d of CONFIG_VARIABLE_DOCS) {
    lines.push(`  ${d.name} (default: ${d.default})`, `      ${d.help}`);
  }
  lines.push(
    '',
    'Without PRESENCE_JWT_SECRET, a public key or PRESENCE_API_KEY the server runs in insecure',
    'development mode (clients may connect with ?userId=); NODE_ENV=production refuses that.',
    '',
  );
  return lines.join('\n');
}

export const HELP_TEXT: string = buildHelpText();

type ArgToken = NonNullable<ReturnType<typeof tokenizeArgs>['tokens']>[number];

/**
 * Splits argv with node:util's parseArgs in its lenient token mode: it knows the `--flag=value`,
 * `-h` and `--` forms, and leaves the verdicts (unknown flag, missing value) to us, so that every
 * refusal is a ConfigError naming the flag at fault.
 */
export function argTokens(argv: readonly string[]): ArgToken[] {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const f of COMMAND_LINE_FLAGS) options[f.flag.slice(2)] = { type: 'string' };
  for (const f of INFO_FLAGS) options[f.flag.slice(2)] = f.short ? { type: 'boolean', short: f.short } : { type: 'boolean' };
  return tokenizeArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true }).tokens ?? [];
}

/** `--help`, `-h` or `--version` anywhere before a `--`: print that and exit instead of starting. */
function infoFlagWanted(argv: readonly string[], flag: (typeof INFO_FLAGS)[number]): boolean {
  const spellings = [flag.flag, ...(flag.short ? [`-${flag.short}`] : [])];
  for (const token of argTokens(argv)) {
    if (token.kind === 'option-terminator') return false;
    if (token.kind !== 'option') continue;
    if (`--${token.name}` === flag.flag) return !token.inlineValue; // `--help=x` is refused by loadConfig
    // `--port --help` asks for help, not for a port named "--help".
    if (!token.inlineValue && token.value !== undefined && spellings.includes(token.value)) return true;
  }
  return false;
}

/** True when the caller should print HELP_TEXT and exit instead of starting. */
export function wantsHelp(argv: readonly string[]): boolean {
  return infoFlagWanted(argv, INFO_FLAGS[0]);
}

/** True when the caller should print the server's version and exit instead of starting. */
export function wantsVersion(argv: readonly string[]): boolean {
  return infoFlagWanted(argv, INFO_FLAGS[1]);
}
