/**
 * Large rooms (issue 16; docs/protocol.md, "Large rooms"), on one node, side by side in one run:
 *
 * - busy room: `members` visible members in one channel, `rate` status changes a second among them
 *   (1–2 % of the members), each to every other member. Presence with windows (its defaults)
 *   against Presence sending every change at once (both thresholds 0), the bare ws relay and
 *   Socket.IO + Redis (which relay every change as it comes, as in the other scenarios). Reported:
 *   frames per member per second, the server's CPU, the change-to-member latency.
 * - huge room: `hugeMembers` users join one channel within `fillSeconds` (open loop, one join
 *   after the other), every client with `features=occupancy`. Presence with occupancy from
 *   `occupancyMembers` on: whether every member's count is right, and how long after the last
 *   join; bytes per member over the whole fill; server CPU and peak RSS. Against Presence with
 *   both modes off (every member gets every join and the whole list) at the sizes of
 *   `perEventSizes`, at the same join rate, up to the largest that finishes within `settleMs` of
 *   its last join.
 *
 * - cluster room (large-room-cluster.ts, off unless `clusterListeners` > 0): occupancy listeners
 *   in one channel over several server processes through Redis, and single changes 3 s apart.
 */
import type { CountReport } from '../loadgen/worker.js';
import type { SystemName } from '../loadgen/wire.js';
import { LoadGen, connectionsPerWorker } from '../lib/loadgen.js';
import { ChildExitedError, openFileLimit, rssBytes, sleep } from '../lib/proc.js';
import { startSystem } from '../lib/systems.js';
import type { Context } from './context.js';
import { clusterRoom, type ClusterRoomResult } from './large-room-cluster.js';
import { Skip, withPopulation } from './population.js';
import { runStep, waitForQuiet, type StepResult } from './steps.js';

export type BusyVariant = 'windowed' | 'perEvent' | 'ws' | 'socketio';

export interface BusyResult {
  members: number;
  connected: number;
  /** Seconds until every member had joined (visibly for Presence, quietly for the baselines). */
  fillSeconds: number;
  step: StepResult;
  framesPerMemberPerSec: number;
  bytesPerMemberPerSec: number;
}

export interface HugeResult {
  members: number;
  connected: number;
  /** From the first join to the last one sent. */
  fillSeconds: number;
  /** Members whose count equals the channel's members at the end. */
  countsRight: number;
  /** After the last join: when the last member's count became right, and the 99th percentile (ms). */
  lastRightMs: number | null;
  p99RightMs: number | null;
  /** Bytes each member received over the whole fill (welcome included). */
  bytesPerMemberMean: number;
  bytesPerMemberMax: number;
  serverCpuSeconds: number;
  peakRss: number;
  /** Every count right within `settleMs` of the last join. */
  finished: boolean;
}

type Outcome<T> = T | { skipped: string } | { error: string };

export interface LargeRoomResult {
  busy: Partial<Record<BusyVariant, Outcome<BusyResult>>>;
  huge: { occupancy: Outcome<HugeResult>; perEvent: Outcome<HugeResult>[] };
  /** Occupancy listeners over several nodes (absent when `clusterListeners` is 0). */
  cluster?: Outcome<ClusterRoomResult>;
  /** The issue's goals, judged from the figures above. */
  goals: { name: string; goal: string; value: string; met: boolean | null }[];
}

const OFF = { PRESENCE_LARGE_CHANNEL_MEMBERS: '0', PRESENCE_OCCUPANCY_ONLY_MEMBERS: '0' };

const isResult = <T>(o: Outcome<T> | undefined): o is T => o !== undefined && !('skipped' in (o as object)) && !('error' in (o as object));

async function attempt<T>(ctx: Context, label: string, run: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof Skip) {
      ctx.log(`  ${label}: skipped: ${error.message}`);
      return { skipped: error.message };
    }
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    ctx.log(`  ${label}: ERROR ${message}`);
    return { error: message };
  }
}

