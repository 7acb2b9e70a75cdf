import type { NodeOp, SessionSnapshot } from '../presence/replication.js';
import type { WebhookGuard, WebhookWrite } from '../webhooks/cluster-queues.js';
import { forwardedJson, type ChannelEntry, type ForwardedWebhook, type Interest, type LeaseState, type NodeStats, type PusherChannelService, type ShardMessage, type SharedService, type StoredSession, type StoredUserFields, type UserShard } from './shared-service.js';

type Handlers = Parameters<SharedService['connect']>[0];

/** Fields a write never moves back (see SharedService.writeUser). */
const FORWARD_ONLY: ReadonlySet<string> = new Set(['lastSeenAt', 'lastActiveAt']);

interface UserEntry {
  /** The shard's sequence ('~v' in Redis): one per message on the user's topic. */
  seq: number;
  fields: StoredUserFields;
  sessions: Map<string, StoredSession>;
}

/**
 * An in-process stand-in for the shared service: several nodes in one process share it, as they
 * would share Redis. It runs the same steps atomically, delivers a shard's messages only to the
 * nodes that follow it and in the order its steps ran, and can be taken down and brought back
 * (empty) to test recovery. Its semantics are the contract the Redis service is held to.
 */
export class MemoryHub {
  private readonly leases = new Map<string, number>();
  private readonly reaping = new Map<string, number>();
  private readonly nodeStats = new Map<string, NodeStats>();
  private readonly nodeIndex = new Map<string, Set<string>>();
  private readonly nodeOnline = new Map<string, Set<string>>();
  private readonly users = new Map<string, UserEntry>();
  private readonly channels = new Map<string, Map<string, ChannelEntry>>();
  private readonly connected = new Set<MemoryService>();
  /** Each node's Pusher channels and its subscriptions in each (see PusherChannelService). */
  private readonly pusherChannels = new Map<string, Map<string, number>>();
  /** Webhook queues by `target \n key`, forward lists by user, pending index and leases by target. */
  private readonly webhookQueues = new Map<string, string[]>();
  private readonly forwarded = new Map<string, string[]>();
  private readonly webhookPending = new Map<string, Set<string>>();
  private readonly webhookLeases = new Map<string, { node: string; until: number }>();
  private up = true;
  /** Counts outages, so a node's turn to come back from an earlier one is not taken in a later one. */
  private returns = 0;
  /** Live nodes of the layout before sharding, as a test sets them. */
  previousLayoutNodes: string[] = [];
  /** Messages published, per kind of topic: what a test of routing counts. */
  readonly published = { user: 0, channel: 0, registry: 0 };

  constructor(readonly now: () => number = Date.now) {}

  get isUp(): boolean {
    return this.up;
  }

  /** The service stops answering: every node sees a disconnect. */
  goDown(): void {
    this.up = false;
    this.returns += 1;
    for (const service of this.connected) {
      service.away = true;
      service.handlers?.disconnected();
    }
  }

  /**
   * The service answers again; `empty` is a restart that lost all data. `staggerMs`: the nodes
   * reconnect one after another, this far apart, in the order they connected first, as Redis
   * clients do on their own retry schedules: what the first one back publishes is lost for the
   * others, which must read it instead.
   */
  comeBack(options: { empty: boolean; staggerMs?: number }): void {
    if (options.empty) {
      this.leases.clear();
      this.reaping.clear();
      this.nodeStats.clear();
      this.nodeIndex.clear();
      this.nodeOnline.clear();
      this.users.clear();
      this.channels.clear();
      this.pusherChannels.clear();
      this.webhookQueues.clear();
      this.forwarded.clear();
      this.webhookPending.clear();
      this.webhookLeases.clear();
    }
    this.up = true;
    const returns = ++this.returns;
    const reconnect = (service: MemoryService) => {
      if (returns !== this.returns || !this.connected.has(service)) return;
      service.away = false;
      service.handlers?.reconnected();
    };
    const staggerMs = options.staggerMs ?? 0;
    [...this.connected].forEach((service, i) => (staggerMs > 0 ? setTimeout(() => reconnect(service), i * staggerMs) : reconnect(service)));
  }

