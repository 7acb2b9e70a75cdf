import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import type { Channel, Member, Meta, Occupancy, PresenceClient, PresenceError } from '@presence/client';
import { usePresenceContext } from './context.js';
import { useChannel, type ChannelOptions } from './hooks.js';
import { shallow, useSyncSelector } from './selector.js';

/** `joining` until the member list has arrived; `ready` after; `error` when the join failed. */
export type ChannelStatus = 'joining' | 'ready' | 'error';

/** A channel's presence as `usePresence` returns it (or hands it to `select`). */
export interface ChannelPresence<M extends Member = Member> {
  status: ChannelStatus;
  /** Why the join failed (the server refused it, or the connection ended): set when `status` is `error`. */
  error?: PresenceError;
  /**
   * The members (this user included while visible), ordered by `joinedAt`, earliest first, then
   * by user id: the same order on every client, unchanged by updates. At most `limit` of them.
   * Shared by every hook reading the channel: read it, do not sort or change it in place. In a
   * large room in occupancy mode, the server's sample of them (see `useOccupancy`).
   */
  members: readonly M[];
}

export interface PresenceOptions<ChannelMeta extends Meta = Meta> extends ChannelOptions<ChannelMeta> {
  /** At most this many members: the first ones in the order of `members`. */
  limit?: number;
}

export interface SelectOptions<Value, Selection> {
  /** Picks what the component uses; it re-renders only when the result changes (by `isEqual`). */
  select: (value: Value) => Selection;
  /** How two results of `select` compare. @default Object.is (see `shallow` for arrays and objects) */
  isEqual?: (a: Selection, b: Selection) => boolean;
}

/** Options without a selector: the hook returns its whole value. */
export interface NoSelect {
  select?: undefined;
  isEqual?: undefined;
}

/** A member joined, left or changed: what `usePresenceListener` hands its callback. */
export type PresenceEvent<M extends Member = Member> =
  | { type: 'join'; member: M }
  | { type: 'leave'; member: M; lastSeen: string | null }
  | { type: 'update'; member: M; previous: M };

/** Everything the channel hooks read, as one value that changes identity only when one part does. */
interface ChannelSnapshot {
  presence: ChannelPresence;
  byId: ReadonlyMap<string, Member>;
  ownUserId: string | undefined;
}

function byJoinOrder(a: Member, b: Member): number {
  if (a.joinedAt !== b.joinedAt) return a.joinedAt < b.joinedAt ? -1 : 1;
  return a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0;
}

/** Sorted once per member map (the channel replaces the map on every change), for every hook reading it. */
const sortedMembers = new WeakMap<ReadonlyMap<string, Member>, Member[]>();

function inJoinOrder(byId: ReadonlyMap<string, Member>): Member[] {
  let sorted = sortedMembers.get(byId);
  if (!sorted) {
    sorted = [...byId.values()].sort(byJoinOrder);
    sortedMembers.set(byId, sorted);
  }
  return sorted;
}

/** A getter of the channel's snapshot, rebuilt only when members, state, join error or own id changed. */
function snapshots(client: PresenceClient, channel: Channel): () => ChannelSnapshot {
  let last: ChannelSnapshot | undefined;
  let lastState: Channel['state'] | undefined;
  let lastError: PresenceError | undefined;
  return () => {
    const byId = channel.members;
    const state = channel.state;
    const error = channel.joinError;
    const ownUserId = client.userId;
    if (last && last.byId === byId && lastState === state && lastError === error && last.ownUserId === ownUserId) return last;
    const status: ChannelStatus = state === 'joined' ? 'ready' : state === 'idle' && error ? 'error' : 'joining';
    const members = inJoinOrder(byId);
    last = { presence: status === 'error' ? { status, error: error!, members } : { status, members }, byId, ownUserId };
    lastState = state;
    lastError = error;
    return last;
  };
}

function limited<M>(members: readonly M[], limit: number | undefined): readonly M[] {
  return limit !== undefined && members.length > limit ? members.slice(0, Math.max(0, limit)) : members;
}

/** Holds the channel and selects from its snapshot. */
function useChannelSelector<Selection>(
  hook: string,
  name: string,
  options: ChannelOptions,
  select: (snapshot: ChannelSnapshot) => Selection,
  isEqual: ((a: Selection, b: Selection) => boolean) | undefined,
): Selection {
  const { client } = usePresenceContext(hook);
  const channel = useChannel(name, options);
  const subscribe = useCallback(
    (onChange: () => void) => {
      const offChannel = channel.on('change', onChange);
      // The own user id arrives with the welcome.
      const offClient = client.on('connected', onChange);
      return () => {
        offChannel();
        offClient();
      };
    },
    [client, channel],
  );
  const getSnapshot = useMemo(() => snapshots(client, channel), [client, channel]);
  return useSyncSelector(subscribe, getSnapshot, select, isEqual);
}

type Select<Value, Selection> = Partial<SelectOptions<Value, Selection>>;

