/** The results file's shape, the targets judged from it, and the end-of-run table. */
import type { SystemName } from '../loadgen/wire.js';
import type { BigChannelResult, FillResult } from '../scenarios/big-channel.js';
import type { ConnectionsResult } from '../scenarios/connections.js';
import type { Options, ScenarioName } from '../scenarios/context.js';
import type { FanoutResult } from '../scenarios/fanout.js';
import type { JoinStormResult } from '../scenarios/join-storm.js';
import type { BusyVariant, LargeRoomResult } from '../scenarios/large-room.js';
import type { ReconnectResult } from '../scenarios/reconnect.js';
import type { ScaleoutResult } from '../scenarios/scaleout.js';
import type { LadderResult, StepResult } from '../scenarios/steps.js';
import { SYSTEM_LABELS } from './systems.js';

export type Outcome<T> = T | { skipped: string } | { error: string };

export interface ScenarioResults {
  connections: Partial<Record<SystemName, Outcome<ConnectionsResult>>>;
  fanout: Partial<Record<SystemName, Outcome<FanoutResult>>>;
  joinstorm: Partial<Record<SystemName, Outcome<JoinStormResult>>>;
  typing: Partial<Record<SystemName, Outcome<LadderResult & { members: number; fill: FillResult }>>>;
  churn: Partial<Record<SystemName, Outcome<LadderResult & { members: number; fill: FillResult }>>>;
  reconnect: Partial<Record<SystemName, Outcome<ReconnectResult>>>;
  multinode: Partial<Record<SystemName, Outcome<FanoutResult>>>;
  /** Presence alone (not per system); absent when the scenario did not run. */
  scaleout?: Outcome<ScaleoutResult>;
  /** Large rooms: Presence's modes on and off, and the relays; absent when the scenario did not run. */
  largeroom?: Outcome<LargeRoomResult>;
}

export interface Target {
  name: string;
  target: string;
  value: string;
  met: boolean | null;
}

export interface Results {
  schema: 1;
  mode: 'quick' | 'full';
  command: string;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  machine: Record<string, unknown>;
  options: Options;
  scenarios: ScenarioResults;
  ratios: Record<string, number | null>;
  targets: Target[];
}

export function isResult<T>(outcome: Outcome<T> | undefined): outcome is T {
  return outcome !== undefined && !('skipped' in (outcome as object)) && !('error' in (outcome as object));
}

export function outcomeNote(outcome: Outcome<unknown> | undefined): string {
  if (outcome === undefined) return 'not run';
  if ('skipped' in (outcome as object)) return `skipped: ${(outcome as { skipped: string }).skipped}`;
  if ('error' in (outcome as object)) return `error: ${(outcome as { error: string }).error.split('\n')[0]}`;
  return '';
}

/** The step at a ladder's highest passing rate (the figures reported as "sustained"). */
export function sustainedStep(result: LadderResult): StepResult | undefined {
  return result.steps.filter((s) => s.passed && !s.superseded && s.offeredRate === result.maxSustainedRate).at(-1);
}

export function splitBigChannel(result: BigChannelResult): { typing?: ScenarioResults['typing'][SystemName]; churn?: ScenarioResults['churn'][SystemName] } {
  return {
    ...(result.typing ? { typing: { ...result.typing, fill: result.fill } } : {}),
    ...(result.churn ? { churn: { ...result.churn, fill: result.fill } } : {}),
  };
}

export function computeRatios(scenarios: ScenarioResults): Record<string, number | null> {
  const rate = (system: SystemName) => {
    const r = scenarios.fanout[system];
    return isResult(r) ? r.maxSustainedRate : null;
  };
  const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? Math.round((a / b) * 100) / 100 : null);
  return {
    presenceOverWs: ratio(rate('presence'), rate('ws')),
    presenceOverSocketio: ratio(rate('presence'), rate('socketio')),
    wsOverSocketio: ratio(rate('ws'), rate('socketio')),
  };
}

