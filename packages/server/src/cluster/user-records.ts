import type { Logger } from '../log.js';
import { emptyUserRecord, type SaveKind, type UserRecord, type UserStore } from '../store/user-store.js';
import type { WebhookWrite } from '../webhooks/cluster-queues.js';
import type { SharedService, StoredUserFields } from './shared-service.js';

/** A record as the service published or read it: its fields, the shard sequence, the writer. */
export interface RecordWrite {
  node: string;
  userId: string;
  version: number;
  fields: StoredUserFields;
}

export interface UserRecordsOptions {
  service: SharedService;
  /** This process in the cluster (its own writes come back on the bus under it). */
  nodeId: string;
  log: Logger;
  /** Hands a record, as the service now holds it, to the model (with the change's name when known). */
  apply: (record: UserRecord, cause?: string) => void | Promise<void>;
  /**
   * Webhooks (docs/webhooks.md#clusters): the events of the change that made an announced write
   * (emitted right after it is saved, in the same step), written in the same script; `written`
   * runs after it.
   */
  webhooks?: {
    readonly active: boolean;
    take(userId: string): WebhookWrite | undefined;
    written(userId: string, write: WebhookWrite): Promise<void>;
    /** The write failed: its events wait for the next flush. */
    failed(userId: string, write: WebhookWrite): void;
  };
}

interface CachedUser {
  /** Null: the service has no record of this user. */
  record: UserRecord | null;
  /** Version of the stored record this entry reflects (0: none yet). */
  version: number;
  /** What the service holds, field by field, as far as this node knows: writes send the difference. */
  fields: StoredUserFields;
}

/**
 * The user records of one node of the cluster, as a UserStore: kept in memory, written field by
 * field (announced writes at once, activity timestamps quietly in batches), other nodes' writes
 * applied in the order the service ran them, and, after the service comes back, read back and
 * written back field by field so changes made on several nodes meanwhile all survive.
 */
export class UserRecords {
  private readonly cache = new Map<string, CachedUser>();
  /** Announced writes of this node not yet seen back on the bus, per user. */
  private readonly pendingWrites = new Map<string, number>();
  /** Activity timestamps waiting for the next quiet write. */
  private readonly quietFields = new Map<string, StoredUserFields>();
  /** Fields of users this node changed while the service was away: written on reconnect. */
  private readonly unsynced = new Map<string, Set<string>>();
  /** Users whose record could not be read: the stored one wins on reconnect. */
  private readonly unread = new Set<string>();

  constructor(private readonly options: UserRecordsOptions) {}


  get(userId: string): UserRecord | undefined {
    return this.cache.get(userId)?.record ?? undefined;
  }

  /** Whether a record (or the knowledge that there is none) of this user is held. */
  has(userId: string): boolean {
    return this.cache.has(userId);
  }

  /**
   * A record read from the service (the user is newly followed, or messages were missed):
   * remembered unless this node holds the same version, or its own copy is newer (changed here and
   * not written back yet). A version lower than the one held means the service lost its data and
   * counts again from zero: what it holds now is the reference. `fields` null: the service has no
   * record of the user. Returns whether the record read is now the one held.
   */
  adopt(userId: string, version: number, fields: StoredUserFields | null): boolean {
    const cached = this.cache.get(userId);
    if (!cached) {
      this.cache.set(userId, fields ? { record: decodeRecord(userId, fields), version, fields } : { record: null, version, fields: {} });
      return fields !== null;
    }
    if (version === cached.version || !fields || this.busy(userId)) return false;
    this.cache.set(userId, { record: decodeRecord(userId, fields), version, fields });
    return true;
  }

  /** The record could not be read (the service is away): read again after reconnecting. */
  markUnread(userId: string): void {
    this.unread.add(userId);
  }

  /** Writes of this user are pending or waiting for the service: the user must stay followed for their echo. */
  busy(userId: string): boolean {
    return this.pendingWrites.has(userId) || this.quietFields.has(userId) || this.unsynced.has(userId);
  }

  /** The user is no longer followed: their record goes, unless writes of it are still pending. */
  forget(userId: string): void {
    if (!this.pendingWrites.has(userId) && !this.quietFields.has(userId) && !this.unsynced.has(userId)) this.cache.delete(userId);
  }

