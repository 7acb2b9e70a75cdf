/**
 * Cost of the metrics calls on the hot path, in one run: the hand-written registry the server used
 * before (frozen copy in packages/server/test/support/legacy-metrics-registry.ts), prom-client used
 * plainly (`inc({ type }, n)`), prom-client with label children cached per type, and what the server
 * ships (`createPresenceMetrics`: plain numbers per type, rendered through prom-client at scrape).
 *
 *   messageSent   once per fan-out (every outbound message type to N receivers)
 *   commandReceived  once per inbound command (client-supplied type, bounded to the protocol's)
 *   observeFanout once per handled command (the fan-out latency histogram)
 *
 * A scrape of the shipped metrics is timed too, with and without the standard process_* and
 * nodejs_* metrics that /metrics now also renders: it runs every few seconds, not per message.
 *
 *   node --import tsx bench/metrics.ts [--calls 5000000] [--rounds 5] [--out bench/results/metrics.json]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CLIENT_MESSAGE_TYPES } from '@presence/protocol';
import { Counter, Histogram, Registry } from 'prom-client';
import { FANOUT_BUCKETS, createPresenceMetrics, processMetrics } from '../packages/server/src/metrics/index.js';
import { MetricsRegistry as LegacyRegistry } from '../packages/server/test/support/legacy-metrics-registry.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '5000000' },
    rounds: { type: 'string', default: '5' },
    out: { type: 'string', default: new URL('results/metrics.json', import.meta.url).pathname },
  },
});
const CALLS = Number(values.calls);
const ROUNDS = Number(values.rounds);

const OUTBOUND = ['welcome', 'presence.sync', 'presence.join', 'presence.leave', 'presence.update', 'typing', 'user.sync', 'user.update', 'ack', 'error', 'pong'];
const OUTBOUND_SET: ReadonlySet<string> = new Set(OUTBOUND);
const COMMANDS: ReadonlySet<string> = new Set(CLIENT_MESSAGE_TYPES);

/** What a busy room sends: mostly updates and typing to many receivers, some acks and pongs to one. */
const SENT_MIX: Array<[weight: number, type: string, receivers: number]> = [
  [40, 'presence.update', 25],
  [20, 'typing', 25],
  [10, 'ack', 1],
  [10, 'pong', 1],
  [5, 'presence.join', 25],
  [5, 'presence.leave', 25],
  [4, 'user.update', 10],
  [3, 'presence.sync', 1],
  [2, 'welcome', 1],
  [1, 'error', 1],
];
const RECEIVED_MIX: Array<[weight: number, type: unknown]> = [
  [30, 'channel.meta'],
  [20, 'typing'],
  [15, 'activity'],
  [10, 'ping'],
  [8, 'status'],
  [7, 'join'],
  [5, 'leave'],
  [3, 'watch'],
  [1, 'no-such-command'],
  [1, 42],
];

function expand<T>(mix: Array<[number, ...unknown[]]>, pick: (entry: [number, ...unknown[]]) => T, count: number): T[] {
  const pool: T[] = [];
  for (const entry of mix) for (let i = 0; i < entry[0]; i++) pool.push(pick(entry));
  return Array.from({ length: count }, (_, i) => pool[(i * 7919) % pool.length]);
}

// Inputs prepared once, outside the timed loops; 64 Ki entries cycle, so they stay in cache.
const INPUTS = 1 << 16;
const sentTypes = expand(SENT_MIX, (e) => e[1] as string, INPUTS);
const sentReceivers = expand(SENT_MIX, (e) => e[2] as number, INPUTS);
const receivedTypes = expand(RECEIVED_MIX, (e) => e[1], INPUTS);
const latencies = Array.from({ length: INPUTS }, (_, i) => 0.00005 * (1 + ((i * 7919) % 200)));

interface HotPath {
  messageSent(type: string, receivers: number): void;
  commandReceived(type: unknown): void;
  observeFanout(seconds: number): void;
  /** Outbound messages counted so far, to check that every implementation counted the same. */
  sentTotal(): number;
}

