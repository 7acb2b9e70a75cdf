/*
 * Webhook signatures: `Presence-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
 * with one `v1=` per secret the server signs with (two while a secret is rotated). Computed with
 * WebCrypto, so it runs wherever `crypto.subtle` does: Node 20+, Deno, Bun, edge functions.
 */

/** The header that carries the signature (HTTP header names are case-insensitive). */
export const WEBHOOK_SIGNATURE_HEADER = 'Presence-Signature';

/** How far `t` may be from now, by default: 5 minutes. */
export const DEFAULT_WEBHOOK_TOLERANCE_SEC = 300;

/**
 * One webhook event. `id` names the change, not the delivery: the same on every retry and from
 * every node, so deduplicate by it (delivery is at least once). `type` is e.g. `user.online`,
 * `channel.member_joined` (docs/webhooks.md lists them); ignore types you do not know.
 */
export interface WebhookEvent<Type extends string = string, Data = Record<string, unknown>> {
  id: string;
  type: Type;
  /** When the change happened (ISO 8601). */
  createdAt: string;
  data: Data;
}

export type WebhookVerificationErrorCode =
  /** No secret was given to check against. */
  | 'NO_SECRETS'
  /** The request has no `Presence-Signature` header. */
  | 'MISSING_SIGNATURE'
  /** The header is not `t=<seconds>,v1=<64 hex digits>[,v1=…]`. */
  | 'MALFORMED_SIGNATURE'
  /** No `v1` matches any of the secrets: another secret, or a changed body or timestamp. */
  | 'SIGNATURE_MISMATCH'
  /** Correctly signed, but `t` is further from now than the tolerance: a replay, or a clock far off. */
  | 'TIMESTAMP_OUT_OF_TOLERANCE'
  /** Correctly signed, but the body is not JSON events. */
  | 'INVALID_PAYLOAD';

/** The request is not a webhook the server sent. Answer 400 (or 401); the server retries other statuses it sees as failures. */
export class WebhookVerificationError extends Error {
  readonly code: WebhookVerificationErrorCode;
  constructor(code: WebhookVerificationErrorCode, message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.code = code;
  }
}

export interface VerifyWebhookOptions {
  /** The time to check `t` against: a `Date` or milliseconds since the epoch. @default now */
  now?: Date | number;
  /** How many seconds `t` may be from `now`, either way. @default 300 */
  toleranceSec?: number;
}

export type RawBody = string | Uint8Array | ArrayBuffer;

/**
 * Checks a webhook request and returns its events. `rawBody` must be the bytes as received: a body
 * parsed and serialized again is not what was signed. `header` is the `Presence-Signature` value
 * (as Node gives it: a string, an array, or undefined). `secrets` are the receiver's secrets, any
 * of which may match (several during a rotation). Rejects with a `WebhookVerificationError`.
 *
 * The body is one event per request; a JSON array of events, or `{"events": [...]}`, is accepted
 * too, so the result is always an array.
 */
export async function verifyWebhook(
  rawBody: RawBody,
  header: string | readonly string[] | null | undefined,
  secrets: string | readonly string[],
  options: VerifyWebhookOptions = {},
): Promise<WebhookEvent[]> {
  const keys = (typeof secrets === 'string' ? [secrets] : [...secrets]).filter((secret) => typeof secret === 'string' && secret !== '');
  if (keys.length === 0) throw new WebhookVerificationError('NO_SECRETS', 'verifyWebhook: give at least one non-empty secret.');
  const value = Array.isArray(header) ? header.join(',') : (header as string | null | undefined);
  if (value === undefined || value === null || value.trim() === '') {
    throw new WebhookVerificationError('MISSING_SIGNATURE', `The request has no ${WEBHOOK_SIGNATURE_HEADER} header.`);
  }
  const parsed = parseSignature(value);
  const body = bytesOf(rawBody);
  const signed = concat(new TextEncoder().encode(`${parsed.timestamp}.`), body);

  let matched = false;
  for (const secret of keys) {
    const expected = await hmacSha256(secret, signed);
    for (const candidate of parsed.signatures) {
      if (constantTimeEqual(expected, candidate)) matched = true;
    }
    if (matched) break;
  }
  if (!matched) throw new WebhookVerificationError('SIGNATURE_MISMATCH', 'No signature matches the secrets: the body, the timestamp or the secret differs.');

  const tolerance = options.toleranceSec ?? DEFAULT_WEBHOOK_TOLERANCE_SEC;
  const nowMs = options.now === undefined ? Date.now() : typeof options.now === 'number' ? options.now : options.now.getTime();
  const skew = Math.abs(nowMs / 1000 - parsed.timestamp);
  if (!(skew <= tolerance)) {
    throw new WebhookVerificationError('TIMESTAMP_OUT_OF_TOLERANCE', `The signature is ${Math.round(skew)} s away from now; at most ${tolerance} s are accepted.`);
  }
  return eventsOf(body);
}

