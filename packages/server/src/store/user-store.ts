import type { ManualStatus, Meta, Visibility } from '@presence/protocol';

/** What the user set by hand; it applies to all their sessions and outlives them. */
export interface ManualPresence {
  status: ManualStatus | null;
  state: string | null;
  message: string | null;
  /** ms since the epoch; status, state and message clear then. */
  expiresAt: number | null;
}

/**
 * The durable part of a user's presence: what must survive the user's sessions (and, with a
 * persistent store, a restart). Sessions, channels and timers are not here: they die with sockets.
 */
export interface UserRecord {
  userId: string;
  manual: ManualPresence;
  meta: Meta;
  visibility: Visibility;
  contacts: string[];
  /** When the user was last online (activity or disconnect), ms since the epoch. */
  lastSeenAt: number | null;
  /** Last activity of any session, ms since the epoch. */
  lastActiveAt: number | null;
  /**
   * When the user last stopped being invisible, ms since the epoch (absent: never was). A channel
   * membership counts from here for others (`joinedAt`), so it never reveals a stay while invisible.
   */
  shownAt?: number;
}

/**
 * How a change should travel. `presence` changes (status, meta, privacy, lastSeen at a
 * disconnect) are written and announced to other nodes at once; `activity` only moves
 * `lastSeen`/`lastActive`, which nobody is told about, so a networked store may batch it.
 * `expiry` clears a manual status whose time ran out: written like `presence`, but every node
 * holding the record makes the same change by itself, so a networked store that could not write
 * it need not insist later (over a status the user set meanwhile elsewhere).
 */
export type SaveKind = 'presence' | 'activity' | 'expiry';

/**
 * Where user records live. Reads are synchronous on purpose: the presence model answers from
 * memory on the hot path; a networked store (Redis) keeps a local copy and writes behind.
 */
export interface UserStore {
  /** The record if it is in memory (`load` it first for users this node has not seen). */
  get(userId: string): UserRecord | undefined;
  /** Brings the records of these users into memory; undefined when they are there already. */
  load(userIds: string[]): Promise<void> | undefined;
  /**
   * Called after every change of a record; the store may persist it asynchronously. `cause` names
   * the change (see `ChangeCauses`); a shared store passes it on with the write.
   */
  save(record: UserRecord, kind?: SaveKind, cause?: string): void;
  /** False while the backing service is unreachable (drives `/readyz`). */
  isReady(): boolean;
  close(): Promise<void>;
}

/**
 * The meta of everyone who has none. Metas are replaced on change, never mutated, so one frozen
 * object can stand for all of them (an empty object costs 56 bytes, and each user and membership
 * had its own).
 */
export const EMPTY_META: Meta = Object.freeze({});

export function emptyUserRecord(userId: string): UserRecord {
  return {
    userId,
    manual: { status: null, state: null, message: null, expiresAt: null },
    meta: EMPTY_META,
    visibility: 'everyone',
    contacts: [],
    lastSeenAt: null,
    lastActiveAt: null,
  };
}

/** The embedded default: records live as long as the process. */
export class MemoryUserStore implements UserStore {
  private readonly records = new Map<string, UserRecord>();

  get(userId: string): UserRecord | undefined {
    return this.records.get(userId);
  }

  load(): undefined {
    return undefined;
  }

  save(record: UserRecord): void {
    this.records.set(record.userId, record);
  }

  isReady(): boolean {
    return true;
  }

  get size(): number {
    return this.records.size;
  }

  async close(): Promise<void> {}
}