export function computeTargets(scenarios: ScenarioResults, ratios: Record<string, number | null>, opts: Options): Target[] {
  const targets: Target[] = [];
  const conn = scenarios.connections.presence;
  const memory = { name: 'memory per idle connection', target: '≤ 10 KB' };
  if (!isResult(conn)) targets.push({ ...memory, value: outcomeNote(conn), met: null });
  else if (conn.nodes > 1) {
    // Summed over the nodes, each with a replica of every session: not what the target is about.
    const value = `${(conn.rssPerConnection / 1024).toFixed(1)} KB RSS summed over ${conn.nodes} nodes (each replicates every session); the target is judged on one node`;
    targets.push({ ...memory, value, met: null });
  } else {
    const value = `${(conn.rssPerConnection / 1024).toFixed(1)} KB RSS (${(conn.heapPerConnection / 1024).toFixed(1)} KB heap) at ${conn.connected} connections`;
    targets.push({ ...memory, value, met: conn.rssPerConnection <= 10 * 1024 });
  }
  const fan = scenarios.fanout.presence;
  if (isResult(fan)) {
    const step = sustainedStep(fan);
    targets.push({
      name: `${fan.users.toLocaleString('en-US')} concurrent users, p99 ≤ ${opts.sloMs} ms (fan-out)`,
      target: `≥ 10,000 users, p99 ≤ ${opts.sloMs} ms`,
      value: step
        ? `p99 ${step.latency.p99Ms} ms at ${step.offeredRate.toLocaleString('en-US')} updates/s (${Math.round(step.deliveriesPerSec).toLocaleString('en-US')} deliveries/s)`
        : 'no rate step passed',
      met: fan.users >= 10_000 && step !== undefined,
    });
  } else {
    targets.push({ name: 'concurrent users, p99 (fan-out)', target: `≥ 10,000 users, p99 ≤ ${opts.sloMs} ms`, value: outcomeNote(fan), met: null });
  }
  const rateOf = (system: SystemName) => {
    const r = scenarios.fanout[system];
    return isResult(r) ? r.maxSustainedRate.toLocaleString('en-US') : '–';
  };
  targets.push({
    name: 'max sustained rate vs bare ws',
    target: '≥ 0.8×',
    value: ratios.presenceOverWs === null ? 'n/a' : `${ratios.presenceOverWs}× (${rateOf('presence')} vs ${rateOf('ws')} updates/s)`,
    met: ratios.presenceOverWs === null ? null : ratios.presenceOverWs >= 0.8,
  });
  targets.push({
    name: 'max sustained rate vs Socket.IO + Redis',
    target: '≥ 3×',
    value: ratios.presenceOverSocketio === null ? 'n/a' : `${ratios.presenceOverSocketio}× (${rateOf('presence')} vs ${rateOf('socketio')} updates/s)`,
    met: ratios.presenceOverSocketio === null ? null : ratios.presenceOverSocketio >= 3,
  });
  const storm = scenarios.reconnect.presence;
  targets.push(
    isResult(storm)
      ? {
          name: 'reconnect storm: join/leave events at other users',
          target: '0',
          value: `${storm.eventsAtObservers + storm.eventsAtReconnected} (${storm.back}/${storm.dropped} back in ${storm.backSeconds}s, ${storm.resumed ?? 0} resumed)`,
          met: storm.eventsAtObservers + storm.eventsAtReconnected === 0 && storm.back === storm.dropped,
        }
      : { name: 'reconnect storm: join/leave events at other users', target: '0', value: outcomeNote(storm), met: null },
  );
  return targets;
}

// ---------------------------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------------------------

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

const n = (value: number) => Math.round(value).toLocaleString('en-US');
const kb = (bytes: number) => (bytes / 1024).toFixed(1);
const msf = (value: number) => value.toFixed(value < 10 ? 2 : 1);

function ladderRows(section: Partial<Record<SystemName, Outcome<LadderResult>>>, systems: SystemName[], unit: string, extra?: (r: LadderResult) => string[]): string[][] {
  return systems.map((system) => {
    const r = section[system];
    if (!isResult(r)) return [SYSTEM_LABELS[system], outcomeNote(r), '', '', '', '', ...(extra ? [''] : [])];
    const step = sustainedStep(r);
    return [
      SYSTEM_LABELS[system],
      `${n(r.maxSustainedRate)} ${unit}`,
      step ? n(step.deliveriesPerSec) : '–',
      step ? `${msf(step.latency.p50Ms)} / ${msf(step.latency.p99Ms)} / ${msf(step.latency.maxMs)}` : '–',
      step ? `${Math.round(step.serverCpu * 100)}%${step.redisCpu !== undefined ? ` (+Redis ${Math.round(step.redisCpu * 100)}%)` : ''}` : '–',
      r.firstFailedRate !== undefined ? `${n(r.firstFailedRate)}: ${r.steps.filter((s) => s.offeredRate === r.firstFailedRate && !s.passed).at(-1)?.note ?? ''}` : 'none failed',
      ...(extra ? extra(r) : []),
    ];
  });
}