  /** Every key the service holds, named as the Redis layout would name them (for leak checks). */
  keys(): string[] {
    return [
      ...(this.leases.size > 0 ? ['nodes'] : []),
      ...(this.reaping.size > 0 ? ['reaping'] : []),
      ...(this.nodeStats.size > 0 ? ['node-stats'] : []),
      ...[...this.nodeIndex.keys()].map((node) => `node:${node}:users`),
      ...[...this.nodeOnline.keys()].map((node) => `node:${node}:online`),
      ...[...this.users].flatMap(([id, user]) => [
        ...(Object.keys(user.fields).length > 0 || user.seq > 0 ? [`user:${id}`] : []),
        ...(user.sessions.size > 0 ? [`user:${id}:sessions`] : []),
      ]),
      ...[...this.channels.keys()].map((name) => `channel:${name}:sessions`),
      ...[...this.pusherChannels.keys()].map((node) => `node:${node}:pusher-channels`),
      ...[...this.webhookQueues.keys()].map((id) => `webhooks:${id.replace('\n', ':')}`),
      ...[...this.forwarded.keys()].map((id) => `user:${id}:webhooks-forward`),
    ];
  }

  /** Every event waiting in a target's queues, by key, for tests. */
  webhookBacklog(target: string): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [id, list] of this.webhookQueues) if (id.startsWith(`${target}\n`)) out.set(id.slice(target.length + 1), [...list]);
    return out;
  }

  /** The sessions a user's shard holds, for tests. */
  storedSessions(userId: string): StoredSession[] {
    return structuredClone([...(this.users.get(userId)?.sessions.values() ?? [])]);
  }

  // The service's steps ------------------------------------------------------------------------

  attach(service: MemoryService): void {
    this.connected.add(service);
  }

  detach(service: MemoryService): void {
    this.connected.delete(service);
  }

  check(): void {
    if (!this.up) throw new Error('shared state unavailable');
  }

  private deliver(to: Iterable<MemoryService>, message: ShardMessage): void {
    // Structured copies: nodes must never share objects, as they would not through a network.
    const copy = structuredClone(message);
    for (const service of to) queueMicrotask(() => service.deliver(structuredClone(copy)));
  }

  private publishToUser(message: Extract<ShardMessage, { user: string; seq: number }>): void {
    this.published.user += 1;
    this.deliver([...this.connected].filter((service) => service.follows('user', message.user)), message);
  }

  private user(userId: string): UserEntry {
    let user = this.users.get(userId);
    if (!user) this.users.set(userId, (user = { seq: 0, fields: {}, sessions: new Map() }));
    return user;
  }

  /** Drops a shard that holds nothing, as Redis drops an empty hash. */
  private tidy(userId: string): void {
    const user = this.users.get(userId);
    if (user && user.sessions.size === 0 && Object.keys(user.fields).length === 0 && user.seq === 0) this.users.delete(userId);
  }

  renewLease(nodeId: string, ttlMs: number, stats: NodeStats): LeaseState {
    this.check();
    const now = this.now();
    const wasRegistered = this.leases.has(nodeId);
    this.leases.set(nodeId, now + ttlMs);
    this.nodeStats.set(nodeId, { ...stats });
    const expired = [...this.leases].filter(([, until]) => until < now).map(([node]) => node);
    return { now, wasRegistered, expired, nodes: [...this.leases.keys()], reaping: [...this.reaping].map(([node, since]) => ({ node, since })) };
  }

  readNodeStats(): Map<string, NodeStats> {
    this.check();
    return structuredClone(this.nodeStats);
  }

  leaseDeadline(nodeId: string): number | null {
    this.check();
    return this.leases.get(nodeId) ?? null;
  }

  dropNode(nodeId: string, onlyIfExpired: boolean): boolean {
    this.check();
    const until = this.leases.get(nodeId);
    if (until === undefined || (onlyIfExpired && until >= this.now())) return false;
    this.leases.delete(nodeId);
    this.nodeStats.delete(nodeId);
    this.reaping.set(nodeId, this.now());
    this.published.registry += 1;
    this.deliver(this.connected, { kind: 'down', node: nodeId });
    return true;
  }

  nodeStatus(nodeId: string): 'live' | 'reaping' | 'gone' {
    this.check();
    return this.leases.has(nodeId) ? 'live' : this.reaping.has(nodeId) ? 'reaping' : 'gone';
  }

  indexUsers(nodeId: string, userIds: string[]): void {
    this.check();
    let index = this.nodeIndex.get(nodeId);
    if (!index) this.nodeIndex.set(nodeId, (index = new Set()));
    for (const id of userIds) index.add(id);
  }

  indexedUsers(nodeId: string): string[] {
    this.check();
    return [...(this.nodeIndex.get(nodeId) ?? [])];
  }

  listOnline(nodeId: string, add: string[], remove: string[]): void {
    this.check();
    let online = this.nodeOnline.get(nodeId);
    if (!online) this.nodeOnline.set(nodeId, (online = new Set()));
    for (const id of add) online.add(id);
    for (const id of remove) online.delete(id);
    if (online.size === 0) this.nodeOnline.delete(nodeId);
  }

  replaceOnline(nodeId: string, userIds: string[]): void {
    this.check();
    if (userIds.length === 0) this.nodeOnline.delete(nodeId);
    else this.nodeOnline.set(nodeId, new Set(userIds));
  }

  readOnline(nodeIds: string[]): string[] {
    this.check();
    const all = new Set<string>();
    for (const node of nodeIds) for (const id of this.nodeOnline.get(node) ?? []) all.add(id);
    return [...all];
  }

  finishReap(nodeId: string): void {
    this.check();
    this.nodeIndex.delete(nodeId);
    this.nodeOnline.delete(nodeId);
    this.reaping.delete(nodeId);
  }

  writeOps(nodeId: string, userId: string, ops: NodeOp[], webhooks?: WebhookWrite): void {
    this.check();
    const user = this.user(userId);
    // As write_ops.lua: `first` counts the sessions these ops do not write.
    const written = new Set(ops.flatMap((op) => (op.op === 'session' ? [op.session.id] : [])));
    const others = [...user.sessions.keys()].filter((id) => !written.has(id)).length;
    applyOpsToSessions(user.sessions, nodeId, ops);
    user.seq += 1;
    this.publishToUser({ kind: 'ops', user: userId, seq: user.seq, node: nodeId, ops });
    if (webhooks) {
      const left = user.sessions.size;
      this.queueWebhooks(userId, webhooks, (guard) => (guard === 'first' ? others === 0 : guard === 'empty' ? left === 0 : true));
    }
    this.tidy(userId);
  }

  /**
   * As lib_webhooks.lua: each event whose guard holds goes to its queues when its key is the
   * user's, or to the user's forward list otherwise; a queue past its bound loses its second element.
   */
  private queueWebhooks(userId: string, webhooks: WebhookWrite, ok: (guard: WebhookGuard) => boolean): void {
    let dropped = 0;
    for (const item of webhooks.items) {
      if (!ok(item.guard)) continue;
      if (item.key === `user:${userId}`) {
        dropped += this.pushWebhooks(item.key, item.targets, [item.entry], webhooks.maxBacklog);
      } else {
        let list = this.forwarded.get(userId);
        if (!list) this.forwarded.set(userId, (list = []));
        list.push(forwardedJson(item));
      }
    }
    if (dropped > 0) webhooks.dropped?.(dropped);
  }

  pushWebhooks(key: string, targets: readonly string[], entries: string[], maxBacklog: number): number {
    this.check();
    let dropped = 0;
    for (const target of targets) {
      const id = `${target}\n${key}`;
      let list = this.webhookQueues.get(id);
      if (!list) this.webhookQueues.set(id, (list = []));
      for (const entry of entries) {
        list.push(entry);
        if (maxBacklog > 0 && list.length > maxBacklog) {
          list.splice(1, 1);
          dropped += 1;
        }
      }
    }
    return dropped;
  }

  forwardedWebhooks(userId: string): ForwardedWebhook[] {
    this.check();
    return (this.forwarded.get(userId) ?? []).map((raw) => ({ raw, ...(JSON.parse(raw) as Omit<ForwardedWebhook, 'raw'>) }));
  }

  dropForwarded(userId: string, raws: string[]): void {
    this.check();
    const list = this.forwarded.get(userId);
    if (!list) return;
    for (const raw of raws) {
      const at = list.indexOf(raw);
      if (at !== -1) list.splice(at, 1);
    }
    if (list.length === 0) this.forwarded.delete(userId);
  }

  markWebhooksPending(target: string, keys: string[]): void {
    this.check();
    let set = this.webhookPending.get(target);
    if (!set) this.webhookPending.set(target, (set = new Set()));
    for (const key of keys) set.add(key);
  }

  pendingWebhookKeys(target: string): string[] {
    this.check();
    return [...(this.webhookPending.get(target) ?? [])];
  }

  settleWebhookKey(target: string, key: string): boolean {
    this.check();
    const id = `${target}\n${key}`;
    const list = this.webhookQueues.get(id);
    if (list && list.length > 0) return true;
    this.webhookQueues.delete(id);
    this.webhookPending.get(target)?.delete(key);
    return false;
  }

  webhookHeads(target: string, keys: string[]): { head: string | undefined; length: number }[] {
    this.check();
    return keys.map((key) => {
      const list = this.webhookQueues.get(`${target}\n${key}`) ?? [];
      return { head: list[0], length: list.length };
    });
  }

  popWebhook(target: string, key: string, entry: string): boolean {
    this.check();
    const list = this.webhookQueues.get(`${target}\n${key}`);
    if (!list || list[0] !== entry) return false;
    list.shift();
    return true;
  }

  webhookLease(target: string, nodeId: string, ttlMs: number, hold: boolean): boolean {
    this.check();
    const lease = this.webhookLeases.get(target);
    const live = lease && lease.until > this.now() ? lease : undefined;
    if (!hold) {
      if (live?.node === nodeId) this.webhookLeases.delete(target);
      return false;
    }
    if (live && live.node !== nodeId) return false;
    this.webhookLeases.set(target, { node: nodeId, until: this.now() + ttlMs });
    return true;
  }

  scanWebhooks(target: string): { keys: string[]; forwarding: string[] } {
    this.check();
    const keys = [...this.webhookQueues].filter(([id, list]) => id.startsWith(`${target}\n`) && list.length > 0).map(([id]) => id.slice(target.length + 1));
    return { keys, forwarding: [...this.forwarded.keys()] };
  }

  reapUser(nodeId: string, userId: string, lastSeenAt: number): number {
    this.check();
    const user = this.users.get(userId);
    if (!user) return 0;
    let marked = 0;
    let attached = false;
    for (const stored of user.sessions.values()) {
      if (stored.node !== nodeId || stored.orphanedAt !== undefined) continue;
      stored.orphanedAt = this.now();
      marked += 1;
      if (stored.session.attached) attached = true;
    }
    if (marked === 0) return 0;
    // As reap_user.lua: a connected user was online until the dead node's last renewal.
    if (attached && manualStatus(user.fields.manual) !== 'invisible' && lastSeenAt > 0) {
      const stored = user.fields.lastSeenAt ? Number(user.fields.lastSeenAt) : undefined;
      if (stored === undefined || stored < lastSeenAt) user.fields.lastSeenAt = String(lastSeenAt);
    }
    user.seq += 1;
    this.publishToUser({ kind: 'reaped', user: userId, seq: user.seq, node: nodeId, fields: { ...user.fields } });
    return marked;
  }

  expireOrphans(nodeId: string, userId: string, offlineDelayMs: number, webhooks?: WebhookWrite): SessionSnapshot[] {
    this.check();
    const user = this.users.get(userId);
    if (!user) return [];
    const removed: SessionSnapshot[] = [];
    for (const [id, stored] of user.sessions) {
      if (stored.node !== nodeId || stored.orphanedAt === undefined || stored.orphanedAt + offlineDelayMs > this.now()) continue;
      removed.push(stored.session);
      user.sessions.delete(id);
    }
    if (webhooks && removed.length > 0) {
      const left = user.sessions.size;
      this.queueWebhooks(userId, webhooks, (guard) => (guard === 'empty' ? left === 0 : true));
    }
    this.tidy(userId);
    return structuredClone(removed);
  }

  readUser(userId: string): UserShard {
    this.check();
    const user = this.users.get(userId);
    if (!user) return { seq: 0, fields: null, sessions: [] };
    return structuredClone({ seq: user.seq, fields: Object.keys(user.fields).length > 0 ? user.fields : null, sessions: [...user.sessions.values()] });
  }

  writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean, webhooks?: WebhookWrite): void {
    this.check();
    const user = this.user(userId);
    let changed = false;
    for (const [field, value] of Object.entries(fields)) {
      // As in write_user.lua: the activity timestamps only move forward.
      const stored = FORWARD_ONLY.has(field) && user.fields[field] ? Number(user.fields[field]) : undefined;
      if (stored === undefined || (Number(value) || 0) > stored) {
        if (!FORWARD_ONLY.has(field) && field !== '~cause' && user.fields[field] !== value) changed = true;
        user.fields[field] = value;
      }
    }
    if (webhooks) this.queueWebhooks(userId, webhooks, () => changed || !webhooks.onlyIfChanged);
    if (!announce) return;
    user.seq += 1;
    this.publishToUser({ kind: 'record', user: userId, seq: user.seq, node: nodeId, fields: { ...user.fields } });
  }

  restoreUser(userId: string, fields: StoredUserFields): void {
    this.check();
    const user = this.user(userId);
    for (const [field, value] of Object.entries(fields)) if (!(field in user.fields)) user.fields[field] = value;
  }

  addToChannel(name: string, entries: ChannelEntry[], reportFirst = false): string[] {
    this.check();
    let channel = this.channels.get(name);
    if (!channel) this.channels.set(name, (channel = new Map()));
    const announced = new Set<string>();
    // As add_to_channel.lua: the users whose entry found no other user's listed.
    const first: string[] = [];
    const users = new Set([...channel.values()].map((entry) => entry.userId));
    for (const entry of entries) {
      if (reportFirst && ![...users].some((user) => user !== entry.userId) && !users.has(entry.userId)) first.push(entry.userId);
      users.add(entry.userId);
      const before = channel.get(entry.sessionId);
      channel.set(entry.sessionId, { ...entry });
      if (before?.userId === entry.userId && before.node === entry.node) continue;
      if (announced.has(entry.userId)) continue;
      announced.add(entry.userId);
      this.published.channel += 1;
      this.deliver(
        [...this.connected].filter((service) => service.follows('channel', name)),
        { kind: 'member', channel: name, user: entry.userId },
      );
    }
    return first;
  }

  channelWebhooks(name: string, node: string, userId: string, sessionIds: string[], webhooks: WebhookWrite): void {
    this.removeFromChannel(name, node, sessionIds);
    const listed = [...(this.channels.get(name)?.values() ?? [])];
    const alone = !listed.some((entry) => entry.userId !== userId);
    const gone = !listed.some((entry) => entry.userId === userId);
    let dropped = 0;
    for (const item of webhooks.items) {
      if ((item.guard === 'occupied' || item.guard === 'vacated') && !alone) continue;
      if (item.guard === 'left' && !gone) continue;
      if (item.guard === 'emptied' && listed.length > 0) continue;
      dropped += this.pushWebhooks(item.key, item.targets, [item.entry], webhooks.maxBacklog);
    }
    if (dropped > 0) webhooks.dropped?.(dropped);
  }

  removeFromChannel(name: string, node: string, sessionIds: string[]): void {
    this.check();
    const channel = this.channels.get(name);
    if (!channel) return;
    for (const id of sessionIds) if (channel.get(id)?.node === node) channel.delete(id);
    if (channel.size === 0) this.channels.delete(name);
  }

  readChannel(name: string): ChannelEntry[] {
    this.check();
    return structuredClone([...(this.channels.get(name)?.values() ?? [])]);
  }

  // Pusher channels (no expiry here: a test's crashed node keeps its list, filtered out by the readers)

  publishPusherMessage(channel: string, payload: string): void {
    this.check();
    for (const service of this.connected) queueMicrotask(() => service.receivePusherMessage(channel, payload));
  }

  writePusherChannels(nodeId: string, set: Record<string, number>, remove: string[], whole: boolean): void {
    this.check();
    let list = this.pusherChannels.get(nodeId);
    if (!list || whole) this.pusherChannels.set(nodeId, (list = new Map()));
    for (const name of remove) list.delete(name);
    for (const [name, count] of Object.entries(set)) list.set(name, count);
    if (list.size === 0) this.pusherChannels.delete(nodeId);
  }

  readPusherChannels(nodeIds: string[]): Record<string, number>[] {
    this.check();
    return nodeIds.map((node) => Object.fromEntries(this.pusherChannels.get(node) ?? []));
  }
}