async function busyRoom(ctx: Context, variant: BusyVariant): Promise<BusyResult> {
  const { members, rate, durationMs } = ctx.opts.largeroom;
  const system: SystemName = variant === 'windowed' || variant === 'perEvent' ? 'presence' : variant;
  return withPopulation(
    ctx,
    {
      system,
      // Presence members join visibly (the room's whole cost); the relays subscribe, as in the big-channel scenario.
      layout: { kind: 'single', channel: 'busy', quiet: system !== 'presence' },
      total: members,
      ...(variant === 'perEvent' ? { env: OFF } : variant === 'windowed' ? { env: { PRESENCE_LARGE_CHANNEL_MEMBERS: String(ctx.opts.largeroom.windowMembers) } } : {}),
    },
    undefined,
    async ({ system: running, loadgen, connect }) => {
      await loadgen.mode('markers');
      const step = await runStep(ctx, running, loadgen, {
        op: 'fanout',
        kind: 'status',
        durationMs: durationMs,
        warmupMs: Math.min(2000, durationMs / 4),
        deliveriesPerEvent: members - 1,
        population: members,
        // The windowed run's objective is the window plus 100 ms; the others' the same, to compare.
        sloMs: 350,
      }, rate);
      const result: BusyResult = {
        members,
        connected: connect.ready,
        fillSeconds: Math.round(connect.elapsedMs) / 1000,
        step,
        framesPerMemberPerSec: Math.round((step.framesPerSec / members) * 100) / 100,
        bytesPerMemberPerSec: Math.round(step.bytesPerSec / members),
      };
      ctx.log(
        `  ${variant.padEnd(9)} ${rate} changes/s among ${members}: ${result.framesPerMemberPerSec} frames/member/s, ${result.bytesPerMemberPerSec} B/member/s, ` +
          `server ${Math.round(step.serverCpu * 100)}%, p50 ${step.latency.p50Ms} ms p99 ${step.latency.p99Ms} ms, ${step.delivered}/${step.expected} delivered (filled in ${result.fillSeconds}s)`,
      );
      return result;
    },
  );
}

