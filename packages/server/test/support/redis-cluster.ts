import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './redis-server.js';

const run = promisify(execFile);

/** Every redis-server a test started and has not stopped: killed if the test process exits or is ended first. */
const running = new Set<ChildProcess>();
const killAll = () => {
  for (const child of running) child.kill('SIGKILL');
};
process.once('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    // The default action, now that this listener is gone.
    process.kill(process.pid, signal);
  });
}

/** One redis-server of a test's Redis Cluster: its port, its cluster bus port and its directory (with nodes.conf). */
export class ClusterNodeProcess {
  process?: ChildProcess;

  constructor(
    readonly port: number,
    readonly busPort: number,
    readonly dir: string,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.process !== undefined && this.process.exitCode === null && this.process.signalCode === null;
  }
}

/** A command to one node, on a connection of its own; rejects after 5 s without an answer. */
export async function nodeCommand<T = unknown>(port: number, ...args: string[]): Promise<T> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 2000, enableReadyCheck: false });
  client.on('error', () => {});
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to ${args.join(' ')} from port ${port}`)), 5000);
  });
  try {
    return await Promise.race([(async () => {
      await client.connect();
      return (await client.call(args[0], ...args.slice(1))) as T;
    })(), timeout]);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

async function until(condition: () => Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `field:value` lines of INFO or CLUSTER INFO. */
function fields(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((line) => line.includes(':'))
      .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]),
  );
}

/**
 * A real Redis Cluster owned by a test: `redis-server --cluster-enabled yes` processes on free ports
 * (each with its own directory for nodes.conf, nothing persisted), joined by `redis-cli --cluster
 * create`. 3 masters, or 3 masters with a replica each. A node can be killed (`kill -9` by pid) and
 * restarted with its nodes.conf and no data, as after a crash without persistence.
 */
export class RedisCluster {
  private constructor(readonly nodes: ClusterNodeProcess[]) {}

  static async start(options: { masters?: number; replicasPerMaster?: 0 | 1 } = {}): Promise<RedisCluster> {
    // Ports found free can be taken by another process (tests run side by side) before our
    // redis-servers bind them; a start that fails is tried again on other ports.
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await RedisCluster.startOnce(options);
      } catch (error) {
        if (attempt >= 3) throw error;
      }
    }
  }

  private static async startOnce(options: { masters?: number; replicasPerMaster?: 0 | 1 }): Promise<RedisCluster> {
    const masters = options.masters ?? 3;
    const replicas = options.replicasPerMaster ?? 0;
    const ports = new Set<number>();
    while (ports.size < masters * (1 + replicas) * 2) ports.add(await freePort());
    const list = [...ports];
    const nodes: ClusterNodeProcess[] = [];
    for (let i = 0; i < list.length; i += 2) nodes.push(new ClusterNodeProcess(list[i], list[i + 1], mkdtempSync(join(tmpdir(), 'presence-redis-cluster-'))));
    const cluster = new RedisCluster(nodes);
    try {
      await Promise.all(nodes.map((node) => cluster.launch(node)));
      await run('redis-cli', ['--cluster', 'create', ...nodes.map((node) => node.address), '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 });
      await cluster.waitHealthy();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** The seed list a server takes in REDIS_CLUSTER_NODES. */
  get seeds(): string[] {
    return this.nodes.map((node) => node.address);
  }

  private async launch(node: ClusterNodeProcess): Promise<void> {
    // prettier-ignore
    const args = [
      '--port', String(node.port), '--cluster-port', String(node.busPort), '--bind', '127.0.0.1', '--protected-mode', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000',
      '--cluster-require-full-coverage', 'no', '--dir', node.dir, '--save', '', '--appendonly', 'no',
    ];
    const child = spawn('redis-server', args, { cwd: node.dir, stdio: 'ignore' });
    node.process = child;
    running.add(child);
    child.once('exit', () => running.delete(child));
    await until(async () => (await nodeCommand(node.port, 'PING')) === 'PONG', 20_000, () => `redis-server on port ${node.port} to answer (is it installed?)`);
    // What answered may be another process on the port, ours exiting because it could not bind.
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (!node.alive) throw new Error(`redis-server on port ${node.port} exited at start (port taken?)`);
  }

  /**
   * Every running node reports `cluster_state:ok`, knows every other node, and sees every slot
   * served; every replica is in sync with its master.
   */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    let last = '';
    await until(
      async () => {
        for (const node of this.nodes.filter((n) => n.alive)) {
          const info = fields(await nodeCommand<string>(node.port, 'CLUSTER', 'INFO'));
          last = `${node.address}: ${JSON.stringify(info)}`;
          if (info.cluster_state !== 'ok' || info.cluster_slots_ok !== '16384' || Number(info.cluster_known_nodes) !== this.nodes.length) return false;
          const replication = fields(await nodeCommand<string>(node.port, 'INFO', 'replication'));
          last = `${node.address}: ${JSON.stringify(replication)}`;
          if (replication.role === 'slave' && replication.master_link_status !== 'up') return false;
        }
        return true;
      },
      timeoutMs,
      () => `a healthy Redis Cluster (last: ${last})`,
    );
  }

  /** The running master that serves a key's (or shard channel's) slot, as the other nodes see it. */
  async masterOf(key: string): Promise<ClusterNodeProcess> {
    const asker = this.nodes.find((node) => node.alive)!;
    const slot = await nodeCommand<number>(asker.port, 'CLUSTER', 'KEYSLOT', key);
    const ranges = await nodeCommand<[number, number, [string, number]][]>(asker.port, 'CLUSTER', 'SLOTS');
    const range = ranges.find(([from, to]) => from <= slot && slot <= to);
    const node = this.nodes.find((n) => n.port === Number(range?.[2][1]));
    if (!node) throw new Error(`no master serves slot ${slot}`);
    return node;
  }

  /** The masters, as the first running node sees them. */
  async masters(): Promise<ClusterNodeProcess[]> {
    const asker = this.nodes.find((node) => node.alive)!;
    const ranges = await nodeCommand<[number, number, [string, number]][]>(asker.port, 'CLUSTER', 'SLOTS');
    const ports = new Set(ranges.map((range) => Number(range[2][1])));
    return this.nodes.filter((node) => ports.has(node.port));
  }

  /** SIGKILL by pid: the node vanishes without a goodbye, as in a crash. */
  async kill(node: ClusterNodeProcess): Promise<void> {
    const child = node.process;
    if (!child || !node.alive) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid!, 'SIGKILL');
    await gone;
    node.process = undefined;
  }

  /** Starts a killed node again on its port with its nodes.conf and no data; resolves once it answers. */
  async restart(node: ClusterNodeProcess): Promise<void> {
    await this.kill(node);
    await this.launch(node);
  }

  /** Every key of every running master. */
  async keys(): Promise<string[]> {
    const keys: string[] = [];
    for (const node of await this.masters()) {
      if (!node.alive) continue;
      let cursor = '0';
      do {
        const [next, batch] = await nodeCommand<[string, string[]]>(node.port, 'SCAN', cursor, 'COUNT', '1000');
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
    }
    return keys.sort();
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) {
      await this.kill(node);
      rmSync(node.dir, { recursive: true, force: true });
    }
  }
}
