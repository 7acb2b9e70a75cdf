import { createElement, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { PresenceClient, type Meta, type PresenceClientOptions } from '@presence/client';
import { PresenceContext } from './context.js';
import { leasesFor } from './leases.js';

export type PresenceProviderProps<UserMeta extends Meta = Meta, ChannelMeta extends Meta = Meta, State extends string = string> = {
  children?: ReactNode;
  /** Errors no hook can return: a join or watch the server refused. */
  onError?: (error: unknown) => void;
} & (
  | {
      /** A client created outside React (recommended for apps): the provider neither connects nor closes it. */
      client: PresenceClient<UserMeta, ChannelMeta, State>;
      options?: never;
    }
  | {
      /**
       * Options for a client the provider owns: created once (later changes are ignored),
       * connected on mount, closed on unmount.
       */
      options: PresenceClientOptions;
      client?: never;
    }
);

/** Pending closes of provider-owned clients, cancelled when the provider mounts again. */
const pendingClose = new WeakMap<PresenceClient, ReturnType<typeof setTimeout>>();

/**
 * Makes a Presence client available to the hooks below it. With `options`, the client is
 * created lazily and owned here; a StrictMode double mount (mount, unmount, mount) keeps one
 * connection, because the close on unmount waits a tick and the second mount cancels it.
 */
export function PresenceProvider(props: PresenceProviderProps): ReactNode {
  // Created without connecting: StrictMode may call this initializer twice and drop one result,
  // which therefore must not have opened anything.
  const [owned] = useState(() => (props.client ? null : new PresenceClient({ ...props.options!, autoConnect: false })));
  const client = props.client ?? owned!;
  const onError = useRef(props.onError);
  useEffect(() => {
    onError.current = props.onError;
  });
  const leases = useMemo(() => leasesFor(client, (error) => onError.current?.(error)), [client]);

  useEffect(() => {
    if (!owned) return;
    const pending = pendingClose.get(owned);
    if (pending !== undefined) {
      clearTimeout(pending);
      pendingClose.delete(owned);
    }
    owned.connect();
    return () => {
      pendingClose.set(
        owned,
        setTimeout(() => {
          pendingClose.delete(owned);
          // Components below unmounted in the same commit: their leaves go out before the close.
          leases.flush();
          owned.close();
        }, 0),
      );
    };
  }, [owned, leases]);

  const value = useMemo(() => ({ client, leases }), [client, leases]);
  // Written without JSX so the package builds and runs under any JSX setting.
  return createElement(PresenceContext.Provider, { value }, props.children);
}