export function renderTables(results: Results): string {
  const { scenarios } = results;
  const systems = results.options.systems;
  const out: string[] = [];
  const ladderHeader = ['system', 'max sustained', 'deliveries/s', 'p50 / p99 / max ms', 'server CPU', 'first failing step'];

  if (results.options.scenarios.includes('connections')) {
    const c = results.options.connections;
    out.push(`### Idle connections (${n(c.users)} users, channels of ${c.channelSize}${c.nodes > 1 ? `, spread over ${c.nodes} server processes` : ''})\n`);
    out.push(
      table(
        ['system', 'connected', 'connects/s', 'RSS / conn', 'heap / conn', 'Redis / conn', 'server CPU / 1k conns'],
        systems.map((system) => {
          const r = scenarios.connections[system];
          if (!isResult(r)) return [SYSTEM_LABELS[system], outcomeNote(r), '', '', '', '', ''];
          return [
            SYSTEM_LABELS[system],
            `${n(r.connected)}/${n(r.users)}`,
            n(r.connectsPerSec),
            `${kb(r.rssPerConnection)} KB`,
            `${kb(r.heapPerConnection)} KB`,
            r.redisRssPerConnection !== undefined ? `${kb(r.redisRssPerConnection)} KB` : '–',
            `${r.serverCpuPerThousand} s`,
          ];
        }),
      ),
    );
  }
  if (results.options.scenarios.includes('fanout')) {
    const f = results.options.fanout;
    out.push(`\n### Fan-out (${n(f.channels)} channels × ${f.members} members; rate = presence updates/s; p99 objective ${results.options.sloMs} ms)\n`);
    out.push(table(ladderHeader, ladderRows(scenarios.fanout, systems, 'updates/s')));
    const r = results.ratios;
    out.push(`\nRatios of max sustained rate: Presence / bare ws = ${r.presenceOverWs ?? 'n/a'}, Presence / Socket.IO+Redis = ${r.presenceOverSocketio ?? 'n/a'}, bare ws / Socket.IO+Redis = ${r.wsOverSocketio ?? 'n/a'}`);
  }
  if (results.options.scenarios.includes('joinstorm')) {
    out.push(`\n### Join storm (${n(results.options.joinstorm.users)} users join one channel at once)\n`);
    out.push(
      table(
        ['system', 'joined', 'time until all joined', 'server CPU', 'peak RSS', 'longest event-loop stall'],
        systems.map((system) => {
          const r = scenarios.joinstorm[system];
          if (!isResult(r)) return [SYSTEM_LABELS[system], outcomeNote(r), '', '', '', ''];
          return [
            SYSTEM_LABELS[system],
            `${n(r.joined)}/${n(r.users)}${r.failedFirstAttempt > 0 ? ` (${n(r.failedFirstAttempt)} retried)` : ''}`,
            `${r.seconds}s`,
            `${r.serverCpuSeconds} s`,
            `${n(r.peakRss / 1048576)} MB`,
            `${n(r.serverLagMaxMs)} ms`,
          ];
        }),
      ),
    );
  }
  for (const name of ['typing', 'churn'] as const) {
    if (!results.options.scenarios.includes(name)) continue;
    const title = name === 'typing' ? 'Typing storm' : 'Join/leave churn';
    out.push(
      `\n### ${title} (1 channel × ${n(results.options.big.members)} members; rate = ${name === 'typing' ? 'typing transitions' : 'joins + leaves'}/s, ` +
        `each reaching every member; p99 objective ${results.options.big.sloMs} ms)\n`,
    );
    const section = scenarios[name] as Partial<Record<SystemName, Outcome<LadderResult & { fill: FillResult }>>>;
    const header = [...ladderHeader, 'channel fill'];
    if (name === 'churn') header.push('join snapshot p99');
    out.push(
      table(
        header,
        ladderRows(section, systems, 'events/s', (r) => {
          const fill = (r as LadderResult & { fill: FillResult }).fill;
          const cells = [`${fill.seconds}s${fill.revealSeconds !== undefined ? ` + ${fill.revealSeconds}s actors online` : ''}, peak ${n(fill.peakRss / 1048576)} MB`];
          if (name === 'churn') {
            const step = sustainedStep(r);
            cells.push(step?.joinSnapshot ? `${msf(step.joinSnapshot.p99Ms)} ms` : '–');
          }
          return cells;
        }),
      ),
    );
  }
  if (results.options.scenarios.includes('reconnect')) {
    out.push(`\n### Reconnect storm (${n(results.options.reconnect.users)} users dropped at once, one observer per channel of ${results.options.reconnect.channelSize})\n`);
    out.push(
      table(
        ['system', 'back', 'time until all back', 'sessions resumed', 'join/leave at observers', 'join/leave at reconnected'],
        systems.map((system) => {
          const r = scenarios.reconnect[system];
          if (!isResult(r)) return [SYSTEM_LABELS[system], outcomeNote(r), '', '', '', ''];
          return [
            SYSTEM_LABELS[system],
            `${n(r.back)}/${n(r.dropped)}`,
            `${r.backSeconds}s`,
            r.resumed !== undefined ? n(r.resumed) : '–',
            `${n(r.eventsAtObservers)} (${n(r.joinsAtObservers)} joins, ${n(r.leavesAtObservers)} leaves)`,
            n(r.eventsAtReconnected),
          ];
        }),
      ),
    );
  }
  if (results.options.scenarios.includes('multinode')) {
    const m = results.options.multinode;
    out.push(`\n### Multi-node fan-out (2 nodes + Redis, ${n(m.channels)} channels × ${m.members} members split across the nodes)\n`);
    out.push(table(ladderHeader, ladderRows(scenarios.multinode, systems, 'updates/s')));
  }
  if (results.options.scenarios.includes('scaleout')) out.push(renderScaleout(scenarios.scaleout));
  if (results.options.scenarios.includes('largeroom')) out.push(renderLargeRoom(scenarios.largeroom, results.options));
  out.push('\n### Targets\n');
  out.push(
    table(
      ['target', 'objective', 'measured', 'met'],
      results.targets.map((t) => [t.name, t.target, t.value, t.met === null ? 'n/a' : t.met ? 'yes' : 'NO']),
    ),
  );
  if (results.mode === 'quick') out.push('\n(quick mode: tiny scale, the figures only show that every scenario runs)');
  return out.join('\n');
}

