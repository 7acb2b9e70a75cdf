import { createHmac, timingSafeEqual } from 'node:crypto';

/*
 * `Presence-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]`:
 * one `v1=` per configured secret, so a receiver holding either the old or the new secret accepts
 * webhooks while a secret is rotated. `t` is the time of the attempt (each retry is signed anew),
 * so receivers can refuse old replays by it. `@presence/node`'s `verifyWebhook` checks the same.
 */

/** The HMAC of one secret over `"<t>.<body>"`, as lower-case hex. */
export function webhookHmac(secret: string, timestamp: number, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

/** The header value for `body` sent at `nowMs`, signed with every secret in order. */
export function signWebhook(secrets: readonly string[], body: string | Buffer, nowMs: number): string {
  const timestamp = Math.floor(nowMs / 1000);
  return [`t=${timestamp}`, ...secrets.map((secret) => `v1=${webhookHmac(secret, timestamp, body)}`)].join(',');
}

export interface ParsedSignature {
  timestamp: number;
  signatures: string[];
}

/** Reads a header value; undefined when it has no `t=` or no `v1=`. Unknown schemes are skipped. */
export function parseSignatureHeader(header: string): ParsedSignature | undefined {
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't' && /^\d+$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && /^[0-9a-f]{64}$/.test(value)) signatures.push(value);
  }
  return timestamp === undefined || signatures.length === 0 ? undefined : { timestamp, signatures };
}

/**
 * Checks a webhook the way a receiver should: some `v1=` matches some secret (constant-time
 * compare) and `t` is within `toleranceSeconds` of `nowMs`. The server's tests use it; receivers
 * use `verifyWebhook` of `@presence/node` or the recipe in docs/webhooks.md.
 */
export function verifyWebhookSignature(
  secrets: readonly string[],
  header: string,
  body: string | Buffer,
  options: { nowMs: number; toleranceSeconds?: number },
): boolean {
  const parsed = parseSignatureHeader(header);
  if (!parsed) return false;
  if (Math.abs(options.nowMs / 1000 - parsed.timestamp) > (options.toleranceSeconds ?? 300)) return false;
  for (const secret of secrets) {
    const expected = Buffer.from(webhookHmac(secret, parsed.timestamp, body), 'hex');
    for (const signature of parsed.signatures) {
      if (timingSafeEqual(expected, Buffer.from(signature, 'hex'))) return true;
    }
  }
  return false;
}
