/**
 * HTTP rate limits: a token bucket per API key, per user (of a user token) and per client IP
 * (requests whose credentials fail, and development mode). Per node: each node counts only the
 * requests it answers. Memory stays bounded: a bucket that has refilled carries no information and
 * is dropped, and past `maxKeys` the least recently used bucket goes.
 */
import type { IncomingMessage } from 'node:http';
import { isIPv6 } from 'node:net';
import type { ServerLimits } from '../config/config.js';
import { PresenceError } from '../errors.js';

/** How often, at most, full buckets are swept out (on the injected clock, when a bucket is used). */
const SWEEP_INTERVAL_MS = 10_000;
/** Buckets per kind before the least recently used one is dropped for a new key. */
const DEFAULT_MAX_KEYS = 100_000;

/** A refused request: the caller may retry after `retryAfterSeconds` (whole seconds, at least 1). */
export class RateLimitedError extends PresenceError {
  constructor(
    readonly retryAfterSeconds: number,
    message: string,
  ) {
    super('RATE_LIMITED', message);
  }
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** Token buckets by key: `ratePerSecond` sustained, `burst` at once. A rate of 0 means no limit. */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    private readonly now: () => number,
    private readonly maxKeys = DEFAULT_MAX_KEYS,
  ) {
    this.lastSweep = now();
  }

  /** Takes a token for `key`: 0 when there was one, else the milliseconds until there is. */
  take(key: string): number {
    if (this.ratePerSecond <= 0) return 0;
    const now = this.now();
    if (now - this.lastSweep >= SWEEP_INTERVAL_MS) this.sweep(now);
    let bucket = this.buckets.get(key);
    if (bucket) {
      // Re-inserted, so the Map's order is least recently used first.
      this.buckets.delete(key);
      const elapsed = now - bucket.updatedAt;
      if (elapsed > 0) {
        bucket.tokens = Math.min(this.burst, bucket.tokens + (elapsed * this.ratePerSecond) / 1000);
        bucket.updatedAt = now;
      }
    } else {
      if (this.buckets.size >= this.maxKeys) this.sweep(now);
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = { tokens: this.burst, updatedAt: now };
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) * 1000) / this.ratePerSecond);
  }

  /** Buckets held now (for tests and leak checks). */
  get size(): number {
    return this.buckets.size;
  }

  /** Drops every bucket that has refilled: a new one would start exactly the same. */
  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) {
      const refilled = bucket.tokens + ((now - bucket.updatedAt) * this.ratePerSecond) / 1000;
      if (refilled >= this.burst) this.buckets.delete(key);
    }
  }
}

/**
 * `key`: the API key; `user`: one user's tokens; `ip`: a client address whose credentials fail;
 * `dev`: a client address in development mode (no credentials exist), at the API key's rates;
 * `dashboard`: the read-only dashboard key, at the API key's rates in a bucket of its own (a
 * dashboard never takes a backend's requests).
 */
export type RateLimitKind = 'key' | 'user' | 'ip' | 'dev' | 'dashboard';

const WHO: Record<RateLimitKind, string> = { key: 'the API key', user: 'this user', ip: 'this client address', dev: 'this client address', dashboard: 'the dashboard key' };

/** The buckets of one node, by kind, sized from the configuration. */
export class HttpRateLimits {
  private readonly kinds: Record<RateLimitKind, TokenBuckets>;

  constructor(limits: Pick<ServerLimits, 'httpKeyRateLimit' | 'httpKeyRateBurst' | 'httpUserRateLimit' | 'httpUserRateBurst' | 'httpIpRateLimit' | 'httpIpRateBurst'>, now: () => number, maxKeys?: number) {
    this.kinds = {
      key: new TokenBuckets(limits.httpKeyRateLimit, limits.httpKeyRateBurst, now, maxKeys),
      user: new TokenBuckets(limits.httpUserRateLimit, limits.httpUserRateBurst, now, maxKeys),
      ip: new TokenBuckets(limits.httpIpRateLimit, limits.httpIpRateBurst, now, maxKeys),
      dev: new TokenBuckets(limits.httpKeyRateLimit, limits.httpKeyRateBurst, now, maxKeys),
      dashboard: new TokenBuckets(limits.httpKeyRateLimit, limits.httpKeyRateBurst, now, maxKeys),
    };
  }

  /** Takes a token, or throws RATE_LIMITED with the time until the next one. */
  take(kind: RateLimitKind, key: string): void {
    const buckets = this.kinds[kind];
    const waitMs = buckets.take(key);
    if (waitMs === 0) return;
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    throw new RateLimitedError(
      seconds,
      `Too many requests from ${WHO[kind]} (${buckets.ratePerSecond}/s, burst ${buckets.burst}); retry after ${seconds} s.`,
    );
  }

  /** Buckets held per kind. */
  sizes(): Record<RateLimitKind, number> {
    return { key: this.kinds.key.size, user: this.kinds.user.size, ip: this.kinds.ip.size, dev: this.kinds.dev.size, dashboard: this.kinds.dashboard.size };
  }
}

/**
 * The client's address as a bucket key. Behind `proxyHops` reverse proxies it is read from
 * `X-Forwarded-For`, that many entries from the right (the entry the outermost trusted proxy
 * wrote); entries further left are the client's own claims and are never trusted. An IPv6 client
 * is keyed by its /64, which one host usually holds whole.
 */
export function clientAddress(req: IncomingMessage, proxyHops: number): string {
  let address = req.socket.remoteAddress ?? '';
  if (proxyHops > 0) {
    const header = req.headers['x-forwarded-for'];
    const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry !== '');
    const chain = [...forwarded, address];
    address = chain[Math.max(0, chain.length - 1 - proxyHops)];
  }
  return addressKey(address);
}

/** IPv4-mapped IPv6 as IPv4; other IPv6 addresses by their first four groups (the /64). */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`;
}

function expandIPv6(address: string): string[] {
  const [head, tail] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail === undefined ? [] : tail ? tail.split(':') : [];
  const missing = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array<string>(missing).fill('0'), ...right].map((group) => group.toLowerCase().replace(/^0+(?=.)/, ''));
}