/**
 * A node's ops applied to a user's stored sessions, as write_ops.lua does: a session's snapshot
 * replaces the stored one unless the stored one has moved more often (a late op from a node the
 * session left); only the owner on record ends a session.
 */
export function applyOpsToSessions(sessions: Map<string, StoredSession>, nodeId: string, ops: NodeOp[]): void {
  for (const op of ops) {
    if (op.op === 'session') {
      const stored = sessions.get(op.session.id);
      if (stored && (stored.session.moves ?? 0) > (op.session.moves ?? 0)) continue;
      sessions.set(op.session.id, { node: nodeId, session: structuredClone(op.session) });
    } else if (op.op === 'end') {
      if (sessions.get(op.sessionId)?.node === nodeId) sessions.delete(op.sessionId);
    }
  }
}

/** One node's connection to a MemoryHub. */
export class MemoryService implements SharedService, PusherChannelService {
  handlers?: Handlers;
  /** Set while the service is down, and after it is back until this node's turn to reconnect. */
  away = false;
  private closed = false;
  private readonly followed = { user: new Set<string>(), channel: new Set<string>() };

  constructor(private readonly shared: MemoryHub) {}

  /** The service, as far as this node can reach it: a command fails while this node is away. */
  private get hub(): MemoryHub {
    if (this.away) throw new Error('shared state unavailable');
    return this.shared;
  }

