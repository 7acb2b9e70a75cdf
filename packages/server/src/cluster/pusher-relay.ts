import type { Logger } from '../log.js';
import type { PusherCluster, RelayedEvent } from '../protocol-pusher/pusher-cluster.js';
import type { PusherChannelService } from './shared-service.js';

export interface PusherRelayOptions {
  service: PusherChannelService;
  /** This node's id in the cluster, and the nodes whose lists count (see ClusterLink). */
  cluster: { readonly nodeId: string; nodesWithSessions(): string[] };
  /** This node's Pusher channels now: the local count of each (see `PusherProtocol.localChannels`). */
  localChannels(): Map<string, number>;
  /** A channel's local count now; undefined: nothing of it here. */
  localChannel(name: string): number | undefined;
  /** A message another node relayed, for this node's subscribers. */
  deliver(event: RelayedEvent): void;
  log: Logger;
  /** How often the whole list is written again (it expires after three times this). @default 15000 */
  rewriteMs?: number;
}

/**
 * The Pusher endpoint's link to the other nodes (see protocol-pusher/pusher-cluster.ts): a topic
 * per Pusher channel, followed while a connection here is subscribed to it, and this node's list
 * of its Pusher channels in the shared state. The list is written as it changes (a turn's changes
 * together) and whole every `rewriteMs`, so it comes back by itself after the service lost it,
 * and a crashed node's expires.
 */
export class PusherRelay implements PusherCluster {
  readonly nodeId: string;
  private readonly options: PusherRelayOptions;
  private readonly service: PusherChannelService;
  /** Followed channels and the promise of their subscription. */
  private readonly followed = new Map<string, Promise<void>>();
  private readonly dirty = new Set<string>();
  private flushScheduled = false;
  private writing: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;
  private readonly rewriteMs: number;
  private closed = false;

  constructor(options: PusherRelayOptions) {
    this.options = options;
    this.service = options.service;
    this.nodeId = options.cluster.nodeId;
    this.rewriteMs = options.rewriteMs ?? 15_000;
    this.service.onPusherMessage((payload) => this.receive(payload));
    this.timer = setInterval(() => this.rewrite(), this.rewriteMs);
    this.timer.unref();
  }

  follow(channel: string): Promise<void> {
    let following = this.followed.get(channel);
    if (!following) {
      // While the service is away the subscription is retried by the service itself, and the
      // subscriber is served all the same (locally, as everything is then): never refused for it.
      following = this.service.followPusherChannels([channel]).catch((error: unknown) => {
        this.options.log.debug('Pusher channel not followed yet; the service retries', { channel, error });
      });
      this.followed.set(channel, following);
    }
    return following;
  }

  unfollow(channel: string): void {
    if (!this.followed.delete(channel)) return;
    this.service.unfollowPusherChannels([channel]).catch((error: unknown) => this.options.log.debug('Pusher channel not unfollowed', { channel, error }));
  }

  publish(event: RelayedEvent): void {
    if (this.closed) return;
    this.service.publishPusherMessage(event.channel, JSON.stringify(event)).catch((error: unknown) => this.options.log.warn('Pusher event not relayed to the other nodes', { channel: event.channel, error }));
  }

  changed(channels: Iterable<string>): void {
    for (const name of channels) this.dirty.add(name);
    if (this.flushScheduled || this.dirty.size === 0) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  async readChannels(): Promise<Map<string, number>> {
    const lists = await this.service.readPusherChannels(this.nodes());
    const total = new Map<string, number>();
    for (const list of lists) for (const [name, count] of Object.entries(list)) total.set(name, (total.get(name) ?? 0) + count);
    // This node's own list as it is now, not as last written.
    for (const [name, count] of this.options.localChannels()) total.set(name, (total.get(name) ?? 0) + count);
    return total;
  }

  async readSubscriptionCount(channel: string): Promise<number> {
    const others = await this.service.readPusherChannel(this.nodes(), channel);
    return others + (this.options.localChannel(channel) ?? 0);
  }

  /** Removes this node's list (leaving the cluster). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.writing;
    await this.service.writePusherChannels(this.nodeId, {}, [], true, this.ttlMs).catch(() => undefined);
  }

  private get ttlMs(): number {
    return this.rewriteMs * 3;
  }

  /** The other nodes whose lists count. */
  private nodes(): string[] {
    return this.options.cluster.nodesWithSessions().filter((node) => node !== this.nodeId);
  }

  private receive(payload: string): void {
    let event: RelayedEvent;
    try {
      event = JSON.parse(payload) as RelayedEvent;
    } catch {
      return;
    }
    // This node's own messages reached its subscribers when they were sent.
    if (event.node === this.nodeId || typeof event.channel !== 'string' || !this.followed.has(event.channel)) return;
    this.options.deliver(event);
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    const set: Record<string, number> = {};
    const remove: string[] = [];
    for (const name of this.dirty) {
      const count = this.options.localChannel(name);
      if (count === undefined) remove.push(name);
      else set[name] = count;
    }
    this.dirty.clear();
    this.write(set, remove, false);
  }

  private rewrite(): void {
    if (this.closed) return;
    this.dirty.clear();
    this.write(Object.fromEntries(this.options.localChannels()), [], true);
  }

  private write(set: Record<string, number>, remove: string[], whole: boolean): void {
    // One write after the other: a later list never lands before an earlier one.
    this.writing = this.writing
      .then(() => this.service.writePusherChannels(this.nodeId, set, remove, whole, this.ttlMs))
      .catch((error: unknown) => {
        this.options.log.debug('Pusher channels not written; the next whole write brings them', { error });
      });
  }
}
