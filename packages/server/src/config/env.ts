import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs as tokenizeArgs } from 'node:util';
import { DEFAULT_WEBHOOK_EVENT_TYPES, WEBHOOK_EVENT_TYPES, type WebhookEventType } from '@presence/protocol';
import { describeKey, jwtAlgorithmFor } from './keys.js';
import { COMMAND_LINE_FLAGS, CONFIG_VARIABLES, INFO_FLAGS, LIMIT_VARS, MAX_INT, MAX_TIMER_MS, MIN_DASHBOARD_KEY_LENGTH, argTokens, type LimitSpec } from './variables.js';

export { CONFIG_VARIABLES, CONFIG_VARIABLE_DOCS, COMMAND_LINE_FLAGS, HELP_TEXT, MIN_DASHBOARD_KEY_LENGTH, wantsHelp, wantsVersion } from './variables.js';
import {
  DEFAULT_CONFIG,
  DEFAULT_STATES,
  DEFAULT_WEBHOOK_SETTINGS,
  type AuthConfig,
  type LargeRoomSettings,
  type LogFormat,
  type LogLevel,
  type ServerConfig,
  type ServerLimits,
  type StateBase,
  type PusherConfig,
  type WebhookConfig,
} from './config.js';

/** Invalid configuration. `variable` is the environment variable (or CLI flag) at fault. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(message);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

type Env = Record<string, string | undefined>;

// Node's setTimeout silently turns larger delays into 1 ms, so a "huge" timeout would fire at once.
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];
const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];
const STATE_BASES: readonly StateBase[] = ['online', 'away', 'busy'];
const STATE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** The API key's recommended minimum; for the dashboard key, new and without old deployments, a rule. */

function shown(value: string): string {
  const s = value.length > 80 ? `${value.slice(0, 77)}...` : value;
  return JSON.stringify(s);
}

/** Empty counts as unset: `FOO=` in a compose file or .env usually means "not configured". */
function present(value: string | undefined): value is string {
  return value !== undefined && value.trim() !== '';
}

function parseInteger(name: string, raw: string, min: number, max: number): number {
  const text = raw.trim();
  const what =
    min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer of at least ${min}`;
  if (!/^\d+$/.test(text)) {
    throw new ConfigError(name, `${name} must be ${what} (got ${shown(raw)})`);
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `${name} must be an integer from ${min} to ${max} (got ${shown(raw)})`);
  }
  return n;
}

function parseBoolean(name: string, raw: string): boolean {
  const text = raw.trim().toLowerCase();
  if (text === 'true' || text === '1') return true;
  if (text === 'false' || text === '0') return false;
  throw new ConfigError(name, `${name} must be true, false, 1 or 0 (got ${shown(raw)})`);
}

function parseLogLevel(name: string, raw: string): LogLevel {
  const text = raw.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(text)) return text as LogLevel;
  throw new ConfigError(name, `${name} must be one of ${LOG_LEVELS.join(', ')} (got ${shown(raw)})`);
}

function parseLogFormat(name: string, raw: string): LogFormat {
  const text = raw.trim().toLowerCase();
  if ((LOG_FORMATS as readonly string[]).includes(text)) return text as LogFormat;
  throw new ConfigError(name, `${name} must be one of ${LOG_FORMATS.join(', ')} (got ${shown(raw)})`);
}

function parseHost(name: string, raw: string): string {
  const text = raw.trim();
  // Catches the common mistake of passing a URL or host:port where an interface address belongs.
  if (text === '' || /[\s/]/.test(text) || text.includes('://')) {
    throw new ConfigError(name, `${name} must be a host name or IP address to bind (got ${shown(raw)})`);
  }
  return text;
}

/** Parses `in-call:busy,lunch:away`. */
export function parseStates(raw: string, name = 'PRESENCE_STATES'): Record<string, StateBase> {
  const states: Record<string, StateBase> = {};
  for (const part of raw.split(',')) {
    const entry = part.trim();
    if (entry === '') continue; // tolerate a trailing comma
    const colon = entry.lastIndexOf(':');
    if (colon === -1) {
      throw new ConfigError(name, `${name} entry ${shown(entry)} must be name:base, e.g. in-call:busy`);
    }
    const state = entry.slice(0, colon).trim();
    const base = entry.slice(colon + 1).trim().toLowerCase();
    if (!STATE_NAME.test(state)) {
      throw new ConfigError(
        name,
        `${name} state name ${shown(state)} must be 1-64 characters of [A-Za-z0-9_.-]`,
      );
    }
    if (!(STATE_BASES as readonly string[]).includes(base)) {
      throw new ConfigError(
        name,
        `${name} state ${shown(state)} must map to online, away or busy (got ${shown(entry.slice(colon + 1).trim())})`,
      );
    }
    if (Object.prototype.hasOwnProperty.call(states, state)) {
      throw new ConfigError(name, `${name} defines state ${shown(state)} twice`);
    }
    states[state] = base as StateBase;
  }
  return states;
}

/**
 * Parses the origin allowlist into the exact strings browsers send in `Origin` (scheme and host
 * lower-cased, default port dropped), so the server can compare with `===`.
 */
export function parseAllowedOrigins(raw: string, name = 'PRESENCE_ALLOWED_ORIGINS'): string[] {
  const entries = raw.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (entries.length === 0) return [];
  if (entries.includes('*')) {
    if (entries.length > 1) {
      throw new ConfigError(name, `${name} must be either * or a list of origins, not both`);
    }
    return [];
  }
  const origins: string[] = [];
  for (const entry of entries) {
    const bad = (why: string): ConfigError =>
      new ConfigError(name, `${name} entry ${shown(entry)} ${why}; expected an origin like https://app.example.com`);
    if (entry.includes('*')) throw bad('uses a wildcard (only a lone * is supported)');
    // One trailing slash is a harmless copy-paste from the address bar; any other path is not an origin.
    const text = entry.endsWith('/') ? entry.slice(0, -1) : entry;
    const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#\s@]+)$/.exec(text);
    if (!m) throw bad('is not an origin (scheme://host[:port], no path)');
    const scheme = m[1].toLowerCase();
    let origin: string;
    if (scheme === 'http' || scheme === 'https') {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        throw bad('is not a valid URL');
      }
      origin = url.origin;
    } else {
      // Non-special schemes (capacitor://, app://) have an opaque URL origin, but browsers
      // still send them verbatim; keep them as written.
      origin = `${scheme}://${m[2].toLowerCase()}`;
    }
    if (!origins.includes(origin)) origins.push(origin);
  }
  return origins;
}

