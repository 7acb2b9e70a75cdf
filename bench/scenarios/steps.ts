/**
 * The open-loop step machinery shared by the rate scenarios (fan-out, typing storm, churn,
 * multi-node): one step offers a fixed event rate for a fixed time, waits for the deliveries, and
 * judges the step against the latency objective; a ladder raises the rate until a step fails,
 * then bisects between the last pass and the first failure.
 */
import { mergeEncoded, summarize, type LatencySummary } from '../lib/histogram.js';
import type { LoadGen } from '../lib/loadgen.js';
import { foreignCpu, machineBusySeconds, selfCpuSeconds, sleep } from '../lib/proc.js';
import type { RunningSystem } from '../lib/systems.js';
import type { UpdateKind } from '../loadgen/wire.js';
import type { Context } from './context.js';

export interface StepResult {
  /** Events per second offered by the schedule. */
  offeredRate: number;
  /** Events per second actually sent inside the measured window. */
  achievedRate: number;
  /** Deliveries per second received inside the window (each event reaches many members). */
  deliveriesPerSec: number;
  /** WebSocket frames (and bytes) per second that reached the clients inside the window, all of them together. */
  framesPerSec: number;
  bytesPerSec: number;
  expected: number;
  delivered: number;
  deliveryRatio: number;
  latency: LatencySummary;
  /** Churn only: from a join sent until its member snapshot arrived at the joiner. */
  joinSnapshot?: LatencySummary;
  /** CPU used in the measured window, in cores (1 = one core fully busy). */
  serverCpu: number;
  loadgenCpu: number;
  redisCpu?: number;
  /** CPU other processes on this shared machine used during the window, in cores. */
  foreignCpu: number;
  serverLagP99Ms: number;
  serverLagMaxMs: number;
  sendLagP99Ms: number;
  errorFrames: number;
  unexpectedCloses: number;
  passed: boolean;
  /** Why the step failed (or a caveat when it passed). */
  note?: string;
  /** The step failed while other work competed for the CPU, and was run again (the next entry). */
  superseded?: boolean;
}

/** Other tenants' CPU (cores) above which a step is considered disturbed. */
const DISTURBED = 0.15;

function ourPids(system: RunningSystem, loadgen: LoadGen): number[] {
  return [...system.servers.map((s) => s.pid), ...system.redisProcesses.map((r) => r.pid), ...loadgen.pids];
}

/** Waits (up to a limit) until nothing else on the machine uses a noticeable share of the CPU. */
export async function waitForQuiet(ctx: Context, pids: number[], maxWaitMs = 60_000): Promise<void> {
  const deadline = Date.now() + (ctx.opts.quick ? 0 : maxWaitMs);
  let reported = false;
  for (;;) {
    const foreign = await foreignCpu(pids, ctx.opts.quick ? 50 : 500);
    if (foreign < DISTURBED || Date.now() > deadline) return;
    if (!reported) ctx.log(`    other processes are using ${foreign.toFixed(2)} cores; waiting for the machine to be quiet`);
    reported = true;
  }
}

export type ScheduleOp = 'fanout' | 'typing' | 'churn';

export interface StepPlan {
  op: ScheduleOp;
  durationMs: number;
  warmupMs: number;
  /** Typing: typists; churn: churners. May depend on the rate. */
  actors?: (rate: number) => number;
  /** Deliveries each event sent in the window should produce (fan-out: members − 1). */
  deliveriesPerEvent?: number;
  /** Clients that must be connected before a step (lost ones are reconnected first). */
  population: number;
  /** Fan-out: the kind of update every sender sends (default: meta, status and channel meta in turn). */
  kind?: UpdateKind;
  /** The p99 objective of this scenario (ms); the run's --slo-ms when absent. */
  sloMs?: number;
}

const nowMs = () => performance.timeOrigin + performance.now();

