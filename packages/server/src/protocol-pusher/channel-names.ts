import { PUSHER_CODES, PusherError } from './errors.js';

/*
 * Pusher channel names and what they are here. `presence-X` is the Presence channel X: its
 * members are the channel's members, whichever protocol they came by. `private-X` and public `X`
 * carry messages only (Pusher gives them no user, so they have no members). X must pass both
 * naming rules, Pusher's ([A-Za-z0-9_\-=@,.;]) and Presence's ([A-Za-z0-9_:.@-]), which leaves
 * [A-Za-z0-9_.@-], so one name means the same channel to both protocols.
 */

export type PusherChannelKind = 'public' | 'private' | 'presence';

export interface PusherChannel {
  /** The full Pusher name, prefix included. */
  readonly name: string;
  readonly kind: PusherChannelKind;
  /** The name without its prefix: the Presence channel of a `presence-` channel. */
  readonly base: string;
}

export const PRESENCE_PREFIX = 'presence-';
export const PRIVATE_PREFIX = 'private-';
/** Pusher's longest channel name. */
export const MAX_PUSHER_CHANNEL_LENGTH = 164;
const BOTH_RULES = /^[A-Za-z0-9_.@-]+$/;
/** Kinds Pusher has that this server does not serve (yet): refused by name, not taken for public channels. */
const UNSUPPORTED = [
  { prefix: 'private-encrypted-', what: 'encrypted channels are not supported yet' },
  { prefix: 'presence-cache-', what: 'cache channels are not supported' },
  { prefix: 'private-cache-', what: 'cache channels are not supported' },
  { prefix: 'cache-', what: 'cache channels are not supported' },
  { prefix: '#', what: 'server-to-user channels (user authentication) are not supported yet' },
];

/**
 * Reads a channel name a client or the HTTP API gave; throws PusherError SUBSCRIPTION_REFUSED.
 * `maxLength` is the Presence limit on X (PRESENCE_MAX_CHANNEL_NAME_LENGTH).
 */
export function parseChannel(name: unknown, maxLength: number): PusherChannel {
  if (typeof name !== 'string' || name === '') throw refused('the channel name must be a non-empty string');
  for (const { prefix, what } of UNSUPPORTED) {
    if (name.startsWith(prefix)) throw refused(`${JSON.stringify(name.slice(0, 64))}: ${what}`);
  }
  const kind: PusherChannelKind = name.startsWith(PRESENCE_PREFIX) ? 'presence' : name.startsWith(PRIVATE_PREFIX) ? 'private' : 'public';
  const base = kind === 'presence' ? name.slice(PRESENCE_PREFIX.length) : kind === 'private' ? name.slice(PRIVATE_PREFIX.length) : name;
  if (name.length > MAX_PUSHER_CHANNEL_LENGTH || base.length > maxLength || base === '' || !BOTH_RULES.test(base)) {
    throw refused(
      `invalid channel name ${JSON.stringify(name.slice(0, 64))}: after its prefix, 1–${Math.min(maxLength, MAX_PUSHER_CHANNEL_LENGTH)} characters of A-Z a-z 0-9 _ . @ -`,
    );
  }
  return { name, kind, base };
}

/** The Pusher name of a Presence channel. */
export function presenceChannelName(channel: string): string {
  return PRESENCE_PREFIX + channel;
}

function refused(message: string): PusherError {
  return new PusherError(PUSHER_CODES.SUBSCRIPTION_REFUSED, message);
}
