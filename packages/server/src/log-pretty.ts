/**
 * `LOG_FORMAT=pretty`: one readable line per record for a terminal, built from the JSON line the
 * logger already wrote (so redaction has run). Written here rather than taken from pino-pretty,
 * which brings a dozen packages and a worker thread for what is a development convenience.
 *
 *   12:03:04.123 INFO  presence server listening url=http://127.0.0.1:8080 offlineDelayMs=30000
 *   12:03:05.001 ERROR failed to start err="listen EADDRINUSE: address already in use :::8080"
 *       Error: listen EADDRINUSE: address already in use :::8080
 *           at Server.setupListenHandle …
 */
const COLORS: Record<string, string> = { debug: '\x1b[90m', info: '\x1b[32m', warn: '\x1b[33m', error: '\x1b[31m' };
const RESET = '\x1b[0m';
const DIM = '\x1b[2m';

function plain(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

export function formatPretty(jsonLine: string, color: boolean): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(jsonLine) as Record<string, unknown>;
  } catch {
    return jsonLine.trimEnd();
  }
  const { time, level, msg, ...fields } = record;
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  const name = String(level ?? '').toUpperCase().padEnd(5);
  const parts = [color ? `${DIM}${clock}${RESET}` : clock, color ? `${COLORS[String(level)] ?? ''}${name}${RESET}` : name, String(msg ?? '')];
  const stacks: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    const error = value as { message?: unknown; stack?: unknown } | null;
    if (error !== null && typeof error === 'object' && typeof error.stack === 'string') {
      parts.push(`${key}=${plain(error.message ?? '')}`);
      stacks.push(error.stack.replace(/^/gm, '    '));
    } else {
      parts.push(`${key}=${plain(value)}`);
    }
  }
  return [parts.join(' '), ...stacks].join('\n');
}