/** The code the server ran before, on the hand-written registry (bounding exactly as it did). */
function legacy(): HotPath {
  const registry = new LegacyRegistry();
  const eventsIn = registry.counter({ name: 'presence_events_in_total', help: 'in', labelNames: ['type'] });
  const eventsOut = registry.counter({ name: 'presence_events_out_total', help: 'out', labelNames: ['type'] });
  const fanout = registry.histogram({ name: 'presence_fanout_latency_seconds', help: 'fanout', buckets: FANOUT_BUCKETS });
  return {
    messageSent(type, receivers = 1) {
      if (receivers <= 0) return;
      eventsOut.inc({ type: OUTBOUND_SET.has(type) ? type : 'other' }, receivers);
    },
    commandReceived(type) {
      eventsIn.inc({ type: typeof type === 'string' && COMMANDS.has(type) ? type : 'unknown' });
    },
    observeFanout(seconds) {
      fanout.observe(seconds);
    },
    sentTotal: () => eventsOut.total(),
  };
}

/** prom-client as its README shows it: labels as an object on every call. */
function promClientPlain(): HotPath {
  const registry = new Registry();
  const eventsIn = new Counter({ name: 'presence_events_in_total', help: 'in', labelNames: ['type'] as const, registers: [registry] });
  const eventsOut = new Counter({ name: 'presence_events_out_total', help: 'out', labelNames: ['type'] as const, registers: [registry] });
  const fanout = new Histogram({ name: 'presence_fanout_latency_seconds', help: 'fanout', buckets: [...FANOUT_BUCKETS], registers: [registry] });
  let sent = 0;
  return {
    messageSent(type, receivers = 1) {
      if (receivers <= 0) return;
      sent += receivers;
      eventsOut.inc({ type: OUTBOUND_SET.has(type) ? type : 'other' }, receivers);
    },
    commandReceived(type) {
      eventsIn.inc({ type: typeof type === 'string' && COMMANDS.has(type) ? type : 'unknown' });
    },
    observeFanout(seconds) {
      fanout.observe(seconds);
    },
    sentTotal: () => sent,
  };
}

/** prom-client with `counter.labels(type)` children created once per type and looked up in a Map. */
function promClientChildren(): HotPath {
  const registry = new Registry();
  const eventsIn = new Counter({ name: 'presence_events_in_total', help: 'in', labelNames: ['type'] as const, registers: [registry] });
  const eventsOut = new Counter({ name: 'presence_events_out_total', help: 'out', labelNames: ['type'] as const, registers: [registry] });
  const fanout = new Histogram({ name: 'presence_fanout_latency_seconds', help: 'fanout', buckets: [...FANOUT_BUCKETS], registers: [registry] });
  const outChildren = new Map(OUTBOUND.map((type) => [type, eventsOut.labels(type)]));
  const outOther = eventsOut.labels('other');
  const inChildren = new Map([...COMMANDS].map((type) => [type, eventsIn.labels(type)]));
  const inUnknown = eventsIn.labels('unknown');
  let sent = 0;
  return {
    messageSent(type, receivers = 1) {
      if (receivers <= 0) return;
      sent += receivers;
      (outChildren.get(type) ?? outOther).inc(receivers);
    },
    commandReceived(type) {
      (inChildren.get(type as string) ?? inUnknown).inc();
    },
    observeFanout(seconds) {
      fanout.observe(seconds);
    },
    sentTotal: () => sent,
  };
}

/** What the server runs: the real createPresenceMetrics. */
function shipped(): HotPath & { scrapePresence(): Promise<string>; scrapeAll(): Promise<string>; close(): void } {
  const registry = new Registry();
  const metrics = createPresenceMetrics(registry, () => ({ connections: 1000, sessions: 1200, onlineUsers: 900, channels: 40 }));
  const exposition = Registry.merge([processMetrics(), registry]);
  return {
    messageSent: (type, receivers) => metrics.messageSent(type, receivers),
    commandReceived: (type) => metrics.commandReceived(type),
    observeFanout: (seconds) => metrics.observeFanout(seconds),
    sentTotal: () => metrics.eventsOut.total(),
    scrapePresence: () => registry.metrics(),
    scrapeAll: () => exposition.metrics(),
    close: () => metrics.close(),
  };
}

type Call = 'messageSent' | 'commandReceived' | 'observeFanout';
const CALL_NAMES: Call[] = ['messageSent', 'commandReceived', 'observeFanout'];
const MASK = INPUTS - 1;

/** Nanoseconds per call for one pass of CALLS calls. */
function time(impl: HotPath, call: Call): number {
  const start = process.hrtime.bigint();
  if (call === 'messageSent') {
    for (let i = 0; i < CALLS; i++) impl.messageSent(sentTypes[i & MASK], sentReceivers[i & MASK]);
  } else if (call === 'commandReceived') {
    for (let i = 0; i < CALLS; i++) impl.commandReceived(receivedTypes[i & MASK]);
  } else {
    for (let i = 0; i < CALLS; i++) impl.observeFanout(latencies[i & MASK]);
  }
  return Number(process.hrtime.bigint() - start) / CALLS;
}

