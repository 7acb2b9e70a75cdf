/**
 * The largest room of issue 16: `listeners` occupancy listeners (`features=occupancy`) in one
 * channel over `nodes` server processes and `loadgens` load-generator processes, through one
 * redis-server started here on a free port, with the connections spread over loopback source
 * addresses (127.0.0.1, 127.0.0.2, …; ~28k ephemeral ports each) so that every process stays under
 * the open-files limit. Once every listener's count is right, one actor on the first node joins and
 * leaves the channel in turn, `changes` times, `gapMs` apart: after each change, when every
 * listener's count was right (change-to-count latency, p99 and max), and how long each node took to
 * reach its listeners (the spread of their arrival times, per 10,000 socket writes). Server CPU
 * and RSS per node and Redis CPU over the changes; the fill's duration and CPU beside them.
 */
import WebSocket from 'ws';
import type { CountReport } from '../loadgen/worker.js';
import { LoadGen, connectionsPerWorker } from '../lib/loadgen.js';
import { ChildExitedError, cpuSeconds as cpuOf, openFileLimit, rssBytes, sleep } from '../lib/proc.js';
import { startSystem } from '../lib/systems.js';
import type { Context } from './context.js';
import { Skip } from './population.js';

export interface ClusterRoomChange {
  /** The count every listener must show after it. */
  count: number;
  /** Listeners whose count was right in the end. */
  right: number;
  /** Change-to-count latency over the listeners whose count was right (ms). */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Per node: first to last listener's arrival (ms), and that per 10,000 listeners. */
  spreadMs: number[];
  msPer10kWrites: number[];
}

export interface ClusterRoomResult {
  listeners: number;
  connected: number;
  /** The listeners joined invisible after this many visible members (the count). */
  quiet: boolean;
  visible: number;
  nodes: number;
  loadgens: number;
  sourceAddresses: string[];
  listenersPerNode: number[];
  /** Where the processes ran (taskset cores), or 'unpinned'. */
  cores: { servers: string; loadgensAndRedis: string };
  windowMs: number;
  occupancyMembers: number;
  /** PRESENCE_NODE_LEASE_MS of the nodes (null: the default). */
  leaseMs: number | null;
  fill: { seconds: number; countsRightAfterMs: number | null; serverCpuSeconds: number[]; redisCpuSeconds: number };
  changes: ClusterRoomChange[];
  /** Over every change: p99 and max of the listeners' change-to-count latencies (ms). */
  p99Ms: number | null;
  maxMs: number | null;
  /** Every listener right after every change. */
  allRight: boolean;
  /** Median over changes and nodes of the time per 10,000 socket writes (ms), and the largest. */
  msPer10kWritesMedian: number | null;
  msPer10kWritesMax: number | null;
  /** Each node's CPU (share of one core) over 5 s without changes before the first. */
  idleCpu: number[];
  /** Over the change phase (CPU share of one core) and at its end (bytes). */
  serverCpu: number[];
  serverRss: number[];
  serverPeakRss: number[];
  redisCpu: number;
  redisRss: number;
  changePhaseSeconds: number;
}

/** The `q`-quantile of a sorted list (nearest rank). */
function quantileSorted(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const round = (n: number, digits = 0) => Math.round(n * 10 ** digits) / 10 ** digits;

/** One Presence client of our own (the actor): joins and leaves on request. */
class Actor {
  private ref = 0;
  private readonly waiting = new Map<string, () => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const text = data.toString('utf8');
      this.frames.push(text);
      for (const [ref, done] of this.waiting) {
        if (text.includes(`"ref":"${ref}"`)) {
          this.waiting.delete(ref);
          done();
        }
      }
    });
  }

  static async open(url: string, userId = 'bench-actor', features = ''): Promise<Actor> {
    const ws = new WebSocket(`${url}/realtime?userId=${userId}&device=bench${features ? `&features=${features}` : ''}`, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('message', () => resolve());
      ws.once('error', reject);
    });
    return new Actor(ws);
  }

  /** A frame that holds `token`, and the ones after it. */
  frames: string[] = [];

  /** Sends a command now; resolves on its answer. */
  send(command: Record<string, unknown>): Promise<void> {
    const ref = `a${++this.ref}`;
    const answered = new Promise<void>((resolve) => this.waiting.set(ref, resolve));
    this.ws.send(JSON.stringify({ ...command, ref }));
    return answered;
  }

  close(): void {
    this.ws.terminate();
  }
}