const BUSY_LABELS: Record<BusyVariant, string> = {
  windowed: 'Presence, windows (250 ms)',
  perEvent: 'Presence, every change at once',
  ws: SYSTEM_LABELS.ws,
  socketio: SYSTEM_LABELS.socketio,
};

function renderLargeRoom(outcome: Outcome<LargeRoomResult> | undefined, options: Options): string {
  const out: string[] = [];
  const o = options.largeroom;
  if (!isResult(outcome)) return `\n### Large rooms\n\n${outcomeNote(outcome)}`;
  out.push(`\n### Large rooms: a busy room (${n(o.members)} visible members, ${o.rate} status changes/s)\n`);
  out.push(
    table(
      ['system', 'frames / member / s', 'bytes / member / s', 'server CPU', 'p50 / p99 / max ms', 'delivered', 'fill'],
      (Object.keys(outcome.busy) as BusyVariant[]).map((variant) => {
        const r = outcome.busy[variant];
        if (!isResult(r)) return [BUSY_LABELS[variant], outcomeNote(r), '', '', '', '', ''];
        const l = r.step.latency;
        return [
          BUSY_LABELS[variant],
          String(r.framesPerMemberPerSec),
          n(r.bytesPerMemberPerSec),
          `${Math.round(r.step.serverCpu * 100)}%`,
          `${msf(l.p50Ms)} / ${msf(l.p99Ms)} / ${msf(l.maxMs)}`,
          `${n(r.step.delivered)}/${n(r.step.expected)}`,
          `${r.fillSeconds}s`,
        ];
      }),
    ),
  );
  out.push(`\n### Large rooms: a huge room (users join one channel at ${n(o.hugeMembers / o.fillSeconds)}/s, every client with features=occupancy)\n`);
  const huge = [
    ['Presence, occupancy', outcome.huge.occupancy] as const,
    ...outcome.huge.perEvent.map((r, i) => ['Presence, both modes off', r, o.perEventSizes[i]] as const),
  ];
  out.push(
    table(
      ['system', 'members', 'counts right', 'last right after the last join', 'p99', 'KB / member (max)', 'server CPU s', 'peak RSS'],
      huge.map(([label, r]) => {
        if (!isResult(r)) return [label, outcomeNote(r), '', '', '', '', '', ''];
        return [
          label,
          n(r.members),
          `${n(r.countsRight)}/${n(r.members)}`,
          r.lastRightMs === null ? `not within ${o.settleMs} ms` : `${n(r.lastRightMs)} ms`,
          r.p99RightMs === null ? '–' : `${n(r.p99RightMs)} ms`,
          `${(r.bytesPerMemberMean / 1024).toFixed(1)} (${(r.bytesPerMemberMax / 1024).toFixed(1)})`,
          String(r.serverCpuSeconds),
          `${n(r.peakRss / 1048576)} MB`,
        ];
      }),
    ),
  );
  const cluster = outcome.cluster;
  const ms = (value: number | null) => (value === null ? '–' : n(value));
  if (cluster !== undefined) {
    if (!isResult(cluster)) {
      out.push(`\n### Large rooms: occupancy listeners over several nodes\n\n${outcomeNote(cluster)}`);
    } else {
      const c = cluster;
      out.push(
        `\n### Large rooms: ${n(c.connected)} occupancy listeners in one channel over ${c.nodes} server processes (${c.loadgens} load generators, ` +
          `${c.sourceAddresses.length} source addresses, one redis-server; servers on ${c.cores.servers}, load generators and Redis on ${c.cores.loadgensAndRedis})\n`,
      );
      out.push(
        `Filled in ${c.fill.seconds}s; every count right ${c.fill.countsRightAfterMs === null ? 'NOT reached' : `${n(c.fill.countsRightAfterMs)} ms after the last join`}; ` +
          `fill CPU s per node ${c.fill.serverCpuSeconds.join(', ')}, Redis ${c.fill.redisCpuSeconds}.\n`,
      );
      out.push(
        table(
          ['change', 'count', 'right', 'p50 / p99 / max ms', 'ms per 10,000 writes (per node)'],
          c.changes.map((ch, i) => [String(i + 1), n(ch.count), `${n(ch.right)}/${n(c.connected)}`, `${ms(ch.p50Ms)} / ${ms(ch.p99Ms)} / ${ms(ch.maxMs)}`, ch.msPer10kWrites.join(' / ')]),
        ),
      );
      out.push(
        `\nOver every change: p99 ${ms(c.p99Ms)} ms, max ${ms(c.maxMs)} ms; per 10,000 writes median ${ms(c.msPer10kWritesMedian)} ms (max ${ms(c.msPer10kWritesMax)}). ` +
          `Server CPU per node ${c.serverCpu.map((x) => `${Math.round(x * 100)}%`).join(' / ')}, RSS ${c.serverRss.map((r) => `${n(r / 1048576)} MB`).join(' / ')} ` +
          `(peak ${c.serverPeakRss.map((r) => `${n(r / 1048576)}`).join(' / ')} MB); Redis CPU ${Math.round(c.redisCpu * 100)}%, RSS ${n(c.redisRss / 1048576)} MB.`,
      );
    }
  }
  out.push('\nGoals:\n');
  out.push(table(['goal', 'objective', 'measured', 'met'], outcome.goals.map((g) => [g.name, g.goal, g.value, g.met === null ? 'n/a' : g.met ? 'yes' : 'NO'])));
  return out.join('\n');
}

