import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { ClusterLink } from '../src/cluster/cluster-link.js';
import type { ClusterListener } from '../src/presence/replication.js';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { silentLogger, type Logger } from '../src/log.js';
import { systemClock } from '../src/presence/clock.js';
import { DataDirLockedError, LOCK_FILE, STALE_AFTER_MS } from '../src/store/data-dir-lock.js';
import { FileUserStore, LOG_FILE, fileLogWriter, type FileUserStoreOptions, type LogWriter } from '../src/store/file-user-store.js';
import { headerLine, userLine } from '../src/store/user-log.js';
import { MemoryUserStore, emptyUserRecord, type UserRecord, type UserStore } from '../src/store/user-store.js';
import { describeUserStoreConformance } from './support/user-store-conformance.js';
import { sleep } from './support/harness.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'presence-store-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// One contract, every backend
// ---------------------------------------------------------------------------------------------

describeUserStoreConformance({ name: 'memory', create: async () => new MemoryUserStore() });

const fileStoreDirs = new WeakMap<UserStore, string>();
describeUserStoreConformance({
  name: 'data directory (file)',
  async create() {
    const dir = tempDir();
    const store = await FileUserStore.open({ dir });
    fileStoreDirs.set(store, dir);
    return store;
  },
  async reopen(store) {
    await store.close();
    const dir = fileStoreDirs.get(store)!;
    const next = await FileUserStore.open({ dir });
    fileStoreDirs.set(next, dir);
    return next;
  },
});

const idleListener: ClusterListener = {
  applyOps: () => {},
  applyUser: () => {},
  nodeDown: () => {},
  userOrphaned: () => {},
  needsUser: () => true,
  needsChannel: () => true,
  dropUnfollowed: () => {},
  localStats: () => ({ sessions: 0, connections: 0, users: 0 }),
  applyRecord: () => {},
  localSnapshot: () => [],
};
const clusterHubs = new WeakMap<UserStore, MemoryHub>();
async function clusterLink(hub: MemoryHub): Promise<ClusterLink> {
  const link = new ClusterLink({ service: new MemoryService(hub), leaseTtlMs: 300, syncIntervalMs: 1000, offlineDelayMs: 400, clock: systemClock, log: silentLogger, activityFlushMs: 50 });
  await link.start(idleListener);
  clusterHubs.set(link, hub);
  return link;
}
describeUserStoreConformance({
  name: 'cluster link (in-process hub)',
  create: () => clusterLink(new MemoryHub()),
  async reopen(store) {
    // Let the writes already sent reach the hub before the node leaves.
    await sleep(20);
    await store.close();
    return clusterLink(clusterHubs.get(store)!);
  },
});

// ---------------------------------------------------------------------------------------------
// The data directory store
// ---------------------------------------------------------------------------------------------

function record(userId: string, patch: Partial<UserRecord> = {}): UserRecord {
  return { ...emptyUserRecord(userId), ...patch };
}

function logLines(dir: string): string[] {
  return readFileSync(join(dir, LOG_FILE), 'utf8').split('\n').filter((line) => line !== '');
}

/** A logger that keeps lines for assertions. */
function recordingLogger(): Logger & { lines: { level: string; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const logger = {
    lines,
    debug: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'debug', msg, fields }),
    info: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'info', msg, fields }),
    warn: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'warn', msg, fields }),
    error: (msg: string, fields?: Record<string, unknown>) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  return logger;
}

