import { createHash } from 'node:crypto';

/** A stable, short name for a webhook URL in the outbox file, so no query-string token is written. */
export function targetId(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 16);
}

/** The URL as logs, metrics and the dashboard show it: without its query string (which may hold a token). */
export function displayUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
}
