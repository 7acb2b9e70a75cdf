import type { JsonValue, Meta } from '@presence/protocol';
import { PresenceError } from '../errors.js';
import { isPlainObject } from '../json.js';

export { isPlainObject };
import type { ServerLimits } from '../config/config.js';

const CHANNEL_NAME = /^[A-Za-z0-9_:.@-]+$/;

/** Keys that would reach `Object.prototype` through a naive merge. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export function assertChannelName(channel: unknown, limits: Pick<ServerLimits, 'maxChannelNameLength'>): string {
  if (typeof channel !== 'string' || channel.length === 0 || channel.length > limits.maxChannelNameLength || !CHANNEL_NAME.test(channel)) {
    throw new PresenceError(
      'INVALID_CHANNEL',
      `channel must be 1–${limits.maxChannelNameLength} characters of [A-Za-z0-9_:.@-]`,
    );
  }
  return channel;
}

export function assertUserId(userId: unknown, limits: Pick<ServerLimits, 'maxUserIdLength'>): string {
  if (typeof userId !== 'string' || userId.length === 0 || userId.length > limits.maxUserIdLength) {
    throw new PresenceError('INVALID_USER_ID', `user ids must be non-empty strings of at most ${limits.maxUserIdLength} characters`);
  }
  return userId;
}


interface MetaShape {
  depth: number;
  keys: number;
}

/** Measures depth and total key count, rejecting values JSON cannot carry faithfully. */
function measure(value: unknown, depth: number, shape: MetaShape, limits: MetaLimits): void {
  if (depth > shape.depth) shape.depth = depth;
  if (shape.depth > limits.maxMetaDepth) throw metaTooLarge(limits);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new PresenceError('INVALID_MESSAGE', 'meta numbers must be finite');
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) measure(item, depth + 1, shape, limits);
    return;
  }
  if (isPlainObject(value)) {
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key)) throw new PresenceError('INVALID_MESSAGE', `meta key "${key}" is not allowed`);
      shape.keys += 1;
      if (shape.keys > limits.maxMetaKeys) throw metaTooLarge(limits);
      measure(value[key], depth + 1, shape, limits);
    }
    return;
  }
  throw new PresenceError('INVALID_MESSAGE', 'meta must be JSON (objects, arrays, strings, numbers, booleans, null)');
}

type MetaLimits = Pick<ServerLimits, 'maxMetaBytes' | 'maxMetaDepth' | 'maxMetaKeys'>;

function metaTooLarge(limits: MetaLimits): PresenceError {
  return new PresenceError(
    'META_TOO_LARGE',
    `meta must serialize to at most ${limits.maxMetaBytes} bytes, with depth ≤ ${limits.maxMetaDepth} and ≤ ${limits.maxMetaKeys} keys`,
  );
}

/** Checks a meta object as a whole (used on the result of a merge, so limits hold for what is stored). */
export function assertMetaWithinLimits(meta: Meta, limits: MetaLimits): void {
  measure(meta, 1, { depth: 0, keys: 0 }, limits);
  if (Buffer.byteLength(JSON.stringify(meta)) > limits.maxMetaBytes) throw metaTooLarge(limits);
}

/** A patch must be a plain object; its values are checked after merging. */
export function assertMetaPatch(meta: unknown): Meta {
  if (!isPlainObject(meta)) throw new PresenceError('INVALID_MESSAGE', 'meta must be an object');
  return meta as Meta;
}

/**
 * Shallow merge where `null` removes a key, as the protocol says. Nested objects are replaced, not
 * merged: a client that sends `{cursor: {x, y}}` means the whole cursor.
 */
export function mergeMeta(current: Meta, patch: Meta, limits: MetaLimits): Meta {
  const next: Meta = Object.create(null);
  for (const key of Object.keys(current)) next[key] = current[key];
  for (const key of Object.keys(patch)) {
    if (FORBIDDEN_KEYS.has(key)) throw new PresenceError('INVALID_MESSAGE', `meta key "${key}" is not allowed`);
    const value = patch[key] as JsonValue;
    if (value === null) delete next[key];
    else next[key] = value;
  }
  assertMetaWithinLimits(next, limits);
  // A null-prototype object is safe to merge into but prints oddly in tests; copy to a plain one.
  return { ...next };
}