function redactUrl(raw: string): string {
  return raw.replace(/\/\/([^@/]*)@/, '//***@');
}

function parseRedisUrl(name: string, raw: string): string {
  const text = raw.trim();
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // The value may hold a password: never echo it whole.
    throw new ConfigError(name, `${name} must be a redis:// or rediss:// URL (got ${shown(redactUrl(text))})`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(
      name,
      `${name} must be a redis:// or rediss:// URL (got scheme ${shown(url.protocol.slice(0, -1))})`,
    );
  }
  return text;
}

/**
 * The seed nodes of a Redis Cluster: `host:port` (port 6379 when left out) or `redis://` and
 * `rediss://` URLs. The scheme and credentials given on any seed are those of every node (one
 * cluster, one set); seeds that disagree are refused. Returns each seed as a URL with them.
 */
function parseRedisClusterNodes(name: string, raw: string): string[] {
  const entries = raw
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) throw new ConfigError(name, `${name} must list at least one seed node (host:port or a redis:// URL)`);
  let common: { scheme: string; credentials: string; seed: number } | undefined;
  const hosts: string[] = [];
  entries.forEach((entry, i) => {
    const isUrl = entry.includes('://');
    const bad = (why: string) => new ConfigError(name, `${name}: seed ${i + 1} ${why} (got ${shown(redactUrl(entry))})`);
    let url: URL;
    try {
      url = new URL(isUrl ? entry : `redis://${entry}`);
    } catch {
      throw bad('is neither host:port nor a redis:// or rediss:// URL');
    }
    if (isUrl && url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw bad('must be host:port or a redis:// or rediss:// URL');
    if (!isUrl && /[@/?#]/.test(entry)) throw bad('must be host:port (credentials and TLS go in a redis:// or rediss:// URL)');
    if (url.hostname === '') throw bad('has no host');
    if (!['', '/', '/0'].includes(url.pathname) || url.search !== '' || url.hash !== '') throw bad('may not name a database or options (a Redis Cluster has database 0 only)');
    hosts.push(`${url.hostname}:${url.port || '6379'}`);
    if (!isUrl) return;
    const credentials = url.username || url.password ? `${url.username}:${url.password}@` : '';
    if (!common) common = { scheme: url.protocol, credentials, seed: i + 1 };
    else if (common.scheme !== url.protocol || common.credentials !== credentials) {
      throw new ConfigError(name, `${name}: seed ${i + 1} has another scheme or other credentials than seed ${common.seed}; the seeds are nodes of one cluster and share them`);
    }
  });
  return hosts.map((host) => `${common?.scheme ?? 'redis:'}//${common?.credentials ?? ''}${host}`);
}

/** Accepts PEM text, with real newlines or `\n` escapes; returns the key as SPKI PEM. */
function parsePublicKey(name: string, raw: string): string {
  let pem = raw.trim();
  // Env files and orchestrators often can't hold newlines, so `\n` escapes are the usual workaround.
  if (!pem.includes('\n') && pem.includes('\\n')) pem = pem.replace(/\\n/g, '\n');
  if (/PRIVATE KEY/.test(pem)) {
    // createPublicKey would happily derive the public half, leaving a private key in the server's
    // environment for no reason; the operator should fix that.
    throw new ConfigError(name, `${name} must be a public key, not a private key`);
  }
  if (!pem.includes('-----BEGIN')) {
    throw new ConfigError(name, `${name} must be a PEM public key (-----BEGIN PUBLIC KEY-----...)`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new ConfigError(name, `${name} is not a valid PEM public key (${(err as Error).message})`);
  }
  if (!jwtAlgorithmFor(key)) {
    throw new ConfigError(name, `${name} must be an RSA or EC public key: RSA for RS256, EC P-256 for ES256 (got ${describeKey(key)})`);
  }
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

function readPublicKey(env: Env): { key?: string } {
  const inline = env.PRESENCE_JWT_PUBLIC_KEY;
  const file = env.PRESENCE_JWT_PUBLIC_KEY_FILE;
  if (present(inline) && present(file)) {
    throw new ConfigError(
      'PRESENCE_JWT_PUBLIC_KEY_FILE',
      'PRESENCE_JWT_PUBLIC_KEY_FILE and PRESENCE_JWT_PUBLIC_KEY are both set; set only one',
    );
  }
  if (present(inline)) return { key: parsePublicKey('PRESENCE_JWT_PUBLIC_KEY', inline) };
  if (present(file)) {
    let text: string;
    try {
      text = readFileSync(file.trim(), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ConfigError(
        'PRESENCE_JWT_PUBLIC_KEY_FILE',
        `PRESENCE_JWT_PUBLIC_KEY_FILE cannot be read (${code}: ${shown(file.trim())})`,
      );
    }
    return { key: parsePublicKey('PRESENCE_JWT_PUBLIC_KEY_FILE', text) };
  }
  return {};
}

/** Smallest webhook secret: HMAC-SHA256 keys shorter than its output weaken it (RFC 2104 §3). */
export const MIN_WEBHOOK_SECRET_BYTES = 32;

function readWebhooks(
  env: Env,
  int: (name: string, fallback: number, min: number, max: number) => number,
): WebhookConfig | undefined {
  const settings = ['PRESENCE_WEBHOOK_SECRET', 'PRESENCE_WEBHOOK_EVENTS', 'PRESENCE_WEBHOOK_MAX_BACKLOG', 'PRESENCE_WEBHOOK_TIMEOUT_MS', 'PRESENCE_WEBHOOK_GIVE_UP_MS'];
  if (!present(env.PRESENCE_WEBHOOK_URLS)) {
    const stray = settings.find((name) => present(env[name]));
    if (stray) throw new ConfigError(stray, `${stray} is set but PRESENCE_WEBHOOK_URLS is not; set the URLs or unset ${stray}`);
    return undefined;
  }
  const urls = parseWebhookUrls(env.PRESENCE_WEBHOOK_URLS);
  if (!present(env.PRESENCE_WEBHOOK_SECRET)) {
    throw new ConfigError('PRESENCE_WEBHOOK_SECRET', 'PRESENCE_WEBHOOK_SECRET must be set with PRESENCE_WEBHOOK_URLS: receivers verify every webhook with it');
  }
  const secrets = parseWebhookSecrets(env.PRESENCE_WEBHOOK_SECRET);
  const events = present(env.PRESENCE_WEBHOOK_EVENTS) ? parseWebhookEvents(env.PRESENCE_WEBHOOK_EVENTS) : [...DEFAULT_WEBHOOK_EVENT_TYPES];
  const d = DEFAULT_WEBHOOK_SETTINGS;
  return {
    urls,
    secrets,
    events,
    maxBacklog: int('PRESENCE_WEBHOOK_MAX_BACKLOG', d.maxBacklog, 1, 10_000_000),
    timeoutMs: int('PRESENCE_WEBHOOK_TIMEOUT_MS', d.timeoutMs, 1, MAX_TIMER_MS),
    giveUpMs: int('PRESENCE_WEBHOOK_GIVE_UP_MS', d.giveUpMs, 0, MAX_TIMER_MS),
  };
}

const PUSHER_APP_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const PUSHER_KEY = /^[A-Za-z0-9_.-]{1,128}$/;

/** The Pusher endpoint: all of app id, key and secret, or none of them. */
function readPusher(env: Env): PusherConfig | undefined {
  const parts = ['PRESENCE_PUSHER_APP_ID', 'PRESENCE_PUSHER_KEY', 'PRESENCE_PUSHER_SECRET'];
  const set = parts.filter((name) => present(env[name]));
  if (set.length === 0) {
    if (present(env.PRESENCE_PUSHER_WEBHOOK_URLS)) {
      throw new ConfigError('PRESENCE_PUSHER_WEBHOOK_URLS', 'PRESENCE_PUSHER_WEBHOOK_URLS is set but the Pusher endpoint is not; set PRESENCE_PUSHER_APP_ID, PRESENCE_PUSHER_KEY and PRESENCE_PUSHER_SECRET, or unset it');
    }
    return undefined;
  }
  const missing = parts.find((name) => !present(env[name]));
  if (missing) throw new ConfigError(missing, `${missing} must be set with ${set.join(' and ')}: the Pusher endpoint needs an app id, a key and a secret`);
  const appId = env.PRESENCE_PUSHER_APP_ID!.trim();
  if (!PUSHER_APP_ID.test(appId)) throw new ConfigError('PRESENCE_PUSHER_APP_ID', `PRESENCE_PUSHER_APP_ID must be 1–64 characters of A-Z a-z 0-9 _ . - (got ${shown(appId)})`);
  const key = env.PRESENCE_PUSHER_KEY!.trim();
  if (!PUSHER_KEY.test(key)) throw new ConfigError('PRESENCE_PUSHER_KEY', `PRESENCE_PUSHER_KEY must be 1–128 characters of A-Z a-z 0-9 _ . - (got ${shown(key)})`);
  // Taken verbatim, as the other secrets: it must match what the app's backend signs with.
  const secret = env.PRESENCE_PUSHER_SECRET!;
  if (secret === key) throw new ConfigError('PRESENCE_PUSHER_SECRET', 'PRESENCE_PUSHER_SECRET equals PRESENCE_PUSHER_KEY: the key is public (every page has it), so the secret must differ');
  const webhookUrls = present(env.PRESENCE_PUSHER_WEBHOOK_URLS) ? parseWebhookUrls(env.PRESENCE_PUSHER_WEBHOOK_URLS, 'PRESENCE_PUSHER_WEBHOOK_URLS') : [];
  return { appId, key, secret, webhookUrls };
}

/** The read-only dashboard key: long enough not to be guessed, distinct from the API key, and protecting something. */
function parseDashboardKey(key: string, auth: AuthConfig): string {
  const name = 'PRESENCE_DASHBOARD_KEY';
  if (key.length < MIN_DASHBOARD_KEY_LENGTH) {
    // Never echo a key, even a short one.
    throw new ConfigError(name, `${name} is ${key.length} characters; it must be at least ${MIN_DASHBOARD_KEY_LENGTH} (e.g. openssl rand -hex 24)`);
  }
  if (key === auth.apiKey) {
    throw new ConfigError(name, `${name} equals PRESENCE_API_KEY; the read-only key must be a different one, or whoever holds it holds the API key`);
  }
  if (!auth.apiKey && !auth.jwtSecret && !auth.jwtPublicKey) {
    throw new ConfigError(
      name,
      `${name} is set but no other auth is: the server runs in development mode, where the whole API, the stats included, is open; set PRESENCE_JWT_SECRET, a public key or PRESENCE_API_KEY too`,
    );
  }
  return key;
}

/** Parses the URL list; the URLs are kept as written (after trimming) so logs match the config. */
export function parseWebhookUrls(raw: string, name = 'PRESENCE_WEBHOOK_URLS'): string[] {
  const urls: string[] = [];
  // A query string may carry a receiver's token: messages show it as `?…`.
  const redactUrl = (text: string) => text.replace(/\/\/[^@/?#]*@/, '//***@').replace(/\?[^#]*/, '?…');
  for (const part of raw.split(',')) {
    const entry = part.trim();
    if (entry === '') continue;
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw new ConfigError(name, `${name} entry ${shown(redactUrl(entry))} is not a URL; expected one like https://api.example.com/presence-hook`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(name, `${name} entry ${shown(redactUrl(entry))} must be an http:// or https:// URL`);
    }
    if (url.username !== '' || url.password !== '') {
      // fetch refuses them, and a password in a URL ends up in logs; the signature is the auth.
      throw new ConfigError(name, `${name} entry ${shown(redactUrl(entry))} must not carry credentials (user:password@); receivers authenticate webhooks by their signature`);
    }
    if (url.hash !== '') throw new ConfigError(name, `${name} entry ${shown(redactUrl(entry))} must not have a #fragment`);
    if (urls.includes(entry)) throw new ConfigError(name, `${name} lists ${shown(redactUrl(entry))} twice`);
    // Logs, metrics and the dashboard name a URL without its query string: two URLs must differ before it.
    const withoutQuery = (text: string) => text.replace(/[?#].*$/, '');
    if (urls.some((url) => withoutQuery(url) === withoutQuery(entry))) {
      throw new ConfigError(name, `${name} lists ${shown(redactUrl(entry))} twice with different query strings; URLs must differ in their scheme, host, port or path`);
    }
    urls.push(entry);
  }
  if (urls.length === 0) throw new ConfigError(name, `${name} must list at least one URL`);
  return urls;
}

/** Comma-separated secrets, surrounding whitespace ignored; each must be at least 32 bytes. */
export function parseWebhookSecrets(raw: string, name = 'PRESENCE_WEBHOOK_SECRET'): string[] {
  const secrets: string[] = [];
  for (const [index, part] of raw.split(',').entries()) {
    const secret = part.trim();
    if (secret === '') continue;
    const bytes = Buffer.byteLength(secret);
    if (bytes < MIN_WEBHOOK_SECRET_BYTES) {
      // Never echo a secret, even a short one.
      throw new ConfigError(name, `${name}: secret ${index + 1} is ${bytes} bytes; each secret must be at least ${MIN_WEBHOOK_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)`);
    }
    if (!secrets.includes(secret)) secrets.push(secret);
  }
  if (secrets.length === 0) throw new ConfigError(name, `${name} must hold at least one secret`);
  return secrets;
}

/** `user.online,channel.*`: exact types, a family (`user.*`, `channel.*`, `typing.*`) or `*`. */
export function parseWebhookEvents(raw: string, name = 'PRESENCE_WEBHOOK_EVENTS'): WebhookEventType[] {
  const wanted = new Set<WebhookEventType>();
  for (const part of raw.split(',')) {
    const entry = part.trim();
    if (entry === '') continue;
    const matches =
      entry === '*'
        ? WEBHOOK_EVENT_TYPES
        : entry.endsWith('.*')
          ? WEBHOOK_EVENT_TYPES.filter((type) => type.startsWith(entry.slice(0, -1)))
          : WEBHOOK_EVENT_TYPES.filter((type) => type === entry);
    if (matches.length === 0) {
      throw new ConfigError(name, `${name} entry ${shown(entry)} is not a webhook event type; expected some of ${WEBHOOK_EVENT_TYPES.join(', ')}, a family like user.* or *`);
    }
    for (const type of matches) wanted.add(type);
  }
  if (wanted.size === 0) throw new ConfigError(name, `${name} must name at least one event type`);
  // The canonical order, whatever order they were listed in.
  return WEBHOOK_EVENT_TYPES.filter((type) => wanted.has(type));
}

/** Turns argv into env-style overrides, keyed by the variable each flag stands for. */
function parseCommandLine(argv: readonly string[]): Map<string, { value: string; flag: string }> {
  const out = new Map<string, { value: string; flag: string }>();
  let terminated = false;
  for (const token of argTokens(argv)) {
    if (token.kind === 'option-terminator') {
      terminated = true;
      continue;
    }
    if (token.kind === 'positional') {
      throw new ConfigError(token.value, `unexpected argument ${shown(token.value)} (see --help)`);
    }
    if (terminated) continue;
    const flag = token.rawName;
    const info = INFO_FLAGS.find((f) => f.flag === `--${token.name}`);
    if (info) {
      // The caller acts on these before loading the configuration.
      if (token.inlineValue) throw new ConfigError(flag, `${flag} takes no value`);
      continue;
    }
    const spec = COMMAND_LINE_FLAGS.find((f) => f.flag === flag);
    if (!spec) throw new ConfigError(flag, `unknown option ${flag} (see --help)`);
    // parseArgs takes the next argument whatever it is; one that looks like a flag is not a value.
    const value = token.inlineValue || !token.value?.startsWith('--') ? token.value : undefined;
    if (value === undefined || value.trim() === '') throw new ConfigError(flag, `${flag} needs a value (${flag} ${spec.arg})`);
    out.set(spec.env, { value, flag });
  }
  return out;
}

/**
 * Builds the server configuration from the environment and command-line flags (flags win).
 * Throws ConfigError, naming the variable or flag, on the first invalid value.
 */
export function loadConfig(env: Env, argv: string[] = []): ServerConfig {
  const flags = parseCommandLine(argv);
  // Read every variable up front so that which ones we consult doesn't depend on the values.
  const vars: Record<string, string | undefined> = {};
  for (const name of CONFIG_VARIABLES) vars[name] = env[name];

  /** The raw value and the name to blame for it: the flag when one was given, else the variable. */
  const get = (name: string): { raw: string; source: string } | undefined => {
    const flag = flags.get(name);
    if (flag) return { raw: flag.value, source: flag.flag };
    const raw = vars[name];
    return present(raw) ? { raw, source: name } : undefined;
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const v = get(name);
    return v ? parseInteger(v.source, v.raw, min, max) : fallback;
  };

  const d = DEFAULT_CONFIG;
  const port = int('PORT', d.port, 0, 65535);
  const hostVar = get('HOST');
  const host = hostVar ? parseHost(hostVar.source, hostVar.raw) : d.host;
  const idleTimeoutMs = int('PRESENCE_IDLE_TIMEOUT_MS', d.idleTimeoutMs, 1, MAX_TIMER_MS);
  const offlineDelayMs = int('PRESENCE_OFFLINE_DELAY_MS', d.offlineDelayMs, 0, MAX_TIMER_MS);
  const syncIntervalMs = int('PRESENCE_SYNC_INTERVAL_MS', d.syncIntervalMs, 1, MAX_TIMER_MS);
  const nodeLeaseMs = int('PRESENCE_NODE_LEASE_MS', d.nodeLeaseMs, 30, MAX_TIMER_MS);
  const clockSkewMs = present(vars.PRESENCE_CLOCK_SKEW_MS)
    ? parseInteger('PRESENCE_CLOCK_SKEW_MS', vars.PRESENCE_CLOCK_SKEW_MS.replace(/^-/, ''), 0, 86_400_000) * (vars.PRESENCE_CLOCK_SKEW_MS.trim().startsWith('-') ? -1 : 1)
    : d.clockSkewMs;
  const nodeId = present(vars.PRESENCE_NODE_ID) ? vars.PRESENCE_NODE_ID.trim() : undefined;
  if (nodeId !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(nodeId)) {
    throw new ConfigError('PRESENCE_NODE_ID', 'PRESENCE_NODE_ID must be 1–64 characters of A-Z a-z 0-9 _ . -');
  }
  const redisPrefix = present(vars.PRESENCE_REDIS_PREFIX) ? vars.PRESENCE_REDIS_PREFIX.trim() : d.redisPrefix;
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(redisPrefix)) {
    throw new ConfigError('PRESENCE_REDIS_PREFIX', 'PRESENCE_REDIS_PREFIX must be 1–64 characters of A-Z a-z 0-9 _ . : -');
  }
  const typingTimeoutMs = int('PRESENCE_TYPING_TIMEOUT_MS', d.typingTimeoutMs, 1, MAX_TIMER_MS);
  const heartbeatIntervalMs = int('PRESENCE_HEARTBEAT_INTERVAL_MS', d.heartbeatIntervalMs, 10, MAX_TIMER_MS);
  const httpHeartbeatIntervalMs = int('PRESENCE_HTTP_HEARTBEAT_INTERVAL_MS', d.httpHeartbeatIntervalMs, 100, Math.floor(MAX_TIMER_MS / 2));
  const unloadGraceMs = int('PRESENCE_UNLOAD_GRACE_MS', d.unloadGraceMs, 0, MAX_TIMER_MS);
  const largeRooms: LargeRoomSettings = {
    windowMembers: int('PRESENCE_LARGE_CHANNEL_MEMBERS', d.largeRooms.windowMembers, 0, MAX_TIMER_MS),
    windowMs: int('PRESENCE_LARGE_CHANNEL_WINDOW_MS', d.largeRooms.windowMs, 10, 60_000),
    occupancyMembers: int('PRESENCE_OCCUPANCY_ONLY_MEMBERS', d.largeRooms.occupancyMembers, 0, MAX_TIMER_MS),
    sampleSize: int('PRESENCE_OCCUPANCY_SAMPLE', d.largeRooms.sampleSize, 0, 1000),
    sampleIntervalMs: int('PRESENCE_OCCUPANCY_SAMPLE_INTERVAL_MS', d.largeRooms.sampleIntervalMs, 10, MAX_TIMER_MS),
  };

  const auth: AuthConfig = {};
  // Secrets are taken verbatim (no trim): they must match what token issuers sign with.
  if (present(vars.PRESENCE_JWT_SECRET)) auth.jwtSecret = vars.PRESENCE_JWT_SECRET;
  const { key } = readPublicKey(vars);
  if (key) auth.jwtPublicKey = key;
  if (present(vars.PRESENCE_JWT_AUDIENCE)) auth.jwtAudience = vars.PRESENCE_JWT_AUDIENCE.trim();
  if (present(vars.PRESENCE_JWT_ISSUER)) auth.jwtIssuer = vars.PRESENCE_JWT_ISSUER.trim();
  if (present(vars.PRESENCE_API_KEY)) auth.apiKey = vars.PRESENCE_API_KEY;
  if (present(vars.PRESENCE_SESSION_SECRET)) auth.sessionSecret = vars.PRESENCE_SESSION_SECRET;
  if (present(vars.PRESENCE_DASHBOARD_KEY)) auth.dashboardKey = parseDashboardKey(vars.PRESENCE_DASHBOARD_KEY, auth);

  // Unlike the other variables, an empty PRESENCE_STATES is meaningful: no custom states.
  const states =
    vars.PRESENCE_STATES === undefined ? { ...DEFAULT_STATES } : parseStates(vars.PRESENCE_STATES);

  const allowedOrigins =
    vars.PRESENCE_ALLOWED_ORIGINS === undefined ? [] : parseAllowedOrigins(vars.PRESENCE_ALLOWED_ORIGINS);

  const redisUrl = present(vars.REDIS_URL) ? parseRedisUrl('REDIS_URL', vars.REDIS_URL) : undefined;
  const redisClusterNodes = present(vars.REDIS_CLUSTER_NODES) ? parseRedisClusterNodes('REDIS_CLUSTER_NODES', vars.REDIS_CLUSTER_NODES) : undefined;
  if (redisUrl !== undefined && redisClusterNodes !== undefined) {
    throw new ConfigError(
      'REDIS_CLUSTER_NODES',
      'REDIS_URL and REDIS_CLUSTER_NODES are both set: REDIS_URL names one Redis, REDIS_CLUSTER_NODES a Redis Cluster; unset one of them',
    );
  }
  /** The Redis variable that is set, for the messages of what does not go with it. */
  const redisVariable = redisUrl !== undefined ? 'REDIS_URL' : redisClusterNodes !== undefined ? 'REDIS_CLUSTER_NODES' : undefined;
  const dataDirVar = get('PRESENCE_DATA_DIR');
  const dataDir = dataDirVar?.raw.trim();
  if (dataDir !== undefined && redisVariable !== undefined) {
    // Two homes for user records would disagree after the first restart; make the operator pick.
    throw new ConfigError(
      dataDirVar!.source,
      `${dataDirVar!.source} and ${redisVariable} are both set: with ${redisVariable} user records live in Redis; unset one of them`,
    );
  }

  const webhooks = readWebhooks(vars, int);
  const pusher = readPusher(vars);

  const level = get('LOG_LEVEL');
  const logLevel = level ? parseLogLevel(level.source, level.raw) : d.logLevel;
  const format = get('LOG_FORMAT');
  const logFormat = format ? parseLogFormat(format.source, format.raw) : d.logFormat;

  const metricsPortVar = get('PRESENCE_METRICS_PORT');
  const metricsPort = metricsPortVar ? parseInteger(metricsPortVar.source, metricsPortVar.raw, 0, 65535) : undefined;
  if (metricsPort !== undefined && metricsPort !== 0 && metricsPort === port) {
    throw new ConfigError(
      metricsPortVar!.source,
      `${metricsPortVar!.source} must differ from PORT (both are ${port}); unset it to serve /metrics on the main port`,
    );
  }

  const production = vars.NODE_ENV?.trim() === 'production';

  const permessageDeflate = present(vars.PRESENCE_PERMESSAGE_DEFLATE)
    ? parseBoolean('PRESENCE_PERMESSAGE_DEFLATE', vars.PRESENCE_PERMESSAGE_DEFLATE)
    : d.permessageDeflate;

  const trustProxyHops = int('PRESENCE_TRUST_PROXY_HOPS', d.trustProxyHops, 0, 32);

  const limits = { ...d.limits };
  for (const [field, spec] of Object.entries(LIMIT_VARS) as [keyof ServerLimits, LimitSpec][]) {
    limits[field] = int(spec.env, d.limits[field], spec.min, spec.max);
  }

  if (production && !auth.jwtSecret && !auth.jwtPublicKey && !auth.apiKey) {
    throw new ConfigError(
      'PRESENCE_JWT_SECRET',
      'NODE_ENV=production refuses to start without auth: set PRESENCE_JWT_SECRET, ' +
        'PRESENCE_JWT_PUBLIC_KEY (or PRESENCE_JWT_PUBLIC_KEY_FILE) and/or PRESENCE_API_KEY',
    );
  }

  const config: ServerConfig = {
    port,
    host,
    idleTimeoutMs,
    offlineDelayMs,
    syncIntervalMs,
    nodeLeaseMs,
    redisPrefix,
    clockSkewMs,
    typingTimeoutMs,
    heartbeatIntervalMs,
    httpHeartbeatIntervalMs,
    unloadGraceMs,
    auth,
    states,
    allowedOrigins,
    logLevel,
    logFormat,
    production,
    permessageDeflate,
    trustProxyHops,
    largeRooms,
    limits,
  };
  if (redisUrl !== undefined) config.redisUrl = redisUrl;
  if (redisClusterNodes !== undefined) config.redisClusterNodes = redisClusterNodes;
  if (dataDir !== undefined) config.dataDir = dataDir;
  if (nodeId !== undefined) config.nodeId = nodeId;
  if (metricsPort !== undefined) config.metricsPort = metricsPort;
  if (webhooks !== undefined) config.webhooks = webhooks;
  if (pusher !== undefined) config.pusher = pusher;
  return config;
}

/**
 * Legal but probably unintended settings, for the caller to log at start. Kept out of loadConfig
 * so that it stays pure and so that none of these stops a server from starting.
 */
export function configWarnings(config: ServerConfig): string[] {
  const warnings: string[] = [];
  const { auth, limits } = config;
  // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
  if (auth.jwtSecret !== undefined && Buffer.byteLength(auth.jwtSecret) < 32) {
    warnings.push('PRESENCE_JWT_SECRET is shorter than 32 bytes; HS256 needs at least 256 bits to be safe');
  }
  if (auth.apiKey !== undefined && auth.apiKey.length < 16) {
    warnings.push('PRESENCE_API_KEY is shorter than 16 characters; use a long random key');
  }
  if ((auth.jwtAudience !== undefined || auth.jwtIssuer !== undefined) && !auth.jwtSecret && !auth.jwtPublicKey) {
    warnings.push(
      'PRESENCE_JWT_AUDIENCE/PRESENCE_JWT_ISSUER are set but no PRESENCE_JWT_SECRET or public key; user tokens cannot be verified',
    );
  }
  if ((config.redisUrl !== undefined || config.redisClusterNodes !== undefined) && !auth.sessionSecret && !auth.jwtSecret && !auth.apiKey && auth.jwtPublicKey) {
    warnings.push('no PRESENCE_SESSION_SECRET (nor PRESENCE_JWT_SECRET or PRESENCE_API_KEY) to sign session tokens with: unload beacons are only accepted by the node that issued their token; set PRESENCE_SESSION_SECRET on every node');
  }
  if (config.production && config.allowedOrigins.length === 0) {
    warnings.push('PRESENCE_ALLOWED_ORIGINS is not set: browsers on any site may connect with a user\'s token');
  }
  if (config.production && config.webhooks) {
    const plain = config.webhooks.urls.filter((url) => {
      const { protocol, hostname } = new URL(url);
      return protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(hostname);
    });
    if (plain.length > 0) {
      warnings.push('PRESENCE_WEBHOOK_URLS has plain http:// URLs: webhooks are signed but travel unencrypted (user ids, meta); use https://');
    }
    if (config.webhooks.giveUpMs < DEFAULT_WEBHOOK_SETTINGS.giveUpMs) {
      warnings.push('PRESENCE_WEBHOOK_GIVE_UP_MS is below an hour: a receiver that is down for less than that loses events to the dead letters');
    }
  }
  if (config.pusher && Buffer.byteLength(config.pusher.secret) < 16) {
    warnings.push('PRESENCE_PUSHER_SECRET is shorter than 16 bytes; anyone who guesses it can sign subscriptions and trigger events');
  }
  if (limits.maxMetaBytes > limits.maxFrameBytes) {
    warnings.push('PRESENCE_MAX_META_BYTES is larger than PRESENCE_MAX_FRAME_BYTES; meta that large can never arrive');
  }
  return warnings;
}
