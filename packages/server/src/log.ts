/**
 * The server's logger: pino underneath (level filtering, safe serialization, redaction, fast
 * synchronous output), behind the small `Logger` interface the rest of the server calls. Lines keep
 * the format the server always had: `{"time":"<ISO>","level":"info","msg":"…",…fields}`.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { LogFormat, LogLevel, ServerConfig } from './config/config.js';
import { formatPretty } from './log-pretty.js';

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (the call's own fields win on a clash). */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** `json`: one JSON object per line; `pretty`: readable lines for a terminal. @default 'json' */
  format?: LogFormat;
  /**
   * Values that must never be written, such as the API key and the JWT secret: replaced by
   * `[REDACTED]` wherever they appear in a line (message, field, nested value, error stack).
   * Values shorter than 8 characters are not searched for: they would match ordinary words.
   */
  secrets?: ReadonlyArray<string | undefined>;
  /** Where finished lines go, without the line feed. @default stdout */
  write?: (line: string) => void;
  /** Colors in the pretty format. @default stdout is a terminal and NO_COLOR is unset */
  color?: boolean;
}

type EmitLevel = Exclude<LogLevel, 'silent'>;

const CENSOR = '[REDACTED]';
const RESERVED = new Set(['time', 'level', 'msg']);
const MIN_SECRET_LENGTH = 8;

/**
 * Fields whose value is a credential by name, wherever the server or a library might put them.
 * pino replaces the value before serializing; `scrubLine` below catches the same values by shape.
 */
const REDACT_PATHS: string[] = [
  'token',
  'accessToken',
  'apiKey',
  'jwtSecret',
  'secret',
  'password',
  'authorization',
  'cookie',
  'headers.authorization',
  'headers.cookie',
  'query.token',
  '*.token',
  '*.accessToken',
  '*.apiKey',
  '*.jwtSecret',
  '*.secret',
  '*.password',
  '*.authorization',
  '*.cookie',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.query.token',
];

/**
 * Credentials recognized by shape in any string of a line: a `token=`-like query parameter (the
 * WebSocket URL carries the user's JWT as `?token=`), an `Authorization` scheme's value, and
 * anything shaped like a JWT. Each stops at a quote or backslash, so it never leaves the JSON
 * string it is in.
 */
