import { createPresenceHooks } from '@presence/react';

/**
 * What the demo's users set about themselves: the name picked at sign-in and an avatar picture.
 * A type is a promise, not a check: anyone may set other values, so the page still checks them.
 */
export type DemoUserMeta = { name?: string; avatar?: string };
/** What members set per room. */
export type DemoChannelMeta = { mode?: 'viewing' };

/** The provider and hooks, typed with the demo's meta: `member.meta.name` is a string. */
export const { PresenceProvider, useConnectionStatus, useMyPresence, usePresence, usePresenceClient, usePresenceListener, useTyping, useUsers } =
  createPresenceHooks<DemoUserMeta, DemoChannelMeta>();
