import type { NodeOp, SessionSnapshot } from '../presence/replication.js';
import type { BusMessage, SharedService, LeaseState, NodeState, StoredUser, StoredUserFields } from './shared-service.js';

type Handlers = Parameters<SharedService['connect']>[0];

/** Fields a write never moves back (see ClusterTransport.writeUser). */
const FORWARD_ONLY: ReadonlySet<string> = new Set(['lastSeenAt', 'lastActiveAt']);

/**
 * An in-process stand-in for the shared service: several nodes in one process share it, as they
 * would share Redis. It runs the same steps atomically, delivers messages in the same order, and
 * can be taken down and brought back (empty) to test recovery. Tests use it to run the cluster
 * logic without a network; its semantics are the contract the Redis transport is held to.
 */
export class MemoryHub {
  private readonly leases = new Map<string, number>();
  private readonly nodeStates = new Map<string, { seq: number; sessions: Map<string, SessionSnapshot> }>();
  private readonly users = new Map<string, StoredUser>();
  private readonly connected = new Set<MemoryService>();
  private up = true;
  /** Counts outages, so a node's turn to come back from an earlier one is not taken in a later one. */
  private returns = 0;

  constructor(readonly now: () => number = Date.now) {}

  get isUp(): boolean {
    return this.up;
  }

  /** The service stops answering: every node sees a disconnect. */
  goDown(): void {
    this.up = false;
    this.returns += 1;
    for (const transport of this.connected) {
      transport.away = true;
      transport.handlers?.disconnected();
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
      this.nodeStates.clear();
      this.users.clear();
    }
    this.up = true;
    const returns = ++this.returns;
    const reconnect = (transport: MemoryService) => {
      if (returns !== this.returns || !this.connected.has(transport)) return;
      transport.away = false;
      transport.handlers?.reconnected();
    };
    const staggerMs = options.staggerMs ?? 0;
    [...this.connected].forEach((transport, i) => (staggerMs > 0 ? setTimeout(() => reconnect(transport), i * staggerMs) : reconnect(transport)));
  }

  /** Every key the service holds, named as the Redis layout would name them (for leak checks). */
  keys(): string[] {
    return [
      ...(this.leases.size > 0 ? ['nodes'] : []),
      ...[...this.nodeStates.keys()].map((node) => `node:${node}`),
      ...[...this.users.keys()].map((id) => `user:${id}`),
    ];
  }

  // The service's steps ------------------------------------------------------------------------

  attach(transport: MemoryService): void {
    this.connected.add(transport);
  }

  detach(transport: MemoryService): void {
    this.connected.delete(transport);
  }

  check(): void {
    if (!this.up) throw new Error('shared state unavailable');
  }

  publish(message: BusMessage): void {
    // Structured copies: nodes must never share objects, as they would not through a network.
    const copy = structuredClone(message);
    for (const transport of this.connected) queueMicrotask(() => transport.deliver(structuredClone(copy)));
  }

  renewLease(nodeId: string, ttlMs: number): LeaseState {
    this.check();
    const now = this.now();
    const wasRegistered = this.leases.has(nodeId);
    this.leases.set(nodeId, now + ttlMs);
    const expired = [...this.leases].filter(([, until]) => until < now).map(([node]) => node);
    return { now, wasRegistered, expired, nodes: [...this.leases.keys()] };
  }

  dropNode(nodeId: string, onlyIfExpired: boolean): boolean {
    this.check();
    const until = this.leases.get(nodeId);
    if (until === undefined || (onlyIfExpired && until >= this.now())) return false;
    this.leases.delete(nodeId);
    this.nodeStates.delete(nodeId);
    this.publish({ kind: 'down', node: nodeId });
    return true;
  }

  registerNode(nodeId: string, ttlMs: number, state: NodeState): void {
    this.check();
    this.nodeStates.set(nodeId, { seq: state.seq, sessions: new Map(state.sessions.map((s) => [s.id, structuredClone(s)])) });
    this.leases.set(nodeId, this.now() + ttlMs);
    this.publish({ kind: 'hello', node: nodeId, seq: state.seq });
  }

  writeOps(nodeId: string, seq: number, ops: NodeOp[]): boolean {
    this.check();
    if (!this.leases.has(nodeId)) return false;
    let state = this.nodeStates.get(nodeId);
    if (!state) this.nodeStates.set(nodeId, (state = { seq, sessions: new Map() }));
    state.seq = seq;
    for (const op of ops) {
      if (op.op === 'session') state.sessions.set(op.session.id, structuredClone(op.session));
      else if (op.op === 'end') state.sessions.delete(op.sessionId);
    }
    this.publish({ kind: 'ops', node: nodeId, seq, ops });
    return true;
  }

