import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/*
 * Pusher's HMAC-SHA256 signatures, as its server libraries make them: the `auth` of a private or
 * presence subscription, and the signed query of every HTTP API request.
 */

export function hmacHex(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text).digest('hex');
}

/** `key:hex(hmac(secret, "socket_id:channel[:channel_data]"))`, what an app's auth endpoint returns. */
export function subscriptionAuth(key: string, secret: string, socketId: string, channel: string, channelData?: string): string {
  const text = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${key}:${hmacHex(secret, text)}`;
}

/** Compares two strings in constant time (for their length). */
export function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** The hex MD5 of a request body (`body_md5`). */
export function bodyMd5(body: Buffer | string): string {
  return createHash('md5').update(body).digest('hex');
}

/**
 * The text an HTTP API request signs: `METHOD\npath\nk1=v1&k2=v2…`, the query parameters but
 * `auth_signature`, keys lower-cased and sorted, values as they are (not URL-encoded).
 */
export function requestSigningText(method: string, path: string, params: URLSearchParams): string {
  const pairs: [string, string][] = [];
  for (const [key, value] of params) {
    const lower = key.toLowerCase();
    if (lower !== 'auth_signature') pairs.push([lower, value]);
  }
  pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${method.toUpperCase()}\n${path}\n${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`;
}
