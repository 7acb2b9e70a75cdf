import { open } from 'node:fs/promises';
import type { Meta } from '@presence/protocol';
import type { ManualPresence, UserRecord } from './user-store.js';
import { emptyUserRecord } from './user-store.js';

/*
 * The on-disk format of the data directory's user log: JSON lines, read top to bottom, the last
 * line about a user winning. The file starts with a header line; a snapshot written by compaction
 * is the same format, so there is one reader for both.
 *
 *   {"format":"presence-users","version":1}
 *   {"user":{"userId":"ann","manual":{…},"meta":{…},"visibility":"everyone","contacts":[],"lastSeenAt":…,"lastActiveAt":…}}
 *   {"alive":1767225600000,"online":["ann"],"offline":["bob"]}
 *
 * `alive` lines say the server was running at that time, and which users had a connection open
 * (as changes to the previous `alive` line). After a crash they bound the `lastSeen` of the users
 * who were online at that moment.
 */

export const LOG_FORMAT = 'presence-users';
export const LOG_VERSION = 1;

export type LogEntry =
  | { kind: 'user'; record: UserRecord }
  | { kind: 'alive'; at: number; online: string[]; offline: string[] };

export function headerLine(): string {
  return `${JSON.stringify({ format: LOG_FORMAT, version: LOG_VERSION })}\n`;
}

export function userLine(record: UserRecord): string {
  // Field by field: the record object belongs to the model and must not leak anything else to disk.
  const { userId, manual, meta, visibility, contacts, lastSeenAt, lastActiveAt } = record;
  const { status, state, message, expiresAt } = manual;
  return `${JSON.stringify({ user: { userId, manual: { status, state, message, expiresAt }, meta, visibility, contacts, lastSeenAt, lastActiveAt } })}\n`;
}

export function aliveLine(at: number, online: Iterable<string>, offline: Iterable<string>): string {
  const entry: { alive: number; online?: string[]; offline?: string[] } = { alive: at };
  const on = [...online];
  const off = [...offline];
  if (on.length > 0) entry.online = on;
  if (off.length > 0) entry.offline = off;
  return `${JSON.stringify(entry)}\n`;
}

/** A data file this version cannot read safely: refusing to start beats overwriting it. */
export class UserLogFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserLogFormatError';
  }
}

export interface ReadReport {
  /** Complete lines that were not valid entries (skipped), 1-based line numbers, first 10. */
  invalidLines: number[];
  invalidCount: number;
  /** The file ended in the middle of a line (a write cut short by a crash); that part is ignored. */
  tornTail: boolean;
  bytes: number;
}

const READ_CHUNK = 1024 * 1024;
const NEWLINE = 0x0a;

/**
 * Reads the log at `path` entry by entry. A missing or empty file reads as nothing. Lines that do
 * not parse are skipped and reported rather than fatal: each line stands alone, so one bad line
 * costs at most an older value of one user, while refusing to start would cost everyone.
 */
export async function readUserLog(path: string, onEntry: (entry: LogEntry) => void): Promise<ReadReport> {
  const report: ReadReport = { invalidLines: [], invalidCount: 0, tornTail: false, bytes: 0 };
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return report;
    throw error;
  }
  try {
    let lineNo = 0;
    let carry: Buffer = Buffer.alloc(0);
    const buffer = Buffer.alloc(READ_CHUNK);
    const line = (bytes: Buffer): void => {
      lineNo += 1;
      const text = bytes.toString('utf8');
      if (lineNo === 1) return checkHeader(text, path);
      const entry = parseEntry(text);
      if (entry) {
        onEntry(entry);
        return;
      }
      report.invalidCount += 1;
      if (report.invalidLines.length < 10) report.invalidLines.push(lineNo);
    };
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, READ_CHUNK, null);
      if (bytesRead === 0) break;
      report.bytes += bytesRead;
      let chunk = buffer.subarray(0, bytesRead);
      if (carry.length > 0) chunk = Buffer.concat([carry, chunk]);
      let start = 0;
      for (let nl = chunk.indexOf(NEWLINE, start); nl !== -1; nl = chunk.indexOf(NEWLINE, start)) {
        line(chunk.subarray(start, nl));
        start = nl + 1;
      }
      // Copied: `buffer` is reused by the next read.
      carry = Buffer.from(chunk.subarray(start));
    }
    // Every write ends with a newline, so bytes after the last one are a write cut short.
    if (carry.length > 0) {
      if (lineNo === 0) return { ...report, tornTail: true };
      report.tornTail = true;
    }
    return report;
  } finally {
    await handle.close();
  }
}

function checkHeader(text: string, path: string): void {
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    header = undefined;
  }
  const h = header as { format?: unknown; version?: unknown } | undefined;
  if (!h || typeof h !== 'object' || h.format !== LOG_FORMAT) {
    throw new UserLogFormatError(`${path} is not a Presence user log (no "${LOG_FORMAT}" header); move it away or point PRESENCE_DATA_DIR elsewhere`);
  }
  if (h.version !== LOG_VERSION) {
    throw new UserLogFormatError(`${path} has format version ${String(h.version)}; this server reads version ${LOG_VERSION}`);
  }
}

function parseEntry(text: string): LogEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(value)) return undefined;
  if ('user' in value) {
    const record = decodeRecord(value.user);
    return record ? { kind: 'user', record } : undefined;
  }
  if ('alive' in value && typeof value.alive === 'number') {
    const online = value.online ?? [];
    const offline = value.offline ?? [];
    if (!isStringArray(online) || !isStringArray(offline)) return undefined;
    return { kind: 'alive', at: value.alive, online, offline };
  }
  return undefined;
}

/** A stored record, with fields it lacks taken from an empty record. */
function decodeRecord(value: unknown): UserRecord | undefined {
  if (!isObject(value) || typeof value.userId !== 'string' || value.userId === '') return undefined;
  const record = emptyUserRecord(value.userId);
  if (isObject(value.manual)) {
    const m = value.manual;
    const manual: ManualPresence = {
      status: m.status === 'away' || m.status === 'busy' || m.status === 'invisible' ? m.status : null,
      state: typeof m.state === 'string' ? m.state : null,
      message: typeof m.message === 'string' ? m.message : null,
      expiresAt: typeof m.expiresAt === 'number' ? m.expiresAt : null,
    };
    record.manual = manual;
  }
  // Parsed JSON, so every value in it is JSON. An empty one keeps the shared empty meta.
  if (isObject(value.meta) && Object.keys(value.meta).length > 0) record.meta = value.meta as Meta;
  if (value.visibility === 'everyone' || value.visibility === 'contacts' || value.visibility === 'nobody') record.visibility = value.visibility;
  if (isStringArray(value.contacts)) record.contacts = value.contacts;
  if (typeof value.lastSeenAt === 'number') record.lastSeenAt = value.lastSeenAt;
  if (typeof value.lastActiveAt === 'number') record.lastActiveAt = value.lastActiveAt;
  return record;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}
