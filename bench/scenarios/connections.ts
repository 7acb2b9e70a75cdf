/**
 * Idle connections: N users connect (each joins a channel of `channelSize`) and stay idle. The
 * server's memory is read after a forced GC before and after, so the difference per connection
 * includes everything the connection costs in the process: socket, session, user, presence state,
 * channel membership, timers. Kernel socket buffers are not process memory and are not counted.
 */
import type { SystemName } from '../loadgen/wire.js';
import { rssBytes, sleep, type ProbeResult } from '../lib/proc.js';
import type { RunningSystem } from '../lib/systems.js';
import type { Context } from './context.js';
import { Skip, withPopulation } from './population.js';

export interface ConnectionsResult {
  users: number;
  connected: number;
  failed: number;
  connectSeconds: number;
  connectsPerSec: number;
  /** Server RSS growth per connection after GC, bytes. */
  rssPerConnection: number;
  /** V8 heap growth per connection after GC, bytes. */
  heapPerConnection: number;
  /** Redis RSS growth per connection, bytes (Socket.IO baseline only). */
  redisRssPerConnection?: number;
  serverRssBefore: number;
  serverRssAfter: number;
  peakRss: number;
  /** Server CPU seconds per 1,000 connections established. */
  serverCpuPerThousand: number;
  sourceAddresses: number;
  /** Server processes the users were spread over; memory figures are their sum. */
  nodes: number;
  /** Each server's RSS after GC, before and after connecting, bytes. */
  nodeRss: Array<{ before: number; after: number }>;
}

export async function connectionsScenario(ctx: Context, system: SystemName): Promise<ConnectionsResult> {
  const { users, channelSize, sourceAddresses, settleMs, nodes } = ctx.opts.connections;
  if (nodes > 1 && system === 'ws') throw new Skip('the bare relay has no multi-node mode');
  let before: ProbeResult | undefined;
  let nodesBefore: ProbeResult[] = [];
  let redisBefore = 0;
  return withPopulation(
    ctx,
    { system, layout: { kind: 'groups', size: channelSize }, total: users, sourceAddresses, nodes },
    async (running) => {
      await sleep(ctx.opts.quick ? 100 : 1000);
      nodesBefore = await running.probe(true);
      before = summed(nodesBefore, running);
      redisBefore = running.redis ? rssBytes(running.redis.pid) : 0;
    },
    async ({ system: running, connect, connectCpuSeconds, peakRss }) => {
      await sleep(settleMs);
      const nodesAfter = await running.probe(true);
      const after = summed(nodesAfter, running);
      const n = Math.max(1, connect.ready);
      const redisAfter = running.redis ? rssBytes(running.redis.pid) : 0;
      const seconds = connect.elapsedMs / 1000;
      const result: ConnectionsResult = {
        users,
        connected: connect.ready,
        failed: connect.failed,
        connectSeconds: round2(seconds),
        connectsPerSec: Math.round(connect.ready / seconds),
        rssPerConnection: Math.round((after.rss - before!.rss) / n),
        heapPerConnection: Math.round((after.heapUsed - before!.heapUsed) / n),
        ...(running.redis ? { redisRssPerConnection: Math.round((redisAfter - redisBefore) / n) } : {}),
        serverRssBefore: before!.rss,
        serverRssAfter: after.rss,
        peakRss,
        serverCpuPerThousand: round2((connectCpuSeconds / n) * 1000),
        sourceAddresses: Math.max(1, sourceAddresses || Math.ceil(users / 25_000)),
        nodes,
        nodeRss: nodesAfter.map((p, i) => ({ before: nodesBefore[i].rss, after: p.rss })),
      };
      ctx.log(
        `  ${system}${nodes > 1 ? ` (${nodes} nodes)` : ''}: ${result.connected}/${users} connected in ${result.connectSeconds}s (${result.connectsPerSec}/s), ` +
          `${(result.rssPerConnection / 1024).toFixed(1)} KB RSS and ${(result.heapPerConnection / 1024).toFixed(1)} KB heap per connection` +
          (result.redisRssPerConnection !== undefined ? `, Redis +${(result.redisRssPerConnection / 1024).toFixed(1)} KB` : ''),
      );
      return result;
    },
  );
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** The memory of all the nodes together (each node's figures are the whole process). */
function summed(probes: ProbeResult[], running: RunningSystem): ProbeResult {
  // An unanswered probe reads as zeros, which would make the sum look small.
  const silent = probes.flatMap((p, i) => (p.rss === 0 ? [{ server: running.servers[i], error: p.error }] : []));
  if (silent.length > 0) {
    const why = silent.map(({ server: s, error }) => `${s.name} ${error ?? (s.alive ? 'running' : `exited ${JSON.stringify(s.exit)}: ${s.recentOutput.slice(-600)}`)}`);
    throw new Error(`no answer to the memory probe from ${why.join('; ')}`);
  }
  return probes.reduce((total, p) => ({ ...total, rss: total.rss + p.rss, heapUsed: total.heapUsed + p.heapUsed, heapTotal: total.heapTotal + p.heapTotal }));
}