export async function runStep(ctx: Context, system: RunningSystem, loadgen: LoadGen, plan: StepPlan, rate: number): Promise<StepResult> {
  const before = await loadgen.poll();
  if (before.ready < plan.population) {
    ctx.log(`    reconnecting ${plan.population - before.ready} lost clients before the step`);
    await loadgen.connect(ctx.opts.connectConcurrency);
  }
  await waitForQuiet(ctx, ourPids(system, loadgen));
  await loadgen.collect();
  await system.probe(false);
  const startAt = nowMs() + (ctx.opts.quick ? 100 : 300);
  const windowStart = startAt + plan.warmupMs;
  const windowEnd = startAt + plan.durationMs;
  const cpu = measureCpu(system, loadgen, windowStart, windowEnd);
  const schedule = await loadgen.schedule(plan.op, {
    rate,
    startAt,
    durationMs: plan.durationMs,
    warmupMs: plan.warmupMs,
    actors: plan.actors?.(rate),
    ...(plan.kind ? { kind: plan.kind } : {}),
  });
  const expected = plan.deliveriesPerEvent !== undefined ? schedule.sentInWindow * plan.deliveriesPerEvent : schedule.expectedInWindow;
  await drain(loadgen, expected);
  const used = await cpu;
  const foreign = used.foreign;
  const probes = await system.probe(false);
  const collected = await loadgen.collect();
  const windowSeconds = (windowEnd - windowStart) / 1000;
  const delivered = collected.reduce((sum, c) => sum + c.deliveredInWindow, 0);
  const latency = summarize(mergeEncoded(collected.map((c) => c.histogram)));
  const joinSnapshot = plan.op === 'churn' ? summarize(mergeEncoded(collected.map((c) => c.syncHistogram))) : undefined;
  const unexpectedCloses = collected.reduce((sum, c) => sum + Object.values(c.closes).reduce((a, b) => a + b, 0), 0);
  const errorFrames = collected.reduce((sum, c) => sum + c.errorFrames, 0);
  const deliveryRatio = expected > 0 ? delivered / expected : 0;
  const achievedRate = schedule.sentInWindow / windowSeconds;
  const notes: string[] = [];
  const sloMs = plan.sloMs ?? ctx.opts.sloMs;
  if (latency.p99Ms > sloMs) notes.push(`p99 ${latency.p99Ms} ms > ${sloMs} ms`);
  if (deliveryRatio < 0.999) notes.push(`${((1 - deliveryRatio) * 100).toFixed(2)}% of deliveries missing`);
  if (schedule.sentInWindow < schedule.scheduledInWindow * 0.95) notes.push(`sent ${schedule.sentInWindow} of ${schedule.scheduledInWindow} scheduled events`);
  if (unexpectedCloses > 0) notes.push(`${unexpectedCloses} connections closed`);
  if (errorFrames > 0) notes.push(`${errorFrames} error frames`);
  const passed = notes.length === 0;
  if (foreign >= DISTURBED) notes.push(`other processes used ${foreign.toFixed(2)} cores`);
  if (passed && used.loadgen > 0.9) notes.push('load generator near saturation');
  return {
    offeredRate: rate,
    achievedRate: round(achievedRate),
    deliveriesPerSec: round(delivered / windowSeconds),
    framesPerSec: round(collected.reduce((sum, c) => sum + c.framesInWindow, 0) / windowSeconds),
    bytesPerSec: round(collected.reduce((sum, c) => sum + c.bytesInWindow, 0) / windowSeconds),
    expected,
    delivered,
    deliveryRatio: Math.round(deliveryRatio * 100000) / 100000,
    latency,
    ...(joinSnapshot ? { joinSnapshot } : {}),
    serverCpu: round2(used.server),
    loadgenCpu: round2(used.loadgen),
    ...(system.redis ? { redisCpu: round2(used.redis) } : {}),
    foreignCpu: round2(foreign),
    serverLagP99Ms: round2(Math.max(...probes.map((p) => p.lagP99Ms))),
    serverLagMaxMs: round2(Math.max(...probes.map((p) => p.lagMaxMs))),
    sendLagP99Ms: round2(schedule.sendLagP99Ms),
    errorFrames,
    unexpectedCloses,
    passed,
    ...(notes.length > 0 ? { note: notes.join('; ') } : {}),
  };
}

/** CPU seconds per second of each process group (and of everything else) between two instants. */
async function measureCpu(system: RunningSystem, loadgen: LoadGen, from: number, to: number): Promise<{ server: number; loadgen: number; redis: number; foreign: number }> {
  await sleep(Math.max(0, from - nowMs()));
  const read = () => ({ server: system.serverCpuSeconds(), loadgen: loadgen.cpuSeconds(), redis: system.redisCpuSeconds(), self: selfCpuSeconds(), busy: machineBusySeconds(), at: nowMs() });
  const start = read();
  await sleep(Math.max(0, to - nowMs()));
  const end = read();
  const seconds = (end.at - start.at) / 1000;
  const delta = (key: 'server' | 'loadgen' | 'redis' | 'self' | 'busy') => (end[key] - start[key]) / seconds;
  return {
    server: delta('server'),
    loadgen: delta('loadgen'),
    redis: delta('redis'),
    foreign: Math.max(0, delta('busy') - delta('server') - delta('loadgen') - delta('redis') - delta('self')),
  };
}