/** The `q`-quantile of a list (nearest rank). */
function quantile(values: number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function hugeRoom(ctx: Context, members: number, occupancy: boolean): Promise<HugeResult> {
  const { fillSeconds, occupancyMembers, settleMs } = ctx.opts.largeroom;
  if (members > openFileLimit() - 200) throw new Skip(`needs ${members} sockets in one server process; the open-files limit here is ${openFileLimit()}`);
  const env: Record<string, string> = occupancy ? { PRESENCE_OCCUPANCY_ONLY_MEMBERS: String(occupancyMembers) } : { ...OFF };
  // The fill is the measurement: connections are not refused for event-loop lag while it runs.
  env.PRESENCE_MAX_EVENT_LOOP_LAG_MS = '0';
  const workers = Math.ceil(members / connectionsPerWorker(openFileLimit()));
  const loadgen = await LoadGen.start(workers, ctx.pinning.loadgen);
  let running;
  try {
    running = await startSystem('presence', { pinning: ctx.pinning, env, presenceEntry: ctx.opts.presenceEntry, nodeFlags: ctx.opts.serverFlags });
  } catch (error) {
    await loadgen.close();
    if (error instanceof ChildExitedError) throw new Skip(`server refused to start: ${error.reason}`);
    throw error;
  }
  try {
    await loadgen.init({ system: 'presence', urls: running.urls, layout: { kind: 'single', channel: 'huge' }, total: members, sourceAddresses: [], client: ctx.opts.client, features: 'occupancy' });
    await loadgen.mode('count');
    await waitForQuiet(ctx, [...running.servers.map((s) => s.pid), ...loadgen.pids], ctx.opts.quick ? 0 : 20_000);
    let peakRss = 0;
    const sampler = setInterval(() => {
      for (const server of running.servers) peakRss = Math.max(peakRss, rssBytes(server.pid));
    }, 250);
    const cpuBefore = running.serverCpuSeconds();
    const startAt = performance.timeOrigin + performance.now() + 200;
    let report: CountReport;
    let filled: { ready: number; failed: number; lastJoinAt: number };
    try {
      // Every size at the same join rate: the huge room's.
      filled = await loadgen.fill({ rate: ctx.opts.largeroom.hugeMembers / fillSeconds, startAt });
      // Until every count is right (or the time is up), then until nothing changes any more.
      const deadline = filled.lastJoinAt + settleMs;
      for (;;) {
        report = await loadgen.counts();
        const right = report.counts.filter((c) => c === filled.ready).length;
        if (right === report.counts.length || performance.timeOrigin + performance.now() > deadline) break;
        await sleep(ctx.opts.quick ? 50 : 250);
      }
      await sleep(ctx.opts.quick ? 100 : 1000);
      report = await loadgen.counts();
    } finally {
      clearInterval(sampler);
    }
    const serverCpuSeconds = Math.round((running.serverCpuSeconds() - cpuBefore) * 100) / 100;
    const lastJoinAt = report.lastJoinAt;
    const right = report.counts.map((c, i) => (c === filled.ready ? i : -1)).filter((i) => i >= 0);
    const rightAfter = right.map((i) => Math.max(0, report.changedAt[i] - lastJoinAt));
    const finished = right.length === report.counts.length && report.failed === 0;
    if (!finished) {
      const seen = new Map<number, number>();
      for (const c of report.counts) seen.set(c, (seen.get(c) ?? 0) + 1);
      ctx.log(`    counts held at the end (count: members): ${[...seen].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([c, k]) => `${c}: ${k}`).join(', ')}`);
    }
    const result: HugeResult = {
      members,
      connected: filled.ready,
      fillSeconds: Math.round(lastJoinAt - startAt) / 1000,
      countsRight: right.length,
      lastRightMs: finished ? Math.round(Math.max(...rightAfter)) : null,
      p99RightMs: finished ? Math.round(quantile(rightAfter, 0.99)!) : null,
      bytesPerMemberMean: Math.round(report.bytes.reduce((a, b) => a + b, 0) / report.bytes.length),
      bytesPerMemberMax: Math.max(...report.bytes),
      serverCpuSeconds,
      peakRss,
      finished,
    };
    ctx.log(
      `  ${occupancy ? 'occupancy' : 'per event'} ${members} joined in ${result.fillSeconds}s: ${result.countsRight}/${members} counts right` +
        (finished ? `, the last ${result.lastRightMs} ms after the last join (p99 ${result.p99RightMs} ms)` : ` (not within ${settleMs} ms)`) +
        `, ${(result.bytesPerMemberMean / 1024).toFixed(1)} KB per member (max ${(result.bytesPerMemberMax / 1024).toFixed(1)}), server ${serverCpuSeconds} CPU s, peak RSS ${(peakRss / 1048576).toFixed(0)} MB`,
    );
    return result;
  } finally {
    await running.stop();
    await loadgen.close();
  }
}

function judge(result: LargeRoomResult): LargeRoomResult['goals'] {
  const { busy, huge } = result;
  const windowed = busy.windowed;
  const perEvent = busy.perEvent;
  const goals: LargeRoomResult['goals'] = [];
  const windowMs = 250;
  if (isResult(windowed)) {
    goals.push({ name: 'busy room: frames per member per second', goal: '≤ 5', value: String(windowed.framesPerMemberPerSec), met: windowed.framesPerMemberPerSec <= 5 });
    goals.push({ name: 'busy room: p99 change to member', goal: `≤ ${windowMs + 100} ms`, value: `${Math.round(windowed.step.latency.p99Ms)} ms`, met: windowed.step.latency.p99Ms <= windowMs + 100 });
    if (isResult(perEvent)) {
      const ratio = perEvent.step.serverCpu > 0 ? Math.round((windowed.step.serverCpu / perEvent.step.serverCpu) * 100) / 100 : null;
      goals.push({ name: 'busy room: server CPU, windows / per event', goal: '≤ 0.5', value: ratio === null ? 'n/a' : `${ratio}`, met: ratio === null ? null : ratio <= 0.5 });
    }
  }
  const occ = huge.occupancy;
  if (isResult(occ)) {
    goals.push({ name: 'huge room: every count right within 1 s of the last join', goal: '≤ 1000 ms', value: occ.lastRightMs === null ? `${occ.countsRight}/${occ.members} right` : `${occ.lastRightMs} ms`, met: occ.lastRightMs !== null && occ.lastRightMs <= 1000 });
    goals.push({ name: 'huge room: bytes per member over the fill', goal: '≤ 50 KB', value: `${(occ.bytesPerMemberMean / 1024).toFixed(1)} KB (max ${(occ.bytesPerMemberMax / 1024).toFixed(1)})`, met: occ.bytesPerMemberMax <= 50 * 1024 });
  }
  const cluster = result.cluster;
  if (isResult(cluster)) {
    const window = cluster.windowMs;
    const n = cluster.changes.length;
    goals.push({
      name: `cluster room, ${cluster.connected} listeners on ${cluster.nodes} nodes: every listener's count right after each of ${n} changes, max`,
      goal: `≤ ${window + 2500} ms`,
      value: cluster.maxMs === null ? 'n/a' : `${cluster.maxMs} ms${cluster.allRight ? '' : ' (not every listener right)'}`,
      met: cluster.maxMs !== null && cluster.allRight && cluster.maxMs <= window + 2500,
    });
    goals.push({ name: 'cluster room: p99 change to count', goal: `≤ ${window + 2000} ms`, value: cluster.p99Ms === null ? 'n/a' : `${cluster.p99Ms} ms`, met: cluster.p99Ms !== null && cluster.p99Ms <= window + 2000 });
    goals.push({ name: 'cluster room: at least 10 changes 3 s apart', goal: '≥ 10', value: String(n), met: n >= 10 });
  }
  return goals;
}

export async function largeRoomScenario(ctx: Context): Promise<LargeRoomResult> {
  const o = ctx.opts.largeroom;
  const busy: LargeRoomResult['busy'] = {};
  const presence = ctx.opts.systems.includes('presence');
  const cluster = presence && o.clusterListeners > 0 ? () => attempt(ctx, 'cluster room', () => clusterRoom(ctx)) : undefined;
  if (o.clusterOnly > 0) {
    const skipped = { skipped: 'largeroom.cluster-only=1' };
    const result: LargeRoomResult = { busy, huge: { occupancy: skipped, perEvent: [] }, goals: [] };
    if (cluster) result.cluster = await cluster();
    result.goals = judge(result);
    return result;
  }
  ctx.log(`  busy room: ${o.members} visible members, ${o.rate} status changes/s`);
  const variants: BusyVariant[] = [];
  if (ctx.opts.systems.includes('presence')) variants.push('windowed', 'perEvent');
  if (ctx.opts.systems.includes('ws')) variants.push('ws');
  if (ctx.opts.systems.includes('socketio')) variants.push('socketio');
  for (const variant of variants) busy[variant] = await attempt(ctx, `busy ${variant}`, () => busyRoom(ctx, variant));

  if (!ctx.opts.systems.includes('presence')) {
    const skipped = { skipped: 'measures Presence only, and --systems leaves it out' };
    return { busy, huge: { occupancy: skipped, perEvent: [] }, goals: judge({ busy, huge: { occupancy: skipped, perEvent: [] }, goals: [] }) };
  }
  ctx.log(`  huge room: ${o.hugeMembers} users join in ${o.fillSeconds}s with features=occupancy (occupancy from ${o.occupancyMembers} visible members)`);
  const occupancy = await attempt(ctx, 'huge occupancy', () => hugeRoom(ctx, o.hugeMembers, true));
  const perEvent: Outcome<HugeResult>[] = [];
  for (const size of o.perEventSizes) {
    const outcome = await attempt(ctx, `huge per event ${size}`, () => hugeRoom(ctx, size, false));
    perEvent.push(outcome);
    if (!isResult(outcome) || !outcome.finished) break;
  }
  const result: LargeRoomResult = { busy, huge: { occupancy, perEvent }, goals: [] };
  if (cluster) result.cluster = await cluster();
  result.goals = judge(result);
  return result;
}