  follows(kind: 'user' | 'channel', id: string): boolean {
    return this.followed[kind].has(id);
  }

  /** How many shards this node follows, for tests of routing. */
  following(): { users: number; channels: number } {
    return { users: this.followed.user.size, channels: this.followed.channel.size };
  }

  async connect(handlers: Handlers): Promise<void> {
    this.handlers = handlers;
    this.hub.attach(this);
  }

  deliver(message: ShardMessage): void {
    if (!this.closed && this.shared.isUp && !this.away) this.handlers?.message(message);
  }

  isConnected(): boolean {
    return !this.closed && this.shared.isUp && !this.away;
  }

  async follow(interest: Interest): Promise<void> {
    // Like a subscription, it survives an outage of the service (the client re-subscribes).
    for (const id of interest.users ?? []) this.followed.user.add(id);
    for (const name of interest.channels ?? []) this.followed.channel.add(name);
  }

  async unfollow(interest: Interest): Promise<void> {
    for (const id of interest.users ?? []) this.followed.user.delete(id);
    for (const name of interest.channels ?? []) this.followed.channel.delete(name);
  }

  async renewLease(nodeId: string, ttlMs: number, stats: NodeStats): Promise<LeaseState> {
    return this.hub.renewLease(nodeId, ttlMs, stats);
  }

