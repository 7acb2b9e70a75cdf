export { PresenceProvider, type PresenceProviderProps } from './provider.js';
export { usePresenceClient } from './context.js';
export {
  useChannel,
  useConnectionStatus,
  useMyPresence,
  usePresence,
  useTyping,
  useUsers,
  type ChannelOptions,
  type MyPresence,
  type TypingState,
} from './hooks.js';