function renderScaleout(outcome: Outcome<ScaleoutResult> | undefined): string {
  const out: string[] = [];
  if (!isResult(outcome)) {
    out.push(`\n### Scale-out\n\n${outcomeNote(outcome)}`);
    return out.join('\n');
  }
  const o = outcome.options;
  const pct = (share: number) => `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;
  const met = (m: boolean | null) => (m === null ? 'n/a' : m ? 'yes' : 'NO');
  const idle = outcome.idle;
  out.push(`\n### Scale-out: idle-node tax (node A with the users and ${n(o.idleRate)} updates/s, node B without clients, one Redis)\n`);
  if (!idle || !isResult(idle)) out.push(idle ? outcomeNote(idle) : 'not measured (scaleout.idle-users=0)');
  else {
    const [a, b] = idle.memory;
    out.push(
      table(
        ['users on A (WebSocket + HTTP)', 'A CPU', 'B CPU', 'B / A CPU (goal ≤ 2 %)', 'B heap / A-user after GC (goal ≤ 0.5 KB)', 'B RSS / A-user', 'A heap / user', 'A RSS / user', 'B heap, RSS', 'notes'],
        [
          [
            `${n(idle.connected + (idle.httpUsers ?? 0))}/${n(idle.users)} (${n(idle.connected)} + ${n(idle.httpUsers ?? 0)})`,
            pct(idle.window.nodeCpu[0]),
            pct(idle.window.nodeCpu[1]),
            `${(idle.idleCpuShare * 100).toFixed(1)} %`,
            `${kb(idle.idleHeapPerUser)} KB`,
            `${kb(idle.idleRssPerUser)} KB`,
            `${kb(a.heapPerUser ?? 0)} KB`,
            `${kb(a.rssPerUser ?? 0)} KB`,
            `${n(b.heapAfter / 1048576)} MB, ${n(b.rssAfter / 1048576)} MB`,
            idle.flags.join('; '),
          ],
        ],
      ),
    );
    if (idle.httpReads?.length) {
      out.push(`\nHTTP API reads about A's users, one request at a time: from A's memory, and from B (no client: it reads Redis)\n`);
      out.push(
        table(
          ['read', ...idle.httpReads.flatMap((r) => [`${r.node} p50`, `${r.node} p99`]), 'errors'],
          idle.httpReads[0].reads.map((first, i) => [
            first.kind,
            ...idle.httpReads.flatMap((r) => [`${r.reads[i].latency.p50Ms} ms`, `${r.reads[i].latency.p99Ms} ms`]),
            String(idle.httpReads.reduce((sum, r) => sum + r.reads[i].errors, 0)),
          ]),
        ),
      );
    }
  }
  out.push(
    `\n### Scale-out: ${n(outcome.summary[0]?.usersPerNode ?? o.users)} users and ${n(o.rate)} updates/s per node, channels of ${o.channelSize}; ` +
      `"cross": ${Math.round(o.crossFraction * 100)} % of each channel's members on other nodes; median of ${o.runs} run${o.runs > 1 ? 's' : ''}\n`,
  );
  out.push(
    table(
      ['variant', 'nodes', 'server CPU / delivery', 'vs 1 node', 'heap / user / node', 'RSS / user / node', 'server core', 'Redis CPU', 'Redis cmds/s', 'cmds / update', 'published / update', 'pub/sub deliveries / update', 'Redis mem / user', 'p99', 'flagged runs'],
      outcome.summary.map((s) => [
        s.variant,
        String(s.nodes),
        `${s.cpuPerDeliveryUs.toFixed(1)} µs`,
        s.cpuPerDeliveryVsOneNode === null ? '–' : `${s.cpuPerDeliveryVsOneNode.toFixed(2)}×`,
        `${kb(s.heapPerUser)} KB`,
        `${kb(s.rssPerUser)} KB`,
        pct(s.serverCpu),
        pct(s.redisCpu),
        n(s.redisCommandsPerSec),
        s.redisCommandsPerUpdate.toFixed(2),
        s.publishedPerUpdate.toFixed(2),
        s.pubsubDeliveriesPerUpdate === null ? 'n/a' : s.pubsubDeliveriesPerUpdate.toFixed(2),
        `${n(s.redisMemoryPerUser)} B`,
        `${msf(s.p99Ms)} ms`,
        `${s.flaggedRuns}/${s.runs}`,
      ]),
    ),
  );
  out.push(renderRedisCluster(outcome));
  const g = outcome.goals;
  out.push(
    `\nGoals: idle node's CPU ≤ ${pct(g.idleCpuShare.goal)} of the loaded node's: ${g.idleCpuShare.value === null ? 'n/a' : `${(g.idleCpuShare.value * 100).toFixed(1)} %`} (${met(g.idleCpuShare.met)}); ` +
      `its heap ≤ ${kb(g.idleHeapPerUser.goal)} KB per user of the loaded node: ${g.idleHeapPerUser.value === null ? 'n/a' : `${kb(g.idleHeapPerUser.value)} KB`} (${met(g.idleHeapPerUser.met)}); ` +
      `local CPU per delivery flat within ${pct(g.flatness.goal)} of one node: ${g.flatness.value === null ? 'n/a' : `${g.flatness.value >= 0 ? '+' : ''}${Math.round(g.flatness.value * 100)} % at worst`} (${met(g.flatness.met)})`,
  );
  const flagged = outcome.summary.flatMap((s) => s.flags.map((f) => `${s.variant} ${s.nodes}: ${f}`));
  if (flagged.length > 0) out.push(`\nFlags (server core and Redis over ${pct(0.8)} of their core, missing deliveries, other tenants):\n${flagged.map((f) => `- ${f}`).join('\n')}`);
  for (const f of outcome.failures) out.push(`\n${f.variant} ${f.nodes} nodes, run ${f.run}: error ${f.error.split('\n')[0]}`);
  return out.join('\n');
}

