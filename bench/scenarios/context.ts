import type { SystemName } from '../loadgen/wire.js';
import type { Pinning } from '../lib/proc.js';
import type { LadderPlan } from './steps.js';

export const SCENARIOS = ['connections', 'fanout', 'joinstorm', 'typing', 'churn', 'reconnect', 'multinode', 'scaleout', 'largeroom'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * Scenarios a full run leaves out unless named: scale-out measures Presence alone, against itself
 * on more nodes, and takes about a quarter of an hour; large rooms compare Presence's large-room
 * modes with themselves off (and the relays), one room at a time. Quick mode runs every scenario.
 */
export const OPT_IN_SCENARIOS: readonly ScenarioName[] = ['scaleout', 'largeroom'];

export interface Options {
  quick: boolean;
  scenarios: ScenarioName[];
  systems: SystemName[];
  pin: boolean;
  /** Where the JSON goes; the chart is written next to it. */
  out?: string;
  /** Another Presence CLI entry to measure (a .ts or .js file), e.g. a copy of an older version. */
  presenceEntry?: string;
  /** Extra node flags for every server process, e.g. `--cpu-prof` to profile what a step costs. */
  serverFlags: string[];
  /** The load generator's WebSocket client: `lean` (default, see lean-socket.ts) or `ws`. */
  client: 'lean' | 'ws';
  /** The latency objective a step must meet (p99, ms). */
  sloMs: number;
  stepMs: number;
  warmupMs: number;
  /** Connection handshakes in flight while building a population. */
  connectConcurrency: number;
  /**
   * `nodes` > 1 spreads the users over that many server processes (Presence and Socket.IO through
   * Redis): how a population larger than one process's open-files limit is held on one machine.
   */
  connections: { users: number; channelSize: number; sourceAddresses: number; settleMs: number; nodes: number };
  fanout: { channels: number; members: number } & LadderPlan;
  /**
   * The one large channel of the typing storm and the churn scenario: its size, how many joins
   * are in flight while it fills, how many typists and churners (at most) are visible, and the p99
   * objective of its rate steps (one event there is a write to every member's socket).
   */
  big: { members: number; fillConcurrency: number; actors: number; sloMs: number };
  typing: LadderPlan;
  churn: LadderPlan;
  /** Users joining one channel at once, each with the system's ordinary join. */
  joinstorm: { users: number };
  reconnect: { users: number; channelSize: number; concurrency: number; settleMs: number };
  multinode: { channels: number; members: number } & LadderPlan;
  scaleout: ScaleoutOptions;
  largeroom: LargeRoomOptions;
}

/** Large rooms on one node (bench/scenarios/large-room.ts). */
export interface LargeRoomOptions {
  /** Busy room: visible members, status changes per second among them, the measured step (ms). */
  members: number;
  /** Busy room, windowed run: PRESENCE_LARGE_CHANNEL_MEMBERS (the product's default, 200). */
  windowMembers: number;
  rate: number;
  durationMs: number;
  /** Huge room: users joining one channel, over how many seconds. */
  hugeMembers: number;
  fillSeconds: number;
  /** Huge room, occupancy run: PRESENCE_OCCUPANCY_ONLY_MEMBERS. */
  occupancyMembers: number;
  /** Huge room with both modes off: these sizes in turn, up to the first that does not finish. */
  perEventSizes: number[];
  /** How long after the last join every count must be right for a huge room to finish (ms). */
  settleMs: number;
  /**
   * Cluster room (bench/scenarios/large-room-cluster.ts): occupancy listeners in one channel over
   * several server processes through one redis-server (0 skips it); at least `clusterNodes` servers
   * and `clusterLoadgens` load generators (more when the open-files limit needs them), over
   * `clusterSourceAddresses` loopback addresses (0: one per 25,000), filled at `clusterFillRate`
   * joins a second; then `clusterChanges` changes `clusterGapMs` apart. `clusterOnly`=1 runs only it.
   */
  clusterListeners: number;
  clusterNodes: number;
  clusterLoadgens: number;
  clusterSourceAddresses: number;
  clusterFillRate: number;
  clusterChanges: number;
  clusterGapMs: number;
  clusterOnly: number;
  /**
   * 1: `clusterRevealed` visible members join first, then the listeners join invisible (members,
   * followed by every node, never counted), so the count stays still while the room fills; 0:
   * every listener joins visible (each window of the fill then sends every listener a
   * new count: quadratic in the listeners, more than this machine can fill at 100,000).
   */
  clusterQuiet: number;
  clusterRevealed: number;
  /**
   * PRESENCE_NODE_LEASE_MS of the cluster room's nodes (0: the product's default, 3 s). Every server
   * process shares one core here: a node's pause (a major GC of a heap holding every member) lasts
   * as many times longer as processes share the core, and a node that misses its lease is reaped.
   */
  clusterLeaseMs: number;
}

/** Presence on 1…N nodes through Redis (bench/scenarios/scaleout.ts). */
export interface ScaleoutOptions {
  /** Node counts of the scaling runs, each with the same load per node. */
  nodes: number[];
  /** Users per node (rounded up to whole channels). */
  users: number;
  /** Presence updates per second per node. */
  rate: number;
  channelSize: number;
  /** Of each channel's members, the share on other nodes in the cross-node variant; 0 skips it. */
  crossFraction: number;
  /** Runs (fresh processes) of each node count and variant; the table shows their medians. */
  runs: number;
  /** The measured window of each run, after a warm-up of a fifth of it (ms). */
  durationMs: number;
  /** Idle-node tax: users on node A over WebSockets (node B has none; 0 skips the measurement). */
  idleUsers: number;
  /**
   * Idle-node tax: more users on node A over HTTP heartbeats, held by the bench process through a
   * few sockets: one process here may open at most 20,000 files, and the issue asks for 20,000 users.
   */
  idleHttpUsers: number;
  /** Idle-node tax: presence updates per second on node A. */
  idleRate: number;
  /** Longest wait for other tenants' CPU use to calm down before each run (ms). */
  quietWaitMs: number;
  /**
   * Node counts also run on a Redis Cluster of 3 masters (local channels, the same load per node
   * and runs per count), each master measured apart; empty = none (`--scaleout.redis-cluster=0`).
   */
  redisCluster: number[];
}

export interface Context {
  opts: Options;
  pinning: Pinning;
  log(line: string): void;
  /** Overwrites the current status line (connect progress); a no-op when output is not a terminal. */
  status(line: string): void;
}

/** The cluster room: small in a quick run; off in a full run (it needs minutes: --largeroom.cluster-listeners=100000). */
const quickCluster = { clusterListeners: 120, clusterNodes: 2, clusterLoadgens: 2, clusterSourceAddresses: 2, clusterFillRate: 400, clusterChanges: 2, clusterGapMs: 1000, clusterOnly: 0, clusterQuiet: 1, clusterRevealed: 40, clusterLeaseMs: 0 };
const fullCluster = { clusterListeners: 0, clusterNodes: 6, clusterLoadgens: 6, clusterSourceAddresses: 0, clusterFillRate: 500, clusterChanges: 10, clusterGapMs: 3000, clusterOnly: 0, clusterQuiet: 1, clusterRevealed: 100, clusterLeaseMs: 30_000 };

export function defaultOptions(quick: boolean): Options {
  // What every run shares; the two modes differ only in scale.
  const common = {
    quick,
    scenarios: SCENARIOS.filter((s) => quick || !OPT_IN_SCENARIOS.includes(s)),
    systems: ['presence', 'ws', 'socketio', 'pusher'],
    pin: true,
    serverFlags: [],
    client: 'lean',
    sloMs: 50,
  } satisfies Partial<Options>;
  if (quick) {
    return {
      ...common,
      stepMs: 800,
      warmupMs: 150,
      connectConcurrency: 50,
      connections: { users: 200, channelSize: 10, sourceAddresses: 1, settleMs: 200, nodes: 1 },
      fanout: { channels: 20, members: 5, rates: [50, 100], start: 50, factor: 2, maxSteps: 2, refine: 0 },
      big: { members: 100, fillConcurrency: 50, actors: 20, sloMs: 250 },
      typing: { rates: [10], start: 10, factor: 2, maxSteps: 1, refine: 0 },
      churn: { rates: [8], start: 8, factor: 2, maxSteps: 1, refine: 0 },
      joinstorm: { users: 60 },
      reconnect: { users: 100, channelSize: 5, concurrency: 100, settleMs: 300 },
      multinode: { channels: 20, members: 4, rates: [50], start: 50, factor: 2, maxSteps: 1, refine: 0 },
      scaleout: { nodes: [1, 2], users: 200, rate: 40, channelSize: 10, crossFraction: 0.1, runs: 1, durationMs: 1000, idleUsers: 300, idleHttpUsers: 20, idleRate: 40, quietWaitMs: 0, redisCluster: [1] },
      largeroom: { members: 40, windowMembers: 10, rate: 4, durationMs: 1500, hugeMembers: 150, fillSeconds: 1, occupancyMembers: 20, perEventSizes: [50], settleMs: 5000, ...quickCluster },
    };
  }
  return {
    ...common,
    stepMs: 5000,
    warmupMs: 1000,
    connectConcurrency: 200,
    connections: { users: 10_000, channelSize: 10, sourceAddresses: 0, settleMs: 2000, nodes: 1 },
    fanout: { channels: 1000, members: 10, start: 1000, factor: 1.5, maxSteps: 14, refine: 2 },
    big: { members: 10_000, fillConcurrency: 200, actors: 100, sloMs: 250 },
    typing: { start: 2, factor: 2, maxSteps: 10, refine: 1 },
    churn: { start: 2, factor: 2, maxSteps: 10, refine: 1 },
    joinstorm: { users: 2000 },
    reconnect: { users: 10_000, channelSize: 10, concurrency: 10_000, settleMs: 2000 },
    multinode: { channels: 1000, members: 10, start: 1000, factor: 1.5, maxSteps: 12, refine: 1 },
    scaleout: { nodes: [1, 2, 4, 8], users: 1000, rate: 150, channelSize: 10, crossFraction: 0.1, runs: 3, durationMs: 10_000, idleUsers: 18_000, idleHttpUsers: 2_000, idleRate: 200, quietWaitMs: 20_000, redisCluster: [4] },
    largeroom: { members: 2000, windowMembers: 200, rate: 30, durationMs: 10_000, hugeMembers: 10_000, fillSeconds: 10, occupancyMembers: 50, perEventSizes: [1000, 2000, 4000], settleMs: 30_000, ...fullCluster },
  };
}

export const HELP = `npm run bench -- [options]

Runs the load scenarios against Presence and the two baselines (a bare ws relay, Socket.IO with
the Redis adapter), prints a table, writes JSON and an SVG chart.

  --quick                       every scenario at tiny scale (under a minute)
  --scenarios=a,b               ${SCENARIOS.join(', ')}
                                (default: all but ${OPT_IN_SCENARIOS.join(', ')}, which runs only when named;
                                --quick runs them all)
  --systems=a,b                 presence, ws, socketio, pusher (Presence through its Pusher endpoint: connections and fan-out)
  --out=FILE                    JSON path (chart beside it); default bench/results/full.json for a
                                complete default run, bench/scratch/<name>.json otherwise
  --no-pin                      do not pin the server and load generator to separate cores
  --presence-entry=FILE         measure another Presence CLI entry (.ts or .js), e.g. an older copy
  --server-flags=F1,F2          node flags for the server processes, e.g. --server-flags=--cpu-prof,--cpu-prof-dir=bench/scratch/prof
  --client=lean|ws              the load generator's WebSocket client (default lean; ws = the ws library)
  --slo-ms=50                   p99 objective a rate step must meet
  --step-ms=5000 --warmup-ms=1000   length of a rate step and its unmeasured start
  --connect-concurrency=200     connection handshakes in flight while building a population

Scenario parameters, as --<scenario>.<name>=value:
  connections.users=10000 connections.channel-size=10 connections.source-addresses=N
  connections.nodes=1           server processes the users are spread over (Presence and
                                Socket.IO through Redis; the bare relay has no multi-node mode)
  fanout.channels=1000 fanout.members=10
  fanout.rates=1000,2000,…  (fixed steps) or fanout.start=1000 fanout.factor=1.5
  fanout.max-steps=14 fanout.refine=2
  big.members=10000 big.fill-concurrency=200 big.actors=100 big.slo-ms=250
                                (the channel of typing and churn, and its p99 objective)
  typing.rates=… typing.start=4 typing.factor=1.5 …  churn.rates=… churn.start=4 …
  joinstorm.users=2000
  reconnect.users=10000 reconnect.channel-size=10 reconnect.concurrency=10000
  multinode.channels=1000 multinode.members=10 multinode.rates=… multinode.start=1000 …
  scaleout.nodes=1,2,4,8        Presence alone, through one Redis, on each node count in turn
  scaleout.users=1000 scaleout.rate=150
                                users and presence updates/s per node (the same on every node)
  scaleout.channel-size=10 scaleout.cross-fraction=0.1
                                channels live on one node; in the cross-node variant this share of
                                each channel's members sits on other nodes (0 = no such variant)
  scaleout.runs=3 scaleout.duration-ms=10000
                                runs per node count and variant (median shown), measured window
  scaleout.idle-users=18000 scaleout.idle-http-users=2000 scaleout.idle-rate=200
                                idle-node tax: users (WebSocket, HTTP heartbeats) and updates/s on
                                node A, none on node B
                                (0 users = not measured)
  scaleout.quiet-wait-ms=20000  longest wait for other tenants to calm down before each run
  scaleout.redis-cluster=4      node counts run again on a Redis Cluster of 3 masters (local
                                channels, same load per node; each master's figures beside
                                one redis-server's); 0 = none (--quick: 1)
  largeroom.members=2000 largeroom.rate=30 largeroom.duration-ms=10000 largeroom.window-members=200
                                busy room: visible members, status changes/s among them, the step,
                                and from how many visible members the windowed run windows
  largeroom.huge-members=10000 largeroom.fill-seconds=10 largeroom.occupancy-members=50
                                huge room: users joining one channel, in how long, and from how
                                many visible members the occupancy run sends counts
  largeroom.per-event-sizes=1000,2000,4000 largeroom.settle-ms=30000
                                huge room with both modes off: sizes up to the first that does not
                                get every count right within settle-ms of its last join
  largeroom.cluster-listeners=0 largeroom.cluster-nodes=6 largeroom.cluster-loadgens=6
                                cluster room: occupancy listeners in one channel over that many
                                server and load-generator processes (at least; more when the
                                open-files limit needs them) through one redis-server (0: skipped)
  largeroom.cluster-source-addresses=0 largeroom.cluster-fill-rate=500
                                loopback source addresses (0: one per 25,000), joins a second
  largeroom.cluster-changes=10 largeroom.cluster-gap-ms=3000 largeroom.cluster-only=0
                                single changes (an actor joins, then leaves, …) and their spacing;
                                cluster-only=1 skips the busy and huge rooms
  largeroom.cluster-quiet=1 largeroom.cluster-revealed=100
                                that many visible members join first, then the listeners join
                                invisible (the count stays still while the room fills); 0: the
                                listeners join visible
  largeroom.cluster-lease-ms=30000
                                the nodes' PRESENCE_NODE_LEASE_MS (0: the default; every server
                                shares one core here, and a paused node must not be reaped)
`;

/** Parses argv over the defaults of the chosen mode. Throws with a message naming the option. */
export function parseOptions(argv: string[]): Options | 'help' {
  if (argv.includes('--help') || argv.includes('-h')) return 'help';
  const opts = defaultOptions(argv.includes('--quick'));
  for (const arg of argv) {
    if (arg === '--quick') continue;
    if (arg === '--no-pin') {
      opts.pin = false;
      continue;
    }
    const match = /^--([a-z-]+)(?:\.([a-z-]+))?=(.*)$/.exec(arg);
    if (!match) throw new Error(`unknown option ${arg} (see --help)`);
    const [, group, key, value] = match;
    if (!key) {
      setTop(opts, group, value);
      continue;
    }
    const section = (opts as unknown as Record<string, Record<string, unknown>>)[group];
    const name = key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!section || typeof section !== 'object' || !(name in section || (name === 'rates' && 'start' in section))) {
      throw new Error(`unknown option --${group}.${key} (see --help)`);
    }
    // A list that may be empty says so with 0 (--scaleout.redis-cluster=0).
    if (group === 'scaleout' && name === 'redisCluster' && value.trim() === '0') section[name] = [];
    else section[name] = name === 'rates' || Array.isArray(section[name]) ? numberList(arg, value) : positiveNumber(arg, value);
  }
  return opts;
}

