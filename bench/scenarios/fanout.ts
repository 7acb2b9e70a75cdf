/**
 * Fan-out: C channels × M members, every member a sender. Presence updates (user meta, status with
 * a message, channel meta, in rotation) go out on an open-loop schedule at a fixed rate per step,
 * stepped up until p99 passes the objective. Every receiving member records the latency from the
 * intended send time. With `nodes: 2` (multi-node) the members of each channel are split across two
 * server processes sharing one Redis.
 */
import type { SystemName } from '../loadgen/wire.js';
import type { Context } from './context.js';
import { withPopulation } from './population.js';
import { ladder, runStep, type LadderPlan, type LadderResult } from './steps.js';

export interface FanoutResult extends LadderResult {
  channels: number;
  members: number;
  users: number;
  nodes: number;
  connectSeconds: number;
}

export async function fanoutScenario(ctx: Context, system: SystemName, params: { channels: number; members: number; nodes: number } & LadderPlan): Promise<FanoutResult> {
  const { channels, members, nodes } = params;
  const users = channels * members;
  return withPopulation(
    ctx,
    { system, layout: { kind: 'groups', size: members }, total: users, nodes },
    undefined,
    async ({ system: running, loadgen, connect }) => {
      ctx.log(`  ${system}: ${connect.ready} users in ${channels} channels of ${members}${nodes > 1 ? ` over ${nodes} nodes` : ''} (connected in ${(connect.elapsedMs / 1000).toFixed(1)}s)`);
      await loadgen.mode('markers');
      const plan = { op: 'fanout' as const, durationMs: ctx.opts.stepMs, warmupMs: ctx.opts.warmupMs, deliveriesPerEvent: members - 1, population: users };
      const result = await ladder(ctx, system.padEnd(8), params, (rate) => runStep(ctx, running, loadgen, plan, rate));
      return { channels, members, users, nodes, connectSeconds: Math.round(connect.elapsedMs) / 1000, ...result };
    },
  );
}
