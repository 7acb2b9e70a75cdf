import type { Meta, PresenceClient } from '@presence/client';

interface Lease {
  holders: number;
  /** A release waiting one tick, so that a component that unmounts and mounts again (StrictMode, fast refresh, a key change back and forth) keeps it. */
  releaseTimer?: ReturnType<typeof setTimeout>;
}

/**
 * Reference counts for what components share through one client: channel memberships and watched
 * users. The first holder joins (or watches); the last one to let go leaves (or unwatches) one
 * tick later, unless someone took it again in between — so a double mount causes no leave/join
 * for anyone else.
 */
export class Leases {
  private readonly channels = new Map<string, Lease>();
  private readonly watches = new Map<string, Lease>();
  private pendingUnwatch = new Set<string>();
  private unwatchTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly client: PresenceClient,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Holds a channel; returns the function that lets go of it (once). */
  holdChannel(name: string, meta?: Meta): () => void {
    let lease = this.channels.get(name);
    if (!lease) {
      lease = { holders: 0 };
      this.channels.set(name, lease);
    }
    lease.holders += 1;
    if (lease.releaseTimer !== undefined) {
      clearTimeout(lease.releaseTimer);
      delete lease.releaseTimer;
    }
    const channel = this.client.channel(name);
    if (lease.holders === 1 && channel.state === 'idle') channel.join(meta).catch(this.onError);
    return once(() => {
      const current = this.channels.get(name);
      if (!current) return;
      current.holders -= 1;
      if (current.holders > 0) return;
      current.releaseTimer = setTimeout(() => this.releaseChannel(name, current), 0);
    });
  }

  /** Carries out the releases still waiting for their tick (the client is about to close). */
  flush(): void {
    for (const [name, lease] of [...this.channels]) {
      if (lease.releaseTimer === undefined) continue;
      clearTimeout(lease.releaseTimer);
      this.releaseChannel(name, lease);
    }
    if (this.unwatchTimer !== undefined) {
      clearTimeout(this.unwatchTimer);
      this.flushUnwatch();
    }
  }

  private releaseChannel(name: string, lease: Lease): void {
    delete lease.releaseTimer;
    if (lease.holders > 0 || this.channels.get(name) !== lease) return;
    this.channels.delete(name);
    this.client.channel(name).leave().catch(this.onError);
  }

  /** Holds watches of these users; returns the function that lets go of them (once). */
  holdWatch(userIds: readonly string[]): () => void {
    const ids = [...new Set(userIds)];
    const toWatch: string[] = [];
    for (const id of ids) {
      let lease = this.watches.get(id);
      if (!lease) {
        lease = { holders: 0 };
        this.watches.set(id, lease);
      }
      lease.holders += 1;
      if (lease.holders === 1 && !this.pendingUnwatch.delete(id)) toWatch.push(id);
    }
    if (toWatch.length > 0) this.client.watch(toWatch).catch(this.onError);
    return once(() => {
      for (const id of ids) {
        const lease = this.watches.get(id);
        if (!lease) continue;
        lease.holders -= 1;
        if (lease.holders > 0) continue;
        this.watches.delete(id);
        this.pendingUnwatch.add(id);
      }
      this.unwatchTimer ??= setTimeout(() => this.flushUnwatch(), 0);
    });
  }

  private flushUnwatch(): void {
    this.unwatchTimer = undefined;
    const ids = [...this.pendingUnwatch];
    this.pendingUnwatch = new Set();
    if (ids.length > 0) this.client.unwatch(ids).catch(this.onError);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}

const leasesByClient = new WeakMap<PresenceClient, Leases>();

/** One lease table per client, shared by every provider that uses it. */
export function leasesFor(client: PresenceClient, onError: (error: unknown) => void): Leases {
  let leases = leasesByClient.get(client);
  if (!leases) {
    leases = new Leases(client, onError);
    leasesByClient.set(client, leases);
  }
  return leases;
}
