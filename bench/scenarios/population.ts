import type { ConnectResult, Layout } from '../loadgen/worker.js';
import type { SystemName } from '../loadgen/wire.js';
import { LoadGen, connectionsPerWorker, type ConnectProgress } from '../lib/loadgen.js';
import { ChildExitedError, openFileLimit, rssBytes } from '../lib/proc.js';
import { startSystem, type RunningSystem } from '../lib/systems.js';
import type { Context } from './context.js';
import { waitForQuiet } from './steps.js';

/** A scenario that cannot run here, with the reason; reported instead of figures. */
export class Skip extends Error {}

export interface PopulationSpec {
  system: SystemName;
  layout: Layout;
  total: number;
  nodes?: number;
  /** The clients connect to the first `clientNodes` nodes only (default: all of them). */
  clientNodes?: number;
  /** Presence: through Redis even with one node. */
  redis?: boolean;
  /** Presence: through a Redis Cluster (3 masters) instead of one Redis. */
  redisCluster?: boolean;
  /** How long to wait for other tenants' CPU use to calm down before connecting (default 60 s). */
  quietWaitMs?: number;
  env?: Record<string, string>;
  /** Source addresses to spread the connections over; 0 picks one per 25,000 connections. */
  sourceAddresses?: number;
  concurrency?: number;
  /** Called while the population connects, e.g. to sample the server's memory. */
  onTick?: (system: RunningSystem) => void;
}

export interface Population {
  system: RunningSystem;
  loadgen: LoadGen;
  connect: ConnectResult;
  /** Server CPU seconds spent while connecting. */
  connectCpuSeconds: number;
  /** Largest server RSS seen while connecting (sampled every 250 ms), bytes. */
  peakRss: number;
}

/**
 * Starts the system, the load generator processes, and connects every client (each joins its
 * channel). The body runs with everything up; everything is stopped afterwards, servers first.
 */
export async function withPopulation<T>(ctx: Context, spec: PopulationSpec, before: ((system: RunningSystem) => Promise<void>) | undefined, body: (population: Population) => Promise<T>): Promise<T> {
  const nodes = spec.nodes ?? 1;
  const fileLimit = openFileLimit();
  const clientNodes = Math.min(nodes, spec.clientNodes ?? nodes);
  const perNode = Math.ceil(spec.total / clientNodes);
  if (perNode > fileLimit - 200) {
    throw new Skip(`needs ${perNode} sockets in one server process, but the open-files limit here is ${fileLimit} (raise it with ulimit -n, which needs privileges this machine does not grant)`);
  }
  const workers = Math.ceil(spec.total / connectionsPerWorker(fileLimit));
  const progress = new Map<number, ConnectProgress>();
  // The load generator starts while the server does; neither depends on the other yet.
  const loadgenStarting = LoadGen.start(workers, ctx.pinning.loadgen, (worker, p) => {
    progress.set(worker, p);
    let ready = 0;
    let target = 0;
    for (const q of progress.values()) {
      ready += q.ready;
      target += q.target;
    }
    ctx.status(`    connecting ${ready}/${target}`);
  });
  let system: RunningSystem;
  try {
    system = await startSystem(spec.system, { pinning: ctx.pinning, nodes, redis: spec.redis, redisCluster: spec.redisCluster, env: spec.env, presenceEntry: ctx.opts.presenceEntry, nodeFlags: ctx.opts.serverFlags });
  } catch (error) {
    await (await loadgenStarting).close();
    if (error instanceof ChildExitedError) throw new Skip(`server refused to start: ${error.reason}`);
    throw error;
  }
  let loadgen: LoadGen | undefined;
  try {
    loadgen = await loadgenStarting;
    const addressCount = spec.sourceAddresses && spec.sourceAddresses > 0 ? spec.sourceAddresses : Math.ceil(spec.total / 25_000);
    const sourceAddresses = addressCount > 1 ? Array.from({ length: addressCount }, (_, i) => `127.0.0.${i + 1}`) : [];
    await loadgen.init({ system: spec.system, urls: system.urls.slice(0, clientNodes), layout: spec.layout, total: spec.total, sourceAddresses, client: ctx.opts.client });
    await waitForQuiet(ctx, [...system.servers.map((s) => s.pid), ...system.redisProcesses.map((r) => r.pid), ...loadgen.pids], spec.quietWaitMs);
    if (before) await before(system);
    let peakRss = 0;
    const sample = () => {
      for (const server of system.servers) peakRss = Math.max(peakRss, rssBytes(server.pid));
      spec.onTick?.(system);
    };
    const sampler = setInterval(sample, 250);
    const cpuBefore = system.serverCpuSeconds();
    let connect: ConnectResult;
    try {
      connect = await loadgen.connect(spec.concurrency ?? ctx.opts.connectConcurrency);
    } finally {
      clearInterval(sampler);
    }
    sample();
    ctx.status('');
    const connectCpuSeconds = system.serverCpuSeconds() - cpuBefore;
    if (connect.failed > 0) {
      ctx.log(`    ${connect.failed} of ${spec.total} clients failed to connect: ${JSON.stringify(connect.errors)}`);
    }
    return await body({ system, loadgen, connect, connectCpuSeconds, peakRss });
  } finally {
    await system.stop();
    await loadgen?.close();
  }
}
