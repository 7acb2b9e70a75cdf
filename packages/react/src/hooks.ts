import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import type {
  Channel,
  ConnectionStatus,
  ManualStatus,
  Meta,
  MetaPatch,
  SelfPresence,
  StatusUpdate,
  UserPresence,
} from '@presence/client';
import { usePresenceContext } from './context.js';

/** The connection's public status: `connecting`, `connected`, `reconnecting` or `disconnected`. */
export function useConnectionStatus(): ConnectionStatus {
  const { client } = usePresenceContext('useConnectionStatus');
  const subscribe = useCallback((onChange: () => void) => client.on('status', onChange), [client]);
  const read = () => client.status;
  return useSyncExternalStore(subscribe, read, read);
}

export interface ChannelOptions<ChannelMeta extends Meta = Meta> {
  /** This user's channel meta for the join (read when the component first holds the channel). */
  meta?: MetaPatch<ChannelMeta>;
}

/**
 * Holds a channel while the component is mounted (joined on first use, left one tick after the
 * last user unmounts) and returns its handle.
 */
export function useChannel(name: string, options: ChannelOptions = {}): Channel {
  const { client, leases } = usePresenceContext('useChannel');
  const meta = useRef(options.meta);
  meta.current = options.meta;
  useEffect(() => leases.holdChannel(name, meta.current as Meta | undefined), [leases, name]);
  // Handles are created on first use and live as long as the client: safe to get during render.
  return client.channel(name);
}

export interface TypingState {
  /** User ids of the others typing in the channel now. */
  typing: string[];
  /** Call on every input event of the message field. */
  onInput: () => void;
  /** Call when the message is sent and on blur. */
  stop: () => void;
}

/** Who else is typing in a channel, and the handlers that report this user's own typing. */
export function useTyping(name: string): TypingState {
  const channel = useChannel(name);
  const subscribe = useCallback((onChange: () => void) => channel.on('change', onChange), [channel]);
  const read = () => channel.typingUsers;
  const typingUsers = useSyncExternalStore(subscribe, read, read);
  const typing = useMemo(() => [...typingUsers], [typingUsers]);
  const onInput = useCallback(() => channel.typing.input(), [channel]);
  const stop = useCallback(() => channel.typing.stop(), [channel]);
  // Nobody types into a field that is gone.
  useEffect(() => () => channel.typing.stop(), [channel]);
  return { typing, onInput, stop };
}

export interface MyPresence<UserMeta extends Meta = Meta, State extends string = string> {
  /** This user's presence (null before the first connection). */
  self: SelfPresence<UserMeta, State> | null;
  setStatus: (update: StatusUpdate<State> | 'online' | ManualStatus) => Promise<SelfPresence<UserMeta, State>>;
  setMeta: (meta: MetaPatch<UserMeta>) => Promise<SelfPresence<UserMeta, State>>;
}

/** This user's own presence and its setters. */
export function useMyPresence(): MyPresence {
  const { client } = usePresenceContext('useMyPresence');
  const subscribe = useCallback((onChange: () => void) => client.on('self', onChange), [client]);
  const read = () => client.self;
  const self = useSyncExternalStore(subscribe, read, read);
  const setStatus = useCallback((update: StatusUpdate | 'online' | ManualStatus) => client.setStatus(update), [client]);
  const setMeta = useCallback((meta: MetaPatch) => client.setMeta(meta), [client]);
  return useMemo(() => ({ self, setStatus, setMeta }), [self, setStatus, setMeta]);
}

/**
 * Presence of these users (a contact list), watched while mounted, in the order given; users
 * whose presence has not arrived yet are left out.
 */
export function useUsers(userIds: readonly string[]): UserPresence[] {
  const { client, leases } = usePresenceContext('useUsers');
  // A new array with the same ids on every render must not re-watch.
  const key = JSON.stringify(userIds);
  const ids = useMemo(() => JSON.parse(key) as string[], [key]);
  useEffect(() => leases.holdWatch(ids), [leases, ids]);
  const subscribe = useCallback((onChange: () => void) => client.on('users', onChange), [client]);
  const read = () => client.users;
  const users = useSyncExternalStore(subscribe, read, read);
  return useMemo(() => ids.map((id) => users.get(id)).filter((user): user is UserPresence => user !== undefined), [ids, users]);
}