export function assertMessage(message: unknown, limits: Pick<ServerLimits, 'maxMessageLength'>): string | null {
  if (message === null) return null;
  if (typeof message !== 'string') throw new PresenceError('INVALID_MESSAGE', 'message must be a string or null');
  // Count code points, not UTF-16 units, so an emoji counts as one character.
  let length = 0;
  for (const _ of message) length += 1;
  if (length > limits.maxMessageLength) {
    throw new PresenceError('MESSAGE_TOO_LONG', `message must be at most ${limits.maxMessageLength} characters`);
  }
  return message;
}

/**
 * An ISO 8601 date and time with a zone, the one shape the protocol accepts for a time:
 * `YYYY-MM-DDTHH:MM`, optional `:SS` and then an optional fraction of 1–9 digits, then `Z` or
 * `±HH:MM`. Upper-case `T` and `Z` only; no week or ordinal dates, no basic (unpunctuated) form.
 */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:Z|([+-])(\d{2}):(\d{2}))$/;

/** UTC offsets in use run from -12:00 to +14:00; ±14:00 bounds both sides. */
const MAX_OFFSET_MINUTES = 14 * 60;

function isLeapYear(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return isLeapYear(year) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * Reads a time in the shape of ISO_TIME. Unlike `Date.parse`, which rolls `02-30` over to March and
 * reads `T24:00` as the next midnight, it accepts only times that exist: a real calendar day
 * (29 February only in leap years), hours 00–23, minutes and seconds 00–59 (no leap second), and an
 * offset of at most ±14:00. Fractions past milliseconds are cut off.
 *
 * @returns the time in epoch milliseconds, or why the text is not one: `format` when the shape is
 *   wrong, `range` when a field is out of range.
 */
export function parseIsoTime(text: string): { at: number } | { problem: 'format' | 'range' } {
  const match = ISO_TIME.exec(text);
  if (match === null) return { problem: 'format' };
  const [, yearText, monthText, dayText, hourText, minuteText, secondText, fraction, sign, offsetHourText, offsetMinuteText] = match;
  const year = Number(yearText);
  const month = Number(monthText);
  const day = Number(dayText);
  const hour = Number(hourText);
  const minute = Number(minuteText);
  const second = secondText === undefined ? 0 : Number(secondText);
  const offsetMinutes = sign === undefined ? 0 : Number(offsetHourText) * 60 + Number(offsetMinuteText);
  if (
    month < 1 ||
    month > 12 ||
    day < 1 ||
    day > daysInMonth(year, month) ||
    hour > 23 ||
    minute > 59 ||
    second > 59 ||
    Number(offsetMinuteText ?? 0) > 59 ||
    offsetMinutes > MAX_OFFSET_MINUTES
  ) {
    return { problem: 'range' };
  }
  const millis = fraction === undefined ? 0 : Number(fraction.slice(0, 3).padEnd(3, '0'));
  // setUTCFullYear, not Date.UTC: Date.UTC reads the years 0–99 as 1900–1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, millis);
  return { at: date.getTime() - (sign === '-' ? -offsetMinutes : offsetMinutes) * 60_000 };
}

/** Parses `expiresAt`: null/undefined clears; a time that does not exist or is not in the future is refused. */
export function parseExpiry(expiresAt: unknown, now: number): number | null {
  if (expiresAt === null || expiresAt === undefined) return null;
  const parsed = typeof expiresAt === 'string' ? parseIsoTime(expiresAt) : ({ problem: 'format' } as const);
  if ('problem' in parsed) {
    throw parsed.problem === 'format'
      ? new PresenceError('INVALID_EXPIRY', 'expiresAt must be an ISO 8601 time with a zone, e.g. 2026-01-01T12:00:00Z')
      : new PresenceError('INVALID_EXPIRY', 'expiresAt is not a valid time');
  }
  if (parsed.at <= now) throw new PresenceError('INVALID_EXPIRY', 'expiresAt must be in the future');
  return parsed.at;
}

export function toIso(ms: number): string;
export function toIso(ms: number | null | undefined): string | null;
export function toIso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString();
}
