import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import type { NodeOp, SessionSnapshot } from '../presence/replication.js';
import type { BusMessage, SharedService, LeaseState, NodeState, StoredUser, StoredUserFields } from './shared-service.js';

type Handlers = Parameters<SharedService['connect']>[0];
type Client = Redis | Cluster;

/**
 * Key layout. Every key a script touches at once shares a hash tag, so each script would run
 * unchanged on Redis Cluster: the node registry and the nodes' session hashes share `{prefix}`;
 * a user record is alone in its own slot `{user id}`.
 */
export function redisKeys(prefix = 'presence') {
  return {
    registry: `{${prefix}}:nodes`,
    nodeState: (nodeId: string) => `{${prefix}}:node:${nodeId}`,
    user: (userId: string) => `${prefix}:user:{${userId}}`,
    bus: `${prefix}:bus`,
  };
}

const SCRIPTS = {
  lease: 1,
  drop_node: 2,
  register_node: 2,
  write_ops: 2,
  write_user: 1,
  raise_last_seen: 1,
  restore_user: 1,
} as const;

/** The Lua scripts ship beside the compiled code (`lua/` in the package), one file each. */
function scriptDirectory(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'lua', 'lease.lua'))) return join(dir, 'lua');
    dir = dirname(dir);
  }
  throw new Error('the Lua scripts (lua/*.lua) are missing from the server package');
}

interface ScriptCommands {
  lease(registry: string, nodeId: string, ttlMs: number): Promise<[string, number, string[], string[]]>;
  drop_node(registry: string, nodeState: string, ...args: string[]): Promise<number>;
  register_node(registry: string, nodeState: string, ...args: string[]): Promise<number>;
  write_ops(registry: string, nodeState: string, ...args: string[]): Promise<number>;
  write_user(user: string, ...args: string[]): Promise<number>;
  raise_last_seen(user: string, bus: string, userId: string, at: string): Promise<number>;
  restore_user(user: string, ...args: string[]): Promise<number>;
}

export interface RedisServiceOptions {
  /** A `redis://` URL; or pass `client` (a Redis or Cluster instance) to configure it yourself. */
  url?: string;
  client?: Client;
  /** Key prefix, for several clusters sharing one Redis. @default 'presence' */
  prefix?: string;
}

/**
 * The only code that speaks Redis. Two connections: one for commands (auto-pipelined, so the
 * writes of one tick go out as one round trip), one subscribed to the bus. Commands fail fast
 * while Redis is away instead of queueing: the cluster link rewrites its whole state on return.
 */
export class RedisService implements SharedService {
  private readonly commands: Client;
  private readonly subscriber: Client;
  private readonly keys: ReturnType<typeof redisKeys>;
  private handlers?: Handlers;
  private wasReady = false;
  private lost = false;
  private closing = false;

  constructor(options: RedisServiceOptions) {
    const shared: RedisOptions = {
      lazyConnect: true,
      enableAutoPipelining: true,
      // Retry forever, at most a second apart: Redis coming back must be noticed quickly. Jittered,
      // so the nodes that lost Redis together do not all come back in the same instant.
      retryStrategy: (attempt) => Math.round(Math.min(50 * attempt, 1000) * (0.5 + Math.random() / 2)),
      maxRetriesPerRequest: 1,
    };
    if (options.client) {
      this.commands = options.client;
    } else if (options.url) {
      this.commands = new Redis(options.url, { ...shared, enableOfflineQueue: false });
    } else {
      throw new Error('RedisService needs a url or a client');
    }
    this.subscriber = this.commands.duplicate();
    this.keys = redisKeys(options.prefix);
    const directory = scriptDirectory();
    for (const [name, numberOfKeys] of Object.entries(SCRIPTS)) {
      // ioredis runs these with EVALSHA and falls back to EVAL (e.g. after Redis restarted).
      this.commands.defineCommand(name, { numberOfKeys, lua: readFileSync(join(directory, `${name}.lua`), 'utf8') });
    }
    for (const client of [this.commands, this.subscriber]) {
      client.on('error', () => {
        // Connection errors surface as disconnects; ioredis keeps retrying.
      });
      client.on('ready', () => this.connectionChanged());
      client.on('close', () => this.connectionChanged());
    }
  }

  private get scripts(): ScriptCommands {
    return this.commands as unknown as ScriptCommands;
  }

  async connect(handlers: Handlers): Promise<void> {
    this.handlers = handlers;
    this.subscriber.on('message', (_channel: string, text: string) => {
      let message: BusMessage;
      try {
        message = JSON.parse(text) as BusMessage;
      } catch {
        return;
      }
      handlers.message(message);
    });
    await Promise.all([this.commands.status === 'wait' ? this.commands.connect() : undefined, this.subscriber.status === 'wait' ? this.subscriber.connect() : undefined]);
    await this.subscriber.subscribe(this.keys.bus);
    this.wasReady = true;
  }

