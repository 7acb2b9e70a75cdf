/**
 * A throwaway Redis Cluster for the scale-out scenario: `masters` redis-server processes with
 * `--cluster-enabled yes` on free ports (each with its own directory for nodes.conf, nothing
 * persisted), pinned like the single Redis (with the load generator), joined by `redis-cli
 * --cluster create` without replicas. The servers get the seeds in REDIS_CLUSTER_NODES.
 *
 * It speaks to the nodes only through `redis-cli` (CLUSTER INFO): measuring a Redis stays in
 * redis-stats.ts.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Child, ChildExitedError, freePort, pinned, sleep, waitForPort } from './proc.js';

const run = promisify(execFile);

export interface RedisClusterMaster {
  child: Child;
  port: number;
  /** `host:port`, as a seed in REDIS_CLUSTER_NODES. */
  address: string;
  /** `redis://host:port`: a plain connection to this master alone (for its own counters). */
  url: string;
  /** The hash slots it serves, e.g. `0-5460`. */
  slots: string;
}

export interface StartedRedisCluster {
  /** In the order `redis-cli --cluster create` assigned the slots: the first serves the lowest. */
  masters: RedisClusterMaster[];
  /** The value of REDIS_CLUSTER_NODES. */
  seeds: string;
  stop(): Promise<void>;
}

export async function startRedisCluster(cores: string | undefined, masters = 3): Promise<StartedRedisCluster> {
  // A port found free may be taken by another process before redis-server binds it (then it
  // exits at once): start again on other ports, a few times.
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startOnce(cores, masters);
    } catch (error) {
      if (!(error instanceof ChildExitedError) || attempt >= 3) throw error;
    }
  }
}

async function startOnce(cores: string | undefined, masters: number): Promise<StartedRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'presence-bench-cluster-'));
  const started: RedisClusterMaster[] = [];
  const stop = async () => {
    await Promise.all(started.map((m) => m.child.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ports = new Set<number>();
    // A port and a cluster bus port per master, all distinct (the default bus port, port + 10000,
    // may be taken or out of range).
    while (ports.size < masters * 2) ports.add(await freePort());
    const list = [...ports];
    for (let i = 0; i < masters; i += 1) {
      const [port, busPort] = [list[2 * i], list[2 * i + 1]];
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      // prettier-ignore
      const [command, argv] = pinned(cores, 'redis-server', [
        '--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--protected-mode', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', join(nodeDir, 'nodes.conf'), '--cluster-node-timeout', '2000',
        '--cluster-require-full-coverage', 'no', '--dir', nodeDir, '--save', '', '--appendonly', 'no', '--maxclients', '10000',
      ]);
      const child = new Child(`redis-cluster-${i}`, command, argv, process.env, false);
      started.push({ child, port, address: `127.0.0.1:${port}`, url: `redis://127.0.0.1:${port}`, slots: '' });
      await waitForPort(child, port);
    }
    await run('redis-cli', ['--cluster', 'create', ...started.map((m) => m.address), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await waitHealthy(started);
    const slots = await slotRanges(started[0].port);
    for (const m of started) m.slots = slots.get(m.port) ?? '';
  } catch (error) {
    await stop();
    throw error;
  }
  return { masters: started, seeds: started.map((m) => m.address).join(','), stop };
}

async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5000 });
  return stdout;
}

/** Every master says `cluster_state:ok`, sees all 16384 slots served and knows every other master. */
async function waitHealthy(masters: RedisClusterMaster[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    let healthy = true;
    for (const m of masters) {
      const info = Object.fromEntries(
        (await cli(m.port, 'CLUSTER', 'INFO').catch((e: Error) => `error:${e.message}`))
          .split(/\r?\n/)
          .filter((line) => line.includes(':'))
          .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]),
      );
      if (info.cluster_state !== 'ok' || info.cluster_slots_ok !== '16384' || Number(info.cluster_known_nodes) !== masters.length) {
        healthy = false;
        last = `${m.address}: ${JSON.stringify(info)}`;
        break;
      }
    }
    if (healthy) return;
    if (Date.now() > deadline) throw new Error(`the Redis Cluster did not become healthy within ${timeoutMs} ms (last: ${last})`);
    await sleep(100);
  }
}

/** Port → the slot ranges it serves (`0-5460`), from `CLUSTER NODES`. */
async function slotRanges(port: number): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const line of (await cli(port, 'CLUSTER', 'NODES')).split(/\r?\n/)) {
    const fields = line.trim().split(' ');
    if (fields.length < 8 || !fields[2].includes('master')) continue;
    const nodePort = Number(/:(\d+)@/.exec(fields[1])?.[1]);
    out.set(nodePort, fields.slice(8).join(','));
  }
  return out;
}
