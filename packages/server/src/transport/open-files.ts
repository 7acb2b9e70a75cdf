import { readFileSync } from 'node:fs';

/**
 * How many connections this process can really hold. Every socket is a file descriptor; past the
 * open-files limit the kernel still completes TCP handshakes, but accepting them fails (EMFILE)
 * and the clients see their connection dropped with no answer at all, while the process's own
 * files (the data directory's log, Redis reconnects, static files) start failing too. Capping
 * `maxConnections` below the limit turns that into a clear, retryable refusal
 * (`TOO_MANY_CONNECTIONS`, close 4029) and keeps descriptors for everything else.
 */

/**
 * The soft open-files limit of this process (Node raises it to the hard limit as it starts), or
 * undefined where it cannot be read (not Linux) or is unlimited.
 */
export function readOpenFileLimit(path = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  return parseOpenFileLimit(text);
}

/** The soft limit from the text of `/proc/<pid>/limits`. */
export function parseOpenFileLimit(limits: string): number | undefined {
  const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  const value = soft === undefined ? NaN : Number(soft);
  return Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/**
 * Descriptors kept for what is not a WebSocket: the listener, HTTP API requests, Redis, the data
 * directory, libuv's own. 5 % of the limit, at least 64 and at most 1,024.
 */
export function reservedFiles(fileLimit: number): number {
  return Math.min(1024, Math.max(64, Math.round(fileLimit * 0.05)));
}

/** `configured`, or less when the open-files limit would not hold that many sockets. */
export function connectionCeiling(configured: number, fileLimit: number | undefined): number {
  if (fileLimit === undefined) return configured;
  return Math.max(1, Math.min(configured, fileLimit - reservedFiles(fileLimit)));
}