describe('FileUserStore', () => {
  const stores: FileUserStore[] = [];
  async function open(dir: string, options: Partial<FileUserStoreOptions> = {}): Promise<FileUserStore> {
    const store = await FileUserStore.open({ dir, ...options });
    stores.push(store);
    return store;
  }
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
  });

  it('creates a missing data directory and starts an empty log with a header', async () => {
    const dir = join(tempDir(), 'nested', 'data');
    const store = await open(dir);
    assert.equal(store.recovery.users, 0);
    assert.deepEqual(logLines(dir), [headerLine().trim()]);
    assert.ok(existsSync(join(dir, LOCK_FILE)));
  });

  it('writes a presence change within a turn or two, without waiting for the timer', async () => {
    const dir = tempDir();
    const store = await open(dir, { flushIntervalMs: 60_000 });
    store.save(record('ann', { meta: { name: 'Ann' } }), 'presence');
    for (let i = 0; i < 100 && logLines(dir).length < 2; i++) await sleep(5);
    assert.deepEqual(JSON.parse(logLines(dir)[1]), { user: record('ann', { meta: { name: 'Ann' } }) });
  });

  it('batches activity: nothing written before the flush interval, one line per user after it', async () => {
    const dir = tempDir();
    const store = await open(dir, { flushIntervalMs: 500 });
    const ann = record('ann');
    for (let i = 1; i <= 20; i++) {
      ann.lastSeenAt = ann.lastActiveAt = i;
      store.save(ann, 'activity');
    }
    await sleep(20);
    assert.equal(logLines(dir).length, 1, 'only the header so far');
    await sleep(700);
    const lines = logLines(dir).slice(1).map((line) => JSON.parse(line));
    assert.deepEqual(lines, [{ user: record('ann', { lastSeenAt: 20, lastActiveAt: 20 }) }]);
  });

  it('close() writes what is pending and releases the directory', async () => {
    const dir = tempDir();
    const store = await FileUserStore.open({ dir, flushIntervalMs: 60_000 });
    store.save(record('ann', { lastSeenAt: 7 }), 'activity');
    await store.close();
    assert.equal(existsSync(join(dir, LOCK_FILE)), false);
    const again = await open(dir);
    assert.equal(again.get('ann')?.lastSeenAt, 7);
  });

  it('ignores a line torn by a crash at the end of the log, and drops it when rewriting', async () => {
    const dir = tempDir();
    const first = await FileUserStore.open({ dir });
    first.save(record('ann', { meta: { name: 'Ann' } }));
    first.save(record('bob', { meta: { name: 'Bob' } }));
    await first.close();
    // The crash cut the last write in the middle of a line.
    appendFileSync(join(dir, LOG_FILE), userLine(record('ann', { meta: { name: 'Ann 2' } })));
    appendFileSync(join(dir, LOG_FILE), userLine(record('bob', { meta: { name: 'Bob 2' } })).slice(0, 30));
    const log = recordingLogger();
    const store = await open(dir, { log });
    assert.equal(store.recovery.tornTail, true);
    assert.equal(store.recovery.invalidLines, 0);
    assert.deepEqual(store.get('ann')?.meta, { name: 'Ann 2' }, 'complete lines before the tear count');
    assert.deepEqual(store.get('bob')?.meta, { name: 'Bob' }, 'the torn line does not');
    assert.ok(log.lines.some((l) => l.level === 'warn' && /damaged/.test(l.msg)));
    assert.ok(logLines(dir).every((line) => JSON.parse(line)), 'the rewritten log has whole lines only');
  });

  it('skips a damaged line in the middle (zeros after a power loss) and keeps the rest', async () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, LOG_FILE),
      headerLine() + userLine(record('ann', { meta: { v: 1 } })) + '\0\0\0\0\n' + '{"user":{"userId":""}}\n' + userLine(record('bob')),
    );
    const store = await open(dir);
    assert.equal(store.recovery.invalidLines, 2);
    assert.deepEqual(store.get('ann')?.meta, { v: 1 });
    assert.ok(store.get('bob'));
  });

  it('refuses a file that is not its log, or a newer format, rather than overwrite it', async () => {
    const foreign = tempDir();
    writeFileSync(join(foreign, LOG_FILE), 'hello\n');
    await assert.rejects(FileUserStore.open({ dir: foreign }), /not a Presence user log/);
    const newer = tempDir();
    writeFileSync(join(newer, LOG_FILE), '{"format":"presence-users","version":2}\n');
    await assert.rejects(FileUserStore.open({ dir: newer }), /format version 2/);
    assert.equal(readFileSync(join(newer, LOG_FILE), 'utf8'), '{"format":"presence-users","version":2}\n');
    // A refused start leaves the directory unlocked.
    assert.equal(existsSync(join(newer, LOCK_FILE)), false);
  });

  it('rewrites the log at start: one line per user, latest values', async () => {
    const dir = tempDir();
    const first = await FileUserStore.open({ dir });
    const ann = record('ann');
    for (let i = 0; i < 30; i++) {
      ann.meta = { n: i };
      first.save(ann);
      await first.flush();
    }
    await first.close();
    assert.equal(logLines(dir).length, 31);
    const second = await open(dir);
    assert.deepEqual(logLines(dir).map((line) => JSON.parse(line)), [JSON.parse(headerLine()), { user: record('ann', { meta: { n: 29 } }) }]);
    assert.deepEqual(second.get('ann')?.meta, { n: 29 });
  });

  it('compacts while running once the log outgrows its live data, losing nothing written meanwhile', async () => {
    const dir = tempDir();
    const store = await open(dir, { compactionRatio: 3, compactionMinBytes: 2048, flushIntervalMs: 60_000 });
    const users = Array.from({ length: 20 }, (_, i) => record(`user-${i}`));
    for (let round = 0; round < 40; round++) {
      for (const user of users) {
        user.meta = { round };
        store.save(user);
      }
      await store.flush();
    }
    // A compaction runs alongside the writes; on a busy machine the last one may still be going.
    await store.compacted();
    const { compactions, logBytes, liveBytes } = store.inspect();
    assert.ok(compactions >= 2, `compacted ${compactions} times`);
    assert.ok(logBytes <= 3 * liveBytes + 4096, `log ${logBytes} B for ${liveBytes} B of live data`);
    await store.close();
    stores.splice(stores.indexOf(store), 1);
    const reopened = await open(dir);
    for (const user of users) assert.deepEqual(reopened.get(user.userId)?.meta, { round: 39 });
    assert.equal(existsSync(join(dir, `${LOG_FILE}.compacting`)), false);
  });

  it('starts from the log when a compaction was cut short (its half-written file is removed)', async () => {
    const dir = tempDir();
    const first = await FileUserStore.open({ dir });
    first.save(record('ann', { meta: { name: 'Ann' } }));
    await first.close();
    writeFileSync(join(dir, `${LOG_FILE}.compacting`), headerLine() + '{"user":{"userId":"ann","meta":{"na');
    const store = await open(dir);
    assert.deepEqual(store.get('ann')?.meta, { name: 'Ann' });
    assert.equal(existsSync(join(dir, `${LOG_FILE}.compacting`)), false);
  });

  it('gives users connected at a crash the last alive stamp as lastSeen (not invisible ones)', async () => {
    const dir = tempDir();
    let now = 1_000_000;
    let connected = ['ann', 'inv', 'bob'];
    const first = await FileUserStore.open({ dir, now: () => now, connectedUsers: () => connected });
    first.save(record('ann', { lastSeenAt: 1000, lastActiveAt: 1000 }));
    first.save(record('bob', { lastSeenAt: 1000 }));
    first.save(record('inv', { lastSeenAt: 500, manual: { status: 'invisible', state: null, message: null, expiresAt: null } }));
    first.save(record('cat', { lastSeenAt: 800 }));
    await first.flush();
    now = 2_000_000;
    connected = ['ann', 'inv'];
    await first.flush();
    now = 3_000_000;
    await first.flush();
    await first.crash();
    const lines = logLines(dir).map((line) => JSON.parse(line));
    assert.deepEqual(lines.filter((l) => 'alive' in l), [
      { alive: 1_000_000, online: ['ann', 'inv', 'bob'] },
      { alive: 2_000_000, offline: ['bob'] },
      { alive: 3_000_000 },
    ]);
    const second = await open(dir);
    assert.equal(second.recovery.stampedOnline, 1);
    assert.equal(second.recovery.lastAliveAt, 3_000_000);
    assert.equal(second.get('ann')?.lastSeenAt, 3_000_000, 'online at the crash: seen at the last stamp');
    assert.equal(second.get('ann')?.lastActiveAt, 1000, 'activity is not invented');
    assert.equal(second.get('bob')?.lastSeenAt, 1000, 'left before the crash');
    assert.equal(second.get('inv')?.lastSeenAt, 500, 'invisible: frozen');
    assert.equal(second.get('cat')?.lastSeenAt, 800);
    assert.equal(logLines(dir).some((line) => line.includes('"alive"')), false, 'nobody is connected to the new process');
  });

  it('writes nothing when nothing changed and nobody is connected', async () => {
    const dir = tempDir();
    const store = await open(dir, { flushIntervalMs: 20 });
    await sleep(120);
    assert.equal(store.inspect().logBytes, headerLine().length);
  });

  describe('one server per data directory', () => {
    it('refuses a second store on the same directory in this process', async () => {
      const dir = tempDir();
      await open(dir);
      await assert.rejects(FileUserStore.open({ dir }), (error: unknown) => {
        assert.ok(error instanceof DataDirLockedError);
        assert.match(error.message, /already in use/);
        return true;
      });
    });

    it('refuses while another live process holds the lock, naming it and the lock file', async () => {
      const dir = tempDir();
      const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
      try {
        writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: holder.pid, startedAt: new Date().toISOString() }));
        await assert.rejects(FileUserStore.open({ dir }), (error: unknown) => {
          assert.ok(error instanceof DataDirLockedError);
          assert.ok(error.message.includes(`pid ${holder.pid}`), error.message);
          assert.ok(error.message.includes(join(dir, LOCK_FILE)), error.message);
          assert.match(error.message, /one server per data directory/);
          return true;
        });
        // The same holder, but its lock untouched for longer than a live server would allow: stale.
        const old = new Date(Date.now() - STALE_AFTER_MS - 1000);
        utimesSync(join(dir, LOCK_FILE), old, old);
        await open(dir);
      } finally {
        holder.kill('SIGKILL');
      }
    });

    it('takes over a lock left by a process that is gone (kill -9)', async () => {
      const dir = tempDir();
      const dead = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
      await new Promise((resolve) => dead.once('exit', resolve));
      writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: dead.pid, startedAt: new Date().toISOString() }));
      const store = await open(dir);
      assert.equal(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
      assert.equal(store.isReady(), true);
    });

    it('takes over an empty lock file (its creator died before writing it)', async () => {
      const dir = tempDir();
      writeFileSync(join(dir, LOCK_FILE), '');
      await open(dir);
    });
  });

  describe('when writes fail (disk full)', () => {
    it('keeps serving from memory, reports not ready, logs once, and catches up when the disk has room', async () => {
      const dir = tempDir();
      let full = false;
      let failedWrites = 0;
      const writer: LogWriter = {
        async write(handle, data, position) {
          if (full) {
            failedWrites += 1;
            // Half the batch reaches the disk before the error, as with a real ENOSPC.
            await fileLogWriter.write(handle, data.subarray(0, data.length >> 1), position);
            throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          }
          return fileLogWriter.write(handle, data, position);
        },
        sync: fileLogWriter.sync,
      };
      const log = recordingLogger();
      const store = await open(dir, { writer, log, flushIntervalMs: 40 });
      store.save(record('ann', { meta: { v: 1 } }));
      await store.flush();
      full = true;
      store.save(record('ann', { meta: { v: 2 } }));
      store.save(record('bob', { meta: { v: 2 } }));
      await store.flush();
      assert.equal(store.isReady(), false);
      assert.deepEqual(store.get('ann')?.meta, { v: 2 }, 'reads are unaffected');
      await sleep(150);
      assert.ok(failedWrites >= 2, 'the timer retries');
      assert.equal(log.lines.filter((l) => l.level === 'error').length, 1, 'one error line, not one per retry');
      assert.ok(logLines(dir).every((line) => JSON.parse(line)), 'no half-written line is left behind');
      full = false;
      await sleep(150);
      assert.equal(store.isReady(), true);
      assert.ok(log.lines.some((l) => l.level === 'info' && /written again/.test(l.msg)));
      await store.close();
      stores.splice(stores.indexOf(store), 1);
      const reopened = await open(dir);
      assert.deepEqual(reopened.get('ann')?.meta, { v: 2 });
      assert.deepEqual(reopened.get('bob')?.meta, { v: 2 });
    });
  });
});
