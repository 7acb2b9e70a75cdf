/**
 * Soak: churn against one node (or two nodes and a redis-server) for a chosen time, then check that
 * nothing outlives the clients. Prints a table, writes JSON.
 *
 *   node --import tsx bench/soak/soak.ts --minutes=60 --nodes=2 --out=bench/results/soak-60min.json
 *   node --import tsx bench/soak/soak.ts --seconds=30             # a short run
 *
 * Server nodes run `bench/soak/server.ts` in their own processes (pinned to core 0 when taskset is
 * there), the churn generator `bench/soak/churn.ts` in another (core 1, with Redis). Every sample
 * forces a GC in each node, so heap figures are live data, not garbage waiting to be collected.
 * At the end every client goes; after the offline delay the run checks sessions, channels, users,
 * typing, watches, the timers the model holds, the process's timeouts and the Redis keys.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { BENCH_DIR, Child, REPO_DIR, defaultPinning, freePort, killAllChildren, sleep, startRedis, waitForPort } from '../lib/proc.js';
import type { ChurnCounters, ChurnOptions, ChurnReport, SampleRequest, ServerSample } from './messages.js';

export interface SoakOptions {
  durationMs: number;
  clients: number;
  users: number;
  channels: number;
  nodes: 1 | 2;
  commandsPerSecond: number;
  disconnectsPerSecond: number;
  sampleMs: number;
  /** Samples before this are warm-up; the first memory window starts here. */
  warmupMs: number;
  /** Length of the first and last windows that memory growth compares. */
  windowMs: number;
  offlineDelayMs: number;
  typingTimeoutMs: number;
  idleTimeoutMs: number;
  heartbeatIntervalMs: number;
  pin: boolean;
  seed: number;
  /** Print a line per sample. */
  verbose: boolean;
  /** Profiling aid: a directory for heap snapshots of each node, after the warm-up and at the end of the churn. */
  heapSnapshotsDir?: string;
}

export interface NodeSample {
  node: string;
  rssMiB: number;
  heapMiB: number;
  /** V8's reserved heap and memory outside it (buffers): what RSS holds beyond live objects. */
  heapTotalMiB: number;
  externalMiB: number;
  /** MiB used per V8 heap space (old_space, code_space, …). */
  heapSpacesMiB: Record<string, number>;
  lagP99Ms: number;
  lagMaxMs: number;
  connections: number;
  sessions: number;
  onlineUsers: number;
  channels: number;
  typing: number;
  engineTimers: number;
}

export interface SoakSample {
  atSeconds: number;
  /** The machine's 1-minute load average: other tenants' work shows up in lag. */
  load1: number;
  /**
   * Event-loop lag of an idle process pinned beside the servers: what the shared machine alone
   * costs. Server lag well above this is the server's own.
   */
  control: { lagP99Ms: number; lagMaxMs: number };
  nodes: NodeSample[];
  churn: ChurnCounters;
}

export interface Growth {
  node: string;
  heapFirstMiB: number;
  heapLastMiB: number;
  heapGrowthPct: number;
  rssFirstMiB: number;
  rssLastMiB: number;
  rssGrowthPct: number;
}

export interface Leftovers {
  /** Per node: what the engine and the process still hold once every client has gone. */
  nodes: Array<{
    node: string;
    stats: ServerSample['stats'];
    inspect: Record<string, number>;
    engineTimers: number;
    cluster?: Record<string, number>;
  }>;
  redis?: {
    keys: number;
    userRecords: number;
    liveNodeKeys: number;
    /** Session fields left in live nodes' hashes (a node hash should hold only `~seq`). */
    sessionFields: number;
    /** Keys that should not be there: dead nodes' hashes, anything unknown. */
    strayKeys: string[];
  };
  /** Seconds from the last client gone until nothing was left (or the deadline). */
  settledAfterSeconds: number;
  /** Human-readable list of what was left; empty when clean. */
  problems: string[];
}