async function timeScrape(scrape: () => Promise<string>, scrapes: number): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < scrapes; i++) await scrape();
  return Number(process.hrtime.bigint() - start) / scrapes / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number) => Math.round(x * 10) / 10;

const impls = {
  legacy: legacy(),
  promClientPlain: promClientPlain(),
  promClientChildren: promClientChildren(),
  shipped: shipped(),
};
type ImplName = keyof typeof impls;
const IMPL_NAMES = Object.keys(impls) as ImplName[];
const LABELS: Record<ImplName, string> = {
  legacy: 'hand-written registry (before)',
  promClientPlain: 'prom-client, inc({ type }, n)',
  promClientChildren: 'prom-client, cached labels(type) children',
  shipped: 'shipped: plain numbers + collect() (now)',
};

const samples: Record<ImplName, Record<Call, number[]>> = Object.fromEntries(
  IMPL_NAMES.map((name) => [name, { messageSent: [], commandReceived: [], observeFanout: [] }]),
) as never;

// Warm-up: every implementation reaches optimized code before anything is counted.
const warmCalls = CALLS;
for (const name of IMPL_NAMES) for (const call of CALL_NAMES) for (let i = 0; i < warmCalls; i += 1) {
  if (call === 'messageSent') impls[name].messageSent(sentTypes[i & MASK], sentReceivers[i & MASK]);
  else if (call === 'commandReceived') impls[name].commandReceived(receivedTypes[i & MASK]);
  else impls[name].observeFanout(latencies[i & MASK]);
}
for (let r = 0; r < ROUNDS; r++) {
  // Rotate the order so that no implementation always runs first (or last) in a round.
  const order = IMPL_NAMES.map((_, i) => IMPL_NAMES[(i + r) % IMPL_NAMES.length]);
  for (const call of CALL_NAMES) for (const name of order) samples[name][call].push(time(impls[name], call));
}

const totals = IMPL_NAMES.map((name) => impls[name].sentTotal());
if (new Set(totals).size !== 1) throw new Error(`the implementations counted differently: ${totals.join(', ')}`);

const SCRAPES = 200;
const scrapeUs: Record<string, number> = {};
for (const [name, scrape] of [['presence', impls.shipped.scrapePresence], ['withProcessMetrics', impls.shipped.scrapeAll]] as const) {
  await timeScrape(scrape, 20);
  scrapeUs[name] = round(await timeScrape(scrape, SCRAPES));
}
impls.shipped.close();

const nsPerCall = Object.fromEntries(
  IMPL_NAMES.map((name) => [name, Object.fromEntries(CALL_NAMES.map((call) => [call, round(median(samples[name][call]))]))]),
) as Record<ImplName, Record<Call, number>>;
const result = {
  callsPerRound: CALLS,
  rounds: ROUNDS,
  node: process.version,
  nsPerCall,
  /** Shipped time over the hand-written registry's, per call (below 1: faster). */
  ratioShippedToLegacy: Object.fromEntries(CALL_NAMES.map((call) => [call, Math.round((nsPerCall.shipped[call] / nsPerCall.legacy[call]) * 100) / 100])),
  /** One render of the shipped metrics: the presence_* ones alone, and with process_* and nodejs_* (what /metrics serves). */
  scrapeMicroseconds: scrapeUs,
  samples: Object.fromEntries(IMPL_NAMES.map((name) => [name, Object.fromEntries(CALL_NAMES.map((call) => [call, samples[name][call].map(round)]))])),
};

console.log(`metrics hot path: ${CALLS} calls × ${ROUNDS} rounds (median ns per call)`);
console.log(`| implementation | ${CALL_NAMES.join(' | ')} |`);
console.log(`| --- | ${CALL_NAMES.map(() => '---:').join(' | ')} |`);
for (const name of IMPL_NAMES) console.log(`| ${LABELS[name]} | ${CALL_NAMES.map((call) => nsPerCall[name][call]).join(' | ')} |`);
console.log(`| shipped / before | ${CALL_NAMES.map((call) => result.ratioShippedToLegacy[call]).join(' | ')} |`);
console.log(`one scrape: ${scrapeUs.presence} µs for the presence_* metrics, ${scrapeUs.withProcessMetrics} µs with process_* and nodejs_* (what /metrics serves)`);
writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${values.out}`);