  private connectionChanged(): void {
    if (!this.wasReady || this.closing) return;
    const connected = this.isConnected();
    if (!connected && !this.lost) {
      this.lost = true;
      this.handlers?.disconnected();
    } else if (connected && this.lost) {
      this.lost = false;
      this.handlers?.reconnected();
    }
  }

  isConnected(): boolean {
    return !this.closing && this.commands.status === 'ready' && this.subscriber.status === 'ready';
  }

  async renewLease(nodeId: string, ttlMs: number): Promise<LeaseState> {
    const [now, registered, expired, nodes] = await this.scripts.lease(this.keys.registry, nodeId, ttlMs);
    return { now: Number(now), wasRegistered: registered === 1, expired, nodes };
  }

  async reapNode(nodeId: string): Promise<boolean> {
    return (await this.dropNode(nodeId, true)) === 1;
  }

  async leaseDeadline(nodeId: string): Promise<number | null> {
    const deadline = await this.commands.zscore(this.keys.registry, nodeId);
    return deadline === null ? null : Number(deadline);
  }

  async leave(nodeId: string): Promise<void> {
    await this.dropNode(nodeId, false);
  }

  private dropNode(nodeId: string, onlyIfExpired: boolean): Promise<number> {
    const down: BusMessage = { kind: 'down', node: nodeId };
    return this.scripts.drop_node(this.keys.registry, this.keys.nodeState(nodeId), nodeId, onlyIfExpired ? '1' : '0', this.keys.bus, JSON.stringify(down));
  }

  async registerNode(nodeId: string, ttlMs: number, state: NodeState): Promise<void> {
    const hello: BusMessage = { kind: 'hello', node: nodeId, seq: state.seq };
    const pairs = state.sessions.flatMap((session) => [session.id, JSON.stringify(session)]);
    await this.scripts.register_node(this.keys.registry, this.keys.nodeState(nodeId), nodeId, String(ttlMs), String(state.seq), this.keys.bus, JSON.stringify(hello), ...pairs);
  }

  async writeOps(nodeId: string, seq: number, ops: NodeOp[]): Promise<boolean> {
    // The stored state keeps each session's latest snapshot; within a batch the last op wins.
    const latest = new Map<string, SessionSnapshot | null>();
    for (const op of ops) {
      if (op.op === 'session') latest.set(op.session.id, op.session);
      else if (op.op === 'end') latest.set(op.sessionId, null);
    }
    const upserts: string[] = [];
    const removals: string[] = [];
    for (const [id, snapshot] of latest) {
      if (snapshot) upserts.push(id, JSON.stringify(snapshot));
      else removals.push(id);
    }
    const message: BusMessage = { kind: 'ops', node: nodeId, seq, ops };
    const written = await this.scripts.write_ops(
      this.keys.registry,
      this.keys.nodeState(nodeId),
      nodeId,
      String(seq),
      this.keys.bus,
      JSON.stringify(message),
      String(upserts.length / 2),
      ...upserts,
      ...removals,
    );
    return written === 1;
  }

  async readNode(nodeId: string): Promise<NodeState | null> {
    const stored = await this.commands.hgetall(this.keys.nodeState(nodeId));
    if (stored['~seq'] === undefined) return null;
    const sessions: SessionSnapshot[] = [];
    for (const [field, value] of Object.entries(stored)) {
      if (field !== '~seq') sessions.push(JSON.parse(value) as SessionSnapshot);
    }
    return { seq: Number(stored['~seq']), sessions };
  }

  async readNodeSeqs(nodeIds: string[]): Promise<Map<string, number>> {
    const seqs = await Promise.all(nodeIds.map((node) => this.commands.hget(this.keys.nodeState(node), '~seq')));
    const result = new Map<string, number>();
    nodeIds.forEach((node, i) => {
      if (seqs[i] !== null) result.set(node, Number(seqs[i]));
    });
    return result;
  }

  async writeUser(nodeId: string, userId: string, fields: StoredUserFields, announce: boolean): Promise<void> {
    const pairs = Object.entries(fields).flat();
    await this.scripts.write_user(this.keys.user(userId), this.keys.bus, nodeId, userId, announce ? '1' : '0', ...pairs);
  }

  async raiseLastSeen(userId: string, at: number): Promise<void> {
    await this.scripts.raise_last_seen(this.keys.user(userId), this.keys.bus, userId, String(at));
  }

  async restoreUser(userId: string, fields: StoredUserFields): Promise<void> {
    await this.scripts.restore_user(this.keys.user(userId), ...Object.entries(fields).flat());
  }

  async readUsers(userIds: string[]): Promise<Map<string, StoredUser | null>> {
    // One HGETALL per user, auto-pipelined into one round trip (and spread over slots on a Cluster).
    const stored = await Promise.all(userIds.map((id) => this.commands.hgetall(this.keys.user(id))));
    const result = new Map<string, StoredUser | null>();
    userIds.forEach((id, i) => {
      const { '~v': version, ...fields } = stored[i];
      result.set(id, Object.keys(fields).length === 0 ? null : { version: Number(version ?? 0), fields });
    });
    return result;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.subscriber.disconnect();
    this.commands.disconnect();
  }
}