export interface SoakResult {
  startedAt: string;
  finishedAt: string;
  options: SoakOptions;
  machine: { node: string; pinned: boolean };
  samples: SoakSample[];
  growth: Growth[];
  /** Worst per-sample figures over the run, of the servers and of the idle control process. */
  lag: { p99MaxMs: number; maxMs: number; controlP99MaxMs: number; controlMaxMs: number };
  churn: ChurnCounters;
  errorCodes: Record<string, number>;
  leftovers: Leftovers;
  clean: boolean;
}

const MiB = 1024 * 1024;
const SERVER = join(BENCH_DIR, 'soak', 'server.ts');
const CHURN = join(BENCH_DIR, 'soak', 'churn.ts');
const PROBE = join(BENCH_DIR, 'support', 'probe.mjs');
/** The churn's longest status expiry (see churn.ts); the end check waits past it. */
const LONGEST_EXPIRY_MS = 5_000;

export function soakDefaults(durationMs: number, clients = 1000): SoakOptions {
  const sampleMs = Math.min(60_000, Math.max(1_000, Math.round(durationMs / 30 / 1000) * 1000));
  const windowMs = Math.max(sampleMs, Math.round(durationMs / 10));
  return {
    durationMs,
    clients,
    users: Math.max(1, Math.round(clients / 2)),
    channels: Math.max(1, Math.round(clients / 8)),
    nodes: 1,
    commandsPerSecond: Math.round(clients / 5),
    disconnectsPerSecond: Math.max(1, Math.round(clients / 100)),
    sampleMs,
    warmupMs: windowMs,
    windowMs,
    offlineDelayMs: 2_000,
    typingTimeoutMs: 1_500,
    idleTimeoutMs: 15_000,
    heartbeatIntervalMs: 10_000,
    pin: true,
    seed: 7,
    verbose: false,
  };
}

class SoakNode {
  private nextId = 0;
  private readonly pending = new Map<number, (sample: ServerSample) => void>();
  constructor(readonly child: Child, readonly port: number) {
    child.process.on('message', (message: ServerSample) => {
      if (typeof message?.soakReply !== 'number') return;
      this.pending.get(message.soakReply)?.(message);
      this.pending.delete(message.soakReply);
    });
  }

  sample(gc: boolean, heapSnapshot?: string): Promise<ServerSample> {
    if (!this.child.alive) return Promise.reject(new Error(`${this.child.name} exited:\n${this.child.recentOutput}`));
    const id = ++this.nextId;
    return new Promise((done, fail) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        fail(new Error(`${this.child.name} did not answer a sample within 60 s`));
      }, 60_000);
      this.pending.set(id, (sample) => {
        clearTimeout(timer);
        done(sample);
      });
      this.child.process.send({ soak: 'sample', id, gc, heapSnapshot } satisfies SampleRequest);
    });
  }

  async stop(): Promise<void> {
    if (!this.child.alive) return;
    this.child.process.send({ soak: 'stop' });
    const timer = setTimeout(() => this.child.process.kill('SIGKILL'), 10_000);
    await this.child.exited;
    clearTimeout(timer);
  }
}

class ChurnProcess {
  private nextId = 0;
  private readonly pending = new Map<number, (report: ChurnReport) => void>();
  /** Resolves once the generator has loaded and started its clients. */
  readonly ready: Promise<void>;

  constructor(readonly child: Child) {
    let markReady = () => {};
    this.ready = new Promise((done) => (markReady = done));
    child.process.on('message', (message: ChurnReport | { churnReady: true }) => {
      if ('churnReady' in message) return markReady();
      if (typeof message?.churnReport !== 'number') return;
      this.pending.get(message.churnReport)?.(message);
      this.pending.delete(message.churnReport);
    });
  }