/**
 * The `Presence-Signature` value the server would send for `rawBody`, signed with every secret in
 * order: for testing a receiver, or for a server of your own that sends the same format.
 */
export async function signWebhook(rawBody: RawBody, secrets: string | readonly string[], options: { now?: Date | number } = {}): Promise<string> {
  const nowMs = options.now === undefined ? Date.now() : typeof options.now === 'number' ? options.now : options.now.getTime();
  const timestamp = Math.floor(nowMs / 1000);
  const signed = concat(new TextEncoder().encode(`${timestamp}.`), bytesOf(rawBody));
  const parts = [`t=${timestamp}`];
  for (const secret of typeof secrets === 'string' ? [secrets] : secrets) parts.push(`v1=${toHex(await hmacSha256(secret, signed))}`);
  return parts.join(',');
}

function parseSignature(value: string): { timestamp: number; signatures: Uint8Array[] } {
  let timestamp: number | undefined;
  const signatures: Uint8Array[] = [];
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const key = part.slice(0, eq).trim();
    const item = part.slice(eq + 1).trim();
    if (key === 't') {
      if (timestamp !== undefined || !/^\d{1,12}$/.test(item)) throw malformed();
      timestamp = Number(item);
    } else if (key === 'v1') {
      if (!/^[0-9a-fA-F]{64}$/.test(item)) throw malformed();
      signatures.push(fromHex(item));
    }
    // Other schemes (a future `v2`) are skipped: a receiver keeps working while the server adds one.
  }
  if (timestamp === undefined || signatures.length === 0) throw malformed();
  return { timestamp, signatures };
}

function malformed(): WebhookVerificationError {
  return new WebhookVerificationError('MALFORMED_SIGNATURE', `The ${WEBHOOK_SIGNATURE_HEADER} header must be "t=<unix seconds>,v1=<64 hex digits>[,v1=…]".`);
}

function eventsOf(body: Uint8Array): WebhookEvent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new WebhookVerificationError('INVALID_PAYLOAD', 'The body is not JSON in UTF-8.');
  }
  const list = Array.isArray(parsed)
    ? parsed
    : isObject(parsed) && Array.isArray(parsed.events) && parsed.id === undefined
      ? parsed.events
      : [parsed];
  for (const event of list) {
    if (!isObject(event) || typeof event.id !== 'string' || event.id === '' || typeof event.type !== 'string') {
      throw new WebhookVerificationError('INVALID_PAYLOAD', 'Every event needs a string "id" and "type".');
    }
  }
  return list as WebhookEvent[];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

async function hmacSha256(secret: string, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error('verifyWebhook needs WebCrypto (globalThis.crypto.subtle): Node 20+, Deno, Bun or an edge runtime.');
  const key = await subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle.sign('HMAC', key, data));
}

/** Compares two digests in time independent of where they differ. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i += 1) difference |= a[i] ^ b[i];
  return difference === 0;
}

function bytesOf(body: RawBody): Uint8Array {
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('verifyWebhook: the raw body must be a string, a Uint8Array (a Buffer) or an ArrayBuffer; a parsed object cannot be verified.');
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const byte of bytes) out += byte.toString(16).padStart(2, '0');
  return out;
}