  readNode(nodeId: string): NodeState | null {
    this.check();
    const state = this.nodeStates.get(nodeId);
    return state ? { seq: state.seq, sessions: structuredClone([...state.sessions.values()]) } : null;
  }

  writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean): void {
    this.check();
    const user = this.users.get(userId) ?? { version: 0, fields: {} };
    for (const [field, value] of Object.entries(fields)) {
      // As in write_user.lua: the activity timestamps only move forward.
      const stored = FORWARD_ONLY.has(field) && user.fields[field] ? Number(user.fields[field]) : undefined;
      if (stored === undefined || (Number(value) || 0) > stored) user.fields[field] = value;
    }
    this.users.set(userId, user);
    if (!announce) return;
    user.version += 1;
    this.publish({ kind: 'user', node: nodeId, userId, version: user.version, fields: { ...user.fields } });
  }

  leaseDeadline(nodeId: string): number | null {
    this.check();
    return this.leases.get(nodeId) ?? null;
  }

  raiseLastSeen(userId: string, at: number): void {
    this.check();
    const user = this.users.get(userId) ?? { version: 0, fields: {} };
    if (user.fields.manual !== undefined && manualStatus(user.fields.manual) === 'invisible') return;
    const stored = user.fields.lastSeenAt ? Number(user.fields.lastSeenAt) : undefined;
    if (stored === undefined || stored < at) user.fields.lastSeenAt = String(at);
    // Published even when the stored value was later: it came from quiet writes nobody was told of.
    user.version += 1;
    this.users.set(userId, user);
    this.publish({ kind: 'user', node: '', userId, version: user.version, fields: { ...user.fields } });
  }

  restoreUser(userId: string, fields: StoredUserFields): void {
    this.check();
    if (!this.users.has(userId)) this.users.set(userId, { version: 1, fields: { ...fields } });
  }

  readUser(userId: string): StoredUser | null {
    this.check();
    const user = this.users.get(userId);
    return user ? structuredClone(user) : null;
  }
}

/** One node's connection to a MemoryHub. */
export class MemoryService implements SharedService {
  handlers?: Handlers;
  /** Set while the service is down, and after it is back until this node's turn to reconnect. */
  away = false;
  private closed = false;

  constructor(private readonly shared: MemoryHub) {}

  /** The service, as far as this node can reach it: a command fails while this node is away. */
  private get hub(): MemoryHub {
    if (this.away) throw new Error('shared state unavailable');
    return this.shared;
  }

  async connect(handlers: Handlers): Promise<void> {
    this.handlers = handlers;
    this.hub.attach(this);
  }

  deliver(message: BusMessage): void {
    if (!this.closed && this.shared.isUp && !this.away) this.handlers?.message(message);
  }

  isConnected(): boolean {
    return !this.closed && this.shared.isUp && !this.away;
  }

  async renewLease(nodeId: string, ttlMs: number): Promise<LeaseState> {
    return this.hub.renewLease(nodeId, ttlMs);
  }

  async reapNode(nodeId: string): Promise<boolean> {
    return this.hub.dropNode(nodeId, true);
  }

  async leaseDeadline(nodeId: string): Promise<number | null> {
    return this.hub.leaseDeadline(nodeId);
  }

  async leave(nodeId: string): Promise<void> {
    this.hub.dropNode(nodeId, false);
  }

  async registerNode(nodeId: string, ttlMs: number, state: NodeState): Promise<void> {
    this.hub.registerNode(nodeId, ttlMs, state);
  }

  async writeOps(nodeId: string, seq: number, ops: NodeOp[]): Promise<boolean> {
    return this.hub.writeOps(nodeId, seq, ops);
  }

  async readNode(nodeId: string): Promise<NodeState | null> {
    return this.hub.readNode(nodeId);
  }

  async readNodeSeqs(nodeIds: string[]): Promise<Map<string, number>> {
    const seqs = new Map<string, number>();
    for (const node of nodeIds) {
      const state = this.hub.readNode(node);
      if (state) seqs.set(node, state.seq);
    }
    return seqs;
  }

  async writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean): Promise<void> {
    this.hub.writeUser(nodeId, userId, fields, announce);
  }

  async raiseLastSeen(userId: string, at: number): Promise<void> {
    this.hub.raiseLastSeen(userId, at);
  }

  async restoreUser(userId: string, fields: StoredUserFields): Promise<void> {
    this.hub.restoreUser(userId, fields);
  }

  async readUsers(userIds: string[]): Promise<Map<string, StoredUser | null>> {
    return new Map(userIds.map((id) => [id, this.hub.readUser(id)]));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.shared.detach(this);
  }
}

/** The manual status in a stored `manual` field, as the Lua scripts read it (unreadable: none). */
function manualStatus(json: string): unknown {
  try {
    return (JSON.parse(json) as { status?: unknown } | null)?.status;
  } catch {
    return undefined;
  }
}
