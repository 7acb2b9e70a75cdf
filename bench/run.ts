/**
 * The benchmark orchestrator: `npm run bench -- [--quick] [options]` (see --help).
 *
 * For each scenario and each system it starts the server process(es) pinned to one core, the
 * load generator process(es) pinned to the other, runs the scenario over real WebSocket
 * connections on loopback, and stops everything. At the end it prints a table, writes the JSON
 * results and an SVG chart next to them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, freemem, release, setPriority, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import type { SystemName } from './loadgen/wire.js';
import { renderChart } from './chart.js';
import { BENCH_DIR, REPO_DIR, defaultPinning, killAllChildren, openFileLimit, presenceEntry } from './lib/proc.js';
import { computeRatios, computeTargets, renderTables, splitBigChannel, type Outcome, type Results, type ScenarioResults } from './lib/report.js';
import { PUSHER_SCENARIOS, SYSTEM_LABELS } from './lib/systems.js';
import { bigChannelScenario } from './scenarios/big-channel.js';
import { connectionsScenario } from './scenarios/connections.js';
import { HELP, SCENARIOS, defaultOptions, parseOptions, type Context, type Options } from './scenarios/context.js';
import { fanoutScenario } from './scenarios/fanout.js';
import { joinStormScenario } from './scenarios/join-storm.js';
import { largeRoomScenario } from './scenarios/large-room.js';
import { Skip } from './scenarios/population.js';
import { reconnectScenario } from './scenarios/reconnect.js';
import { scaleoutScenario } from './scenarios/scaleout.js';

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

function defaultOut(opts: Options): string {
  if (opts.quick) return join(BENCH_DIR, 'scratch', 'quick.json');
  const complete = JSON.stringify(opts) === JSON.stringify({ ...defaultOptions(false), pin: opts.pin });
  if (complete) return join(BENCH_DIR, 'results', 'full.json');
  const scaleoutOnly = JSON.stringify(opts) === JSON.stringify({ ...defaultOptions(false), pin: opts.pin, scenarios: ['scaleout'] });
  if (scaleoutOnly) return join(BENCH_DIR, 'results', 'scaleout.json');
  const largeRoomOnly = JSON.stringify(opts) === JSON.stringify({ ...defaultOptions(false), pin: opts.pin, scenarios: ['largeroom'] });
  if (largeRoomOnly) return join(BENCH_DIR, 'results', 'largeroom.json');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  return join(BENCH_DIR, 'scratch', `run-${stamp}.json`);
}

function machine(opts: Options, pinning: Context['pinning']): Record<string, unknown> {
  const cpuList = cpus();
  return {
    cpus: cpuList.length,
    cpuModel: cpuList[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    freeMemoryGiB: Math.round(freemem() / 2 ** 30),
    node: process.version,
    kernel: `${process.platform} ${release()}`,
    pinning: pinning.server ? { server: `core ${pinning.server}`, loadgenAndRedis: `core ${pinning.loadgen}` } : 'none',
    openFilesLimit: openFileLimit(),
    presenceServer: opts.presenceEntry ?? (presenceEntry().at(-1)?.includes('dist') ? 'built (dist)' : 'sources via tsx'),
    pin: opts.pin,
  };
}

async function main(): Promise<void> {
  let parsed: Options | 'help';
  try {
    parsed = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  if (parsed === 'help') {
    process.stdout.write(HELP);
    return;
  }
  const opts = parsed;
  if (opts.quick) {
    // Quick mode runs inside the test suite: it yields the CPU to the other tests (the servers and
    // load generators it starts inherit the lower priority).
    try {
      setPriority(10);
    } catch {
      // not permitted: run at normal priority
    }
  }
  const pinning = defaultPinning(opts.pin);
  const tty = process.stdout.isTTY === true;
  let statusShown = false;
  const t0 = Date.now();
  const clock = () => {
    const s = Math.floor((Date.now() - t0) / 1000);
    return `[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}]`;
  };
  const ctx: Context = {
    opts,
    pinning,
    log(line) {
      if (statusShown) process.stdout.write('\r\x1b[K');
      statusShown = false;
      // Blank lines and the final report go out as they are; progress lines get the elapsed time.
      process.stdout.write(line.trim() === '' || line.startsWith('\n') ? `${line}\n` : `${clock()} ${line}\n`);
    },
    status(line) {
      if (!tty) return;
      process.stdout.write(`\r\x1b[K${line}`);
      statusShown = line.length > 0;
    },
  };
  const started = new Date();
  const out = resolve(opts.out ?? defaultOut(opts));
  ctx.log(`Presence bench (${opts.quick ? 'quick' : 'full'}): scenarios ${opts.scenarios.join(', ')}; systems ${opts.systems.join(', ')}`);
  ctx.log(pinning.server ? `server pinned to core ${pinning.server}; load generator and Redis to core ${pinning.loadgen}` : 'no CPU pinning');

  const scenarios: ScenarioResults = { connections: {}, fanout: {}, joinstorm: {}, typing: {}, churn: {}, reconnect: {}, multinode: {} };
  const systems = opts.systems;
  const want = (name: (typeof SCENARIOS)[number]) => opts.scenarios.includes(name);

  // Quick mode only proves that everything runs: the systems go side by side to keep it short.
  // A measuring run takes them one at a time, each with the machine to itself.
  const eachSystem = async (run: (system: SystemName) => Promise<void>) => {
    if (opts.quick) await Promise.all(systems.map(run));
    else for (const system of systems) await run(system);
  };
  /** The Pusher endpoint is measured where its protocol differs: connections and fan-out, on one node and on two. */
  const pusherSkipped = (scenario: string, system: SystemName): boolean => system === 'pusher' && !PUSHER_SCENARIOS.has(scenario);
  const skippedPusher = { skipped: 'the Pusher endpoint is measured on connections and fan-out (one and two nodes) only' };

  if (want('connections')) {
    ctx.log(`\n== connections: ${opts.connections.users} idle users`);
    await eachSystem(async (system) => {
      scenarios.connections[system] = await attempt(ctx, system, () => connectionsScenario(ctx, system));
    });
  }
  if (want('fanout')) {
    ctx.log(`\n== fan-out: ${opts.fanout.channels} channels × ${opts.fanout.members} members`);
    await eachSystem(async (system) => {
      scenarios.fanout[system] = await attempt(ctx, system, () => fanoutScenario(ctx, system, { ...opts.fanout, nodes: 1 }));
    });
  }
  if (want('joinstorm')) {
    ctx.log(`\n== join storm: ${opts.joinstorm.users} users join one channel at once`);
    await eachSystem(async (system) => {
      scenarios.joinstorm[system] = pusherSkipped('joinstorm', system) ? skippedPusher : await attempt(ctx, system, () => joinStormScenario(ctx, system));
    });
  }
  if (want('typing') || want('churn')) {
    ctx.log(`\n== one channel of ${opts.big.members}: ${[want('typing') ? 'typing storm' : '', want('churn') ? 'join/leave churn' : ''].filter(Boolean).join(' and ')}`);
    await eachSystem(async (system) => {
      const outcome = pusherSkipped('typing', system) ? skippedPusher : await attempt(ctx, system, () => bigChannelScenario(ctx, system, { typing: want('typing'), churn: want('churn') }));
      if ('skipped' in outcome || 'error' in outcome) {
        if (want('typing')) scenarios.typing[system] = outcome;
        if (want('churn')) scenarios.churn[system] = outcome;
      } else {
        const split = splitBigChannel(outcome);
        if (split.typing) scenarios.typing[system] = split.typing;
        if (split.churn) scenarios.churn[system] = split.churn;
      }
    });
  }
  if (want('reconnect')) {
    ctx.log(`\n== reconnect storm: ${opts.reconnect.users} users`);
    await eachSystem(async (system) => {
      scenarios.reconnect[system] = pusherSkipped('reconnect', system) ? skippedPusher : await attempt(ctx, system, () => reconnectScenario(ctx, system));
    });
  }
  if (want('multinode')) {
    ctx.log(`\n== multi-node: 2 nodes + Redis, ${opts.multinode.channels} channels × ${opts.multinode.members} members`);
    await eachSystem(async (system) => {
      if (system === 'ws') {
        scenarios.multinode[system] = { skipped: 'a bare ws server has no way to reach sockets on another node' };
        ctx.log(`  ${system}: skipped (no cross-node fan-out)`);
        return;
      }
      scenarios.multinode[system] = await attempt(ctx, system, () => fanoutScenario(ctx, system, { ...opts.multinode, nodes: 2 }));
    });
  }

  if (want('scaleout')) {
    const s = opts.scaleout;
    ctx.log(
      `\n== scale-out: Presence through one Redis on ${s.nodes.join(', ')} nodes, ${s.users} users and ${s.rate} updates/s per node; idle-node tax with ${s.idleUsers} WebSocket and ${s.idleHttpUsers} HTTP users` +
        (s.redisCluster.length > 0 ? `; on a Redis Cluster of 3 masters: ${s.redisCluster.join(', ')} nodes` : ''),
    );
    scenarios.scaleout = systems.includes('presence')
      ? await attempt(ctx, 'presence', () => scaleoutScenario(ctx))
      : { skipped: 'measures Presence only, and --systems leaves it out' };
  }

  if (want('largeroom')) {
    const l = opts.largeroom;
    ctx.log(`\n== large rooms on one node: a busy room of ${l.members}, a huge room of ${l.hugeMembers}`);
    scenarios.largeroom = await attempt(ctx, 'largeroom', () => largeRoomScenario(ctx));
  }

  const finished = new Date();
  const ratios = computeRatios(scenarios);
  const results: Results = {
    schema: 1,
    mode: opts.quick ? 'quick' : 'full',
    command: `npm run bench --${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: Math.round((finished.getTime() - started.getTime()) / 1000),
    machine: machine(opts, pinning),
    options: opts,
    scenarios,
    ratios,
    targets: computeTargets(scenarios, ratios, opts),
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  const chart = out.replace(/\.json$/, '') + '.svg';
  writeFileSync(chart, renderChart(results));
  ctx.log(`\n${renderTables(results)}\n`);
  ctx.log(`results: ${relative(REPO_DIR, out)}\nchart:   ${relative(REPO_DIR, chart)}  (${results.durationSeconds}s in all; systems: ${systems.map((s) => SYSTEM_LABELS[s as SystemName]).join(', ')})`);
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killAllChildren();
    process.stderr.write(`\nbench: interrupted (${signal}); servers and load generators stopped\n`);
    process.exit(130);
  });
}

main().catch((error: unknown) => {
  killAllChildren();
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