  private ask(kind: 'report' | 'drain'): Promise<ChurnReport> {
    if (!this.child.alive) return Promise.reject(new Error(`churn generator exited:\n${this.child.recentOutput}`));
    const id = ++this.nextId;
    return new Promise((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`churn generator did not answer ${kind} within 60 s`)), 60_000);
      this.pending.set(id, (report) => {
        clearTimeout(timer);
        done(report);
      });
      this.child.process.send({ churn: kind, id });
    });
  }

  report(): Promise<ChurnReport> {
    return this.ask('report');
  }

  drain(): Promise<ChurnReport> {
    return this.ask('drain');
  }
}

function withTaskset(cores: string | undefined, args: string[]): [string, string[]] {
  return cores ? ['taskset', ['-c', cores, process.execPath, ...args]] : [process.execPath, args];
}

async function startSoakNode(name: string, env: Record<string, string>, cores: string | undefined): Promise<SoakNode> {
  const port = await freePort();
  const [command, args] = withTaskset(cores, ['--expose-gc', '--import', 'tsx', SERVER]);
  const child = new Child(name, command, args, { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' }, true);
  await waitForPort(child, port);
  return new SoakNode(child, port);
}

function nodeSample(sample: ServerSample): NodeSample {
  return {
    node: sample.node,
    rssMiB: sample.rss / MiB,
    heapMiB: sample.heapUsed / MiB,
    heapTotalMiB: sample.heapTotal / MiB,
    externalMiB: sample.external / MiB,
    heapSpacesMiB: Object.fromEntries(Object.entries(sample.heapSpaces).map(([name, bytes]) => [name, Math.round((bytes / MiB) * 1000) / 1000])),
    lagP99Ms: sample.lagP99Ms,
    lagMaxMs: sample.lagMaxMs,
    connections: sample.stats.connections,
    sessions: sample.stats.sessions,
    onlineUsers: sample.stats.onlineUsers,
    channels: sample.stats.channels,
    typing: sample.inspect.typing ?? 0,
    engineTimers: sample.engineTimers,
  };
}

function mean(values: number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}

function growthOf(samples: SoakSample[], options: SoakOptions, nodeIndex: number): Growth {
  // Sample i is due at (i + 1) × sampleMs; windows go by when samples were due, since a starved
  // machine can take them late.
  const due = (index: number) => (index + 1) * options.sampleMs;
  const churnEnd = options.durationMs;
  const firstFrom = options.warmupMs;
  const firstTo = firstFrom + options.windowMs;
  const lastFrom = churnEnd - options.windowMs;
  const pick = (from: number, to: number) => samples.filter((_, i) => due(i) > from && due(i) <= to).map((s) => s.nodes[nodeIndex]);
  const first = pick(firstFrom, firstTo);
  const last = pick(lastFrom, churnEnd);
  const heapFirst = mean(first.map((n) => n.heapMiB));
  const heapLast = mean(last.map((n) => n.heapMiB));
  const rssFirst = mean(first.map((n) => n.rssMiB));
  const rssLast = mean(last.map((n) => n.rssMiB));
  return {
    node: samples[0]?.nodes[nodeIndex]?.node ?? '?',
    heapFirstMiB: heapFirst,
    heapLastMiB: heapLast,
    heapGrowthPct: heapFirst ? ((heapLast - heapFirst) / heapFirst) * 100 : 0,
    rssFirstMiB: rssFirst,
    rssLastMiB: rssLast,
    rssGrowthPct: rssFirst ? ((rssLast - rssFirst) / rssFirst) * 100 : 0,
  };
}

/** Every key in Redis, sorted into what may remain and what may not. */
async function redisLeftovers(url: string, liveNodes: string[]): Promise<NonNullable<Leftovers['redis']>> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    let userRecords = 0;
    let liveNodeKeys = 0;
    let sessionFields = 0;
    const strayKeys: string[] = [];
    for (const key of keys) {
      if (key === '{presence}:registry' || key === '{presence}:node-stats') {
        const members = key === '{presence}:registry' ? await redis.zrange(key, 0, -1) : await redis.hkeys(key);
        for (const member of members) if (!liveNodes.includes(member)) strayKeys.push(`${key} member ${member}`);
        continue;
      }
      if (/^presence:user:\{.+\}$/.test(key)) {
        userRecords += 1;
        continue;
      }
      // Every client has gone: a user's sessions and a channel's index are empty, and empty hashes vanish.
      if (/^presence:(user|channel):\{.+\}:sessions$/.test(key)) {
        sessionFields += await redis.hlen(key);
        strayKeys.push(key);
        continue;
      }
      // A live node's index of users (it shrinks only when the node is reaped) and its online list.
      const node = /^presence:node-(?:users|online):\{(.+)\}$/.exec(key)?.[1];
      if (node && liveNodes.includes(node)) {
        liveNodeKeys += 1;
        if (key.startsWith('presence:node-online:')) sessionFields += await redis.scard(key);
        continue;
      }
      strayKeys.push(key);
    }
    return { keys: keys.length, userRecords, liveNodeKeys, sessionFields, strayKeys };
  } finally {
    redis.disconnect();
  }
}