  async readNodeStats(): Promise<Map<string, NodeStats>> {
    return this.hub.readNodeStats();
  }

  async leaseDeadline(nodeId: string): Promise<number | null> {
    return this.hub.leaseDeadline(nodeId);
  }

  async dropNode(nodeId: string, onlyIfExpired: boolean): Promise<boolean> {
    return this.hub.dropNode(nodeId, onlyIfExpired);
  }

  async nodeStatus(nodeId: string): Promise<'live' | 'reaping' | 'gone'> {
    return this.hub.nodeStatus(nodeId);
  }

  async indexUsers(nodeId: string, userIds: string[]): Promise<void> {
    this.hub.indexUsers(nodeId, userIds);
  }

  async indexedUsers(nodeId: string): Promise<string[]> {
    return this.hub.indexedUsers(nodeId);
  }

  async listOnline(nodeId: string, add: string[], remove: string[]): Promise<void> {
    this.hub.listOnline(nodeId, add, remove);
  }

  async replaceOnline(nodeId: string, userIds: string[]): Promise<void> {
    this.hub.replaceOnline(nodeId, userIds);
  }

  async readOnline(nodeIds: string[]): Promise<string[]> {
    return this.hub.readOnline(nodeIds);
  }

  async finishReap(nodeId: string): Promise<void> {
    this.hub.finishReap(nodeId);
  }

