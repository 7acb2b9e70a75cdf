/**
 * Scale-out: what a Presence cluster costs per node as it grows, and what a node with no clients
 * of its own pays for the others (issue 14, point 5). Presence only, always through one Redis
 * (a one-node run too, so that every node count pays the same Redis round trips).
 *
 * - Idle-node tax: node A holds `idleUsers` users in channels of `channelSize` and gets a steady
 *   `idleRate` of presence updates; node B has no client. B's CPU as a share of A's over the
 *   window, and B's heap (after a forced GC) and RSS growth per user of A.
 * - Scaling: 1, 2, 4, 8… nodes with the same load per node (`users`, `rate`), each channel's
 *   members on the channel's home node ("local"), and a variant where `crossFraction` of each
 *   channel's members connect to another node ("cross"). Per run: server CPU seconds (from
 *   /proc/<pid>/stat) per delivered update, heap and RSS growth per user on each node (after a
 *   forced GC), Redis commands/s, messages published and pub/sub deliveries per update, Redis
 *   memory per online user. `runs` fresh runs per node count and variant; the table shows medians.
 *
 * - Redis Cluster: the node counts of `redisCluster` again with local channels and the same load
 *   per node, on a Redis Cluster of 3 masters (REDIS_CLUSTER_NODES, sharded pub/sub) instead of
 *   one redis-server: each master's commands/s, commands and messages published per update, memory
 *   growth per online user and CPU, their total, beside one redis-server's at the same node count.
 *
 * All server processes share the server core and Redis (every master of the cluster too) shares
 * the other with the load generator, so "each node under 80 % of its core" here means all nodes
 * together under 80 % of the one core; a run above it is flagged, not dropped.
 */
import { mergeEncoded, summarize, type LatencySummary } from '../lib/histogram.js';
import type { LoadGen } from '../lib/loadgen.js';
import { cpuSeconds, machineBusySeconds, selfCpuSeconds, sleep, type ProbeResult } from '../lib/proc.js';
import { measureHttpReads, type HttpReadFigures } from '../lib/http-reads.js';
import { startHttpSessions, type HttpSessions } from '../lib/http-sessions.js';
import { RedisStats, redisDelta, sumSnapshots, type RedisSnapshot } from '../lib/redis-stats.js';
import type { RunningSystem } from '../lib/systems.js';
import { usersPerNode, type Layout } from '../loadgen/layout.js';
import type { Context, ScaleoutOptions } from './context.js';
import { Skip, withPopulation } from './population.js';
import { drain, waitForQuiet } from './steps.js';

/** Goals of the issue, judged in the table. */
export const SCALEOUT_GOALS = {
  /** The idle node's CPU as a share of the loaded node's. */
  idleCpuShare: 0.02,
  /** The idle node's heap growth per user of the loaded node, bytes. */
  idleHeapPerUser: 512,
  /** Largest rise of CPU per delivery from 1 node to the most, local channels. */
  flatness: 0.15,
  /** Server core (all nodes) and Redis: at most this share of their core. */
  coreShare: 0.8,
} as const;

/** Other tenants' CPU (cores) above which a window is flagged as disturbed. */
const DISTURBED = 0.15;

export interface RedisFigures {
  /** Redis CPU over the steady window, in cores. */
  cpu: number;
  /** Commands clients sent per second of the steady window (a script counts once). */
  commandsPerSec: number;
  /** Per update sent, over the whole span (see `WindowFigures.span`). */
  commandsPerUpdate: number;
  /** PUBLISH/SPUBLISH calls (from clients and scripts) per update sent. */
  publishedPerUpdate: number;
  /**
   * Messages Redis delivered to subscribers per update: published × subscribers, exact while
   * everything is published on one channel; null when several channels have subscribers (then
   * INFO does not say which channel each message went to).
   */
  pubsubDeliveriesPerUpdate: number | null;
  /** Subscribers per pub/sub channel (ordinary and sharded). */
  subscribers: Record<string, number>;
  /** Command calls per update by command (`evalsha`, `publish`, …), scripts' inner calls included. */
  callsPerUpdate: Record<string, number>;
  /** used_memory growth per online user, bytes. */
  memoryPerUser: number;
  usedMemory: number;
}

/**
 * One Redis Cluster master's own figures (its INFO, its process's CPU). Per update and per online
 * user mean per update sent and per user online in the whole cluster, so the masters' figures add
 * up to the cluster's.
 */
export interface MasterFigures extends RedisFigures {
  address: string;
  /** The hash slots it serves, e.g. `0-5460`. */
  slots: string;
}

/**
 * One measurement. Utilisation comes from the steady window (after the warm-up); the cost of an
 * update comes from the whole span, from the first update sent until the last delivery arrived,
 * so that work a loaded node did late (or Redis did for it) is still counted against the updates
 * that caused it.
 */
