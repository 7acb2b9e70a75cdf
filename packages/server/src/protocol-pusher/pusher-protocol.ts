import { randomInt } from 'node:crypto';
import type { Member } from '@presence/protocol';
import type { PusherConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { PresenceEngine } from '../presence/engine.js';
import type { PresenceEvent } from '../presence/events.js';
import type { Channel, Session, SessionOutput } from '../presence/state.js';
import { memberView, shownJoinedAt } from '../presence/user-presence.js';
import { presenceChannelName, PRESENCE_PREFIX, type PusherChannel } from './channel-names.js';
import { frame } from './frames.js';
import { PusherClient, PusherSessionSink, type PusherSocket } from './pusher-client.js';
import type { PusherCluster, RelayedEvent } from './pusher-cluster.js';

/*
 * The Pusher Channels protocol (version 7) on the way out: a second listener of the presence
 * events beside protocol v1, and the answer to a Pusher session's join. The members of a
 * `presence-X` channel are the Presence channel X's, so pusher-js users and native SDK users in
 * one room see each other, merged per user, with the offline delay. Public and private channels
 * carry messages only: client events and events triggered through the HTTP API. In a cluster,
 * those messages also go to the other nodes (`PusherCluster`), and the HTTP API's queries answer
 * for every node.
 */

/** Seconds of silence after which pusher-js pings (`activity_timeout` of `connection_established`). */
export const ACTIVITY_TIMEOUT_SECONDS = 120;

/** Extra events on presence channels, beyond Pusher's; unmodified apps never bind them. */
export const PRESENCE_EVENTS = {
  /** After `subscription_succeeded`: every visible member with their full presence. */
  members: 'presence:members',
  /** A member's status, state, message, devices, idleness or meta changed; also right after `member_added`. */
  memberUpdated: 'presence:member_updated',
  /** A member started or stopped typing (from a native client: Pusher clients whisper instead). */
  typing: 'presence:typing',
} as const;

/** What Pusher-format webhooks hear that the presence events do not say. */
export interface PusherHooks {
  /** A public or private channel got its first subscriber. */
  occupied(channel: string): void;
  /** A public or private channel lost its last subscriber. */
  vacated(channel: string): void;
  /** A client event was relayed. */
  clientEvent(event: { channel: string; event: string; data: string; socketId: string; userId?: string }): void;
}

export interface ChannelInfo {
  occupied: boolean;
  /** Visible members (presence channels only). */
  userCount?: number;
  /** Subscribed Pusher connections on this node. */
  subscriptionCount: number;
}

export class PusherProtocol {
  private readonly subscribers = new Map<string, Set<PusherClient>>();
  private readonly clients = new Set<PusherClient>();
  /** Socket ids are `<per process>.<counter>`, the shape Pusher's server libraries check. */
  private readonly socketPrefix = randomInt(1, 2 ** 31);
  private socketCounter = 0;
  private keepAlive: ReturnType<PresenceEngine['clock']['setTimer']> | undefined;
  hooks: PusherHooks | undefined;
  /** Set in a cluster (see `attachCluster`). */
  private cluster: PusherCluster | undefined;

  constructor(
    readonly engine: PresenceEngine,
    readonly config: PusherConfig,
    readonly log?: Logger,
    /** Whether a Presence channel is in occupancy mode (large rooms): Pusher clients need the whole list. */
    readonly occupancyMode: (channel: string) => boolean = () => false,
  ) {
    this.armKeepAlive();
  }

  /** In a cluster: messages go to the other nodes too, and queries answer for every node. */
  attachCluster(cluster: PusherCluster): void {
    this.cluster = cluster;
  }

  /** A new connection on `/app/:key`: gets its socket id in `pusher:connection_established`. */
  open(socket: PusherSocket): PusherClient {
    const socketId = `${this.socketPrefix}.${(this.socketCounter += 1)}`;
    const client = new PusherClient(this, socket, socketId);
    this.clients.add(client);
    socket.send(frame('pusher:connection_established', undefined, JSON.stringify({ socket_id: socketId, activity_timeout: ACTIVITY_TIMEOUT_SECONDS })));
    return client;
  }

  /** For PusherClient: the connection is gone. */
  forget(client: PusherClient): void {
    this.clients.delete(client);
  }

  get connectionCount(): number {
    return this.clients.size;
  }

  // Subscriptions ------------------------------------------------------------------------------

  /**
   * For PusherClient, before a subscription is made: in a cluster, the channel's messages from
   * other nodes must come here before the subscriber is told it is subscribed.
   */
  prepareSubscription(channel: PusherChannel): Promise<void> | undefined {
    if (!this.cluster || this.subscribers.has(channel.name)) return undefined;
    return this.cluster.follow(channel.name);
  }

  /** For PusherClient. */
  addSubscriber(channel: PusherChannel, client: PusherClient): void {
    let set = this.subscribers.get(channel.name);
    if (!set) this.subscribers.set(channel.name, (set = new Set()));
    set.add(client);
    if (this.cluster) {
      // Followed already (prepareSubscription) unless the last subscriber left meanwhile.
      if (set.size === 1) void this.cluster.follow(channel.name).catch(() => undefined);
      this.cluster.changed([channel.name]);
    }
    // A presence channel is occupied by its visible members, which the presence events tell.
    if (set.size === 1 && channel.kind !== 'presence') this.hooks?.occupied(channel.name);
  }

  /** For PusherClient. */
  removeSubscriber(channel: PusherChannel, client: PusherClient): void {
    const set = this.subscribers.get(channel.name);
    if (!set?.delete(client)) return;
    this.cluster?.changed([channel.name]);
    if (set.size > 0) return;
    this.subscribers.delete(channel.name);
    this.cluster?.unfollow(channel.name);
    if (channel.kind !== 'presence') this.hooks?.vacated(channel.name);
  }

  // Messages -----------------------------------------------------------------------------------

  /** A client event, to every other subscriber of its channel; `user_id` on presence channels. */
  relay(from: PusherClient, channel: PusherChannel, event: string, data: string, userId: string | undefined): void {
    const json = frame(event, channel.name, data, userId);
    this.toSubscribers(channel.name, json, from);
    this.cluster?.publish({ node: this.cluster.nodeId, channel: channel.name, event, data, ...(userId !== undefined ? { userId } : {}) });
    this.hooks?.clientEvent({ channel: channel.name, event, data, socketId: from.socketId, ...(userId !== undefined ? { userId } : {}) });
  }

  /** An event of the HTTP API, to every subscriber of each channel but the connection `exceptSocketId`. */
  trigger(channels: readonly string[], event: string, data: string, exceptSocketId?: string): void {
    for (const name of channels) {
      this.deliver(name, frame(event, name, data), exceptSocketId);
      this.cluster?.publish({ node: this.cluster.nodeId, channel: name, event, data, ...(exceptSocketId !== undefined ? { except: exceptSocketId } : {}) });
    }
  }

  /** A message another node relayed (a client event or an event of the HTTP API), for the subscribers here. */
  readonly receiveRelayed = (event: RelayedEvent): void => {
    this.deliver(event.channel, frame(event.event, event.channel, event.data, event.userId), event.except);
  };

  private deliver(name: string, json: string, exceptSocketId: string | undefined): void {
    const set = this.subscribers.get(name);
    if (!set) return;
    let except: PusherClient | undefined;
    if (exceptSocketId !== undefined) for (const client of set) if (client.socketId === exceptSocketId) except = client;
    this.toSubscribers(name, json, except);
  }

  /** The presence-event listener. */
  readonly onEvent = (event: PresenceEvent): void => {
    switch (event.type) {
      case 'member.joined': {
        const name = presenceChannelName(event.channel);
        this.cluster?.changed([name]);
        if (!this.subscribers.has(name)) return;
        this.toSubscribers(name, frame('pusher_internal:member_added', name, JSON.stringify({ user_id: event.userId, user_info: event.view.meta })));
        this.memberUpdated(name, event.userId, memberView(event.view, event.channelMeta, event.joinedAt));
        return;
      }
      case 'member.left': {
        const name = presenceChannelName(event.channel);
        this.cluster?.changed([name]);
        if (!this.subscribers.has(name)) return;
        this.toSubscribers(name, frame('pusher_internal:member_removed', name, JSON.stringify({ user_id: event.userId })));
        return;
      }
      case 'member.updated':
      case 'member.meta': {
        const name = presenceChannelName(event.channel);
        if (this.subscribers.has(name)) this.memberUpdated(name, event.userId, memberView(event.view, event.channelMeta, event.joinedAt));
        return;
      }
      case 'typing.started':
      case 'typing.stopped': {
        const name = presenceChannelName(event.channel);
        const set = this.subscribers.get(name);
        if (!set) return;
        const json = frame(PRESENCE_EVENTS.typing, name, JSON.stringify({ user_id: event.userId, typing: event.type === 'typing.started' }));
        // Never to the typer's own connections, as in protocol v1.
        for (const client of set) if (client.userIn(name) !== event.userId) client.socket.send(json);
        return;
      }
      default:
        // User events go to watchers, which Pusher has not.
        return;
    }
  };

  /**
   * The model's direct answers to a session, by protocol: a Pusher session's join is answered
   * with `subscription_succeeded` (and the members' presence); v1's answers (`welcome`, `pong`)
   * have no Pusher form and are not sent. Every other session gets v1's.
   */
  outputBeside(v1: SessionOutput): SessionOutput {
    return {
      send: (session, message) => {
        if (!(session.sink instanceof PusherSessionSink)) v1.send(session, message);
      },
      sync: (session, channel) => {
        if (session.sink instanceof PusherSessionSink) this.sync(session, session.sink.client, channel);
        else v1.sync(session, channel);
      },
    };
  }

  private sync(_session: Session, client: PusherClient, channel: Channel): void {
    const name = presenceChannelName(channel.name);
    const ids: string[] = [];
    const hash: Record<string, unknown> = {};
    const members: Member[] = [];
    for (const [userId, member] of channel.members) {
      if (!member.user.announcedVisible) continue;
      ids.push(userId);
      hash[userId] = member.user.published.meta;
      members.push(memberView(member.user.published, member.channelMeta, shownJoinedAt(member)));
    }
    client.socket.send(frame('pusher_internal:subscription_succeeded', name, JSON.stringify({ presence: { ids, hash, count: ids.length } })));
    client.socket.send(frame(PRESENCE_EVENTS.members, name, JSON.stringify({ members })));
  }

  private memberUpdated(name: string, userId: string, member: Member): void {
    this.toSubscribers(name, frame(PRESENCE_EVENTS.memberUpdated, name, JSON.stringify({ user_id: userId, member })));
  }

  private toSubscribers(name: string, json: string, except?: PusherClient): void {
    const set = this.subscribers.get(name);
    if (!set) return;
    for (const client of set) if (client !== except) client.socket.send(json);
  }

  // Queries (the HTTP API) -----------------------------------------------------------------------
  // In a cluster a node holds only the channels its clients see: a presence channel's members are
  // brought here first (followed for a while, as the native HTTP API does), and the other channels
  // come from every node's list in the shared state.

  /** Visible members of a Presence channel, by id: the same answer from every node. */
  async members(channel: string): Promise<string[]> {
    await this.engine.replication.prepareChannel(channel);
    return this.visibleMembers(channel).sort();
  }

  private visibleMembers(channel: string): string[] {
    const found = this.engine.state.channels.get(channel);
    if (!found) return [];
    const ids: string[] = [];
    for (const [userId, member] of found.members) if (member.user.announcedVisible) ids.push(userId);
    return ids;
  }

  async channelInfo(channel: PusherChannel): Promise<ChannelInfo> {
    const subscriptionCount = this.cluster ? await this.cluster.readSubscriptionCount(channel.name) : (this.subscribers.get(channel.name)?.size ?? 0);
    if (channel.kind !== 'presence') return { occupied: subscriptionCount > 0, subscriptionCount };
    const userCount = (await this.members(channel.base)).length;
    return { occupied: userCount > 0, userCount, subscriptionCount };
  }

  /** Occupied channels: presence channels by their visible members, the others by their subscribers. */
  async occupiedChannels(prefix: string): Promise<string[]> {
    const names = new Set<string>();
    const presence = new Set<string>();
    const counts = this.cluster ? await this.cluster.readChannels() : new Map([...this.subscribers].map(([name, set]) => [name, set.size]));
    for (const [name, count] of counts) {
      if (!name.startsWith(prefix)) continue;
      if (name.startsWith(PRESENCE_PREFIX)) presence.add(name.slice(PRESENCE_PREFIX.length));
      else if (count > 0) names.add(name);
    }
    for (const channel of this.engine.state.channels.keys()) if (presenceChannelName(channel).startsWith(prefix)) presence.add(channel);
    // Other nodes' presence channels are read here first.
    await Promise.all([...presence].map((channel) => this.engine.replication.prepareChannel(channel)));
    for (const channel of presence) if (this.visibleMembers(channel).length > 0) names.add(presenceChannelName(channel));
    return [...names].sort();
  }

  /**
   * This node's count of Pusher subscriptions in a channel, for the cluster's list: 0 for a
   * presence channel with only native sessions here; undefined when nothing of it is here.
   */
  localChannel(name: string): number | undefined {
    const subscribed = this.subscribers.get(name)?.size ?? 0;
    if (subscribed > 0) return subscribed;
    if (!name.startsWith(PRESENCE_PREFIX)) return undefined;
    return this.hasLocalSession(name.slice(PRESENCE_PREFIX.length)) ? 0 : undefined;
  }

  /** Every channel `localChannel` counts. */
  localChannels(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const [name, set] of this.subscribers) counts.set(name, set.size);
    for (const channel of this.engine.state.channels.keys()) {
      const name = presenceChannelName(channel);
      if (!counts.has(name) && this.hasLocalSession(channel)) counts.set(name, 0);
    }
    return counts;
  }

  private hasLocalSession(channel: string): boolean {
    const found = this.engine.state.channels.get(channel);
    if (!found) return false;
    for (const member of found.members.values()) for (const session of member.sessions) if (!session.remote) return true;
    return false;
  }

  /** Ends every session of the user at once, both protocols (`POST /users/:id/terminate_connections`). */
  terminate(userId: string): void {
    this.engine.logout(userId);
  }

  // Liveness -----------------------------------------------------------------------------------

  /**
   * Pusher clients report no user activity: a pusher-js user is active for as long as the
   * connection is open (as on Pusher, where presence is being connected), never idle by timeout.
   */
  private armKeepAlive(): void {
    const every = Math.max(1, Math.floor(this.engine.config.idleTimeoutMs / 2));
    this.keepAlive = this.engine.clock.setTimer(every, () => {
      const staleBefore = this.engine.clock.now() - every;
      for (const client of this.clients) client.keepActive(staleBefore);
      this.armKeepAlive();
    });
  }

  dispose(): void {
    this.engine.clock.clearTimer(this.keepAlive);
    this.keepAlive = undefined;
  }
}