  async writeOps(nodeId: string, userId: string, ops: NodeOp[], webhooks?: WebhookWrite): Promise<void> {
    this.hub.writeOps(nodeId, userId, ops, webhooks);
  }

  async reapUser(nodeId: string, userId: string, lastSeenAt: number): Promise<number> {
    return this.hub.reapUser(nodeId, userId, lastSeenAt);
  }

  async expireOrphans(nodeId: string, userId: string, offlineDelayMs: number, webhooks?: WebhookWrite): Promise<SessionSnapshot[]> {
    return this.hub.expireOrphans(nodeId, userId, offlineDelayMs, webhooks);
  }

  async readUsers(userIds: string[]): Promise<Map<string, UserShard>> {
    return new Map(userIds.map((id) => [id, this.hub.readUser(id)]));
  }

  async readSeqs(userIds: string[]): Promise<Map<string, number>> {
    return new Map(userIds.map((id) => [id, this.hub.readUser(id).seq]));
  }

  async writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean, webhooks?: WebhookWrite): Promise<void> {
    this.hub.writeUser(nodeId, userId, fields, announce, webhooks);
  }

  async enqueueWebhooks(key: string, targets: readonly string[], entries: string[], maxBacklog: number): Promise<number> {
    return this.hub.pushWebhooks(key, targets, entries, maxBacklog);
  }

  async forwardedWebhooks(userId: string): Promise<ForwardedWebhook[]> {
    return this.hub.forwardedWebhooks(userId);
  }

  async dropForwarded(userId: string, raws: string[]): Promise<void> {
    this.hub.dropForwarded(userId, raws);
  }

  async markWebhooksPending(target: string, keys: string[]): Promise<void> {
    this.hub.markWebhooksPending(target, keys);
  }

  async pendingWebhookKeys(target: string): Promise<string[]> {
    return this.hub.pendingWebhookKeys(target);
  }

  async settleWebhookKey(target: string, key: string): Promise<boolean> {
    return this.hub.settleWebhookKey(target, key);
  }

  async webhookHeads(target: string, keys: string[]): Promise<{ head: string | undefined; length: number }[]> {
    return this.hub.webhookHeads(target, keys);
  }

  async popWebhook(target: string, key: string, entry: string): Promise<boolean> {
    return this.hub.popWebhook(target, key, entry);
  }

  async webhookLease(target: string, nodeId: string, ttlMs: number, hold: boolean): Promise<boolean> {
    return this.hub.webhookLease(target, nodeId, ttlMs, hold);
  }

  async scanWebhooks(target: string): Promise<{ keys: string[]; forwarding: string[] }> {
    return this.hub.scanWebhooks(target);
  }

  async restoreUser(userId: string, fields: StoredUserFields): Promise<void> {
    this.hub.restoreUser(userId, fields);
  }

  async addToChannel(channel: string, entries: ChannelEntry[], reportFirst?: boolean): Promise<string[]> {
    return this.hub.addToChannel(channel, entries, reportFirst);
  }

  async channelWebhooks(channel: string, node: string, userId: string, sessionIds: string[], webhooks: WebhookWrite): Promise<void> {
    this.hub.channelWebhooks(channel, node, userId, sessionIds, webhooks);
  }

  async removeFromChannel(channel: string, node: string, sessionIds: string[]): Promise<void> {
    this.hub.removeFromChannel(channel, node, sessionIds);
  }

  async readChannel(channel: string): Promise<ChannelEntry[]> {
    return this.hub.readChannel(channel);
  }

  async previousLayoutNodes(): Promise<string[]> {
    this.hub.check();
    return [...this.shared.previousLayoutNodes];
  }

  // Pusher channels ------------------------------------------------------------------------------

  private pusherHandler?: (payload: string) => void;
  private readonly pusherFollowed = new Set<string>();

  onPusherMessage(handler: (payload: string) => void): void {
    this.pusherHandler = handler;
  }

  async followPusherChannels(channels: string[]): Promise<void> {
    for (const name of channels) this.pusherFollowed.add(name);
  }

  async unfollowPusherChannels(channels: string[]): Promise<void> {
    for (const name of channels) this.pusherFollowed.delete(name);
  }

  /** For the hub: a message of a Pusher channel, delivered while this node follows it. */
  receivePusherMessage(channel: string, payload: string): void {
    if (!this.closed && this.shared.isUp && !this.away && this.pusherFollowed.has(channel)) this.pusherHandler?.(payload);
  }

  async publishPusherMessage(channel: string, payload: string): Promise<void> {
    this.hub.publishPusherMessage(channel, payload);
  }

  async writePusherChannels(nodeId: string, set: Record<string, number>, remove: string[], whole: boolean): Promise<void> {
    this.hub.writePusherChannels(nodeId, set, remove, whole);
  }

  async readPusherChannels(nodeIds: string[]): Promise<Record<string, number>[]> {
    return this.hub.readPusherChannels(nodeIds);
  }

  async readPusherChannel(nodeIds: string[], channel: string): Promise<number> {
    return this.hub.readPusherChannels(nodeIds).reduce((sum, list) => sum + (list[channel] ?? 0), 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.shared.detach(this);
  }
}

/** The manual status in a stored `manual` field, as the Lua scripts read it (unreadable: none). */
function manualStatus(json: string | undefined): unknown {
  if (json === undefined) return undefined;
  try {
    return (JSON.parse(json) as { status?: unknown } | null)?.status;
  } catch {
    return undefined;
  }
}