export interface WindowFigures {
  /** Length of the steady window's CPU and Redis readings (seconds). */
  seconds: number;
  /** Length of the schedule's measured window: updates sent in it count as in the window. */
  scheduleSeconds: number;
  /** Updates per second offered and actually sent in the window, all nodes together. */
  offeredRate: number;
  achievedRate: number;
  sentInWindow: number;
  /** Deliveries the window's updates should make, and made. */
  expected: number;
  delivered: number;
  deliveryRatio: number;
  latency: LatencySummary;
  /** CPU in cores over the steady window: each node, the nodes together, the load generator, others. */
  nodeCpu: number[];
  serverCpu: number;
  loadgenCpu: number;
  foreignCpu: number;
  span: {
    seconds: number;
    /** Updates sent, warm-up included. */
    updates: number;
    deliveries: number;
    /** Deliveries to the clients of each node. */
    deliveriesByNode: number[];
    /** CPU seconds of each node over the span. */
    nodeCpuSeconds: number[];
  };
  /** The Redis: one redis-server's figures, or the total over a Redis Cluster's masters. */
  redis: RedisFigures;
  /** On a Redis Cluster: each master's figures, in slot order. */
  masters?: MasterFigures[];
}

export interface NodeMemory {
  users: number;
  heapBefore: number;
  heapAfter: number;
  rssBefore: number;
  rssAfter: number;
  /** Growth after a forced GC per user of this node (bytes); null on a node without users. */
  heapPerUser: number | null;
  rssPerUser: number | null;
}

export interface ScaleoutRun {
  variant: 'local' | 'cross';
  /** Through one redis-server, or through a Redis Cluster of 3 masters. */
  backend: 'redis' | 'redis-cluster';
  nodes: number;
  run: number;
  users: number;
  connected: number;
  connectSeconds: number;
  memory: NodeMemory[];
  window: WindowFigures;
  /** Server CPU microseconds per delivered update: all nodes' CPU over all deliveries. */
  cpuPerDeliveryUs: number;
  /** The same, each node's CPU over the deliveries to its own clients. */
  nodeCpuPerDeliveryUs: number[];
  /** Mean over the nodes of each node's heap growth per user of its own, bytes. */
  heapPerUser: number;
  rssPerUser: number;
  /** Why the run's figures deserve caution: a core above its limit, missing deliveries, other tenants. */
  flags: string[];
}

export interface ScaleoutSummary {
  variant: 'local' | 'cross';
  nodes: number;
  runs: number;
  usersPerNode: number;
  ratePerNode: number;
  /** Medians over the runs. */
  cpuPerDeliveryUs: number;
  /** Against the local one-node median (1 = flat). */
  cpuPerDeliveryVsOneNode: number | null;
  heapPerUser: number;
  rssPerUser: number;
  serverCpu: number;
  redisCpu: number;
  loadgenCpu: number;
  redisCommandsPerSec: number;
  redisCommandsPerUpdate: number;
  publishedPerUpdate: number;
  pubsubDeliveriesPerUpdate: number | null;
  redisMemoryPerUser: number;
  p99Ms: number;
  /** Runs with at least one flag, and the distinct flags. */
  flaggedRuns: number;
  flags: string[];
}

/** Redis figures of a node count, medians over its runs. */
export interface RedisSummaryFigures {
  /** CPU in cores over the steady window. */
  cpu: number;
  commandsPerSec: number;
  commandsPerUpdate: number;
  publishedPerUpdate: number;
  memoryPerUser: number;
}

/** A node count on the Redis Cluster: the servers' figures, each master's and their total. */
export interface ClusterSummary {
  nodes: number;
  runs: number;
  usersPerNode: number;
  ratePerNode: number;
  cpuPerDeliveryUs: number;
  heapPerUser: number;
  serverCpu: number;
  loadgenCpu: number;
  p99Ms: number;
  /** Each master (in slot order, the same slots in every run), medians over the runs. */
  masters: Array<RedisSummaryFigures & { slots: string }>;
  /** The masters together: the median of each run's total. */
  total: RedisSummaryFigures;
  /** One redis-server at the same node count (the local scaling runs' medians); null when that count was not run. */
  oneRedis: (RedisSummaryFigures & { cpuPerDeliveryUs: number; p99Ms: number }) | null;
  flaggedRuns: number;
  flags: string[];
}

export interface IdleTaxResult {
  /** Users on node A: over WebSockets (`connected`) and over HTTP heartbeats (`httpUsers`). */
  users: number;
  connected: number;
  httpUsers: number;
  /** Heartbeats that failed during the measurement (none expected). */
  httpFailures: number;
  connectSeconds: number;
  rate: number;
  window: WindowFigures;
  /** Node A (index 0, every client) and node B (index 1, none). */
  memory: NodeMemory[];
  /** B's CPU seconds over A's, from the first update sent until the last delivery. */
  idleCpuShare: number;
  /** B's heap and RSS growth after a forced GC, per user of A (bytes). */
  idleHeapPerUser: number;
  idleRssPerUser: number;
  /**
   * The HTTP API's reads about A's users, asked of A (answers from memory) and of B (no client:
   * reads Redis), after the window, with A's users still there.
   */
  httpReads: { node: 'A' | 'B'; reads: HttpReadFigures[] }[];
  flags: string[];
}

