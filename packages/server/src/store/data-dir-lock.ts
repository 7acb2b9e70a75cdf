import { closeSync, openSync, readFileSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/*
 * One server per data directory. Two servers appending to one log would interleave and each
 * compact the other's writes away, so the second one must refuse to start.
 *
 * Node has no flock(), so the lock is a file created exclusively, holding the owner's pid, and
 * touched every second while held. A lock left behind by a crash (`kill -9`) is taken over when its
 * process is gone, or when it has not been touched for STALE_AFTER_MS: the second rule covers a
 * restarted container where the old pid now belongs to some other process.
 */

export const LOCK_FILE = 'presence.lock';
export const STALE_AFTER_MS = 10_000;

/** Directories locked by this process: a pid check cannot tell two stores of one process apart. */
const heldHere = new Set<string>();

export class DataDirLockedError extends Error {
  readonly code = 'DATA_DIR_LOCKED';
  constructor(message: string) {
    super(message);
    this.name = 'DataDirLockedError';
  }
}

interface LockContent {
  pid: number;
  startedAt: string;
}

export class DataDirLock {
  private released = false;

  private constructor(
    readonly dir: string,
    readonly path: string,
  ) {}

  /** Takes the lock of `dir` (an absolute path) or throws DataDirLockedError naming the holder. */
  static acquire(dir: string): DataDirLock {
    const path = join(dir, LOCK_FILE);
    if (heldHere.has(dir)) {
      throw new DataDirLockedError(`data directory ${dir} is already in use by another store in this process (one data directory per server)`);
    }
    for (let attempt = 0; ; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, 'wx');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw error;
        const holder = readHolder(path);
        if (holder && isLive(holder, path)) {
          throw new DataDirLockedError(
            `data directory ${dir} is in use by another Presence server (pid ${holder.pid}, lock file ${path}); ` +
              'run one server per data directory. If no server is running there, delete the lock file',
          );
        }
        // Left behind by a process that is gone: ours now.
        try {
          unlinkSync(path);
        } catch (unlinkError) {
          if ((unlinkError as NodeJS.ErrnoException).code !== 'ENOENT') throw unlinkError;
        }
        continue;
      }
      try {
        const content: LockContent = { pid: process.pid, startedAt: new Date().toISOString() };
        writeSync(fd, `${JSON.stringify(content)}\n`);
      } finally {
        closeSync(fd);
      }
      heldHere.add(dir);
      return new DataDirLock(dir, path);
    }
  }

  /** Shows the lock is still held (see STALE_AFTER_MS). Failures are left to the log writes to report. */
  touch(): void {
    if (this.released) return;
    try {
      const time = new Date();
      utimesSync(this.path, time, time);
    } catch {
      // A data directory that cannot be touched cannot be written either; the log says so.
    }
  }

  /** Forgets the lock without removing its file, as a crashed process would: for tests of recovery. */
  abandon(): void {
    this.released = true;
    heldHere.delete(this.dir);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.dir);
    try {
      const holder = readHolder(this.path);
      // Only our own lock: another server may have taken over a lock we held too long ago.
      if (holder?.pid === process.pid) unlinkSync(this.path);
    } catch {
      // Already gone; a leftover lock would be taken over as stale anyway.
    }
  }
}

function readHolder(path: string): LockContent | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockContent>;
    return typeof parsed.pid === 'number' ? { pid: parsed.pid, startedAt: String(parsed.startedAt) } : undefined;
  } catch {
    // Empty or half-written: its creator crashed between creating and writing it.
    return undefined;
  }
}

function isLive(holder: LockContent, path: string): boolean {
  // Our own pid, but not held by this process (checked above): a previous process that had the
  // same pid, as happens to pid 1 in a restarted container.
  if (holder.pid === process.pid) return false;
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // File times are the file system's wall clock, whatever clock the model uses.
    return Date.now() - statSync(path).mtimeMs < STALE_AFTER_MS;
  } catch {
    return false;
  }
}