/** The numeric entries of a stats object (every count must reach zero once the clients have gone). */
function counts(figures: object): Array<[string, number]> {
  return Object.entries(figures).filter((entry): entry is [string, number] => typeof entry[1] === 'number');
}

function problemsOf(samples: ServerSample[], redis: Leftovers['redis']): string[] {
  const problems: string[] = [];
  samples.forEach((sample) => {
    const where = `node ${sample.node}`;
    for (const [name, value] of counts(sample.stats)) if (value !== 0) problems.push(`${where}: stats.${name} = ${value}`);
    for (const [name, value] of counts(sample.inspect)) if (value !== 0) problems.push(`${where}: inspect.${name} = ${value}`);
    if (sample.engineTimers !== 0) problems.push(`${where}: ${sample.engineTimers} engine timers still armed`);
    // The cluster link keeps a bounded cache of user records by design; writes in flight must be done.
    if (sample.cluster?.pendingWrites) problems.push(`${where}: ${sample.cluster.pendingWrites} cluster writes never seen back`);
  });
  if (redis) {
    if (redis.sessionFields !== 0) problems.push(`redis: ${redis.sessionFields} session fields left in live nodes' hashes`);
    for (const key of redis.strayKeys.slice(0, 20)) problems.push(`redis: stray key ${key}`);
  }
  return problems;
}

