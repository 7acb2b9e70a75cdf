import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { resolveConfig } from '../../src/config/config.js';
import { ManualClock } from '../../src/presence/clock.js';
import { PresenceNode } from '../../src/presence-node.js';
import { emptyUserRecord, type UserRecord, type UserStore } from '../../src/store/user-store.js';

/** A user store backend, as the conformance suite needs it. */
export interface UserStoreBackend {
  name: string;
  /** A new, empty store. */
  create(): Promise<UserStore>;
  /**
   * For a backend that keeps records across restarts: closes `store` and returns a new store over
   * what it kept, as a restarted server would open it.
   */
  reopen?(store: UserStore): Promise<UserStore>;
}

const TRUSTED = { trusted: true } as const;

function record(userId: string, patch: Partial<UserRecord> = {}): UserRecord {
  return { ...emptyUserRecord(userId), ...patch };
}

/** A record using every field, with values that are easy to get wrong on the way to disk and back. */
function richRecord(userId: string): UserRecord {
  return record(userId, {
    manual: { status: 'busy', state: 'in-call', message: 'Standup 📞 «until 10:15»\nback soon', expiresAt: Date.UTC(2030, 0, 1) },
    meta: { name: 'Ann Émilie', avatar: 'https://example.com/a.png', team: { id: 7, tags: ['a', 'b'] }, flag: false, none: null },
    visibility: 'contacts',
    contacts: ['bob', 'cat'],
    lastSeenAt: Date.UTC(2026, 0, 1, 12, 0, 0, 123),
    lastActiveAt: Date.UTC(2026, 0, 1, 11, 59, 0),
  });
}

/** Reads what the store holds for `userId`, loading it first as the engine would. */
async function stored(store: UserStore, userId: string): Promise<UserRecord | undefined> {
  await store.load([userId]);
  const found = store.get(userId);
  // A copy: later saves must not change what a test compares.
  return found === undefined ? undefined : structuredClone(found);
}

/**
 * The UserStore contract, written once and run against every backend (memory, data directory,
 * cluster link). Durability tests run only for backends that claim it.
 */
export function describeUserStoreConformance(backend: UserStoreBackend): void {
  describe(`user store conformance: ${backend.name}`, () => {
    const open: UserStore[] = [];
    const create = async (): Promise<UserStore> => {
      const store = await backend.create();
      open.push(store);
      return store;
    };
    const reopen = async (store: UserStore): Promise<UserStore> => {
      const next = await backend.reopen!(store);
      open.push(next);
      return next;
    };
    afterEach(async () => {
      for (const store of open.splice(0)) await store.close();
    });

    it('knows nothing of a user it never saw, even after loading them', async () => {
      const store = await create();
      assert.equal(await stored(store, 'nobody'), undefined);
      assert.equal(store.get('nobody'), undefined);
    });

    it('returns what was saved, for both kinds of change, at once', async () => {
      const store = await create();
      store.save(richRecord('ann'), 'presence');
      store.save(record('bob', { lastSeenAt: 5, lastActiveAt: 5 }), 'activity');
      assert.deepEqual(store.get('ann'), richRecord('ann'));
      assert.deepEqual(store.get('bob'), record('bob', { lastSeenAt: 5, lastActiveAt: 5 }));
    });

    it('keeps the latest save of each user, and users apart', async () => {
      const store = await create();
      for (let i = 0; i < 50; i++) store.save(record(`u${i}`, { meta: { n: i } }));
      store.save(record('u7', { meta: { n: 700 }, manual: { status: 'away', state: null, message: null, expiresAt: null } }));
      store.save(record('u7', { meta: { n: 701 } }), 'activity');
      assert.deepEqual((await stored(store, 'u7'))?.meta, { n: 701 });
      assert.equal((await stored(store, 'u7'))?.manual.status, null);
      assert.deepEqual((await stored(store, 'u8'))?.meta, { n: 8 });
    });

    it('is ready while healthy, and closes (twice) without error', async () => {
      const store = await create();
      assert.equal(store.isReady(), true);
      store.save(record('ann'));
      await store.close();
      await store.close();
    });

    it('holds what the engine stores through it: manual status, state, message, meta', async () => {
      const store = await create();
      const clock = new ManualClock();
      const engine = new PresenceNode({ config: resolveConfig(), clock, store });
      try {
        engine.updateUser('ann', { status: 'busy', state: 'in-call', message: 'Planning 🗓', meta: { name: 'Ann' } });
        engine.updateUser('ann', { meta: { avatar: 'a.png' } });
        const saved = await stored(store, 'ann');
        assert.deepEqual(saved?.manual, { status: 'busy', state: 'in-call', message: 'Planning 🗓', expiresAt: null });
        assert.deepEqual(saved?.meta, { name: 'Ann', avatar: 'a.png' });
      } finally {
        engine.dispose();
      }
    });

    describe('across a restart', { skip: backend.reopen ? false : 'this backend keeps records for the life of the process only' }, () => {
      it('gives back every record as it was last saved', async () => {
        const first = await create();
        first.save(richRecord('ann'));
        first.save(record('bob', { meta: { name: 'Bob' } }));
        first.save(record('bob', { meta: { name: 'Robert' }, visibility: 'nobody' }));
        first.save(record('cat', { lastSeenAt: 1000, lastActiveAt: 900 }), 'activity');
        first.save(record('cat', { lastSeenAt: 2000, lastActiveAt: 1900 }), 'activity');
        const second = await reopen(first);
        assert.deepEqual(await stored(second, 'ann'), richRecord('ann'));
        assert.deepEqual(await stored(second, 'bob'), record('bob', { meta: { name: 'Robert' }, visibility: 'nobody' }));
        assert.deepEqual(await stored(second, 'cat'), record('cat', { lastSeenAt: 2000, lastActiveAt: 1900 }));
        assert.equal(await stored(second, 'dan'), undefined);
      });

      it('keeps a record changed in place by the model and saved again', async () => {
        const first = await create();
        const ann = record('ann');
        first.save(ann);
        ann.meta = { name: 'Ann' };
        ann.lastSeenAt = 42;
        first.save(ann, 'activity');
        const second = await reopen(first);
        assert.deepEqual(await stored(second, 'ann'), record('ann', { meta: { name: 'Ann' }, lastSeenAt: 42 }));
      });

      it('lets a restarted engine answer from the stored records', async () => {
        const first = await create();
        const clock = new ManualClock();
        const engine = new PresenceNode({ config: resolveConfig(), clock, store: first });
        engine.updateUser('ann', { status: 'away', message: 'Lunch', meta: { name: 'Ann' } });
        engine.dispose();
        const second = await reopen(first);
        await second.load(['ann']);
        const restarted = new PresenceNode({ config: resolveConfig(), clock, store: second });
        try {
          const view = restarted.userPresence('ann', TRUSTED);
          assert.deepEqual(view.meta, { name: 'Ann' });
          assert.equal(view.status, 'offline');
          assert.equal(second.get('ann')?.manual.status, 'away');
          assert.equal(second.get('ann')?.manual.message, 'Lunch');
        } finally {
          restarted.dispose();
        }
      });
    });
  });
}
