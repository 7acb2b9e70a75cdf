/**
 * Keeps the benchmark from rotting: runs `bench/run.ts --quick` (every scenario, every system, at
 * tiny scale, with real servers and real sockets) and checks the shape and sanity of its JSON and
 * chart. Latencies and rates are never compared with thresholds here: this machine is shared.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Results } from '../lib/report.js';
import { SCENARIOS } from '../scenarios/context.js';
import type { LargeRoomResult } from '../scenarios/large-room.js';
import type { StepResult } from '../scenarios/steps.js';

const BENCH = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SYSTEMS = ['presence', 'ws', 'socketio'] as const;

let dir: string;
let results: Results;
let chart: string;
let output = '';

function runQuick(out: string): Promise<number | null> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(BENCH, 'run.ts'), '--quick', `--out=${out}`], {
      cwd: resolve(BENCH, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', fail);
    child.once('exit', (code) => done(code));
  });
}

function isOutcome(value: unknown): value is { skipped: string } | { error: string } {
  return typeof value === 'object' && value !== null && ('skipped' in value || 'error' in value);
}

function assertSaneStep(step: StepResult, where: string): void {
  const { latency } = step;
  assert.ok(step.offeredRate > 0, `${where}: offered rate`);
  assert.ok(step.expected > 0, `${where}: deliveries expected`);
  assert.ok(step.delivered <= step.expected, `${where}: ${step.delivered} deliveries counted but only ${step.expected} possible (double counting)`);
  assert.ok(step.delivered >= step.expected * 0.95, `${where}: ${step.delivered} of ${step.expected} deliveries arrived`);
  assert.equal(latency.count, step.delivered, `${where}: one latency per delivery`);
  assert.ok(latency.p50Ms > 0, `${where}: p50 > 0`);
  assert.ok(latency.p50Ms <= latency.p95Ms && latency.p95Ms <= latency.p99Ms && latency.p99Ms <= latency.maxMs, `${where}: percentiles ordered`);
  assert.ok(latency.maxMs < 60_000, `${where}: latencies are milliseconds, not a clock mix-up`);
  assert.ok(step.serverCpu >= 0 && step.loadgenCpu >= 0, `${where}: CPU figures`);
  assert.equal(step.unexpectedCloses, 0, `${where}: no connection dropped`);
  assert.equal(step.errorFrames, 0, `${where}: no error frames`);
}

describe('npm run bench -- --quick', { timeout: 240_000 }, () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'presence-bench-'));
    const out = join(dir, 'quick.json');
    const code = await runQuick(out);
    assert.equal(code, 0, `bench exited with ${code}:\n${output}`);
    results = JSON.parse(readFileSync(out, 'utf8')) as Results;
    chart = readFileSync(join(dir, 'quick.svg'), 'utf8');
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reports every scenario for every system, each with figures or a reason it was skipped', () => {
    assert.equal(results.mode, 'quick');
    // Scale-out and large rooms are not per system (their own tests below).
    for (const scenario of SCENARIOS.filter((s) => s !== 'scaleout' && s !== 'largeroom')) {
      for (const system of SYSTEMS) {
        const outcome = (results.scenarios[scenario] as Record<string, unknown>)[system];
        assert.ok(outcome !== undefined, `${scenario}/${system} missing`);
        assert.ok(!(isOutcome(outcome) && 'error' in outcome), `${scenario}/${system} failed: ${isOutcome(outcome) && 'error' in outcome ? outcome.error : ''}`);
      }
    }
    // Only multi-node may be skipped, and only where a node cannot run with Redis (yet).
    for (const scenario of SCENARIOS.filter((s) => s !== 'multinode' && s !== 'scaleout' && s !== 'largeroom')) {
      for (const system of SYSTEMS) {
        assert.ok(!isOutcome((results.scenarios[scenario] as Record<string, unknown>)[system]), `${scenario}/${system} was skipped`);
      }
    }
    assert.ok(!isOutcome(results.scenarios.multinode.socketio), 'Socket.IO runs on two nodes');
    assert.ok(isOutcome(results.scenarios.multinode.ws), 'the bare ws server has no multi-node mode');
  });

  it('measures the Pusher endpoint on connections and fan-out (one node and two), and says why it skips the rest', () => {
    const connections = results.scenarios.connections.pusher;
    assert.ok(connections && !isOutcome(connections), 'connections/pusher measured');
    assert.equal(connections.connected, connections.users, 'every pusher-js-like client subscribed');
    const fanout = results.scenarios.fanout.pusher;
    assert.ok(fanout && !isOutcome(fanout), 'fanout/pusher measured');
    fanout.steps.forEach((step, i) => assertSaneStep(step, `fanout/pusher step ${i}`));
    const multinode = results.scenarios.multinode.pusher;
    assert.ok(multinode && !isOutcome(multinode), 'multinode/pusher measured: client events relayed between two nodes');
    multinode.steps.forEach((step, i) => assertSaneStep(step, `multinode/pusher step ${i}`));
    for (const scenario of ['joinstorm', 'typing', 'churn', 'reconnect'] as const) {
      const outcome = (results.scenarios[scenario] as Record<string, unknown>).pusher;
      assert.ok(isOutcome(outcome) && 'skipped' in outcome, `${scenario}/pusher is skipped with a reason`);
    }
  });

  it('measures idle connections', () => {
    for (const system of SYSTEMS) {
      const r = results.scenarios.connections[system];
      assert.ok(r && !isOutcome(r));
      assert.equal(r.connected, r.users, `${system}: every user connected`);
      assert.ok(r.connectsPerSec > 0 && Number.isFinite(r.rssPerConnection) && r.heapPerConnection > 0, `${system}: memory and rate figures`);
    }
  });

  it('runs open-loop rate steps with every delivery accounted for', () => {
    for (const scenario of ['fanout', 'typing', 'churn', 'multinode'] as const) {
      for (const system of SYSTEMS) {
        const r = (results.scenarios[scenario] as Record<string, unknown>)[system] as { steps: StepResult[]; maxSustainedRate: number } | { skipped: string };
        if ('skipped' in r) continue;
        assert.ok(r.steps.length >= 1, `${scenario}/${system}: steps`);
        r.steps.forEach((step, i) => assertSaneStep(step, `${scenario}/${system} step ${i}`));
        assert.ok(r.maxSustainedRate >= 0);
      }
    }
    for (const system of SYSTEMS) {
      const churn = results.scenarios.churn[system];
      assert.ok(churn && !isOutcome(churn));
      assert.equal(churn.fill.connected, churn.fill.members, `${system}: the large channel filled`);
      assert.ok(churn.steps.every((s) => (s.joinSnapshot?.count ?? 0) > 0), `${system}: rejoining churners got the member list`);
    }
  });

  it('joins every user in a join storm', () => {
    for (const system of SYSTEMS) {
      const r = results.scenarios.joinstorm[system];
      assert.ok(r && !isOutcome(r));
      assert.equal(r.joined, r.users, `${system}: all joined`);
      assert.ok(r.seconds > 0 && r.serverCpuSeconds >= 0 && r.peakRss > 0);
    }
  });

  it('brings every user back after a reconnect storm; Presence resumes sessions without join/leave events', () => {
    for (const system of SYSTEMS) {
      const r = results.scenarios.reconnect[system];
      assert.ok(r && !isOutcome(r));
      assert.ok(r.dropped > 0);
      assert.equal(r.back, r.dropped, `${system}: all back`);
    }
    const presence = results.scenarios.reconnect.presence;
    assert.ok(presence && !isOutcome(presence));
    assert.equal(presence.resumed, presence.dropped, 'every session resumed with its sessionId');
    assert.equal(presence.eventsAtObservers, 0, 'observers saw no join/leave');
    assert.equal(presence.eventsAtReconnected, 0, 'reconnected users saw no join/leave');
    // The baselines have no offline delay: their observers see every drop and return.
    const ws = results.scenarios.reconnect.ws;
    assert.ok(ws && !isOutcome(ws));
    assert.equal(ws.leavesAtObservers, ws.dropped);
  });

  it('measures Presence scaling out: the idle-node tax and every node count, local and cross-node', () => {
    const r = results.scenarios.scaleout;
    assert.ok(r && !isOutcome(r), `scaleout: ${JSON.stringify(r)?.slice(0, 2000)}`);
    assert.deepEqual(r.failures, []);
    const idle = r.idle;
    assert.ok(idle && !isOutcome(idle), `idle-node tax: ${JSON.stringify(idle)?.slice(0, 2000)}`);
    assert.equal(idle.connected + idle.httpUsers, idle.users, 'every user on node A connected (over WebSockets and over HTTP heartbeats)');
    assert.equal(idle.httpFailures, 0, 'no heartbeat failed');
    assert.deepEqual(idle.memory.map((m) => m.users), [idle.users, 0], 'the users are on node A, none on node B');
    assert.equal(idle.window.span.deliveriesByNode[1], 0, 'nothing delivered on node B');
    assert.ok(idle.window.delivered >= idle.window.expected * 0.95 && idle.window.delivered <= idle.window.expected, 'idle-node tax: deliveries accounted for');
    assert.ok(idle.window.nodeCpu[0] > 0 && idle.idleCpuShare >= 0 && Number.isFinite(idle.idleHeapPerUser) && Number.isFinite(idle.idleRssPerUser));
    const o = results.options.scaleout;
    assert.deepEqual(
      r.summary.map((s) => `${s.variant} ${s.nodes}`),
      [...o.nodes.map((n) => `local ${n}`), ...o.nodes.filter((n) => n > 1).map((n) => `cross ${n}`)],
      'a summary per node count and variant (cross needs two nodes)',
    );
    for (const run of r.runs) {
      const where = `${run.variant} ${run.nodes} run ${run.run}`;
      const w = run.window;
      assert.equal(run.connected, run.users, `${where}: every user connected`);
      assert.deepEqual(run.memory.map((m) => m.users), run.memory.map(() => run.users / run.nodes), `${where}: the same users on every node`);
      assert.ok(w.delivered >= w.expected * 0.95 && w.delivered <= w.expected, `${where}: ${w.delivered} of ${w.expected} deliveries`);
      assert.ok(w.span.deliveries >= w.delivered && w.span.deliveries <= w.span.updates * (results.options.scaleout.channelSize - 1), `${where}: deliveries over the span`);
      assert.equal(w.span.deliveriesByNode.reduce((a, b) => a + b, 0), w.span.deliveries, `${where}: deliveries by node add up`);
      assert.ok(w.span.deliveriesByNode.every((d) => d > 0), `${where}: every node delivered`);
      assert.equal(w.latency.count, w.delivered, `${where}: one latency per delivery`);
      assert.equal(w.nodeCpu.length, run.nodes);
      assert.ok(run.cpuPerDeliveryUs > 0 && run.nodeCpuPerDeliveryUs.every((v) => v > 0), `${where}: CPU per delivery`);
      assert.ok(run.memory.every((m) => m.heapAfter > 0 && m.rssAfter > 0 && m.heapPerUser !== null), `${where}: heap after GC on every node`);
      assert.ok(w.redis.publishedPerUpdate > 0 && w.redis.commandsPerSec > 0, `${where}: Redis counters read`);
      assert.ok(Object.keys(w.redis.subscribers).length > 0, `${where}: pub/sub channels read`);
      assert.ok(Number.isFinite(w.redis.memoryPerUser), `${where}: Redis memory per user`);
    }
    const one = r.summary.find((s) => s.variant === 'local' && s.nodes === 1);
    assert.equal(one?.cpuPerDeliveryVsOneNode, 1);
    assert.ok(r.goals.flatness.value !== null && r.goals.idleCpuShare.value !== null);
  });

  it('measures Presence on a Redis Cluster of 3 masters: each master, their total, one redis-server beside', () => {
    const r = results.scenarios.scaleout;
    assert.ok(r && !isOutcome(r));
    const o = results.options.scaleout;
    assert.ok(o.redisCluster.length > 0, 'quick mode runs the Redis Cluster variant');
    assert.deepEqual(r.redisCluster.failures, []);
    assert.deepEqual(r.redisCluster.summary.map((s) => s.nodes), o.redisCluster);
    for (const run of r.redisCluster.runs) {
      const where = `Redis Cluster ${run.nodes} run ${run.run}`;
      const w = run.window;
      assert.equal(run.backend, 'redis-cluster');
      assert.equal(run.connected, run.users, `${where}: every user connected`);
      assert.ok(w.delivered >= w.expected * 0.95 && w.delivered <= w.expected, `${where}: ${w.delivered} of ${w.expected} deliveries`);
      assert.equal(w.masters?.length, 3, `${where}: three masters measured`);
      assert.deepEqual(w.masters.map((m) => m.slots), ['0-5460', '5461-10922', '10923-16383'], `${where}: the masters in slot order`);
      // Sharded pub/sub on a cluster: SPUBLISH only, one message per update spread over the masters.
      assert.ok(w.masters.every((m) => m.commandsPerSec > 0 && m.commandsPerUpdate > 0), `${where}: every master served commands`);
      assert.ok(w.masters.some((m) => (m.callsPerUpdate.spublish ?? 0) > 0) && w.redis.callsPerUpdate.publish === undefined, `${where}: sharded publishes`);
      assert.ok(Math.abs(w.masters.reduce((a, m) => a + m.publishedPerUpdate, 0) - w.redis.publishedPerUpdate) < 0.01, `${where}: the total is the masters' sum`);
      assert.ok(w.redis.publishedPerUpdate > 0 && Object.keys(w.redis.subscribers).length > 0, `${where}: counters and shard channels read`);
      assert.ok(run.cpuPerDeliveryUs > 0);
    }
    for (const s of r.redisCluster.summary) {
      assert.equal(s.masters.length, 3);
      assert.ok(s.total.commandsPerSec > 0 && s.total.publishedPerUpdate > 0 && Number.isFinite(s.total.memoryPerUser));
      if (o.nodes.includes(s.nodes)) assert.ok(s.oneRedis && s.oneRedis.commandsPerSec > 0, `one redis-server's figures beside ${s.nodes} nodes`);
    }
  });

  it('measures large rooms: the busy room in each variant, the huge room with occupancy and without', () => {
    const r = results.scenarios.largeroom;
    assert.ok(r && !isOutcome(r), `largeroom: ${JSON.stringify(r)?.slice(0, 2000)}`);
    for (const variant of ['windowed', 'perEvent', 'ws', 'socketio'] as const) {
      const busy: LargeRoomResult['busy'][typeof variant] = r.busy[variant];
      assert.ok(busy && !isOutcome(busy), `busy ${variant}: ${JSON.stringify(busy)?.slice(0, 500)}`);
      assert.equal(busy.connected, busy.members, `busy ${variant}: every member connected`);
      assertSaneStep(busy.step, `busy ${variant}`);
      assert.ok(busy.framesPerMemberPerSec > 0 && busy.bytesPerMemberPerSec > 0, `busy ${variant}: frames and bytes counted`);
    }
    const windowed = r.busy.windowed;
    const perEvent = r.busy.perEvent;
    assert.ok(windowed && !isOutcome(windowed) && perEvent && !isOutcome(perEvent));
    assert.ok(windowed.framesPerMemberPerSec < perEvent.framesPerMemberPerSec, 'windows send fewer frames than one per change');
    const occupancy = r.huge.occupancy;
    assert.ok(occupancy && !isOutcome(occupancy), `huge occupancy: ${JSON.stringify(occupancy)?.slice(0, 500)}`);
    assert.equal(occupancy.countsRight, occupancy.members, 'every member ends with the right count');
    assert.ok(occupancy.finished && occupancy.lastRightMs !== null && occupancy.bytesPerMemberMax > 0 && occupancy.peakRss > 0);
    assert.ok(r.huge.perEvent.length >= 1);
    // The cluster room, small: listeners over two server processes through one redis-server.
    const cluster = r.cluster;
    assert.ok(cluster && !isOutcome(cluster), `cluster room: ${JSON.stringify(cluster)?.slice(0, 500)}`);
    assert.equal(cluster.connected, cluster.listeners, 'cluster room: every listener connected');
    assert.equal(cluster.nodes, 2);
    assert.deepEqual(cluster.listenersPerNode, [cluster.listeners / 2, cluster.listeners / 2]);
    assert.ok(cluster.fill.countsRightAfterMs !== null, 'cluster room: every count right after the fill');
    assert.equal(cluster.changes.length, results.options.largeroom.clusterChanges);
    assert.ok(cluster.changes.every((c) => c.right > 0) && cluster.p99Ms !== null, 'cluster room: changes reached listeners');
    assert.ok(cluster.serverRss.every((rss) => rss > 0) && cluster.idleCpu.length === 2);
    assert.ok(r.goals.length >= 7 && r.goals.every((g) => g.name && g.goal && g.value));
  });

  it('judges the targets and draws a chart with one line per system', () => {
    assert.equal(results.targets.length, 5);
    for (const target of results.targets) assert.ok(target.name && target.target && target.value !== undefined);
    assert.ok(results.machine.cpus);
    assert.match(chart, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(chart, /<\/svg>$/);
    for (const label of ['Presence', 'bare ws', 'Socket.IO']) assert.ok(chart.includes(label), `legend names ${label}`);
    // Fan-out panel: a p99 path per system.
    assert.ok((chart.match(/stroke-width="2.5"/g) ?? []).length >= 3, 'p99 lines drawn');
  });
});
