/**
 * Join storm: N users connect and join one channel all at once, with each system's ordinary join
 * (Presence: member list to the joiner, `presence.join` to everyone else; the bare ws server:
 * the join relayed to the room; Socket.IO + Redis: stored, member list read back from Redis,
 * join broadcast). Every joiner learns of every other member, so the work grows with the square
 * of N. Reported: time until the last user has joined, the server's CPU, peak memory and its
 * longest event-loop stall. Clients refused while the server is swamped retry once.
 */
import type { SystemName } from '../loadgen/wire.js';
import type { Context } from './context.js';
import { withPopulation } from './population.js';

export interface JoinStormResult {
  users: number;
  joined: number;
  /** Clients whose first attempt failed (refused or cut while the server was swamped). */
  failedFirstAttempt: number;
  seconds: number;
  serverCpuSeconds: number;
  peakRss: number;
  serverLagMaxMs: number;
}

export async function joinStormScenario(ctx: Context, system: SystemName): Promise<JoinStormResult> {
  const { users } = ctx.opts.joinstorm;
  return withPopulation(
    ctx,
    { system, layout: { kind: 'single', channel: 'storm' }, total: users, concurrency: users },
    async (running) => {
      await running.probe(false);
    },
    async ({ system: running, loadgen, connect, connectCpuSeconds, peakRss }) => {
      let elapsedMs = connect.elapsedMs;
      let joined = connect.ready;
      let cpu = connectCpuSeconds;
      if (connect.failed > 0) {
        const cpuBefore = running.serverCpuSeconds();
        const retry = await loadgen.connect(users);
        elapsedMs += retry.elapsedMs;
        joined += retry.ready;
        cpu += running.serverCpuSeconds() - cpuBefore;
      }
      const [probe] = await running.probe(false);
      const result: JoinStormResult = {
        users,
        joined,
        failedFirstAttempt: connect.failed,
        seconds: Math.round(elapsedMs) / 1000,
        serverCpuSeconds: Math.round(cpu * 100) / 100,
        peakRss,
        serverLagMaxMs: Math.round(probe.lagMaxMs),
      };
      ctx.log(
        `  ${system}: ${joined}/${users} joined in ${result.seconds}s (${connect.failed} retried), server ${result.serverCpuSeconds} CPU s, ` +
          `peak RSS ${(peakRss / 1048576).toFixed(0)} MB, longest event-loop stall ${result.serverLagMaxMs} ms`,
      );
      return result;
    },
  );
}