const SHAPES: Array<[RegExp, string]> = [
  [/([?&](?:access_token|token|api_key|apikey|key|secret|password)=)[^&\s"\\#]+/gi, `$1${CENSOR}`],
  [/\b(Bearer)(\s+)[^\s"\\,;]+/gi, `$1$2${CENSOR}`],
  [/\b(Basic)(\s+)[A-Za-z0-9+/]{8,}={0,2}/g, `$1$2${CENSOR}`],
  [/\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, CENSOR],
];

/** Builds the last pass over every serialized line: known secrets, then credential shapes. */
function lineScrubber(secrets: ReadonlyArray<string | undefined>): (line: string) => string {
  const needles = new Set<string>();
  for (const secret of secrets) {
    if (typeof secret !== 'string' || secret.length < MIN_SECRET_LENGTH) continue;
    needles.add(secret);
    // How the secret looks inside a JSON string when it has quotes, backslashes or controls.
    needles.add(JSON.stringify(secret).slice(1, -1));
  }
  // Longest first, so that a secret containing another is replaced whole.
  const ordered = [...needles].sort((a, b) => b.length - a.length);
  return (line) => {
    let out = line;
    for (const needle of ordered) if (out.includes(needle)) out = out.split(needle).join(CENSOR);
    for (const [shape, replacement] of SHAPES) out = out.replace(shape, replacement);
    return out;
  };
}

function serializeError(err: Error, seen: Set<unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message, stack: err.stack };
  // Node system errors carry the useful part (ECONNREFUSED, EADDRINUSE...) outside the message.
  const extra = err as Error & { code?: unknown; syscall?: unknown; cause?: unknown };
  if (extra.code !== undefined) out.code = extra.code;
  if (extra.syscall !== undefined) out.syscall = extra.syscall;
  if (extra.cause !== undefined) out.cause = normalize(extra.cause, seen, 1);
  return out;
}

/**
 * Errors become `{name, message, stack, code?, syscall?, cause?}`, bigints strings and a reference
 * to an enclosing object `"[Circular]"`, at any depth; copies only what changes. Whatever is left
 * (deeper than this looks) goes to pino's serializer, which never throws either.
 */
function normalize(value: unknown, seen: Set<unknown>, depth: number): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object' || value === null || depth > 8) return value;
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  try {
    if (value instanceof Error) return serializeError(value, seen);
    if (Array.isArray(value)) {
      let copy: unknown[] | undefined;
      value.forEach((item, i) => {
        const next = normalize(item, seen, depth + 1);
        if (next !== item) (copy ??= [...value])[i] = next;
      });
      return copy ?? value;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value;
    let copy: Record<string, unknown> | undefined;
    for (const [key, item] of Object.entries(value)) {
      const next = normalize(item, seen, depth + 1);
      if (next !== item) (copy ??= { ...(value as Record<string, unknown>) })[key] = next;
    }
    return copy ?? value;
  } finally {
    seen.delete(value);
  }
}

function defaultColor(): boolean {
  return process.stdout.isTTY === true && !process.env.NO_COLOR;
}

function destination(options: LoggerOptions): DestinationStream {
  const format = options.format ?? 'json';
  let out: (line: string) => void;
  if (options.write) {
    out = options.write;
  } else {
    // Synchronous writes: a line logged just before process.exit() (a crash, a failed start) is
    // not lost, as it was with process.stdout on files and pipes.
    const stdout = pino.destination({ dest: 1, sync: true });
    // A closed stdout (EPIPE) must not bring the server down; the lines are lost either way.
    stdout.on('error', () => {});
    out = (line) => stdout.write(`${line}\n`);
  }
  if (format === 'pretty') {
    const color = options.color ?? (options.write ? false : defaultColor());
    return { write: (s: string) => out(formatPretty(s, color)) };
  }
  return { write: (s: string) => out(s.endsWith('\n') ? s.slice(0, -1) : s) };
}

class PinoBackedLogger implements Logger {
  constructor(
    private readonly pino: PinoLogger,
    private readonly enabled: Record<EmitLevel, boolean>,
    private readonly bound: LogFields,
  ) {}

  debug(msg: string, fields?: LogFields): void {
    if (this.enabled.debug) this.emit('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    if (this.enabled.info) this.emit('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    if (this.enabled.warn) this.emit('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    if (this.enabled.error) this.emit('error', msg, fields);
  }

  child(fields: LogFields): Logger {
    return new PinoBackedLogger(this.pino, this.enabled, { ...this.bound, ...fields });
  }

  private emit(level: EmitLevel, msg: string, fields?: LogFields): void {
    // Written as fields, in this order, so every line starts `{"time":…,"level":…,"msg":…`.
    const record: Record<string, unknown> = { level, msg };
    const seen = new Set<unknown>();
    for (const source of [this.bound, fields]) {
      if (!source) continue;
      for (const [key, value] of Object.entries(source)) {
        // Keep the envelope trustworthy for log pipelines; a clashing field is kept under another name.
        record[RESERVED.has(key) ? `field.${key}` : key] = normalize(value, seen, 0);
      }
    }
    try {
      this.pino[level](record);
    } catch {
      // A log call must not be what brings the server down; dropping the line beats crashing.
    }
  }
}

/**
 * A logger writing one JSON object per line (`{"time","level","msg",...fields}`), to stdout unless
 * `write` is given. The second argument may be the `write` function alone, as before options.
 */
export function createLogger(level: LogLevel, options: LoggerOptions | ((line: string) => void) = {}): Logger {
  const opts: LoggerOptions = typeof options === 'function' ? { write: options } : options;
  const scrub = lineScrubber(opts.secrets ?? []);
  const instance = pino(
    {
      level,
      // No pid/hostname: the keys stay those the server always wrote.
      base: undefined,
      // pino's own error serializer renders `type` instead of `name`; errors are already plain
      // objects here (see normalize).
      serializers: { err: (value: unknown) => value },
      // Deeper or wider than this is cut ("[Object]", "[...]"); a user's meta is at most 4 deep.
      depthLimit: 10,
      edgeLimit: 200,
      // pino writes its level first and the time right after; the format puts time first and keeps
      // `level` a string. So the level renders nothing, the time is the line's first property (no
      // leading comma), and `level` and `msg` are passed as the first fields (see emit).
      formatters: { level: () => ({}) },
      timestamp: () => `"time":"${new Date().toISOString()}"`,
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      hooks: { streamWrite: scrub },
    },
    destination(opts),
  );
  const rank = ['debug', 'info', 'warn', 'error'] as const;
  const threshold = level === 'silent' ? rank.length : rank.indexOf(level);
  const enabled = Object.fromEntries(rank.map((l, i) => [l, i >= threshold])) as Record<EmitLevel, boolean>;
  return new PinoBackedLogger(instance, enabled, {});
}

/** The configured values no log line may contain: the JWT secret, the API and dashboard keys, Redis's password. */
export function configSecrets(config: Pick<ServerConfig, 'auth' | 'redisUrl' | 'redisClusterNodes'>): string[] {
  const secrets = [config.auth.jwtSecret, config.auth.apiKey, config.auth.dashboardKey].filter((s): s is string => s !== undefined);
  for (const url of [config.redisUrl, ...(config.redisClusterNodes ?? [])]) {
    if (!url) continue;
    try {
      const { password } = new URL(url);
      if (password && !secrets.includes(password)) secrets.push(decodeURIComponent(password), password);
    } catch {
      // loadConfig has validated the URL; a programmatic caller's bad URL fails at connect instead.
    }
  }
  return secrets;
}

const noop = (): void => {};

export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
