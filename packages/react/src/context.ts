import { createContext, useContext } from 'react';
import type { PresenceClient } from '@presence/client';
import type { Leases } from './leases.js';

export interface PresenceContextValue {
  client: PresenceClient;
  leases: Leases;
}

export const PresenceContext = createContext<PresenceContextValue | null>(null);

export function usePresenceContext(hook: string): PresenceContextValue {
  const value = useContext(PresenceContext);
  if (!value) throw new Error(`${hook}() must be used inside <PresenceProvider>`);
  return value;
}

/** The client of the nearest `<PresenceProvider>`, for anything the hooks do not cover. */
export function usePresenceClient(): PresenceClient {
  return usePresenceContext('usePresenceClient').client;
}
