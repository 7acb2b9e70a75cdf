'use client';
// The hooks need React's client runtime: in the Next.js App Router, this package's modules are
// client modules even when a server component imports them.
export { PresenceProvider, type PresenceProviderProps } from './provider.js';
export { usePresenceClient } from './context.js';
export {
  useChannel,
  useConnectionStatus,
  useMyPresence,
  useTyping,
  useUsers,
  type ChannelOptions,
  type MyPresence,
  type TypingState,
} from './hooks.js';
export {
  useOccupancy,
  useOthers,
  usePresence,
  usePresenceListener,
  useSelf,
  type ChannelPresence,
  type ChannelStatus,
  type NoSelect,
  type PresenceEvent,
  type PresenceOptions,
  type SelectOptions,
} from './presence-hooks.js';
export { shallow } from './selector.js';
export type { Occupancy } from '@presence/client';
export { createPresenceHooks, type PresenceHooks } from './typed.js';