/**
 * A channel's presence, joining it while mounted: `{ status, error?, members }`, or what
 * `select` picks from it. Re-renders only when that value changes.
 */
export function usePresence(name: string, options?: PresenceOptions & NoSelect): ChannelPresence;
export function usePresence<Selection>(name: string, options: PresenceOptions & SelectOptions<ChannelPresence, Selection>): Selection;
export function usePresence<Selection>(name: string, options: PresenceOptions & Select<ChannelPresence, Selection> = {}): ChannelPresence | Selection {
  const { limit, select } = options;
  const pick = useMemo(() => {
    const capped = (presence: ChannelPresence): ChannelPresence => {
      const members = limited(presence.members, limit);
      return members === presence.members ? presence : { ...presence, members };
    };
    return select ? (snapshot: ChannelSnapshot) => select(capped(snapshot.presence)) : (snapshot: ChannelSnapshot) => capped(snapshot.presence);
  }, [select, limit]);
  return useChannelSelector<ChannelPresence | Selection>(
    'usePresence',
    name,
    options,
    pick,
    options.isEqual as ((a: ChannelPresence | Selection, b: ChannelPresence | Selection) => boolean) | undefined,
  );
}

/**
 * The other members of a channel (everyone but this user), joining it while mounted, in the
 * order of `usePresence`; or what `select` picks from them. Without `select`, it re-renders only
 * when one of the others changes (the array is compared item by item).
 */
export function useOthers(name: string, options?: PresenceOptions & NoSelect): Member[];
export function useOthers<Selection>(name: string, options: PresenceOptions & SelectOptions<Member[], Selection>): Selection;
export function useOthers<Selection>(name: string, options: PresenceOptions & Select<Member[], Selection> = {}): Member[] | Selection {
  const { limit, select } = options;
  const pick = useMemo(() => {
    const others = (snapshot: ChannelSnapshot): Member[] => {
      const all = snapshot.presence.members.filter((member) => member.userId !== snapshot.ownUserId);
      return limit !== undefined && all.length > limit ? all.slice(0, Math.max(0, limit)) : all;
    };
    return select ? (snapshot: ChannelSnapshot) => select(others(snapshot)) : others;
  }, [select, limit]);
  const isEqual = (options.isEqual ?? (select ? undefined : shallow)) as ((a: Member[] | Selection, b: Member[] | Selection) => boolean) | undefined;
  return useChannelSelector<Member[] | Selection>('useOthers', name, options, pick, isEqual);
}

/**
 * This user as a member of a channel (with its channel meta), joining it while mounted; `null`
 * while joining and while invisible. Or what `select` picks from it.
 */
export function useSelf(name: string, options?: ChannelOptions & NoSelect): Member | null;
export function useSelf<Selection>(name: string, options: ChannelOptions & SelectOptions<Member | null, Selection>): Selection;
export function useSelf<Selection>(name: string, options: ChannelOptions & Select<Member | null, Selection> = {}): Member | null | Selection {
  const { select } = options;
  const pick = useMemo(() => {
    const self = (snapshot: ChannelSnapshot) => (snapshot.ownUserId === undefined ? null : snapshot.byId.get(snapshot.ownUserId) ?? null);
    return select ? (snapshot: ChannelSnapshot) => select(self(snapshot)) : self;
  }, [select]);
  return useChannelSelector<Member | null | Selection>(
    'useSelf',
    name,
    options,
    pick,
    options.isEqual as ((a: Member | null | Selection, b: Member | null | Selection) => boolean) | undefined,
  );
}

/**
 * How many are in a channel, joining it while mounted: `{ mode, count, statuses }`. Counted from the
 * member list, or, in a large room in occupancy mode, as the server counts it (then `usePresence`
 * gives the sample). Re-renders when a count or the mode changes.
 */
export function useOccupancy(name: string, options: ChannelOptions = {}): Occupancy {
  const channel = useChannel(name, options);
  const subscribe = useCallback((onChange: () => void) => channel.on('change', onChange), [channel]);
  const read = () => channel.occupancy;
  return useSyncExternalStore(subscribe, read, read);
}

/**
 * Calls `handler` for every member who joins, leaves or changes in a channel (joining it while
 * mounted), without re-rendering: for notifications, sounds, analytics. The members of the first
 * member list are not reported as joins. The latest `handler` is called; it need not be stable.
 */
export function usePresenceListener(name: string, handler: (event: PresenceEvent) => void): void {
  const channel = useChannel(name);
  const latest = useRef(handler);
  useEffect(() => {
    latest.current = handler;
  });
  useEffect(() => {
    const offs = [
      channel.on('join', (member) => latest.current({ type: 'join', member })),
      channel.on('leave', (member, lastSeen) => latest.current({ type: 'leave', member, lastSeen })),
      channel.on('update', (member, previous) => latest.current({ type: 'update', member, previous })),
    ];
    return () => {
      for (const off of offs) off();
    };
  }, [channel]);
}
