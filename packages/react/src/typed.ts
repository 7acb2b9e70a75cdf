import type { ReactNode } from 'react';
import type { Channel, ConnectionStatus, Member, Meta, Occupancy, PresenceClient, UserPresence } from '@presence/client';
import { usePresenceClient } from './context.js';
import { useChannel, useConnectionStatus, useMyPresence, useTyping, useUsers, type ChannelOptions, type MyPresence, type TypingState } from './hooks.js';
import {
  useOccupancy,
  useOthers,
  usePresence,
  usePresenceListener,
  useSelf,
  type ChannelPresence,
  type NoSelect,
  type PresenceEvent,
  type PresenceOptions,
  type SelectOptions,
} from './presence-hooks.js';
import { PresenceProvider, type PresenceProviderProps } from './provider.js';

/**
 * The provider and every hook, typed with the application's user meta, channel meta and custom
 * states (the type parameters of its `PresenceClient`). See `createPresenceHooks`.
 */
export interface PresenceHooks<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string> {
  PresenceProvider(props: PresenceProviderProps<UserMeta, ChannelMeta, State>): ReactNode;
  usePresenceClient(): PresenceClient<UserMeta, ChannelMeta, State>;
  useConnectionStatus(): ConnectionStatus;
  useChannel(name: string, options?: ChannelOptions<ChannelMeta>): Channel<UserMeta, ChannelMeta, State>;
  usePresence(name: string, options?: PresenceOptions<ChannelMeta> & NoSelect): ChannelPresence<Member<UserMeta, ChannelMeta, State>>;
  usePresence<Selection>(
    name: string,
    options: PresenceOptions<ChannelMeta> & SelectOptions<ChannelPresence<Member<UserMeta, ChannelMeta, State>>, Selection>,
  ): Selection;
  useOthers(name: string, options?: PresenceOptions<ChannelMeta> & NoSelect): Member<UserMeta, ChannelMeta, State>[];
  useOthers<Selection>(name: string, options: PresenceOptions<ChannelMeta> & SelectOptions<Member<UserMeta, ChannelMeta, State>[], Selection>): Selection;
  useSelf(name: string, options?: ChannelOptions<ChannelMeta> & NoSelect): Member<UserMeta, ChannelMeta, State> | null;
  useSelf<Selection>(name: string, options: ChannelOptions<ChannelMeta> & SelectOptions<Member<UserMeta, ChannelMeta, State> | null, Selection>): Selection;
  usePresenceListener(name: string, handler: (event: PresenceEvent<Member<UserMeta, ChannelMeta, State>>) => void): void;
  useOccupancy(name: string, options?: ChannelOptions<ChannelMeta>): Occupancy;
  useTyping(name: string): TypingState;
  useMyPresence(): MyPresence<UserMeta, State>;
  useUsers(userIds: readonly string[]): UserPresence<UserMeta, State>[];
}

const hooks: PresenceHooks = {
  PresenceProvider,
  usePresenceClient,
  useConnectionStatus,
  useChannel,
  usePresence,
  useOthers,
  useSelf,
  usePresenceListener,
  useOccupancy,
  useTyping,
  useMyPresence,
  useUsers,
};

/**
 * The provider and hooks typed for an application's data, so that `member.meta.name` has the type
 * it declared, without casts:
 *
 * ```ts
 * type UserMeta = { name: string; avatar?: string };
 * type ChannelMeta = { mode: 'viewing' | 'editing' };
 * export const { PresenceProvider, usePresence, useOthers } = createPresenceHooks<UserMeta, ChannelMeta>();
 * ```
 *
 * Call it once, in a module of its own, and import the hooks from there. They are the package's
 * hooks (nothing is created): typed and untyped hooks share one provider and one client.
 */
export function createPresenceHooks<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string>(): PresenceHooks<
  UserMeta,
  ChannelMeta,
  State
> {
  return hooks as unknown as PresenceHooks<UserMeta, ChannelMeta, State>;
}
