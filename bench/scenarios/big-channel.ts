/**
 * One large channel (default 10,000 members), used by two scenarios:
 *
 * - typing storm: typists toggle typing on an open-loop schedule; each transition reaches every
 *   other member. Latency is from the intended send time to each member's receipt.
 * - join/leave churn: churners leave and rejoin on an open-loop schedule; each join and leave
 *   reaches every other member (latency recorded), and each rejoin gets the member list
 *   (reported as the join-snapshot latency).
 *
 * Most members are listeners: they receive every event but nobody is told about them. Making
 * 10,000 members visible to each other means 100 million member announcements (about 40 GB on
 * the wire) whatever the system; that quadratic cost is what the join storm (join-storm.ts)
 * measures. Here Presence users join while invisible (an empty member list, no announcement) and
 * the actors (typists, churners; `big.actors` of each) then go online; the baselines subscribe to
 * the room without a broadcast and without a place in its member list. Every member receives
 * every event, in every system.
 */
import type { SystemName } from '../loadgen/wire.js';
import type { Context } from './context.js';
import { withPopulation } from './population.js';
import { ladder, runStep, type LadderResult } from './steps.js';
import type { LoadGen } from '../lib/loadgen.js';
import { rssBytes, sleep } from '../lib/proc.js';

/** Waits until no frame has arrived for `quietMs`. */
async function waitUntilQuiet(loadgen: LoadGen, quietMs: number): Promise<void> {
  let frames = -1;
  for (;;) {
    const polled = await loadgen.poll();
    if (polled.frames === frames) return;
    frames = polled.frames;
    await sleep(quietMs);
  }
}

/** Visible members of a channel according to Presence's HTTP API. */
async function memberCount(wsUrl: string, channel: string): Promise<number> {
  const response = await fetch(`${wsUrl.replace(/^ws/, 'http')}/realtime/channels/${encodeURIComponent(channel)}/presence?limit=1`);
  const body = (await response.json()) as { count?: number };
  return body.count ?? -1;
}

export interface FillResult {
  members: number;
  connected: number;
  failed: number;
  /** Connecting and joining quietly. */
  seconds: number;
  /** Presence: the actors going online, until the last announcement arrived. */
  revealSeconds?: number;
  /** Presence: visible members the HTTP API counts in the channel afterwards (the actors). */
  visibleMembers?: number;
  peakRss: number;
  serverCpuSeconds: number;
  /** Largest event-loop delay the server saw while the channel filled. */
  serverLagMaxMs: number;
}

export interface BigChannelResult {
  fill: FillResult;
  typing?: LadderResult & { members: number };
  churn?: LadderResult & { members: number };
}

export async function bigChannelScenario(ctx: Context, system: SystemName, which: { typing: boolean; churn: boolean }): Promise<BigChannelResult> {
  const { members, fillConcurrency, actors, sloMs } = ctx.opts.big;
  return withPopulation(
    ctx,
    {
      system,
      layout: { kind: 'single', channel: 'big', quiet: true },
      total: members,
      concurrency: fillConcurrency,
    },
    async (running) => {
      await running.probe(false);
    },
    async ({ system: running, loadgen, connect, connectCpuSeconds, peakRss }) => {
      const cpuBefore = running.serverCpuSeconds();
      const revealStarted = performance.now();
      let peak = peakRss;
      const sampler = setInterval(() => {
        for (const server of running.servers) peak = Math.max(peak, rssBytes(server.pid));
      }, 250);
      const revealed = await loadgen.reveal(actors, actors);
      const quietMs = ctx.opts.quick ? 200 : 1000;
      await waitUntilQuiet(loadgen, quietMs);
      clearInterval(sampler);
      const revealSeconds = revealed > 0 ? Math.round(performance.now() - revealStarted - quietMs) / 1000 : undefined;
      const [probe] = await running.probe(false);
      const visibleMembers = system === 'presence' ? await memberCount(running.urls[0], 'big') : undefined;
      const fill: FillResult = {
        members,
        connected: connect.ready,
        failed: connect.failed,
        seconds: Math.round(connect.elapsedMs) / 1000,
        ...(revealSeconds !== undefined ? { revealSeconds } : {}),
        ...(visibleMembers !== undefined ? { visibleMembers } : {}),
        peakRss: peak,
        serverCpuSeconds: Math.round((connectCpuSeconds + running.serverCpuSeconds() - cpuBefore) * 100) / 100,
        serverLagMaxMs: Math.round(probe.lagMaxMs),
      };
      ctx.log(
        `  ${system}: channel of ${connect.ready} filled in ${fill.seconds}s` +
          (revealSeconds !== undefined ? `, ${revealed} actors online in ${revealSeconds}s (${visibleMembers} members listed)` : '') +
          `, server peak RSS ${(peak / 1048576).toFixed(0)} MB, max event-loop lag ${fill.serverLagMaxMs} ms, ${fill.serverCpuSeconds} CPU s`,
      );
      const result: BigChannelResult = { fill };
      const base = { durationMs: ctx.opts.stepMs, warmupMs: ctx.opts.warmupMs, population: members, sloMs };
      if (which.typing) {
        await loadgen.mode('typing');
        // Each typist toggles about once a second (more often past `actors`/s), inside the typing timeout.
        const plan = { ...base, op: 'typing' as const, actors: (rate: number) => Math.max(1, Math.min(actors, members - 1, Math.ceil(rate))) };
        const ladderResult = await ladder(ctx, `${system.padEnd(8)} typing`, ctx.opts.typing, (rate) => runStep(ctx, running, loadgen, plan, rate));
        result.typing = { members, ...ladderResult };
      }
      if (which.churn) {
        await loadgen.mode('churn');
        // Each churner leaves or rejoins about twice a second: out for half a second, then back.
        const plan = { ...base, op: 'churn' as const, actors: (rate: number) => Math.max(2, Math.min(actors, members - 1, Math.ceil(rate / 2))) };
        const ladderResult = await ladder(ctx, `${system.padEnd(8)} churn `, ctx.opts.churn, (rate) => runStep(ctx, running, loadgen, plan, rate));
        result.churn = { members, ...ladderResult };
      }
      return result;
    },
  );
}