export async function clusterRoom(ctx: Context): Promise<ClusterRoomResult> {
  const o = ctx.opts.largeroom;
  const listeners = o.clusterListeners;
  const limit = openFileLimit();
  // Each server holds its share of the sockets, its Redis connections and its files.
  const perServer = Math.max(100, limit - 500);
  const nodes = Math.max(o.clusterNodes, Math.ceil(listeners / perServer));
  const loadgens = Math.max(o.clusterLoadgens, Math.ceil(listeners / connectionsPerWorker(limit)));
  const addressCount = o.clusterSourceAddresses > 0 ? o.clusterSourceAddresses : Math.ceil(listeners / 25_000);
  const sourceAddresses = Array.from({ length: addressCount }, (_, i) => `127.0.0.${i + 1}`);
  const channel = 'webinar';
  const env: Record<string, string> = {
    PRESENCE_OCCUPANCY_ONLY_MEMBERS: String(o.occupancyMembers),
    // The fill is not the measurement: no connection is refused for event-loop lag while it runs.
    PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
    PRESENCE_MAX_CONNECTIONS: String(perServer),
    ...(o.clusterLeaseMs > 0 ? { PRESENCE_NODE_LEASE_MS: String(o.clusterLeaseMs) } : {}),
  };
  ctx.log(
    `  cluster room: ${listeners} occupancy listeners over ${nodes} server processes and ${loadgens} load generators, ` +
      `${addressCount} source addresses, one redis-server; ${o.clusterChanges} changes ${o.clusterGapMs} ms apart`,
  );
  const loadgen = await LoadGen.start(loadgens, ctx.pinning.loadgen);
  let running;
  try {
    running = await startSystem('presence', { pinning: ctx.pinning, nodes, env, presenceEntry: ctx.opts.presenceEntry, nodeFlags: ctx.opts.serverFlags });
  } catch (error) {
    await loadgen.close();
    if (error instanceof ChildExitedError) throw new Skip(`server refused to start: ${error.reason}`);
    throw error;
  }
  let actor: Actor | undefined;
  const base: Actor[] = [];
  const peakRss = running.servers.map(() => 0);
  const sampler = setInterval(() => {
    running.servers.forEach((server, i) => (peakRss[i] = Math.max(peakRss[i], rssBytes(server.pid))));
  }, 500);
  try {
    const quiet = o.clusterQuiet > 0;
    // Quiet: the visible members come first, from here (spread over the nodes), so the room is in
    // occupancy mode from the start and each invisible listener's join is answered with the counts.
    if (quiet) {
      for (let i = 0; i < o.clusterRevealed; i += 1) {
        const member = await Actor.open(running.urls[i % nodes], `bench-visible-${i}`);
        await member.send({ type: 'join', channel });
        base.push(member);
      }
      ctx.log(`    ${base.length} visible members joined first`);
    }
    await loadgen.init({ system: 'presence', urls: running.urls, layout: { kind: 'single', channel, quiet }, total: listeners, sourceAddresses: addressCount > 1 ? sourceAddresses : [], client: ctx.opts.client, features: 'occupancy' });
    await loadgen.mode('count');
    const cpu0 = running.servers.map((s) => s.cpuSeconds());
    const redis0 = running.redisCpuSeconds();
    const startAt = performance.timeOrigin + performance.now() + 200;
    let lastProgress = 0;
    const progress = setInterval(() => {
      void loadgen.poll().then((p) => {
        if (p.ready !== lastProgress) ctx.status(`    ${p.ready}/${listeners} listeners connected`);
        lastProgress = p.ready;
      });
    }, 2000);
    let filled: { ready: number; failed: number; lastJoinAt: number; errors: Record<string, number> };
    try {
      filled = await loadgen.fill({ rate: o.clusterFillRate, startAt });
    } finally {
      clearInterval(progress);
    }
    if (filled.failed > 0) ctx.log(`    ${filled.failed} listeners did not connect: ${JSON.stringify(filled.errors)}`);
    // Quiet: the count is the visible members'; the listeners joined invisible.
    const visible = quiet ? base.length : filled.ready;
    // Every node has followed every listener before the first change.
    await waitForNodes(running.servers.map((s) => s.pid), ctx);
    // Every count right (every node follows every listener), within the settle time.
    let report: CountReport = await loadgen.counts();
    const settleDeadline = Date.now() + o.settleMs + listeners; // a millisecond per listener more
    for (;;) {
      const { right, present } = await loadgen.countsRight(visible, 0);
      if (right === present || Date.now() > settleDeadline) break;
      await sleep(ctx.opts.quick ? 100 : 1000);
    }
    report = await loadgen.counts();
    const settledAt = performance.timeOrigin + performance.now();
    const rightAtFill = report.counts.filter((c) => c === visible).length;
    const present = () => report.counts.filter((c) => c !== -1).length;
    const fillResult = {
      seconds: round((report.lastJoinAt - startAt) / 1000, 1),
      countsRightAfterMs: rightAtFill === present() ? round(Math.max(...report.changedAt) - report.lastJoinAt) : null,
      serverCpuSeconds: running.servers.map((s, i) => round(s.cpuSeconds() - cpu0[i], 1)),
      redisCpuSeconds: round(running.redisCpuSeconds() - redis0, 1),
    };
    ctx.log(
      `    filled${quiet ? ' (invisible)' : ''}: ${filled.ready}/${listeners} connected in ${fillResult.seconds}s, ${rightAtFill} counts right ` +
        `(${Math.round(settledAt - report.lastJoinAt)} ms after the last join); fill CPU s per node ${fillResult.serverCpuSeconds.join(', ')}, Redis ${fillResult.redisCpuSeconds}`,
    );
    if (rightAtFill < present()) {
      const seen = new Map<number, number>();
      for (const c of report.counts) seen.set(c, (seen.get(c) ?? 0) + 1);
      ctx.log(`    counts held (count: listeners): ${[...seen].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([c, k]) => `${c}: ${k}`).join(', ')}`);
      for (const server of running.servers) ctx.log(`    ${server.name} said: ${server.recentOutput.slice(-1500)}`);
      const p = await loadgen.poll();
      const collected = await loadgen.collect();
      ctx.log(`    ready now ${p.ready}; closes ${JSON.stringify(collected.map((c) => c.closes))}`);
      // What each node counts: an invisible occupancy viewer's first message there.
      for (const [i, url] of running.urls.entries()) {
        const probe = await Actor.open(url, `bench-probe-${i}`, 'occupancy');
        await probe.send({ type: 'status', status: 'invisible' });
        await probe.send({ type: 'join', channel });
        await sleep(500);
        ctx.log(`    node ${i} counts: ${probe.frames.filter((f) => f.includes('presence.occupancy')).map((f) => /"count":(\d+)/.exec(f)?.[1]).join(', ')}`);
        probe.close();
      }
    }
    const nodeOf = report.nodes;
    // Connected listeners per node (a client that never got in writes nothing there).
    const listenersPerNode = running.servers.map((_, n) => nodeOf.filter((x, i) => x === n && report.counts[i] !== -1).length);

    // The changes: the actor joins and leaves in turn on the first node.
    actor = await Actor.open(running.urls[0]);
    await sleep(ctx.opts.quick ? 200 : 2000);
    // What the nodes spend holding the room while nothing changes (leases, interest rounds, anti-entropy).
    const idle0 = running.servers.map((s) => s.cpuSeconds());
    const idleMs = ctx.opts.quick ? 500 : 5000;
    await sleep(idleMs);
    const idleCpu = running.servers.map((s, i) => round((s.cpuSeconds() - idle0[i]) / (idleMs / 1000), 3));
    ctx.log(`    nodes at rest: CPU ${idleCpu.map((c) => `${Math.round(c * 100)}%`).join(' / ')}`);
    const cpu1 = running.servers.map((s) => s.cpuSeconds());
    const redis1 = running.redisCpuSeconds();
    const phaseStart = performance.now();
    const changes: ClusterRoomChange[] = [];
    const all: number[] = [];
    let inChannel = false;
    let allRight = rightAtFill === present();
    for (let k = 0; k < o.clusterChanges; k += 1) {
      const expected = visible + (inChannel ? 0 : 1);
      const at = performance.timeOrigin + performance.now();
      await actor.send(inChannel ? { type: 'leave', channel } : { type: 'join', channel });
      inChannel = !inChannel;
      const due = at + o.clusterGapMs;
      // Poll until every count is right or the next change is due.
      for (;;) {
        await sleep(ctx.opts.quick ? 50 : 250);
        const { right, present } = await loadgen.countsRight(expected, at);
        if (right === present || performance.timeOrigin + performance.now() >= due - 300) break;
      }
      report = await loadgen.counts();
      const latencies: number[] = [];
      const first = running.servers.map(() => Infinity);
      const last = running.servers.map(() => -Infinity);
      let right = 0;
      report.counts.forEach((c, i) => {
        // Right, and changed by this change (a listener that missed the last one may show this count from before).
        if (c !== expected || report.changedAt[i] < at) return;
        right += 1;
        const ms = report.changedAt[i] - at;
        latencies.push(ms);
        const n = nodeOf[i];
        first[n] = Math.min(first[n], report.changedAt[i]);
        last[n] = Math.max(last[n], report.changedAt[i]);
      });
      latencies.sort((a, b) => a - b);
      all.push(...latencies);
      const spreadMs = first.map((f, n) => (Number.isFinite(f) ? round(last[n] - f, 1) : 0));
      const change: ClusterRoomChange = {
        count: expected,
        right,
        p50Ms: quantileSorted(latencies, 0.5) === null ? null : round(quantileSorted(latencies, 0.5)!),
        p99Ms: quantileSorted(latencies, 0.99) === null ? null : round(quantileSorted(latencies, 0.99)!),
        maxMs: latencies.length === 0 ? null : round(latencies[latencies.length - 1]),
        spreadMs,
        msPer10kWrites: spreadMs.map((s, n) => (listenersPerNode[n] > 0 ? round((s * 10_000) / listenersPerNode[n], 1) : 0)),
      };
      if (right !== present()) allRight = false;
      changes.push(change);
      ctx.log(
        `    change ${k + 1} (count ${expected}): ${right}/${present()} right, p50 ${change.p50Ms} ms, p99 ${change.p99Ms} ms, max ${change.maxMs} ms; ` +
          `per 10,000 writes ${change.msPer10kWrites.join(' / ')} ms`,
      );
      const wait = due - (performance.timeOrigin + performance.now());
      if (wait > 0) await sleep(wait);
    }
    const phaseSeconds = (performance.now() - phaseStart) / 1000;
    all.sort((a, b) => a - b);
    const per10k = changes.flatMap((c) => c.msPer10kWrites).sort((a, b) => a - b);
    const result: ClusterRoomResult = {
      listeners,
      connected: filled.ready,
      quiet,
      visible,
      nodes,
      loadgens,
      sourceAddresses: addressCount > 1 ? sourceAddresses : ['127.0.0.1'],
      listenersPerNode,
      cores: ctx.pinning.server ? { servers: `core ${ctx.pinning.server}`, loadgensAndRedis: `core ${ctx.pinning.loadgen}` } : { servers: 'unpinned', loadgensAndRedis: 'unpinned' },
      windowMs: 250,
      occupancyMembers: o.occupancyMembers,
      leaseMs: o.clusterLeaseMs > 0 ? o.clusterLeaseMs : null,
      fill: fillResult,
      changes,
      p99Ms: quantileSorted(all, 0.99) === null ? null : round(quantileSorted(all, 0.99)!),
      maxMs: all.length === 0 ? null : round(all[all.length - 1]),
      allRight,
      msPer10kWritesMedian: quantileSorted(per10k, 0.5),
      msPer10kWritesMax: per10k.length === 0 ? null : per10k[per10k.length - 1],
      idleCpu,
      serverCpu: running.servers.map((s, i) => round((s.cpuSeconds() - cpu1[i]) / phaseSeconds, 3)),
      serverRss: running.servers.map((s) => rssBytes(s.pid)),
      serverPeakRss: peakRss,
      redisCpu: round((running.redisCpuSeconds() - redis1) / phaseSeconds, 3),
      redisRss: running.redis ? rssBytes(running.redis.pid) : 0,
      changePhaseSeconds: round(phaseSeconds, 1),
    };
    ctx.log(
      `    over ${changes.length} changes: p99 ${result.p99Ms} ms, max ${result.maxMs} ms, every listener right: ${allRight}; ` +
        `per 10,000 writes median ${result.msPer10kWritesMedian} ms; server CPU ${result.serverCpu.map((c) => `${Math.round(c * 100)}%`).join(' / ')}, ` +
        `RSS ${result.serverRss.map((r) => `${Math.round(r / 1048576)} MB`).join(' / ')}; Redis CPU ${Math.round(result.redisCpu * 100)}%`,
    );
    return result;
  } finally {
    for (const member of base) member.close();
    clearInterval(sampler);
    actor?.close();
    await running.stop();
    await loadgen.close();
  }
}

/** Until the server processes are idle (below 10 % of a core each over a second), at most 10 minutes. */
async function waitForNodes(pids: number[], ctx: Context): Promise<void> {
  const deadline = Date.now() + (ctx.opts.quick ? 2000 : 600_000);
  const cpu = () => pids.map((pid) => cpuOf(pid));
  for (;;) {
    const before = cpu();
    await sleep(1000);
    const after = cpu();
    if (after.every((t, i) => t - before[i] < 0.1) || Date.now() > deadline) return;
  }
}
