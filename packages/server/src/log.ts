import type { LogLevel } from './config/config.js';

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (the call's own fields win on a clash). */
  child(fields: LogFields): Logger;
}

type EmitLevel = Exclude<LogLevel, 'silent'>;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: Infinity };
const RESERVED = new Set(['time', 'level', 'msg']);

function serializeError(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message, stack: err.stack };
  // Node system errors carry the useful part (ECONNREFUSED, EADDRINUSE...) outside the message.
  const extra = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; cause?: unknown };
  if (extra.code !== undefined) out.code = extra.code;
  if (extra.syscall !== undefined) out.syscall = extra.syscall;
  if (extra.cause !== undefined) out.cause = extra.cause;
  return out;
}

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return serializeError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** JSON.stringify that never throws: a log call must not be what brings the server down. */
function stringify(record: Record<string, unknown>): string {
  try {
    return JSON.stringify(record, replacer);
  } catch {
    const ancestors: unknown[] = [];
    try {
      return JSON.stringify(record, function (this: unknown, key: string, value: unknown) {
        const v = replacer(key, value);
        if (typeof v !== 'object' || v === null) return v;
        // `this` is the object holding `key`; trim the stack to it to know the current path.
        while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
        if (ancestors.includes(v)) return '[Circular]';
        ancestors.push(v);
        return v;
      });
    } catch (err) {
      return JSON.stringify({
        time: record.time,
        level: record.level,
        msg: record.msg,
        logError: `fields could not be serialized: ${(err as Error).message}`,
      });
    }
  }
}

function defaultWrite(line: string): void {
  process.stdout.write(line + '\n');
}

class JsonLogger implements Logger {
  constructor(
    private readonly threshold: number,
    private readonly write: (line: string) => void,
    private readonly bound: LogFields,
  ) {}

  debug(msg: string, fields?: LogFields): void {
    this.emit('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.emit('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.emit('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.emit('error', msg, fields);
  }

  child(fields: LogFields): Logger {
    return new JsonLogger(this.threshold, this.write, { ...this.bound, ...fields });
  }

  private emit(level: EmitLevel, msg: string, fields?: LogFields): void {
    if (RANK[level] < this.threshold) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level, msg };
    for (const source of [this.bound, fields]) {
      if (!source) continue;
      for (const [key, value] of Object.entries(source)) {
        // Keep the envelope trustworthy for log pipelines; a clashing field is kept under another name.
        record[RESERVED.has(key) ? `field.${key}` : key] = value;
      }
    }
    try {
      this.write(stringify(record));
    } catch {
      // Nowhere left to report a failing log sink; dropping the line beats crashing.
    }
  }
}

/** A logger writing one JSON object per line (`{"time","level","msg",...fields}`), stdout by default. */
export function createLogger(level: LogLevel, write: (line: string) => void = defaultWrite): Logger {
  return new JsonLogger(RANK[level], write, {});
}

const noop = (): void => {};

export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