/**
 * Waits for the window's deliveries (or until they stop coming), then until the system is quiet,
 * so that a backlog from an overloaded step does not spill into the next one.
 */
export async function drain(loadgen: LoadGen, expected: number): Promise<void> {
  let last = -1;
  let lastChange = nowMs();
  const deadline = nowMs() + 15_000;
  while (nowMs() < deadline) {
    const { deliveredInWindow } = await loadgen.poll();
    if (deliveredInWindow >= expected) break;
    if (deliveredInWindow !== last) {
      last = deliveredInWindow;
      lastChange = nowMs();
    } else if (nowMs() - lastChange > 1500) {
      break;
    }
    await sleep(100);
  }
  let frames = -1;
  const quietDeadline = nowMs() + 15_000;
  while (nowMs() < quietDeadline) {
    const polled = await loadgen.poll();
    if (polled.frames === frames) break;
    frames = polled.frames;
    await sleep(150);
  }
}

export interface LadderPlan {
  /** Fixed rates (quick mode, or when given on the command line): each runs, in order. */
  rates?: number[];
  start: number;
  factor: number;
  maxSteps: number;
  /** Bisection steps between the last passing and the first failing rate. */
  refine: number;
}

export interface LadderResult {
  steps: StepResult[];
  /** Highest offered rate that passed (p99 within the objective, every delivery made). */
  maxSustainedRate: number;
  /** The lowest rate that failed, when one did. */
  firstFailedRate?: number;
}

export async function ladder(ctx: Context, label: string, plan: LadderPlan, step: (rate: number) => Promise<StepResult>): Promise<LadderResult> {
  const steps: StepResult[] = [];
  const run = async (rate: number) => {
    for (let attempt = 1; ; attempt += 1) {
      const result = await step(rate);
      steps.push(result);
      ctx.log(`  ${label} ${formatStep(result)}`);
      // A failure while other tenants competed for the CPU says little about the system: run it
      // again (the machine is shared); the failed attempt stays in the results, marked.
      if (result.passed || result.foreignCpu < DISTURBED || attempt >= 3) return result;
      result.superseded = true;
      ctx.log(`  ${label} repeating the step: it was disturbed`);
    }
  };
  let best = 0;
  let failed: number | undefined;
  if (plan.rates && plan.rates.length > 0) {
    for (const rate of plan.rates) {
      const result = await run(rate);
      if (result.passed) best = Math.max(best, rate);
      else failed = Math.min(failed ?? Infinity, rate);
    }
    return { steps, maxSustainedRate: best, ...(failed !== undefined ? { firstFailedRate: failed } : {}) };
  }
  let rate = plan.start;
  for (let i = 0; i < plan.maxSteps; i += 1) {
    const result = await run(Math.round(rate));
    if (result.passed) {
      best = Math.round(rate);
      rate *= plan.factor;
    } else {
      failed = Math.round(rate);
      if (best > 0) break;
      // Even the first rate failed: come down until one passes.
      rate /= plan.factor * plan.factor;
      if (rate < 1) break;
    }
  }
  for (let i = 0; i < plan.refine && best > 0 && failed !== undefined; i += 1) {
    const mid = Math.round(Math.sqrt(best * failed));
    if (mid <= best || mid >= failed) break;
    const result = await run(mid);
    if (result.passed) best = mid;
    else failed = mid;
  }
  return { steps, maxSustainedRate: best, ...(failed !== undefined ? { firstFailedRate: failed } : {}) };
}

export function formatStep(s: StepResult): string {
  const verdict = s.passed ? 'ok  ' : 'FAIL';
  return (
    `${verdict} ${String(s.offeredRate).padStart(6)}/s  ` +
    `p50 ${fmtMs(s.latency.p50Ms)} p99 ${fmtMs(s.latency.p99Ms)} max ${fmtMs(s.latency.maxMs)}  ` +
    `${Math.round(s.deliveriesPerSec)} deliveries/s  server ${pct(s.serverCpu)} loadgen ${pct(s.loadgenCpu)}` +
    (s.redisCpu !== undefined ? ` redis ${pct(s.redisCpu)}` : '') +
    (s.note ? `  (${s.note})` : '')
  );
}

const fmtMs = (ms: number) => `${ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0)}ms`.padStart(8);
const pct = (cores: number) => `${Math.round(cores * 100)}%`;
const round = (n: number) => Math.round(n);
const round2 = (n: number) => Math.round(n * 100) / 100;
