/**
 * The presence objects of the protocol, with the application's own types for meta and custom
 * states. `PresenceClient<UserMeta, ChannelMeta, State>` hands these out everywhere (channels,
 * watched users, own presence, events), so `member.meta.name` has the type the application
 * declared. The parameters are a promise the application makes: the server stores any JSON meta
 * and checks states against its configuration only, so declare keys a user may not have set as
 * optional. With the defaults, these are exactly the protocol's types.
 */
import type { Member as WireMember, Meta, SelfPresence as WireSelfPresence, UserPresence as WireUserPresence } from '@presence/protocol';

/**
 * A change to a meta object: keys with a value are set, keys with `null` are removed, absent keys
 * keep what they had.
 */
export type MetaPatch<M extends Meta = Meta> = { [K in keyof M]?: M[K] | null };

/** One user's presence merged over all their sessions, as seen by another user. */
export interface UserPresence<UserMeta extends Meta = Meta, State extends string = string> extends Omit<WireUserPresence, 'meta' | 'state'> {
  /** What the user set about themselves (name, avatar, …). */
  meta: UserMeta;
  /** Custom state configured on the server; absent when none or offline. */
  state?: State;
}

/** This user's own presence: the public view plus the manual status and visibility. */
export interface SelfPresence<UserMeta extends Meta = Meta, State extends string = string> extends Omit<WireSelfPresence, 'meta' | 'state'> {
  meta: UserMeta;
  state?: State;
}

/** A channel member: a user (not a session), with their per-channel meta. */
export interface Member<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string>
  extends Omit<WireMember, 'meta' | 'state' | 'channelMeta'> {
  meta: UserMeta;
  state?: State;
  /** Per-channel meta (cursor, mode, …), set with `join(name, meta)` and `channel.setMeta`. */
  channelMeta: ChannelMeta;
}