  save(record: UserRecord, kind: SaveKind = 'presence', cause?: string): void {
    const id = record.userId;
    let entry = this.cache.get(id);
    if (!entry) this.cache.set(id, (entry = { record, version: 0, fields: {} }));
    entry.record = record;
    const encoded = encodeRecord(record);
    let changed: StoredUserFields | undefined;
    /** Fields this node changed, as opposed to ones it never saw stored and holds at their defaults. */
    const own: string[] = [];
    for (const [field, value] of Object.entries(encoded)) {
      if (entry.fields[field] === value) continue;
      // A field this node has never seen stored (a user new to it) differs from nothing, not from
      // the stored value. Written quietly it would overwrite a status another node set meanwhile,
      // with nothing announced: a quiet write carries only the activity timestamps of such a record.
      const seen = field in entry.fields;
      if (kind === 'activity' && !ACTIVITY_FIELDS.has(field) && !seen) continue;
      if (seen || value !== EMPTY_FIELDS[field]) own.push(field);
      (changed ??= {})[field] = value;
      entry.fields[field] = value;
    }
    if (!changed) return;
    if (kind === 'activity') {
      this.quietFields.set(id, { ...this.quietFields.get(id), ...changed });
      return;
    }
    const quiet = this.quietFields.get(id);
    // Pending activity timestamps go with an announced write (they may be older than its fields).
    const withQuiet = [...own, ...Object.keys(quiet ?? {})];
    if (!this.options.service.isConnected()) {
      if (kind === 'expiry') return;
      this.quietFields.delete(id);
      this.markUnsynced(id, withQuiet);
      return;
    }
    if (quiet) {
      this.quietFields.delete(id);
      changed = { ...quiet, ...changed };
    }
    // The change's name travels with the write, so every node derives the same event ids from it.
    if (cause !== undefined) changed[CAUSE_FIELD] = cause;
    this.pendingWrites.set(id, (this.pendingWrites.get(id) ?? 0) + 1);
    const write = (webhooks?: WebhookWrite) =>
      this.options.service.writeUser(this.options.nodeId, id, changed, true, webhooks).then(
        () => (webhooks ? this.options.webhooks!.written(id, webhooks).catch(() => undefined) : undefined),
        () => {
          if (webhooks) this.options.webhooks!.failed(id, webhooks);
          if (kind === 'expiry') {
            if (quiet) this.quietFields.set(id, { ...quiet, ...this.quietFields.get(id) });
          } else {
            this.markUnsynced(id, withQuiet);
          }
          this.writeSeen(id);
        },
      );
    const { webhooks } = this.options;
    // With webhooks, at the end of this step: its events are emitted right after the save.
    if (webhooks?.active) queueMicrotask(() => void write(webhooks.take(id)));
    else void write();
  }

  /**
   * A change the service did not get is written when it is back, field by field: two nodes that
   * changed different fields of one user meanwhile (a status here, a lastSeen there) both win.
   * An expiry is not kept (see SaveKind): every node holding the record clears it by itself, and
   * one cleared here while away must not overwrite a status the user set meanwhile elsewhere.
   */
  private markUnsynced(userId: string, fields: Iterable<string>): void {
    let kept = this.unsynced.get(userId);
    if (!kept) this.unsynced.set(userId, (kept = new Set()));
    for (const field of fields) kept.add(field);
  }

  async flushActivity(): Promise<void> {
    if (!this.options.service.isConnected() || this.quietFields.size === 0) return;
    const batch = [...this.quietFields];
    this.quietFields.clear();
    await Promise.all(
      batch.map(([id, fields]) =>
        this.options.service.writeUser(this.options.nodeId, id, fields, false).catch(() => {
          this.quietFields.set(id, { ...fields, ...this.quietFields.get(id) });
        }),
      ),
    );
  }

  /** The echo of this node's own write arrived after a read that already held it. */
  echoSkipped(userId: string): void {
    if (this.pendingWrites.has(userId)) this.writeSeen(userId);
  }

  private writeSeen(userId: string): number {
    const left = (this.pendingWrites.get(userId) ?? 1) - 1;
    if (left > 0) this.pendingWrites.set(userId, left);
    else this.pendingWrites.delete(userId);
    return left;
  }

  /**
   * A write, from any node, as the service ran it. While this node's own writes of the user are
   * still in flight, others' records are only remembered: the echo of our last write carries
   * both (writes are per field), and applying an older whole record meanwhile would flap.
   */
  async receive(message: RecordWrite): Promise<void> {
    const own = message.node === this.options.nodeId;
    const writing = own ? this.writeSeen(message.userId) : this.pendingWrites.get(message.userId) ?? 0;
    // Changed here while the service was away and not written back yet: this node's copy is newer
    // (a node that came back first published its own copy before this one wrote).
    const inFlight = writing + (this.unsynced.has(message.userId) ? 1 : 0);
    const entry = this.cache.get(message.userId);
    if (entry && message.version <= entry.version) return;
    const record = decodeRecord(message.userId, message.fields);
    const fields = { ...message.fields, ...this.quietFields.get(message.userId) };
    if (entry) {
      entry.version = message.version;
      entry.fields = fields;
      if (inFlight > 0) return;
      entry.record = record;
    } else {
      this.cache.set(message.userId, { record, version: message.version, fields });
      if (inFlight > 0) return;
    }
    await this.options.apply(record, message.fields[CAUSE_FIELD]);
  }