function setTop(opts: Options, name: string, value: string): void {
  switch (name) {
    case 'scenarios': {
      const list = value.split(',').map((s) => s.trim()).filter(Boolean);
      for (const s of list) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario "${s}" (${SCENARIOS.join(', ')})`);
      opts.scenarios = list as ScenarioName[];
      return;
    }
    case 'systems': {
      const list = value.split(',').map((s) => s.trim()).filter(Boolean);
      for (const s of list) if (!['presence', 'ws', 'socketio', 'pusher'].includes(s)) throw new Error(`unknown system "${s}" (presence, ws, socketio, pusher)`);
      opts.systems = list as Options['systems'];
      return;
    }
    case 'out':
      opts.out = value;
      return;
    case 'presence-entry':
      opts.presenceEntry = value;
      return;
    case 'server-flags':
      opts.serverFlags = value.split(',').map((f) => f.trim()).filter(Boolean);
      return;
    case 'client':
      if (value !== 'lean' && value !== 'ws') throw new Error(`--client must be lean or ws (got "${value}")`);
      opts.client = value;
      return;
    case 'slo-ms':
      opts.sloMs = positiveNumber(`--${name}`, value);
      return;
    case 'step-ms':
      opts.stepMs = positiveNumber(`--${name}`, value);
      return;
    case 'warmup-ms':
      opts.warmupMs = positiveNumber(`--${name}`, value);
      return;
    case 'connect-concurrency':
      opts.connectConcurrency = positiveNumber(`--${name}`, value);
      return;
    default:
      throw new Error(`unknown option --${name} (see --help)`);
  }
}

function positiveNumber(option: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${option.split('=')[0]} must be a non-negative number (got "${value}")`);
  return n;
}

function numberList(option: string, value: string): number[] {
  return value.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${option.split('=')[0]} must be a comma list of positive numbers (got "${value}")`);
    return n;
  });
}