export interface ScaleoutResult {
  options: ScaleoutOptions;
  idle?: IdleTaxResult | { skipped: string } | { error: string };
  runs: ScaleoutRun[];
  /** Runs that failed, with the reason (their node count and variant have fewer samples). */
  failures: Array<{ variant: 'local' | 'cross'; nodes: number; run: number; error: string }>;
  summary: ScaleoutSummary[];
  /** The node counts of `options.redisCluster` on a Redis Cluster of 3 masters (local channels). */
  redisCluster: {
    runs: ScaleoutRun[];
    failures: Array<{ nodes: number; run: number; error: string }>;
    summary: ClusterSummary[];
  };
  goals: {
    idleCpuShare: { goal: number; value: number | null; met: boolean | null };
    idleHeapPerUser: { goal: number; value: number | null; met: boolean | null };
    /** Largest local CPU-per-delivery ratio to one node over the node counts measured. */
    flatness: { goal: number; value: number | null; met: boolean | null };
  };
}

export async function scaleoutScenario(ctx: Context): Promise<ScaleoutResult> {
  const o = ctx.opts.scaleout;
  if (o.crossFraction < 0 || o.crossFraction >= 1) throw new Error(`--scaleout.cross-fraction must be at least 0 and below 1 (got ${o.crossFraction})`);
  for (const n of o.nodes) if (!Number.isInteger(n) || n < 1) throw new Error(`--scaleout.nodes must list whole numbers of nodes (got ${o.nodes.join(',')})`);
  for (const n of o.redisCluster) if (!Number.isInteger(n) || n < 1) throw new Error(`--scaleout.redis-cluster must list whole numbers of nodes, or be 0 (got ${o.redisCluster.join(',')})`);
  const perNode = Math.max(o.channelSize, Math.ceil(o.users / o.channelSize) * o.channelSize);
  const runs: ScaleoutRun[] = [];
  const failures: ScaleoutResult['failures'] = [];
  const clusterRuns: ScaleoutRun[] = [];
  const clusterFailures: ScaleoutResult['redisCluster']['failures'] = [];

  let idle: ScaleoutResult['idle'];
  if (o.idleUsers > 0) {
    ctx.log(`  idle-node tax: ${o.idleUsers} users and ${o.idleRate} updates/s on node A, no clients on node B`);
    try {
      idle = await idleTax(ctx, o);
    } catch (error) {
      idle = error instanceof Skip ? { skipped: error.message } : { error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
      ctx.log(`  idle-node tax: ${'skipped' in idle ? `skipped: ${idle.skipped}` : `ERROR ${idle.error}`}`);
    }
  }

  // Runs go round the node counts (and variants) in turn, so that a disturbance on this shared
  // machine lands on one run of several counts rather than on every run of one.
  for (let run = 1; run <= o.runs; run += 1) {
    for (const nodes of o.nodes) {
      const variants: Array<'local' | 'cross'> = nodes > 1 && o.crossFraction > 0 ? ['local', 'cross'] : ['local'];
      for (const variant of variants) {
        const label = `${variant} ${nodes} node${nodes > 1 ? 's' : ''}, run ${run}/${o.runs}`;
        try {
          const result = await scalingRun(ctx, o, { nodes, variant, backend: 'redis', run, perNode });
          runs.push(result);
          ctx.log(`  ${label}: ${formatRun(result)}`);
        } catch (error) {
          const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
          failures.push({ variant, nodes, run, error: message });
          ctx.log(`  ${label}: ERROR ${message}`);
        }
      }
    }
    for (const nodes of o.redisCluster) {
      const label = `Redis Cluster, local ${nodes} node${nodes > 1 ? 's' : ''}, run ${run}/${o.runs}`;
      try {
        const result = await scalingRun(ctx, o, { nodes, variant: 'local', backend: 'redis-cluster', run, perNode });
        clusterRuns.push(result);
        ctx.log(`  ${label}: ${formatRun(result)}`);
      } catch (error) {
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        clusterFailures.push({ nodes, run, error: message });
        ctx.log(`  ${label}: ERROR ${message}`);
      }
    }
  }

  const summary = summarizeRuns(runs, o, perNode);
  const localOne = summary.find((s) => s.variant === 'local' && s.nodes === 1);
  const worstLocal = summary.filter((s) => s.variant === 'local' && s.nodes > 1 && s.cpuPerDeliveryVsOneNode !== null).map((s) => s.cpuPerDeliveryVsOneNode!);
  const idleResult = idle && !('skipped' in idle) && !('error' in idle) ? idle : undefined;
  const flatness = localOne && worstLocal.length > 0 ? Math.max(...worstLocal) - 1 : null;
  return {
    options: o,
    ...(idle ? { idle } : {}),
    runs,
    failures,
    summary,
    redisCluster: { runs: clusterRuns, failures: clusterFailures, summary: summarizeClusterRuns(clusterRuns, summary, o, perNode) },
    goals: {
      idleCpuShare: { goal: SCALEOUT_GOALS.idleCpuShare, value: idleResult?.idleCpuShare ?? null, met: idleResult ? idleResult.idleCpuShare <= SCALEOUT_GOALS.idleCpuShare : null },
      idleHeapPerUser: {
        goal: SCALEOUT_GOALS.idleHeapPerUser,
        value: idleResult?.idleHeapPerUser ?? null,
        met: idleResult ? idleResult.idleHeapPerUser <= SCALEOUT_GOALS.idleHeapPerUser : null,
      },
      flatness: { goal: SCALEOUT_GOALS.flatness, value: flatness === null ? null : round3(flatness), met: flatness === null ? null : flatness <= SCALEOUT_GOALS.flatness },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The two measurements
// ---------------------------------------------------------------------------------------------

async function idleTax(ctx: Context, o: ScaleoutOptions): Promise<IdleTaxResult> {
  const layout: Layout = { kind: 'groups', size: o.channelSize };
  const users = Math.ceil(o.idleUsers / o.channelSize) * o.channelSize;
  const httpUsers = Math.ceil(o.idleHttpUsers / o.channelSize) * o.channelSize;
  let baseline: ProbeResult[] = [];
  let redisStats: RedisStats[] = [];
  let redisBefore: RedisSnapshot[] = [];
  let http: HttpSessions | undefined;
  try {
    return await withPopulation(
      ctx,
      {
        system: 'presence',
        layout,
        total: users,
        nodes: 2,
        clientNodes: 1,
        redis: true,
        quietWaitMs: 0,
        // The HTTP users all come from this process's address, in development mode.
        env: { PRESENCE_HTTP_IP_RATE_LIMIT: '0', PRESENCE_HTTP_USER_RATE_LIMIT: '0' },
      },
      async (running) => {
        await settle(ctx, running);
        baseline = await probeAll(running);
        redisStats = await connectRedisStats(running);
        redisBefore = await snapshots(redisStats);
      },
      async ({ system: running, loadgen, connect }) => {
        if (httpUsers > 0) {
          ctx.status(`    ${httpUsers} users over HTTP heartbeats`);
          http = await startHttpSessions(running.urls[0].replace(/^ws:/, 'http:'), { count: httpUsers, channelSize: o.channelSize, prefix: 'idle-http' });
          if (http.ready < httpUsers) throw new Error(`only ${http.ready} of ${httpUsers} HTTP users were let in`);
        }
        const onA = connect.ready + (http?.ready ?? 0);
        await settle(ctx, running);
        const after = await probeAll(running);
        const memory = nodeMemory(baseline, after, [onA, 0]);
        const redisAfter = await snapshots(redisStats);
        const window = await measureWindow(ctx, running, loadgen, redisStats, {
          rate: o.idleRate,
          durationMs: o.durationMs,
          deliveriesPerEvent: o.channelSize - 1,
          memoryPerUser: redisAfter.map((a, i) => (a.usedMemory - redisBefore[i].usedMemory) / Math.max(1, onA)),
        });
        const [a, b] = window.nodeCpu;
        // The share over the whole span: work B did late still counts.
        const [spanA, spanB] = window.span.nodeCpuSeconds;
        const idleHeapPerUser = Math.round((memory[1].heapAfter - memory[1].heapBefore) / Math.max(1, onA));
        const idleRssPerUser = Math.round((memory[1].rssAfter - memory[1].rssBefore) / Math.max(1, onA));
        const result: IdleTaxResult = {
          users: users + httpUsers,
          connected: connect.ready,
          httpUsers: http?.ready ?? 0,
          httpFailures: http?.failures ?? 0,
          connectSeconds: round2(connect.elapsedMs / 1000),
          rate: o.idleRate,
          window,
          memory,
          idleCpuShare: spanA > 0 ? round3(spanB / spanA) : 0,
          idleHeapPerUser,
          idleRssPerUser,
          httpReads: await httpReads(ctx, running, users, o),
          flags: [...windowFlags(window, connect.ready, users), ...(http && http.failures > 0 ? [`${http.failures} heartbeats failed`] : [])],
        };
        ctx.log(
          `  idle-node tax: ${onA} users on A (${connect.ready} WebSocket, ${http?.ready ?? 0} HTTP); A ${pct(a)} CPU, B ${pct(b)} (${(result.idleCpuShare * 100).toFixed(1)} % of A); ` +
            `B +${kb(idleHeapPerUser)} KB heap and +${kb(idleRssPerUser)} KB RSS per user of A; A ${kb(memory[0].heapPerUser ?? 0)} KB heap per user` +
            (result.flags.length > 0 ? ` (${result.flags.join('; ')})` : ''),
        );
        return result;
      },
    );
  } finally {
    http?.stop();
    for (const stats of redisStats) stats.close();
  }
}

async function httpReads(ctx: Context, running: RunningSystem, users: number, o: ScaleoutOptions): Promise<IdleTaxResult['httpReads']> {
  const requests = ctx.opts.quick ? 20 : 500;
  const out: IdleTaxResult['httpReads'] = [];
  for (const [node, url] of [['A', running.urls[0]], ['B', running.urls[1]]] as const) {
    ctx.status(`    HTTP reads on node ${node}`);
    const reads = await measureHttpReads(url.replace(/^ws:/, 'http:'), { users, channelSize: o.channelSize, requests });
    out.push({ node, reads });
    ctx.log(`  HTTP reads on node ${node}: ${reads.map((r) => `${r.kind} p50 ${r.latency.p50Ms} ms, p99 ${r.latency.p99Ms} ms${r.errors > 0 ? ` (${r.errors} errors)` : ''}`).join('; ')}`);
  }
  return out;
}

async function scalingRun(
  ctx: Context,
  o: ScaleoutOptions,
  p: { nodes: number; variant: 'local' | 'cross'; backend: ScaleoutRun['backend']; run: number; perNode: number },
): Promise<ScaleoutRun> {
  const layout: Layout = { kind: 'homed', size: o.channelSize, crossFraction: p.variant === 'cross' ? o.crossFraction : 0 };
  const total = p.perNode * p.nodes;
  const planned = usersPerNode(total, layout, p.nodes);
  let baseline: ProbeResult[] = [];
  let redisStats: RedisStats[] = [];
  let redisBefore: RedisSnapshot[] = [];
  try {
    return await withPopulation(
      ctx,
      { system: 'presence', layout, total, nodes: p.nodes, redis: true, redisCluster: p.backend === 'redis-cluster', quietWaitMs: 0 },
      async (running) => {
        await settle(ctx, running);
        baseline = await probeAll(running);
        redisStats = await connectRedisStats(running);
        redisBefore = await snapshots(redisStats);
      },
      async ({ system: running, loadgen, connect }) => {
        await settle(ctx, running);
        const after = await probeAll(running);
        const memory = nodeMemory(baseline, after, planned);
        const redisAfter = await snapshots(redisStats);
        const window = await measureWindow(ctx, running, loadgen, redisStats, {
          rate: o.rate * p.nodes,
          durationMs: o.durationMs,
          deliveriesPerEvent: o.channelSize - 1,
          memoryPerUser: redisAfter.map((a, i) => (a.usedMemory - redisBefore[i].usedMemory) / Math.max(1, connect.ready)),
        });
        const perUser = (pick: (m: NodeMemory) => number | null) => Math.round(mean(memory.map(pick).filter((v): v is number => v !== null)));
        return {
          variant: p.variant,
          backend: p.backend,
          nodes: p.nodes,
          run: p.run,
          users: total,
          connected: connect.ready,
          connectSeconds: round2(connect.elapsedMs / 1000),
          memory,
          window,
          cpuPerDeliveryUs: perDeliveryUs(sum(window.span.nodeCpuSeconds), window.span.deliveries),
          nodeCpuPerDeliveryUs: window.span.nodeCpuSeconds.map((cpu, i) => perDeliveryUs(cpu, window.span.deliveriesByNode[i])),
          heapPerUser: perUser((m) => m.heapPerUser),
          rssPerUser: perUser((m) => m.rssPerUser),
          flags: windowFlags(window, connect.ready, total),
        };
      },
    );
  } finally {
    for (const stats of redisStats) stats.close();
  }
}

/** A counters reader per Redis process: the one redis-server, or each master of the cluster. */
async function connectRedisStats(running: RunningSystem): Promise<RedisStats[]> {
  const urls = running.redisCluster ? running.redisCluster.map((m) => m.url) : [running.redisUrl!];
  const stats: RedisStats[] = [];
  try {
    for (const url of urls) stats.push(await RedisStats.connect(url));
  } catch (error) {
    for (const s of stats) s.close();
    throw error;
  }
  return stats;
}

const snapshots = (stats: RedisStats[]) => Promise.all(stats.map((s) => s.snapshot()));

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

const nowMs = () => performance.timeOrigin + performance.now();

/** Waits until the servers have finished what connecting (and replicating) set off. */
async function settle(ctx: Context, running: RunningSystem): Promise<void> {
  const pids = running.servers.map((s) => s.pid);
  const deadline = Date.now() + (ctx.opts.quick ? 2000 : 20_000);
  await sleep(ctx.opts.quick ? 100 : 1000);
  while (Date.now() < deadline) {
    const before = pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    await sleep(300);
    const used = (pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - before) / 0.3;
    if (used < 0.05 + 0.01 * pids.length) return;
  }
}

async function probeAll(running: RunningSystem): Promise<ProbeResult[]> {
  const probes = await running.probe(true);
  const silent = probes.flatMap((p, i) => {
    if (p.rss > 0) return [];
    const server = running.servers[i];
    const exit = server.exit;
    // An exited server's own last words say why (a crash, a refused start).
    const why = p.error ?? (server.alive ? 'no answer' : `exited (code ${exit?.code ?? '?'}${exit?.signal ? `, ${exit.signal}` : ''}): ${server.recentOutput.trim().split('\n').slice(-3).join(' | ')}`);
    return [`${server.name}: ${why}`];
  });
  if (silent.length > 0) throw new Error(`no answer to the memory probe from ${silent.join('; ')}`);
  return probes;
}

function nodeMemory(before: ProbeResult[], after: ProbeResult[], users: number[]): NodeMemory[] {
  return after.map((a, i) => ({
    users: users[i] ?? 0,
    heapBefore: before[i].heapUsed,
    heapAfter: a.heapUsed,
    rssBefore: before[i].rss,
    rssAfter: a.rss,
    heapPerUser: users[i] > 0 ? Math.round((a.heapUsed - before[i].heapUsed) / users[i]) : null,
    rssPerUser: users[i] > 0 ? Math.round((a.rss - before[i].rss) / users[i]) : null,
  }));
}

/**
 * One measurement: an open-loop schedule of presence updates from every client at `rate` (all
 * nodes together) with a warm-up of a fifth of its length; CPU of each process from /proc and the
 * Redis counters read at the start and end of the steady window and of the whole span.
 */
async function measureWindow(
  ctx: Context,
  running: RunningSystem,
  loadgen: LoadGen,
  redis: RedisStats[],
  plan: { rate: number; durationMs: number; deliveriesPerEvent: number; memoryPerUser: number[] },
): Promise<WindowFigures> {
  await loadgen.mode('markers');
  await waitForQuiet(ctx, [...running.servers.map((s) => s.pid), ...running.redisProcesses.map((r) => r.pid), ...loadgen.pids], ctx.opts.scaleout.quietWaitMs);
  await loadgen.collect();
  const subscribers = (await Promise.all(redis.map((r) => r.channels()))).map((c) => c.subscribers);
  const warmupMs = Math.round(plan.durationMs / 5);
  const read = async () => ({
    nodes: running.servers.map((s) => s.cpuSeconds()),
    redis: running.redisProcesses.map((r) => r.cpuSeconds()),
    loadgen: loadgen.cpuSeconds(),
    self: selfCpuSeconds(),
    busy: machineBusySeconds(),
    at: nowMs(),
    info: await snapshots(redis),
  });
  const spanStart = await read();
  const startAt = nowMs() + (ctx.opts.quick ? 100 : 300);
  const from = startAt + warmupMs;
  const to = startAt + plan.durationMs;
  const steady = (async () => {
    await sleep(Math.max(0, from - nowMs()));
    const start = await read();
    await sleep(Math.max(0, to - nowMs()));
    return { start, end: await read() };
  })();
  const schedule = await loadgen.schedule('fanout', { rate: plan.rate, startAt, durationMs: plan.durationMs, warmupMs });
  const expected = schedule.sentInWindow * plan.deliveriesPerEvent;
  await drain(loadgen, expected);
  const { start, end } = await steady;
  const spanEnd = await read();
  const collected = await loadgen.collect();
  const seconds = (end.at - start.at) / 1000;
  const perSec = (a: number, b: number) => (b - a) / seconds;
  const nodeCpu = end.nodes.map((v, i) => round3(perSec(start.nodes[i], v)));
  const serverCpu = sum(nodeCpu);
  const redisCpus = end.redis.map((v, i) => perSec(start.redis[i], v));
  const redisCpu = sum(redisCpus);
  const loadgenCpu = perSec(start.loadgen, end.loadgen);
  const foreignCpu = Math.max(0, perSec(start.busy, end.busy) - serverCpu - redisCpu - loadgenCpu - perSec(start.self, end.self));
  const delivered = sum(collected.map((c) => c.deliveredInWindow));
  const windowSeconds = (plan.durationMs - warmupMs) / 1000;
  // Each Redis process's counters, then their total (the one redis-server's own when there is one).
  const parts = redis.map((_, i) => ({
    cpu: redisCpus[i],
    steady: redisDelta(start.info[i], end.info[i]),
    span: redisDelta(spanStart.info[i], spanEnd.info[i]),
    subscribers: subscribers[i],
    memoryPerUser: plan.memoryPerUser[i],
  }));
  const figures = (part: (typeof parts)[number]) => redisFigures(part, seconds, schedule.sent);
  const total = figures({
    cpu: redisCpu,
    steady: sumSnapshots(parts.map((p) => p.steady)),
    span: sumSnapshots(parts.map((p) => p.span)),
    subscribers: mergeSubscribers(subscribers),
    memoryPerUser: sum(plan.memoryPerUser),
  });
  const masters = running.redisCluster?.map((m, i) => ({ address: m.address, slots: m.slots, ...figures(parts[i]) }));
  return {
    seconds: round3(seconds),
    scheduleSeconds: windowSeconds,
    offeredRate: plan.rate,
    achievedRate: Math.round(schedule.sentInWindow / windowSeconds),
    sentInWindow: schedule.sentInWindow,
    expected,
    delivered,
    deliveryRatio: expected > 0 ? Math.round((delivered / expected) * 100000) / 100000 : 0,
    latency: summarize(mergeEncoded(collected.map((c) => c.histogram))),
    nodeCpu,
    serverCpu: round3(serverCpu),
    loadgenCpu: round3(loadgenCpu),
    foreignCpu: round3(foreignCpu),
    span: {
      seconds: round3((spanEnd.at - spanStart.at) / 1000),
      updates: schedule.sent,
      deliveries: sum(collected.map((c) => c.deliveredTotal)),
      deliveriesByNode: running.servers.map((_, i) => sum(collected.map((c) => c.deliveredByNode[i] ?? 0))),
      nodeCpuSeconds: spanEnd.nodes.map((v, i) => round3(v - spanStart.nodes[i])),
    },
    redis: total,
    ...(masters ? { masters } : {}),
  };
}

/**
 * One Redis process's figures (or several added up): `steady` is the counters' growth over the
 * steady window of `seconds`, `span` over the whole span in which `updates` were sent.
 */
function redisFigures(
  p: { cpu: number; steady: RedisSnapshot; span: RedisSnapshot; subscribers: Record<string, number>; memoryPerUser: number },
  seconds: number,
  updates: number,
): RedisFigures {
  const channels = Object.entries(p.subscribers).filter(([, n]) => n > 0);
  const perUpdate = (n: number) => (updates > 0 ? round3(n / updates) : 0);
  return {
    cpu: round3(p.cpu),
    commandsPerSec: Math.round(p.steady.commands / seconds),
    commandsPerUpdate: perUpdate(p.span.commands),
    publishedPerUpdate: perUpdate(p.span.published),
    pubsubDeliveriesPerUpdate: channels.length === 1 ? perUpdate(p.span.published * channels[0][1]) : channels.length === 0 ? 0 : null,
    subscribers: p.subscribers,
    callsPerUpdate: Object.fromEntries(Object.entries(p.span.calls).map(([name, n]) => [name, perUpdate(n)])),
    memoryPerUser: Math.round(p.memoryPerUser),
    // The steady window's end reading (a delta keeps the later value).
    usedMemory: p.steady.usedMemory,
  };
}

/** Subscribers per channel over several Redis processes (a shard channel lives on one master). */
function mergeSubscribers(lists: Record<string, number>[]): Record<string, number> {
  const merged: Record<string, number> = {};
  for (const list of lists) for (const [name, n] of Object.entries(list)) merged[name] = (merged[name] ?? 0) + n;
  return merged;
}

/** CPU microseconds per delivery. */
function perDeliveryUs(cpuSeconds: number, deliveries: number): number {
  return deliveries > 0 ? round2((cpuSeconds / deliveries) * 1e6) : 0;
}

function windowFlags(w: WindowFigures, connected: number, users: number): string[] {
  const flags: string[] = [];
  if (w.serverCpu > SCALEOUT_GOALS.coreShare) flags.push(`server core ${pct(w.serverCpu)} > ${pct(SCALEOUT_GOALS.coreShare)}`);
  if (w.redis.cpu > SCALEOUT_GOALS.coreShare) flags.push(`Redis ${pct(w.redis.cpu)} > ${pct(SCALEOUT_GOALS.coreShare)}`);
  if (w.redis.cpu + w.loadgenCpu > 0.9) flags.push(`Redis + load generator core ${pct(w.redis.cpu + w.loadgenCpu)}`);
  if (w.deliveryRatio < 0.999) flags.push(`${((1 - w.deliveryRatio) * 100).toFixed(2)} % of deliveries missing`);
  if (w.achievedRate < w.offeredRate * 0.95) flags.push(`sent ${w.achievedRate} of ${w.offeredRate} updates/s`);
  if (w.foreignCpu >= DISTURBED) flags.push(`other processes used ${w.foreignCpu.toFixed(2)} cores`);
  if (connected < users) flags.push(`${users - connected} of ${users} users not connected`);
  return flags;
}

// ---------------------------------------------------------------------------------------------
// Medians
// ---------------------------------------------------------------------------------------------

function summarizeRuns(runs: ScaleoutRun[], o: ScaleoutOptions, perNode: number): ScaleoutSummary[] {
  const groups = new Map<string, ScaleoutRun[]>();
  for (const r of runs) {
    const key = `${r.variant}:${r.nodes}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const summaries: ScaleoutSummary[] = [];
  for (const list of groups.values()) {
    const m = (pick: (r: ScaleoutRun) => number) => median(list.map(pick));
    const deliveries = list.map((r) => r.window.redis.pubsubDeliveriesPerUpdate);
    summaries.push({
      variant: list[0].variant,
      nodes: list[0].nodes,
      runs: list.length,
      usersPerNode: perNode,
      ratePerNode: o.rate,
      cpuPerDeliveryUs: round2(m((r) => r.cpuPerDeliveryUs)),
      cpuPerDeliveryVsOneNode: null,
      heapPerUser: Math.round(m((r) => r.heapPerUser)),
      rssPerUser: Math.round(m((r) => r.rssPerUser)),
      serverCpu: round3(m((r) => r.window.serverCpu)),
      redisCpu: round3(m((r) => r.window.redis.cpu)),
      loadgenCpu: round3(m((r) => r.window.loadgenCpu)),
      redisCommandsPerSec: Math.round(m((r) => r.window.redis.commandsPerSec)),
      redisCommandsPerUpdate: round3(m((r) => r.window.redis.commandsPerUpdate)),
      publishedPerUpdate: round3(m((r) => r.window.redis.publishedPerUpdate)),
      pubsubDeliveriesPerUpdate: deliveries.every((d) => d !== null) ? round3(median(deliveries as number[])) : null,
      redisMemoryPerUser: Math.round(m((r) => r.window.redis.memoryPerUser)),
      p99Ms: round2(m((r) => r.window.latency.p99Ms)),
      flaggedRuns: list.filter((r) => r.flags.length > 0).length,
      flags: list.flatMap((r) => r.flags.map((f) => `run ${r.run}: ${f}`)),
    });
  }
  const one = summaries.find((s) => s.variant === 'local' && s.nodes === 1);
  for (const s of summaries) if (one && one.cpuPerDeliveryUs > 0) s.cpuPerDeliveryVsOneNode = round2(s.cpuPerDeliveryUs / one.cpuPerDeliveryUs);
  return summaries.sort((a, b) => (a.variant === b.variant ? a.nodes - b.nodes : a.variant === 'local' ? -1 : 1));
}

function summarizeClusterRuns(runs: ScaleoutRun[], oneRedis: ScaleoutSummary[], o: ScaleoutOptions, perNode: number): ClusterSummary[] {
  const counts = [...new Set(runs.map((r) => r.nodes))].sort((a, b) => a - b);
  const redisMedians = (list: RedisFigures[]): RedisSummaryFigures => {
    const m = (pick: (f: RedisFigures) => number) => median(list.map(pick));
    return {
      cpu: round3(m((f) => f.cpu)),
      commandsPerSec: Math.round(m((f) => f.commandsPerSec)),
      commandsPerUpdate: round3(m((f) => f.commandsPerUpdate)),
      publishedPerUpdate: round3(m((f) => f.publishedPerUpdate)),
      memoryPerUser: Math.round(m((f) => f.memoryPerUser)),
    };
  };
  return counts.map((nodes) => {
    const list = runs.filter((r) => r.nodes === nodes);
    const m = (pick: (r: ScaleoutRun) => number) => median(list.map(pick));
    const masterCount = Math.max(...list.map((r) => r.window.masters?.length ?? 0));
    const single = oneRedis.find((s) => s.variant === 'local' && s.nodes === nodes);
    return {
      nodes,
      runs: list.length,
      usersPerNode: perNode,
      ratePerNode: o.rate,
      cpuPerDeliveryUs: round2(m((r) => r.cpuPerDeliveryUs)),
      heapPerUser: Math.round(m((r) => r.heapPerUser)),
      serverCpu: round3(m((r) => r.window.serverCpu)),
      loadgenCpu: round3(m((r) => r.window.loadgenCpu)),
      p99Ms: round2(m((r) => r.window.latency.p99Ms)),
      masters: Array.from({ length: masterCount }, (_, i) => {
        const figures = list.flatMap((r) => (r.window.masters?.[i] ? [r.window.masters[i]] : []));
        return { slots: figures[0]?.slots ?? '', ...redisMedians(figures) };
      }),
      total: redisMedians(list.map((r) => r.window.redis)),
      oneRedis: single
        ? {
            cpu: single.redisCpu,
            commandsPerSec: single.redisCommandsPerSec,
            commandsPerUpdate: single.redisCommandsPerUpdate,
            publishedPerUpdate: single.publishedPerUpdate,
            memoryPerUser: single.redisMemoryPerUser,
            cpuPerDeliveryUs: single.cpuPerDeliveryUs,
            p99Ms: single.p99Ms,
          }
        : null,
      flaggedRuns: list.filter((r) => r.flags.length > 0).length,
      flags: list.flatMap((r) => r.flags.map((f) => `run ${r.run}: ${f}`)),
    };
  });
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function mean(values: number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}

function formatRun(r: ScaleoutRun): string {
  const w = r.window;
  return (
    `${r.connected} users, ${w.achievedRate} updates/s: servers ${pct(w.serverCpu)}` +
    (r.nodes > 1 ? ` (${w.nodeCpu.map(pct).join(' ')})` : '') +
    `, Redis ${pct(w.redis.cpu)}, load generator ${pct(w.loadgenCpu)}; ${r.cpuPerDeliveryUs} µs CPU per delivery; ` +
    `${kb(r.heapPerUser)} KB heap per user per node; Redis ${w.redis.commandsPerSec} commands/s, ${w.redis.publishedPerUpdate} published per update; ` +
    (w.masters ? `masters ${w.masters.map((m) => `${pct(m.cpu)} ${m.commandsPerSec}/s`).join(', ')}; ` : '') +
    `p99 ${w.latency.p99Ms} ms` +
    (r.flags.length > 0 ? ` (${r.flags.join('; ')})` : '')
  );
}

const pct = (cores: number) => `${Math.round(cores * 100)}%`;
const kb = (bytes: number) => (bytes / 1024).toFixed(1);
const round2 = (n: number) => Math.round(n * 100) / 100;
const round3 = (n: number) => Math.round(n * 1000) / 1000;
