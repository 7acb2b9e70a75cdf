import { closeSync, fdatasync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { WebhookEvent } from '@presence/protocol';
import type { Logger } from '../log.js';
import type { DeadLetter, Settlement } from './delivery-queue.js';
import type { OutgoingEvent } from './format.js';

/*
 * The webhook outbox of a durable single node (PRESENCE_DATA_DIR): every event is appended to
 * `webhooks.jsonl` with a synchronous write in the same step as the change that caused it, and
 * every delivery, drop or dead letter is appended when it happens. After `kill -9` the next start
 * reads the file back and sends what no URL had acknowledged, with the same ids. A write reaches
 * the kernel before the call returns, so a crashed process loses nothing; the file is fdatasync'ed
 * every second, so an operating-system crash loses at most the last second.
 *
 *   {"format":"presence-webhooks","version":1}
 *   {"shown":{"users":["ann"],"channels":{"room":["ann"]}}}     what receivers were last told
 *   {"event":{…},"at":1767225600000,"to":["5f1c…","9ab0…"]}    queued for these URLs
 *   {"event":{…},"at":…,"to":[…],"carried":true}                 still owed at the last compaction
 *   {"done":"<event id>","to":"5f1c…"}                         delivered, or dropped
 *   {"dead":{"event":{…},"reason":"http 400",…},"to":"9ab0…"}  given up on
 *
 * URLs appear as `targetId(url)` (a hash), so a token in a query string is never written here.
 * `shown` lets the next start tell receivers that the users and channels this node showed are gone
 * (it reaps its previous run, as a cluster reaps a dead node).
 */

export const OUTBOX_FILE = 'webhooks.jsonl';
const FORMAT = 'presence-webhooks';
const VERSION = 1;
/** Compact when the file is this many times larger than what it must keep... */
const COMPACTION_RATIO = 4;
/** ...and larger than this. */
const COMPACTION_MIN_BYTES = 1024 * 1024;
const SYNC_INTERVAL_MS = 1000;

/**
 * What receivers were last told is on: users in sight, and the members of each channel (a channel
 * occupied without members, such as a Pusher public channel, has an empty set).
 */
export class ShownState {
  readonly users = new Set<string>();
  readonly channels = new Map<string, Set<string>>();

  /** Presence's own webhook events (the default format). */
  apply(event: WebhookEvent): void {
    switch (event.type) {
      case 'user.online':
      case 'user.status':
      case 'user.meta':
        this.users.add(event.data.userId);
        break;
      case 'user.offline':
        this.users.delete(event.data.userId);
        break;
      case 'channel.member_joined':
        this.memberShown(event.data.channel, event.data.userId);
        break;
      case 'channel.member_left':
        this.memberGone(event.data.channel, event.data.userId);
        break;
      case 'channel.vacated':
        this.channels.delete(event.data.channel);
        break;
      default:
        break;
    }
  }

  memberShown(channel: string, userId: string | undefined): void {
    let members = this.channels.get(channel);
    if (!members) this.channels.set(channel, (members = new Set()));
    if (userId !== undefined) members.add(userId);
  }

  memberGone(channel: string, userId: string): void {
    const members = this.channels.get(channel);
    members?.delete(userId);
    if (members?.size === 0) this.channels.delete(channel);
  }

  line(): string {
    const channels: Record<string, string[]> = {};
    for (const [name, members] of this.channels) channels[name] = [...members];
    return `${JSON.stringify({ shown: { users: [...this.users], channels } })}\n`;
  }
}

interface PendingEvent {
  event: OutgoingEvent;
  queuedAt: number;
  /** Target ids that have not settled it yet. */
  targets: Set<string>;
  bytes: number;
}

export interface OutboxRecovery {
  /** Events some URL still owes, in the order they were queued. */
  pending: { event: OutgoingEvent; queuedAt: number; targets: string[] }[];
  deadLetters: Map<string, DeadLetter[]>;
  shown: ShownState;
  invalidLines: number;
  tornTail: boolean;
}

export class WebhookOutbox {
  private fd: number;
  private size = 0;
  private readonly pending = new Map<string, PendingEvent>();
  private readonly deadLines = new Map<string, string[]>();
  private deadBytes = 0;
  /** Bytes of the lines of `pending`, kept as they change (compaction compares the file with it). */
  private pendingBytes = 0;
  /** `done` lines not written yet: losing one costs a duplicate delivery, never a lost event. */
  private doneText = '';
  private doneScheduled = false;
  private readonly shown: ShownState;
  private dirty = false;
  private failing = false;
  private closed = false;
  private readonly syncTimer: NodeJS.Timeout;

  private constructor(
    readonly path: string,
    private readonly log: Logger,
    private readonly keepDeadLetters: number,
    recovered: OutboxRecovery,
    pending: Map<string, PendingEvent>,
    private readonly track: (event: OutgoingEvent, shown: ShownState) => void,
  ) {
    this.shown = recovered.shown;
    for (const [id, entry] of pending) this.pending.set(id, entry);
    for (const [target, letters] of recovered.deadLetters) {
      for (const letter of letters) this.keepDead(target, deadLine(target, letter));
    }
    this.fd = this.rewrite();
    this.syncTimer = setInterval(() => this.syncSoon(), SYNC_INTERVAL_MS);
    this.syncTimer.unref();
  }

  /**
   * Reads `webhooks.jsonl` of `dir` (the data directory, locked by the user store already) and
   * rewrites it with only what is still owed. Events for URLs no longer configured are forgotten.
   */
  static open(options: {
    dir: string;
    log: Logger;
    targets: readonly string[];
    keepDeadLetters?: number;
    /** @default OUTBOX_FILE */
    file?: string;
    /** What an event tells receivers. @default Presence's own events (ShownState.apply) */
    track?: (event: OutgoingEvent, shown: ShownState) => void;
  }): { outbox: WebhookOutbox; recovery: OutboxRecovery } {
    const path = join(options.dir, options.file ?? OUTBOX_FILE);
    const track = options.track ?? ((event: OutgoingEvent, shown: ShownState) => shown.apply(event as WebhookEvent));
    const keep = options.keepDeadLetters ?? 1000;
    const known = new Set(options.targets);
    const pending = new Map<string, PendingEvent>();
    const deadLetters = new Map<string, DeadLetter[]>();
    const shown = new ShownState();
    let invalidLines = 0;
    let tornTail = false;
    let forgotten = 0;
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const lines = text.split('\n');
    // Every write ends with a newline: anything after the last one is a write cut short.
    if (lines[lines.length - 1] !== '') tornTail = true;
    lines.pop();
    lines.forEach((line, index) => {
      let value: Record<string, unknown>;
      try {
        value = JSON.parse(line) as Record<string, unknown>;
      } catch {
        invalidLines += 1;
        return;
      }
      if (index === 0) {
        if (value.format !== FORMAT || value.version !== VERSION) {
          throw new Error(`${path} is not a version ${VERSION} webhook outbox; move it away or point PRESENCE_DATA_DIR elsewhere`);
        }
        return;
      }
      if (isObject(value.event) && typeof value.at === 'number' && Array.isArray(value.to)) {
        const event = value.event as unknown as OutgoingEvent;
        // Events carried over by a compaction are in the `shown` line written with them already.
        if (value.carried !== true) track(event, shown);
        const targets = new Set((value.to as unknown[]).filter((t): t is string => typeof t === 'string'));
        pending.set(event.id, { event, queuedAt: value.at, targets, bytes: 0 });
      } else if (typeof value.done === 'string' && typeof value.to === 'string') {
        settle(pending, value.done, value.to);
      } else if (isObject(value.dead) && typeof value.to === 'string') {
        const letter = value.dead as unknown as DeadLetter;
        settle(pending, letter.event.id, value.to);
        const list = deadLetters.get(value.to) ?? [];
        list.push(letter);
        if (list.length > keep) list.shift();
        deadLetters.set(value.to, list);
      } else if (isObject(value.shown)) {
        const snapshot = value.shown as { users?: unknown; channels?: unknown };
        shown.users.clear();
        shown.channels.clear();
        if (Array.isArray(snapshot.users)) for (const user of snapshot.users) if (typeof user === 'string') shown.users.add(user);
        if (isObject(snapshot.channels)) {
          for (const [name, members] of Object.entries(snapshot.channels)) {
            if (Array.isArray(members)) shown.channels.set(name, new Set(members.filter((m): m is string => typeof m === 'string')));
          }
        }
      } else {
        invalidLines += 1;
      }
    });
    for (const [id, entry] of pending) {
      for (const target of entry.targets) {
        if (!known.has(target)) {
          entry.targets.delete(target);
          forgotten += 1;
        }
      }
      if (entry.targets.size === 0) pending.delete(id);
    }
    for (const target of deadLetters.keys()) if (!known.has(target)) deadLetters.delete(target);
    const recovery: OutboxRecovery = {
      pending: [...pending.values()].map((entry) => ({ event: entry.event, queuedAt: entry.queuedAt, targets: [...entry.targets] })),
      deadLetters,
      shown,
      invalidLines,
      tornTail,
    };
    if (invalidLines > 0 || tornTail) {
      options.log.warn('webhook outbox had damaged lines; they were skipped', { file: path, invalidLines, tornTail });
    }
    if (forgotten > 0) {
      options.log.warn('webhook outbox held events for URLs no longer configured; they are forgotten', { file: path, events: forgotten });
    }
    const outbox = new WebhookOutbox(path, options.log, keep, recovery, pending, track);
    return { outbox, recovery };
  }

  /**
   * Appends events queued for `targets`, synchronously: on return they survive a crash of this
   * process. `body` is the event as serialized for sending, reused for the line.
   */
  append(entries: readonly { event: OutgoingEvent; body: string; queuedAt: number }[], targets: readonly string[]): void {
    if (this.closed || entries.length === 0) return;
    // Settlements queued before these events go first, so the file keeps the order of what happened.
    let text = this.takeDone();
    const to = JSON.stringify(targets);
    for (const { event, body, queuedAt } of entries) {
      const line = `{"event":${body},"at":${queuedAt},"to":${to}}\n`;
      this.track(event, this.shown);
      const bytes = Buffer.byteLength(line);
      this.forget(event.id);
      this.pending.set(event.id, { event, queuedAt, targets: new Set(targets), bytes });
      this.pendingBytes += bytes;
      text += line;
    }
    this.write(text);
  }

  /**
   * Records that `target` is done with an event (delivered, dropped or dead-lettered). Written
   * within the turn, not synchronously: a crash before it costs the event a second delivery.
   */
  settled(target: string, eventId: string, how: Settlement, letter?: DeadLetter): void {
    if (this.closed) return;
    const entry = this.pending.get(eventId);
    if (entry) {
      entry.targets.delete(target);
      if (entry.targets.size === 0) this.forget(eventId);
    }
    if (how === 'dead' && letter) {
      const line = deadLine(target, letter);
      this.keepDead(target, line);
      this.doneText += line;
    } else {
      this.doneText += `{"done":${JSON.stringify(eventId)},"to":${JSON.stringify(target)}}\n`;
    }
    if (!this.doneScheduled) {
      this.doneScheduled = true;
      setImmediate(() => {
        this.doneScheduled = false;
        if (this.closed || this.doneText === '') return;
        this.write(this.takeDone());
        this.maybeCompact();
      });
    }
  }

  private takeDone(): string {
    const text = this.doneText;
    this.doneText = '';
    return text;
  }

  private forget(eventId: string): void {
    const entry = this.pending.get(eventId);
    if (!entry) return;
    this.pendingBytes -= entry.bytes;
    this.pending.delete(eventId);
  }

  /** Writes what is pending to the disk and closes the file. */
  close(): void {
    if (this.closed) return;
    if (this.doneText !== '') this.write(this.takeDone());
    this.closed = true;
    clearInterval(this.syncTimer);
    try {
      fdatasyncSync(this.fd);
    } catch {
      // Closing anyway: the writes themselves already reached the kernel.
    }
    closeSync(this.fd);
  }

  /** Sizes, for tests. */
  inspect(): { pending: number; bytes: number; liveBytes: number; shownUsers: number; shownChannels: number } {
    return { pending: this.pending.size, bytes: this.size, liveBytes: this.liveBytes(), shownUsers: this.shown.users.size, shownChannels: this.shown.channels.size };
  }

  private keepDead(target: string, line: string): void {
    const list = this.deadLines.get(target) ?? [];
    list.push(line);
    this.deadBytes += Buffer.byteLength(line);
    if (list.length > this.keepDeadLetters) this.deadBytes -= Buffer.byteLength(list.shift()!);
    this.deadLines.set(target, list);
  }

  private liveBytes(): number {
    return this.deadBytes + this.pendingBytes;
  }

  private write(text: string): void {
    const data = Buffer.from(text, 'utf8');
    try {
      let done = 0;
      while (done < data.length) done += writeSync(this.fd, data, done, data.length - done, this.size + done);
      this.size += data.length;
      this.dirty = true;
      if (this.failing) {
        this.failing = false;
        this.log.info('the webhook outbox is written again', { file: this.path });
      }
    } catch (error) {
      // What part of the write reached the file goes, so the next line starts clean.
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // The next successful write overwrites from `size` anyway (positioned writes).
      }
      if (!this.failing) {
        this.failing = true;
        this.log.error('cannot write the webhook outbox; webhooks are queued in memory only until it works again (a crash now loses them)', { file: this.path, err: error });
      }
    }
  }

  private syncSoon(): void {
    if (!this.dirty || this.closed) return;
    this.dirty = false;
    // A compaction may close this descriptor meanwhile; the rename is fsync'ed on its own.
    fdatasync(this.fd, () => {});
  }

  private maybeCompact(): void {
    if (this.size < COMPACTION_MIN_BYTES || this.size < COMPACTION_RATIO * this.liveBytes()) return;
    try {
      const fd = this.rewrite();
      closeSync(this.fd);
      this.fd = fd;
    } catch (error) {
      this.log.warn('webhook outbox compaction failed; the file keeps growing until it succeeds', { file: this.path, err: error });
    }
  }

  /**
   * Writes what must be kept to a new file and swaps it in (write, fsync, rename, fsync the
   * directory), so a crash at any point leaves one whole outbox. Synchronous: the kept part is
   * bounded by the backlogs, and no append may slip in between.
   */
  private rewrite(): number {
    const temporary = `${this.path}.compacting`;
    let text = `${JSON.stringify({ format: FORMAT, version: VERSION })}\n${this.shown.line()}`;
    for (const lines of this.deadLines.values()) text += lines.join('');
    this.pendingBytes = 0;
    for (const entry of this.pending.values()) {
      const line = `${JSON.stringify({ event: entry.event, at: entry.queuedAt, to: [...entry.targets], carried: true })}\n`;
      entry.bytes = Buffer.byteLength(line);
      this.pendingBytes += entry.bytes;
      text += line;
    }
    const fd = openSync(temporary, 'w');
    try {
      const data = Buffer.from(text, 'utf8');
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, data.length - done, done);
      fsyncSync(fd);
      renameSync(temporary, this.path);
      syncDirectory(dirname(this.path));
      this.size = fstatSync(fd).size;
    } catch (error) {
      closeSync(fd);
      try {
        unlinkSync(temporary);
      } catch {
        // Gone already.
      }
      throw error;
    }
    this.dirty = false;
    return fd;
  }
}

function settle(pending: Map<string, PendingEvent>, id: string, target: string): void {
  const entry = pending.get(id);
  if (!entry) return;
  entry.targets.delete(target);
  if (entry.targets.size === 0) pending.delete(id);
}

function deadLine(target: string, letter: DeadLetter): string {
  return `${JSON.stringify({ dead: letter, to: target })}\n`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Platforms that cannot open a directory: the rename has to do.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
