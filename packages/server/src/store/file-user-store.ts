import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { DataDirLock } from './data-dir-lock.js';
import { aliveLine, headerLine, readUserLog, userLine } from './user-log.js';
import type { SaveKind, UserRecord, UserStore } from './user-store.js';

export const LOG_FILE = 'users.jsonl';
const COMPACTION_SUFFIX = '.compacting';
/** Records serialized per step of a compaction, so a big one never holds the event loop for long. */
const COMPACTION_CHUNK = 2000;
/** After a failed compaction, wait this long before trying again. */
const COMPACTION_RETRY_MS = 60_000;

/** The two file operations the store's durability rests on; tests replace them to simulate a full disk. */
export interface LogWriter {
  write(handle: FileHandle, data: Buffer, position: number): Promise<void>;
  sync(handle: FileHandle): Promise<void>;
}

export const fileLogWriter: LogWriter = {
  async write(handle, data, position) {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
      if (bytesWritten === 0) throw new Error('write made no progress');
      done += bytesWritten;
    }
  },
  sync: (handle) => handle.datasync(),
};

export interface FileUserStoreOptions {
  /** The data directory, created when missing. One server per directory (a lock file enforces it). */
  dir: string;
  log?: Logger;
  /**
   * Activity (`lastSeen`/`lastActive`) and the list of connected users are written this often;
   * this is the most a crash can lose. Presence changes are written at once. @default 1000
   */
  flushIntervalMs?: number;
  /** Time for `alive` stamps: the model's clock. @default Date.now */
  now?: () => number;
  /** Users with a connection open now. After a crash, their `lastSeen` becomes the last stamp. */
  connectedUsers?: () => Iterable<string>;
  /** The log is compacted when it is this many times larger than its live records... @default 4 */
  compactionRatio?: number;
  /** ...and larger than this. @default 8 MiB */
  compactionMinBytes?: number;
  writer?: LogWriter;
}

/** What the store found in the data directory when it opened. */
export interface RecoveryReport {
  dir: string;
  users: number;
  /** Users who had a connection open at the last `alive` stamp, given that stamp as `lastSeen`. */
  stampedOnline: number;
  /** The last `alive` stamp of the previous run (ms), when there was one. */
  lastAliveAt: number | null;
  invalidLines: number;
  tornTail: boolean;
  bytesRead: number;
}

/**
 * User records kept in memory (reads stay synchronous) and made durable in a data directory: each
 * change is appended to a log of JSON lines and flushed to disk with fdatasync. Presence changes
 * (status, meta, privacy, the `lastSeen` of a disconnect) are written at once; activity, which
 * only moves `lastSeen`/`lastActive`, is batched with an `alive` stamp every `flushIntervalMs`. The
 * log is rewritten as a snapshot at start and when it grows well past its live data.
 */
export class FileUserStore implements UserStore {
  readonly dir: string;
  readonly logPath: string;
  recovery!: RecoveryReport;
  private readonly records = new Map<string, UserRecord>();
  /** Users whose record changed since it was last written. */
  private readonly dirty = new Set<string>();
  /** Bytes of the newest line of each user: the live part of the log. */
  private readonly lineBytes = new Map<string, number>();
  private liveBytes = 0;
  /** Connected users as the log says (the sum of its `alive` lines). */
  private writtenOnline = new Set<string>();
  private aliveWanted = false;
  private handle: FileHandle | undefined;
  private size = 0;
  /** Every file operation runs in this chain, one at a time, in order. */
  private ioTail: Promise<void> = Promise.resolve();
  private queuedBatch: Promise<void> | undefined;
  private failure: unknown;
  private compaction: Promise<void> | undefined;
  /** While compacting: users written to the old log after compaction began. */
  private writtenDuringCompaction: Set<string> | undefined;
  private compactionBlockedUntil = 0;
  private compactions = 0;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private closed = false;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly writer: LogWriter;