export async function runSoak(options: SoakOptions, say: (line: string) => void = () => {}): Promise<SoakResult> {
  const startedAt = new Date().toISOString();
  const pinning = defaultPinning(options.pin);
  const nodes: SoakNode[] = [];
  let redis: Awaited<ReturnType<typeof startRedis>> | undefined;
  let churn: ChurnProcess | undefined;
  let control: Child | undefined;
  try {
    const env: Record<string, string> = {
      LOG_LEVEL: 'warn',
      NODE_ENV: 'development',
      PRESENCE_OFFLINE_DELAY_MS: String(options.offlineDelayMs),
      PRESENCE_TYPING_TIMEOUT_MS: String(options.typingTimeoutMs),
      PRESENCE_IDLE_TIMEOUT_MS: String(options.idleTimeoutMs),
      PRESENCE_HEARTBEAT_INTERVAL_MS: String(options.heartbeatIntervalMs),
    };
    if (options.nodes === 2) {
      redis = await startRedis(pinning.loadgen);
      env.REDIS_URL = redis.url;
    }
    const started = await Promise.all(
      Array.from({ length: options.nodes }, (_, i) =>
        startSoakNode(`soak-node-${i + 1}`, { ...env, ...(options.nodes === 2 ? { PRESENCE_NODE_ID: `soak-${i + 1}` } : {}) }, pinning.server),
      ),
    );
    nodes.push(...started);

    const [controlCommand, controlArgs] = withTaskset(pinning.server, ['--import', PROBE, '-e', 'setInterval(() => {}, 1 << 30)']);
    control = new Child('control', controlCommand, controlArgs, process.env, true);

    const churnOptions: ChurnOptions = {
      urls: nodes.map((node) => `ws://127.0.0.1:${node.port}`),
      clients: options.clients,
      users: options.users,
      channels: options.channels,
      commandsPerSecond: options.commandsPerSecond,
      disconnectsPerSecond: options.disconnectsPerSecond,
      seed: options.seed,
    };
    const [command, args] = withTaskset(pinning.loadgen, ['--import', 'tsx', CHURN, JSON.stringify(churnOptions)]);
    churn = new ChurnProcess(new Child('churn', command, args, process.env, true));
    await Promise.race([churn.ready, churn.child.exited.then(() => Promise.reject(new Error(`churn generator exited:\n${churn!.child.recentOutput}`)))]);
    const t0 = performance.now();
    say(`soak: ${options.clients} clients on ${options.nodes} node(s) for ${formatDuration(options.durationMs)}; sample every ${options.sampleMs / 1000} s`);

    const samples: SoakSample[] = [];
    for (let next = options.sampleMs; next <= options.durationMs; next += options.sampleMs) {
      await sleep(Math.max(0, next - (performance.now() - t0)));
      const askedAt = performance.now();
      const snapshotAt = next > options.warmupMs && next - options.sampleMs <= options.warmupMs ? 'warm' : next + options.sampleMs > options.durationMs ? 'end' : undefined;
      const snapshot = (i: number) => (options.heapSnapshotsDir && snapshotAt ? join(options.heapSnapshotsDir, `node${i + 1}-${snapshotAt}.heapsnapshot`) : undefined);
      const [serverSamples, report, idle] = await Promise.all([Promise.all(nodes.map((node, i) => node.sample(true, snapshot(i)))), churn.report(), control.probe(false)]);
      const sample: SoakSample = {
        atSeconds: Math.round((askedAt - t0) / 100) / 10,
        load1: loadavg()[0],
        control: { lagP99Ms: idle.lagP99Ms, lagMaxMs: idle.lagMaxMs },
        nodes: serverSamples.map(nodeSample), churn: report.counters };
      samples.push(sample);
      if (options.verbose) say(formatRow(sample));
    }

    const drained = await churn.drain();
    const goneAt = performance.now();
    // Wait past the offline delay, the typing timeout and the longest status expiry, polling until clean.
    const deadline = goneAt + options.offlineDelayMs + options.typingTimeoutMs + LONGEST_EXPIRY_MS + 10_000;
    const quiet = (s: ServerSample) =>
      counts(s.stats).every(([, v]) => v === 0) && counts(s.inspect).every(([, v]) => v === 0) && s.engineTimers === 0;
    let finals = await Promise.all(nodes.map((node) => node.sample(false)));
    while (!finals.every(quiet) && performance.now() < deadline) {
      await sleep(250);
      finals = await Promise.all(nodes.map((node) => node.sample(false)));
    }
    const settledAfterSeconds = Math.round((performance.now() - goneAt) / 100) / 10;
    // Give in-flight cluster messages a moment to land before the final look.
    await sleep(1_000);
    finals = await Promise.all(nodes.map((node) => node.sample(true)));
    const redisLeft = redis ? await redisLeftovers(redis.url, finals.map((s) => s.node)) : undefined;
    const leftovers: Leftovers = {
      nodes: finals.map((s) => ({ node: s.node, stats: s.stats, inspect: s.inspect, engineTimers: s.engineTimers, cluster: s.cluster })),
      redis: redisLeft,
      settledAfterSeconds,
      problems: problemsOf(finals, redisLeft),
    };
    const growth = nodes.map((_, i) => growthOf(samples, options, i));
    const lags = samples.flatMap((s) => s.nodes);
    return {
      startedAt,
      finishedAt: new Date().toISOString(),
      options,
      machine: { node: process.version, pinned: pinning.server !== undefined },
      samples,
      growth,
      lag: {
        p99MaxMs: Math.max(0, ...lags.map((n) => n.lagP99Ms)),
        maxMs: Math.max(0, ...lags.map((n) => n.lagMaxMs)),
        controlP99MaxMs: Math.max(0, ...samples.map((s) => s.control.lagP99Ms)),
        controlMaxMs: Math.max(0, ...samples.map((s) => s.control.lagMaxMs)),
      },
      churn: drained.counters,
      errorCodes: drained.errorCodes,
      leftovers,
      clean: leftovers.problems.length === 0,
    };
  } finally {
    if (churn?.child.alive) await churn.child.stop(3000);
    if (control?.alive) await control.stop(3000);
    await Promise.all(nodes.map((node) => node.stop()));
    if (redis) await redis.child.stop(3000);
  }
}