/** Each node count run on the Redis Cluster: a row per master, their total, and one redis-server's row beside. */
function renderRedisCluster(outcome: ScaleoutResult): string {
  const cluster = outcome.redisCluster;
  if (!cluster || (cluster.summary.length === 0 && cluster.failures.length === 0)) return '';
  const o = outcome.options;
  const out: string[] = [];
  const pct = (cores: number) => `${Math.round(cores * 100)}%`;
  for (const s of cluster.summary) {
    out.push(
      `\n### Scale-out on a Redis Cluster of ${s.masters.length} masters: ${s.nodes} node${s.nodes > 1 ? 's' : ''}, ${n(s.usersPerNode)} users and ${n(s.ratePerNode)} updates/s per node, ` +
        `local channels of ${o.channelSize}; median of ${s.runs} run${s.runs > 1 ? 's' : ''}; per update = per update sent, per user = per online user of the whole cluster\n`,
    );
    const row = (label: string, f: { cpu: number; commandsPerSec: number; commandsPerUpdate: number; publishedPerUpdate: number; memoryPerUser: number } | null, server: string, p99: string) =>
      f
        ? [label, pct(f.cpu), n(f.commandsPerSec), f.commandsPerUpdate.toFixed(2), f.publishedPerUpdate.toFixed(2), `${n(f.memoryPerUser)} B`, server, p99]
        : [label, '–', '–', '–', '–', '–', server, p99];
    out.push(
      table(
        ['Redis', 'CPU', 'commands/s', 'commands / update', 'published / update', 'used memory / user', 'server CPU / delivery', 'p99'],
        [
          ...s.masters.map((m, i) => row(`master ${i + 1} (slots ${m.slots})`, m, '', '')),
          row(`cluster total (${s.masters.length} masters)`, s.total, `${s.cpuPerDeliveryUs.toFixed(1)} µs`, `${msf(s.p99Ms)} ms`),
          s.oneRedis
            ? row('one redis-server, same node count', s.oneRedis, `${s.oneRedis.cpuPerDeliveryUs.toFixed(1)} µs`, `${msf(s.oneRedis.p99Ms)} ms`)
            : row('one redis-server, same node count', null, `not run (add ${s.nodes} to --scaleout.nodes)`, ''),
        ],
      ),
    );
    if (s.flags.length > 0) out.push(`\nFlags:\n${s.flags.map((f) => `- ${f}`).join('\n')}`);
  }
  for (const f of cluster.failures) out.push(`\nRedis Cluster, ${f.nodes} nodes, run ${f.run}: error ${f.error.split('\n')[0]}`);
  return out.join('\n');
}
