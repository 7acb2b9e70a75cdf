/*
 * The sizing model of docs/scaling.md ("Sizing"): nodes, Redis masters and memory for the chat,
 * documents and webinar workloads at 100k, 1M and 10M users, from the measured constants below.
 * Prints the table the docs show; change a constant (measured on your hardware) and run it again:
 *   node --import tsx bench/scaling/sizing.ts [constants.json]
 * A JSON file may override any constant by name.
 */
import { readFileSync } from 'node:fs';

/** Measured constants (µs, bytes); see docs/scaling.md for where each comes from. */
const DEFAULTS = {
  /** Node CPU per delivered event. */
  d: 28,
  /** Node CPU per update besides its deliveries. */
  u: 119,
  /** Node CPU to apply an update of a followed user from another node. */
  r: 120,
  /** Redis CPU per update. */
  R: 60,
  /** Node memory per local user. */
  m: 16 * 1024,
  /** Node memory per followed remote user. */
  f: 3.3 * 1024,
  /** Redis memory per online user, by workload. */
  Mchat: 2347,
  Mdocs: 1648,
  Mroom: 1477,
  /** Share of a core a node or a Redis master may use. */
  ceiling: 0.8,
  /** Memory one Redis master should hold at most. */
  masterMemory: 8 * 1024 ** 3,
  /** Connections one node holds at most (its open-files limit). */
  connectionsPerNode: 100_000,
};

type Constants = typeof DEFAULTS;

export interface Row {
  workload: string;
  users: number;
  nodes: number | null;
  memoryPerNode: number | null;
  masters: number | null;
  redisMemory: number;
  limit: string;
}

export function sizing(c: Constants = DEFAULTS): Row[] {
  const rows: Row[] = [];
  const us = (x: number) => x / 1e6;
  const masters = (updatesPerSecond: number, users: number, M: number) =>
    Math.max(1, Math.ceil((updatesPerSecond * us(c.R)) / c.ceiling), Math.ceil((users * M) / c.masterMemory));
  for (const users of [100_000, 1_000_000, 10_000_000]) {
    // Chat: 20 channels of 10, one status change per user per minute: 180 deliveries each.
    const chatRate = users / 60;
    const chatCpu = chatRate * us(c.u + 180 * c.d);
    const grouped = Math.max(Math.ceil(chatCpu / c.ceiling), Math.ceil(users / c.connectionsPerNode));
    rows.push({
      workload: 'chat, users grouped by workspace',
      users,
      nodes: grouped,
      memoryPerNode: (users / grouped) * c.m,
      masters: masters(chatRate, users, c.Mchat),
      redisMemory: users * c.Mchat,
      limit: 'node CPU for deliveries',
    });
    // At random, every node follows (nearly) every user and applies each change: r per change per node.
    const perNodeApply = chatRate * us(c.r);
    const spare = c.ceiling - perNodeApply;
    const random = spare > 0 ? Math.ceil(chatCpu / spare) : null;
    rows.push({
      workload: 'chat, users placed at random',
      users,
      nodes: random,
      memoryPerNode: random === null ? null : (users / random) * c.m + users * c.f,
      masters: random === null ? null : masters(chatRate, users, c.Mchat),
      redisMemory: users * c.Mchat,
      limit: random === null ? `each node would apply every change: ${Math.round(chatRate).toLocaleString('en-US')}/s × r = ${perNodeApply.toFixed(1)} cores` : 'applying followed users\' changes on every node',
    });
    // Documents: 2 channels of 5, one channel-meta change every 2 s: 4 deliveries each.
    const docsRate = users / 2;
    const docsNodes = Math.max(Math.ceil((docsRate * us(c.u + 4 * c.d)) / c.ceiling), Math.ceil(users / c.connectionsPerNode));
    rows.push({
      workload: "documents, a document's editors on one node",
      users,
      nodes: docsNodes,
      memoryPerNode: (users / docsNodes) * c.m,
      masters: masters(docsRate, users, c.Mdocs),
      redisMemory: users * c.Mdocs,
      limit: 'node CPU per change; then Redis, one durable write per change',
    });
    // Webinar: rooms of 10,000 in occupancy mode: 4 count frames a second per member; one change per
    // user per 10 minutes. Routed by room id, a room's members share a node (10,000 connections fit
    // one), so a change is applied where it happens; at random, every node follows every room and
    // applies every change.
    const roomChanges = users / 600;
    const webinarCpu = users * 4 * us(c.d) + roomChanges * us(c.u);
    const byRoom = Math.max(Math.ceil(webinarCpu / c.ceiling), Math.ceil(users / c.connectionsPerNode));
    rows.push({
      workload: 'webinar, rooms of 10,000 routed by room',
      users,
      nodes: byRoom,
      memoryPerNode: (users / byRoom) * c.m,
      masters: masters(roomChanges, users, c.Mroom),
      redisMemory: users * c.Mroom,
      limit: 'socket writes of count frames',
    });
    const roomApply = roomChanges * us(c.r);
    const roomSpare = c.ceiling - roomApply;
    const roomRandom = roomSpare > 0 ? Math.max(Math.ceil(webinarCpu / roomSpare), Math.ceil(users / c.connectionsPerNode)) : null;
    rows.push({
      workload: 'webinar, members placed at random',
      users,
      nodes: roomRandom,
      memoryPerNode: roomRandom === null ? null : (users / roomRandom) * c.m,
      masters: roomRandom === null ? null : masters(roomChanges, users, c.Mroom),
      redisMemory: users * c.Mroom,
      limit:
        roomRandom === null
          ? `each node would apply every room's changes: ${Math.round(roomChanges).toLocaleString('en-US')}/s × r = ${roomApply.toFixed(1)} cores`
          : roomApply > 0.1
            ? `socket writes; every node applies every room's changes (${Math.round((roomApply / c.ceiling) * 100)} % of its budget)`
            : 'socket writes of count frames',
    });
  }
  return rows;
}

function bytes(n: number | null): string {
  if (n === null) return '—';
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GB`;
  return `${Math.round(n / 1024 ** 2)} MB`;
}

function usersLabel(n: number): string {
  return n >= 1_000_000 ? `${n / 1_000_000}M` : `${n / 1000}k`;
}

export function sizingTable(rows: Row[]): string {
  const lines = ['| workload | users | nodes | memory per node | Redis masters | Redis memory | limit hit first |', '| --- | --- | --- | --- | --- | --- | --- |'];
  const order = [...new Set(rows.map((r) => r.workload))];
  for (const workload of order) {
    for (const r of rows.filter((row) => row.workload === workload)) {
      lines.push(
        `| ${r.workload} | ${usersLabel(r.users)} | ${r.nodes === null ? 'does not fit' : r.nodes.toLocaleString('en-US')} | ${bytes(r.memoryPerNode)} | ${r.masters === null ? '—' : r.masters} | ${bytes(r.redisMemory)} | ${r.limit} |`,
      );
    }
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const overrides = process.argv[2] ? (JSON.parse(readFileSync(process.argv[2], 'utf8')) as Partial<Constants>) : {};
  console.log(sizingTable(sizing({ ...DEFAULTS, ...overrides })));
}