  /**
   * After the service came back: records it lost are written again from memory, the fields this
   * node changed while away are written over what it holds, and every user this node knows of is
   * read back and applied — also those it knows to have no record, or could not read. Another
   * node that came back first may have written one already, and published it while this node was
   * not yet listening: that announcement is lost here, and nothing else would ever bring it.
   */
  async resync(): Promise<void> {
    const held = [...this.cache].filter(([, entry]) => entry.record !== null);
    // Versions restart when the service lost its data; what is read back now is the reference.
    for (const entry of this.cache.values()) entry.version = 0;
    const unread = new Set(this.unread);
    this.unread.clear();
    try {
      await Promise.all(
        held.map(async ([id, entry]) => {
          const fields = encodeRecord(entry.record!);
          // Memory fills in only what the service lost: a record another node wrote first wins.
          await this.options.service.restoreUser(id, fields);
          // Changed here while away, so newer than the stored fields. Unless this node never read
          // the stored record: then it cannot tell its changes from its defaults, and the stored
          // record wins. Kept until written: records others publish meanwhile do not replace it.
          const changed = this.unsynced.get(id);
          if (!changed) return;
          const write: StoredUserFields = {};
          for (const field of changed) if (field in fields) write[field] = fields[field];
          if (!unread.has(id)) await this.options.service.writeUser(this.options.nodeId, id, write, true);
          for (const field of Object.keys(write)) changed.delete(field);
          if (changed.size === 0) this.unsynced.delete(id);
        }),
      );
      const stored = await this.options.service.readUsers([...new Set([...this.cache.keys(), ...unread])]);
      for (const [id, user] of stored) {
        if (!user.fields) continue;
        const entry = this.cache.get(id);
        if (entry && user.seq < entry.version) continue;
        const record = decodeRecord(id, user.fields);
        // A write of ours made since may not be in what was read: its echo brings the record.
        if (entry && this.pendingWrites.has(id)) continue;
        if (entry) Object.assign(entry, { record, version: user.seq, fields: user.fields });
        else this.cache.set(id, { record, version: user.seq, fields: user.fields });
        await this.options.apply(record);
      }
    } catch (error) {
      // Lost again midway: the next attempt reads these again.
      for (const id of unread) this.unread.add(id);
      throw error;
    }
  }

  isReady(): boolean {
    return this.options.service.isConnected();
  }

  async close(): Promise<void> {
    await this.flushActivity();
  }

  /** What is held, for tests and the operations docs. */
  inspect(): { cachedUsers: number; pendingWrites: number } {
    return { cachedUsers: this.cache.size, pendingWrites: this.pendingWrites.size };
  }
}

/** The fields an `activity` save moves; written quietly, in batches, and never announced. */
const ACTIVITY_FIELDS: ReadonlySet<string> = new Set(['lastSeenAt', 'lastActiveAt']);

/** A record nobody has changed, as stored. */
const EMPTY_FIELDS: StoredUserFields = encodeRecord(emptyUserRecord(''));

/** A record as stored fields: JSON for structured values, decimal strings for times. */
export function encodeRecord(record: UserRecord): StoredUserFields {
  const fields: StoredUserFields = {
    manual: JSON.stringify(record.manual),
    meta: JSON.stringify(record.meta),
    visibility: record.visibility,
    contacts: JSON.stringify(record.contacts),
    lastSeenAt: record.lastSeenAt === null ? '' : String(record.lastSeenAt),
    lastActiveAt: record.lastActiveAt === null ? '' : String(record.lastActiveAt),
  };
  // Only for users who were ever invisible: nobody else's hash grows.
  if (record.shownAt !== undefined) fields.shownAt = String(record.shownAt);
  return fields;
}

/**
 * The stored field naming the change that wrote the record last (see `ChangeCauses`); not part
 * of the record itself.
 */
const CAUSE_FIELD = '~cause';

export function decodeRecord(userId: string, fields: StoredUserFields): UserRecord {
  const record = emptyUserRecord(userId);
  const json = <T>(value: string | undefined, fallback: T): T => {
    if (value === undefined) return fallback;
    try {
      return JSON.parse(value) as T;
    } catch {
      return fallback;
    }
  };
  const time = (value: string | undefined): number | null => (value ? Number(value) : null);
  record.manual = json(fields.manual, record.manual);
  record.meta = json(fields.meta, record.meta);
  if (fields.visibility === 'everyone' || fields.visibility === 'contacts' || fields.visibility === 'nobody') record.visibility = fields.visibility;
  record.contacts = json(fields.contacts, record.contacts);
  record.lastSeenAt = time(fields.lastSeenAt);
  record.lastActiveAt = time(fields.lastActiveAt);
  const shownAt = time(fields.shownAt);
  if (shownAt !== null) record.shownAt = shownAt;
  return record;
}