  private constructor(
    dir: string,
    private readonly lock: DataDirLock,
    private readonly options: FileUserStoreOptions,
  ) {
    this.dir = dir;
    this.logPath = join(dir, LOG_FILE);
    this.log = options.log ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.writer = options.writer ?? fileLogWriter;
  }

  /**
   * Locks the data directory, reads the log and rewrites it as a snapshot. Every stored record is
   * in memory when this resolves, before the server accepts anyone.
   */
  static async open(options: FileUserStoreOptions): Promise<FileUserStore> {
    const dir = resolve(options.dir);
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw new Error(`cannot create the data directory ${dir}: ${(error as Error).message}`, { cause: error });
    }
    const lock = DataDirLock.acquire(dir);
    const store = new FileUserStore(dir, lock, options);
    try {
      await store.recover();
    } catch (error) {
      await store.handle?.close().catch(() => {});
      lock.release();
      throw error;
    }
    const interval = options.flushIntervalMs ?? 1000;
    store.timer = setInterval(() => store.tick(), interval);
    store.timer.unref();
    return store;
  }

  // -------------------------------------------------------------------------------------------
  // UserStore
  // -------------------------------------------------------------------------------------------

  get(userId: string): UserRecord | undefined {
    return this.records.get(userId);
  }

  load(): undefined {
    return undefined;
  }

  save(record: UserRecord, kind: SaveKind = 'presence'): void {
    if (this.closed) return;
    this.records.set(record.userId, record);
    this.dirty.add(record.userId);
    // While the disk refuses writes, only the timer retries, not every change.
    if (kind !== 'activity' && this.failure === undefined) void this.writeSoon(false);
  }

  /** False while writes to the data directory fail (a full disk, an I/O error). */
  isReady(): boolean {
    return !this.closed && this.failure === undefined;
  }

  /** Writes everything pending, then releases the data directory. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.timer);
      await this.compaction;
      await this.writeSoon(true);
      this.closed = true;
      await this.ioTail;
      if (this.dirty.size > 0) {
        this.log.error('user records could not be written before shutdown; their last changes are lost', { dir: this.dir, users: this.dirty.size });
      }
      await this.handle?.close().catch(() => {});
      this.handle = undefined;
      this.lock.release();
    })();
    return this.closing;
  }

  /**
   * Stops at once, writing nothing more and leaving the lock file behind, as `kill -9` would: for
   * tests of recovery in one process.
   */
  async crash(): Promise<void> {
    clearInterval(this.timer);
    this.closed = true;
    this.closing ??= Promise.resolve();
    await this.ioTail;
    await this.handle?.close().catch(() => {});
    this.handle = undefined;
    this.lock.abandon();
  }

  /** Writes every pending change and the connected users now, for tests and shutdown. */
  flush(): Promise<void> {
    return this.writeSoon(true);
  }

  /** Resolves once a compaction that is running has finished (tests read `inspect()` after it). */
  async compacted(): Promise<void> {
    await this.compaction;
  }

  /** Sizes, for tests and the operations docs. */
  inspect(): { users: number; pending: number; logBytes: number; liveBytes: number; compactions: number } {
    return { users: this.records.size, pending: this.dirty.size, logBytes: this.size, liveBytes: this.liveBytes, compactions: this.compactions };
  }

  // -------------------------------------------------------------------------------------------
  // Recovery
  // -------------------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    // A compaction cut short by a crash: the log it was replacing is still whole.
    await unlink(this.logPath + COMPACTION_SUFFIX).catch(() => {});
    const online = new Set<string>();
    // Widened on purpose: it is assigned in the callback, which narrowing does not follow.
    let lastAliveAt = null as number | null;
    const read = await readUserLog(this.logPath, (entry) => {
      if (entry.kind === 'user') {
        this.records.set(entry.record.userId, entry.record);
        return;
      }
      lastAliveAt = lastAliveAt === null ? entry.at : Math.max(lastAliveAt, entry.at);
      for (const id of entry.online) online.add(id);
      for (const id of entry.offline) online.delete(id);
    });
    // Users connected when the previous run stopped were last seen at its last stamp. A clean
    // shutdown disconnects everyone first, so this only matters after a crash.
    let stampedOnline = 0;
    if (lastAliveAt !== null) {
      for (const id of online) {
        const record = this.records.get(id);
        // Invisible users' lastSeen is frozen at the moment they went invisible.
        if (!record || record.manual.status === 'invisible') continue;
        if (record.lastSeenAt === null || record.lastSeenAt < lastAliveAt) {
          record.lastSeenAt = lastAliveAt;
          stampedOnline += 1;
        }
      }
    }
    this.recovery = {
      dir: this.dir,
      users: this.records.size,
      stampedOnline,
      lastAliveAt,
      invalidLines: read.invalidCount,
      tornTail: read.tornTail,
      bytesRead: read.bytes,
    };
    if (read.invalidCount > 0 || read.tornTail) {
      this.log.warn('user log had damaged lines; they were skipped', {
        file: this.logPath,
        invalidLines: read.invalidCount,
        firstInvalidLines: read.invalidLines,
        tornTail: read.tornTail,
      });
    }
    // Nobody is connected to this new process: the snapshot starts with an empty online list.
    await this.compact();
    this.log.info('user records loaded', { ...this.recovery, lastAliveAt: lastAliveAt === null ? null : new Date(lastAliveAt).toISOString() });
  }

  // -------------------------------------------------------------------------------------------
  // Writing
  // -------------------------------------------------------------------------------------------

  private tick(): void {
    this.lock.touch();
    void this.writeSoon(true);
  }

  /** Runs `task` after every file operation queued before it. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.ioTail.then(task);
    this.ioTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Queues one batch. Changes made before the batch starts all go into it, so a burst of changes
   * while a write is on its way costs one more write, not one each.
   */
  private writeSoon(withAlive: boolean): Promise<void> {
    if (withAlive) this.aliveWanted = true;
    this.queuedBatch ??= this.exclusive(async () => {
      this.queuedBatch = undefined;
      await this.writeBatch();
    });
    return this.queuedBatch;
  }

  private async writeBatch(): Promise<void> {
    if (this.closed) return;
    const ids = [...this.dirty];
    this.dirty.clear();
    let text = '';
    for (const id of ids) {
      const record = this.records.get(id);
      if (record) text += this.encode(record);
    }
    let online: Set<string> | undefined;
    if (this.aliveWanted) {
      this.aliveWanted = false;
      let current: Set<string>;
      try {
        current = new Set(this.options.connectedUsers?.() ?? []);
      } catch (error) {
        // Records matter more than the stamp: write them, and say why the stamp is missing.
        this.log.error('cannot list connected users for the user log', { err: error });
        current = this.writtenOnline;
      }
      const joined = [...current].filter((id) => !this.writtenOnline.has(id));
      const left = [...this.writtenOnline].filter((id) => !current.has(id));
      if (current.size > 0 || left.length > 0) {
        text += aliveLine(this.now(), joined, left);
        online = current;
      }
    }
    if (text === '') return;
    const data = Buffer.from(text, 'utf8');
    try {
      const handle = (this.handle ??= await this.reopen());
      await this.writer.write(handle, data, this.size);
      await this.writer.sync(handle);
    } catch (error) {
      for (const id of ids) this.dirty.add(id);
      if (online) this.aliveWanted = true;
      // Whatever part of the batch reached the file goes, so the next write starts a fresh line.
      await this.handle?.truncate(this.size).catch(() => {});
      if (this.failure === undefined) {
        this.log.error('cannot write user records; keeping them in memory, retrying every flush interval, /readyz reports not ready', {
          dir: this.dir,
          err: error,
        });
      }
      this.failure = error;
      return;
    }
    this.size += data.length;
    if (online) this.writtenOnline = online;
    if (this.writtenDuringCompaction) for (const id of ids) this.writtenDuringCompaction.add(id);
    if (this.failure !== undefined) {
      this.failure = undefined;
      this.log.info('user records are written again', { dir: this.dir });
    }
    this.maybeCompact();
  }

  /** The log after a swap whose reopen failed: appends go on where the file ends. */
  private async reopen(): Promise<FileHandle> {
    const handle = await open(this.logPath, 'r+');
    this.size = (await handle.stat()).size;
    return handle;
  }

  private encode(record: UserRecord): string {
    const line = userLine(record);
    const bytes = Buffer.byteLength(line);
    this.liveBytes += bytes - (this.lineBytes.get(record.userId) ?? 0);
    this.lineBytes.set(record.userId, bytes);
    return line;
  }

  // -------------------------------------------------------------------------------------------
  // Compaction
  // -------------------------------------------------------------------------------------------

  private maybeCompact(): void {
    if (this.compaction || this.closing) return;
    const ratio = this.options.compactionRatio ?? 4;
    const minBytes = this.options.compactionMinBytes ?? 8 * 1024 * 1024;
    if (this.size < minBytes || this.size < ratio * this.liveBytes || Date.now() < this.compactionBlockedUntil) return;
    this.compaction = this.compact()
      .catch((error: unknown) => {
        this.compactionBlockedUntil = Date.now() + COMPACTION_RETRY_MS;
        this.log.warn('user log compaction failed; the log keeps growing until it succeeds', { dir: this.dir, err: error });
      })
      .finally(() => (this.compaction = undefined));
  }

  /**
   * Writes every record to a new file and swaps it for the log atomically (write, fsync, rename,
   * fsync the directory), so a crash at any point leaves one whole log. Appends to the old log go
   * on meanwhile; what they wrote is copied over at the swap.
   */
  private async compact(): Promise<void> {
    const path = this.logPath + COMPACTION_SUFFIX;
    const file = await open(path, 'w');
    let fileOpen = true;
    this.writtenDuringCompaction = new Set();
    try {
      let size = 0;
      const append = async (text: string): Promise<void> => {
        const data = Buffer.from(text, 'utf8');
        await this.writer.write(file, data, size);
        size += data.length;
      };
      this.lineBytes.clear();
      this.liveBytes = Buffer.byteLength(headerLine());
      await append(headerLine());
      const ids = [...this.records.keys()];
      for (let i = 0; i < ids.length; i += COMPACTION_CHUNK) {
        let text = '';
        for (const id of ids.slice(i, i + COMPACTION_CHUNK)) text += this.encode(this.records.get(id)!);
        await append(text);
        // A long compaction at start runs before the timer does; the lock must not look stale.
        this.lock.touch();
      }
      await this.exclusive(async () => {
        let text = '';
        for (const id of this.writtenDuringCompaction!) text += this.encode(this.records.get(id)!);
        if (this.writtenOnline.size > 0) text += aliveLine(this.now(), this.writtenOnline, []);
        if (text !== '') await append(text);
        await this.writer.sync(file);
        await file.close();
        fileOpen = false;
        await rename(path, this.logPath);
        await syncDirectory(this.dir);
        // From here on the old handle points at a file that is gone; never write through it again.
        const previous = this.handle;
        this.handle = undefined;
        await previous?.close().catch(() => {});
        this.size = size;
        this.handle = await open(this.logPath, 'r+');
      });
      this.compactions += 1;
    } finally {
      this.writtenDuringCompaction = undefined;
      if (fileOpen) {
        await file.close().catch(() => {});
        await unlink(path).catch(() => {});
      }
    }
  }
}

/** Makes a rename durable. Some platforms cannot open a directory; there the rename has to do. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EISDIR/EPERM on platforms without directory fsync.
  } finally {
    await handle?.close().catch(() => {});
  }
}