function formatDuration(ms: number): string {
  return ms >= 120_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`;
}

const fixed = (value: number, digits = 1) => value.toFixed(digits);

function formatRow(sample: SoakSample): string {
  const minutes = fixed(sample.atSeconds / 60, 1).padStart(6);
  const perNode = sample.nodes
    .map((n) => `${fixed(n.rssMiB).padStart(7)} ${fixed(n.heapMiB).padStart(6)} ${fixed(n.lagP99Ms).padStart(6)} ${fixed(n.lagMaxMs).padStart(7)} ${String(n.sessions).padStart(6)} ${String(n.channels).padStart(5)} ${String(n.engineTimers).padStart(6)}`)
    .join(' |');
  const control = `${fixed(sample.control.lagP99Ms).padStart(6)} ${fixed(sample.control.lagMaxMs).padStart(7)}`;
  return `${minutes} |${perNode} | ${control} | ${fixed(sample.load1).padStart(5)} | ${sample.churn.opened} opened, ${sample.churn.commands} commands`;
}

export function formatReport(result: SoakResult): string {
  const lines: string[] = [];
  const header = result.samples[0]?.nodes.map(() => `${'RSS MiB'.padStart(7)} ${'heap'.padStart(6)} ${'p99 ms'.padStart(6)} ${'max ms'.padStart(7)} ${'sess'.padStart(6)} ${'chan'.padStart(5)} ${'timers'.padStart(6)}`).join(' |');
  lines.push(`${'min'.padStart(6)} |${header} | ${'idle p99'.padStart(6)} ${'idle max'.padStart(7)} | ${'load'.padStart(5)} | churn (cumulative)`);
  for (const sample of result.samples) lines.push(formatRow(sample));
  lines.push('');
  for (const g of result.growth) {
    lines.push(
      `memory growth, node ${g.node}: heap ${fixed(g.heapFirstMiB)} → ${fixed(g.heapLastMiB)} MiB (${fixed(g.heapGrowthPct)} %), RSS ${fixed(g.rssFirstMiB)} → ${fixed(g.rssLastMiB)} MiB (${fixed(g.rssGrowthPct)} %)`,
    );
  }
  lines.push(
    `event-loop lag: worst sample p99 ${fixed(result.lag.p99MaxMs)} ms, max ${fixed(result.lag.maxMs)} ms (an idle process on the same core: p99 ${fixed(result.lag.controlP99MaxMs)} ms, max ${fixed(result.lag.controlMaxMs)} ms)`,
  );
  const c = result.churn;
  lines.push(
    `churn: ${c.opened} connections (${c.resumed} resumed, ${c.moved} on the other node), ${c.closedClean} clean closes, ${c.closedAbrupt} abrupt, ${c.loggedOut} logouts, ${c.commands} commands, ${c.messagesIn} frames received, ${c.errorsIn} error frames, ${c.closedByServer} closed by the server`,
  );
  if (Object.keys(result.errorCodes).length > 0) lines.push(`error codes: ${JSON.stringify(result.errorCodes)}`);
  const left = result.leftovers;
  for (const n of left.nodes) {
    lines.push(`left on node ${n.node}: ${JSON.stringify(n.stats)} ${JSON.stringify(n.inspect)}, engine timers ${n.engineTimers}${n.cluster ? `, cluster ${JSON.stringify(n.cluster)}` : ''}`);
  }
  if (left.redis) {
    lines.push(`left in redis: ${left.redis.keys} keys = ${left.redis.userRecords} user records + ${left.redis.liveNodeKeys} live node keys (${left.redis.sessionFields} session fields) + registry and node counts; stray: ${left.redis.strayKeys.length}`);
  }
  lines.push(result.clean ? `nothing left over (settled ${left.settledAfterSeconds} s after the last client went)` : `LEFT OVER:\n  ${left.problems.join('\n  ')}`);
  return lines.join('\n');
}

const HELP = `Usage: node --import tsx bench/soak/soak.ts [options]

  --minutes=N            run the churn for N minutes (default 1)
  --seconds=N            or for N seconds
  --clients=N            client population (default 1000)
  --nodes=1|2            one node, or two nodes and a redis-server (default 1)
  --rate=N               commands per second over all clients (default clients/5)
  --disconnects=N        connections ended per second (default clients/100)
  --sample-seconds=N     sampling interval (default duration/30, 1–60 s)
  --out=PATH             JSON output (default bench/results/soak-<time>.json)
  --no-pin               do not pin processes with taskset
  --heap-snapshots=DIR   write heap snapshots of each node after the warm-up and at the end
  --report=FILE          print the report of an earlier run's JSON (growth recomputed)
  --verbose              print each sample as it is taken
`;

async function main(argv: string[]): Promise<void> {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    const [name, value] = arg.replace(/^--/, '').split('=', 2);
    flags.set(name, value ?? 'true');
  }
  if (flags.has('help')) {
    process.stdout.write(HELP);
    return;
  }
  const number = (name: string): number | undefined => {
    if (!flags.has(name)) return undefined;
    const value = Number(flags.get(name));
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
    return value;
  };
  if (flags.has('report')) {
    // Re-derives the growth figures and the table from a results file (e.g. after a change to how
    // growth is computed), and writes the recomputed growth back into it.
    const file = resolve(REPO_DIR, flags.get('report')!);
    const result = JSON.parse(readFileSync(file, 'utf8')) as SoakResult;
    result.growth = result.samples[0].nodes.map((_, i) => growthOf(result.samples, result.options, i));
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`${formatReport(result)}\n`);
    return;
  }
  const durationMs = (number('seconds') ?? 0) * 1000 || (number('minutes') ?? 1) * 60_000;
  const options = soakDefaults(durationMs, number('clients') ?? 1000);
  const nodes = number('nodes') ?? 1;
  if (nodes !== 1 && nodes !== 2) throw new Error('--nodes must be 1 or 2');
  options.nodes = nodes;
  options.commandsPerSecond = number('rate') ?? options.commandsPerSecond;
  options.disconnectsPerSecond = number('disconnects') ?? options.disconnectsPerSecond;
  if (flags.has('sample-seconds')) options.sampleMs = number('sample-seconds')! * 1000;
  options.pin = !flags.has('no-pin');
  options.verbose = flags.has('verbose');
  if (flags.has('heap-snapshots')) {
    options.heapSnapshotsDir = resolve(flags.get('heap-snapshots')!);
    mkdirSync(options.heapSnapshotsDir, { recursive: true });
  }
  const out = resolve(REPO_DIR, flags.get('out') ?? join('bench', 'results', `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`));

  const result = await runSoak(options, (line) => process.stdout.write(`${line}\n`));
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${formatReport(result)}\nJSON: ${relative(REPO_DIR, out)}\n`);
  process.exitCode = result.clean ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === join(BENCH_DIR, 'soak', 'soak.ts')) {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      killAllChildren();
      process.exit(130);
    });
  }
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    killAllChildren();
    process.exit(1);
  });
}
