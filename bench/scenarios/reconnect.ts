/**
 * Reconnect storm: N users in channels of `channelSize`, plus one observer per channel that stays
 * connected. Every user's socket is cut at once (from the client side, no close handshake, as when
 * a load balancer or a network blip drops them), and all reconnect at once — Presence clients with
 * the `sessionId` their `welcome` gave them. Reported: the time until every user is back (connected,
 * and its channel's member list received), and the join/leave events the observers and the users
 * themselves saw meanwhile. Presence's offline delay should make that zero.
 */
import type { SystemName } from '../loadgen/wire.js';
import type { Context } from './context.js';
import { withPopulation } from './population.js';

export interface ReconnectResult {
  users: number;
  observers: number;
  dropped: number;
  back: number;
  failed: number;
  /** From the cut until the last user was back, seconds. */
  backSeconds: number;
  /** Presence: sessions resumed with their sessionId, and those that got a fresh session. */
  resumed?: number;
  notResumed?: number;
  /** join + leave events received by the observers (the users who stayed). */
  eventsAtObservers: number;
  joinsAtObservers: number;
  leavesAtObservers: number;
  /** join + leave events received by the reconnecting users. */
  eventsAtReconnected: number;
  serverCpuSeconds: number;
  /** Failed connection attempts by reason (`closed 1013`, `timeout`, …), retried ones included. */
  attemptErrors: Record<string, number>;
}

export async function reconnectScenario(ctx: Context, system: SystemName): Promise<ReconnectResult> {
  const { users, channelSize, concurrency, settleMs } = ctx.opts.reconnect;
  const groupSize = channelSize + 1;
  const channels = Math.ceil(users / channelSize);
  const total = channels * groupSize;
  return withPopulation(
    ctx,
    { system, layout: { kind: 'groups', size: groupSize }, total },
    undefined,
    async ({ system: running, loadgen }) => {
      await loadgen.mode('events');
      const cpuBefore = running.serverCpuSeconds();
      const storms = await loadgen.storm({ observerEvery: groupSize, concurrency, settleMs });
      const cpu = running.serverCpuSeconds() - cpuBefore;
      const sum = (pick: (s: (typeof storms)[number]) => number) => storms.reduce((total, s) => total + pick(s), 0);
      const result: ReconnectResult = {
        users: sum((s) => s.dropped),
        observers: total - sum((s) => s.dropped),
        dropped: sum((s) => s.dropped),
        back: sum((s) => s.ready),
        failed: sum((s) => s.failed),
        backSeconds: Math.round(Math.max(...storms.map((s) => s.backMs))) / 1000,
        ...(system === 'presence' ? { resumed: sum((s) => s.resumed), notResumed: sum((s) => s.notResumed) } : {}),
        eventsAtObservers: sum((s) => s.events.joinsAtObservers + s.events.leavesAtObservers),
        joinsAtObservers: sum((s) => s.events.joinsAtObservers),
        leavesAtObservers: sum((s) => s.events.leavesAtObservers),
        eventsAtReconnected: sum((s) => s.events.joinsAtOthers + s.events.leavesAtOthers),
        serverCpuSeconds: Math.round(cpu * 100) / 100,
        attemptErrors: mergeCounts(storms.map((s) => s.errors)),
      };
      ctx.log(
        `  ${system}: ${result.back}/${result.dropped} back in ${result.backSeconds}s` +
          (result.resumed !== undefined ? ` (${result.resumed} resumed)` : '') +
          `; join/leave events seen by observers ${result.eventsAtObservers}, by reconnected users ${result.eventsAtReconnected}` +
          (Object.keys(result.attemptErrors).length > 0 ? `; failed attempts ${JSON.stringify(result.attemptErrors)}` : ''),
      );
      return result;
    },
  );
}

/** Sums per-worker counts of failed connection attempts by reason. */
function mergeCounts(all: Array<Record<string, number>>): Record<string, number> {
  const merged: Record<string, number> = {};
  for (const counts of all) for (const [key, n] of Object.entries(counts)) merged[key] = (merged[key] ?? 0) + n;
  return merged;
}
