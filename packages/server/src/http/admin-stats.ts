/**
 * What the operations dashboard shows, as served by `GET /realtime/admin/stats`. The shape is the
 * `AdminStats` schema of `@presence/protocol/schema` (documented in the OpenAPI document); the
 * dashboard page type-checks against the same type.
 */
import type { AdminNodeRow, AdminStats, AdminWebhookTarget } from '@presence/protocol';

export type { AdminNodeRow, AdminStats, AdminWebhookTarget };

/** What the stats are read from; the engine, the metrics and the cluster link provide these. */
export interface AdminStatsSources {
  engine: {
    stats(): { connections: number; sessions: number; onlineUsers: number; channels: number };
    adminView(limit: number): {
      topChannels: { channel: string; members: number }[];
      nodes: Map<string | null, { sessions: number; connections: number; users: number }>;
    };
  };
  /** `errors` by code (the `presence_errors_total` counts); without it `totals.errors` is empty. */
  metrics: { eventsIn: { total(): number }; eventsOut: { total(): number }; errors?: { counts(): Record<string, number> } };
  /** This node's process and sockets; without it every figure of `process` is 0 and the lag `null`. */
  process?: {
    memory(): { rss: number; heapUsed: number; heapTotal: number };
    outbound(): { totalBytes: number; maxBytes: number };
    eventLoopLag(): AdminStats['process']['eventLoopLag'];
  };
  /**
   * `nodeId` and `nodes()` are incarnations (`<id>@<incarnation>`); `nameOf` gives the id shown.
   * A node holds only what its clients see, so the rows and the online count come from the shared
   * state: each node's counts as of its last lease renewal, and the union of the nodes' online lists.
   */
  cluster?: {
    readonly nodeId: string;
    nodes(): string[];
    isReady(): boolean;
    nameOf(node: string): string;
    readNodeStats(): Promise<Map<string, { sessions: number; connections: number; users: number; channels?: number; top?: [string, number][] }>>;
    readOnline(): Promise<string[]>;
  };
  /** Set when webhooks are configured: one row per URL. */
  webhooks?: { stats(): AdminWebhookTarget[] };
  now?: () => number;
  /** Channels listed in `topChannels`. @default 10 */
  topChannels?: number;
  /** How far back rates reach. @default 10000 */
  rateWindowMs?: number;
}

interface Sample {
  at: number;
  eventsIn: number;
  eventsOut: number;
}

/**
 * Returns a function computing the stats. Rates come from the event counters sampled at each call
 * rather than on a timer: a node nobody watches does no work for the dashboard.
 */
export function createAdminStats(sources: AdminStatsSources): () => Promise<AdminStats> {
  const now = sources.now ?? Date.now;
  const limit = sources.topChannels ?? 10;
  const windowMs = sources.rateWindowMs ?? 10_000;
  const samples: Sample[] = [];

  return async () => {
    const at = now();
    const current: Sample = { at, eventsIn: sources.metrics.eventsIn.total(), eventsOut: sources.metrics.eventsOut.total() };
    // Keep the newest sample that is at least a window old, and everything after it.
    while (samples.length > 1 && samples[1].at <= at - windowMs) samples.shift();
    const base = samples[0];
    const elapsedMs = base ? at - base.at : 0;
    const rates =
      base && elapsedMs > 0
        ? {
            windowSeconds: round(elapsedMs / 1000),
            eventsInPerSecond: round(((current.eventsIn - base.eventsIn) * 1000) / elapsedMs),
            eventsOutPerSecond: round(((current.eventsOut - base.eventsOut) * 1000) / elapsedMs),
          }
        : null;
    // A quarter second between kept samples bounds the list however many dashboards poll.
    if (!base || at - samples[samples.length - 1].at >= 250) samples.push(current);

    const stats = sources.engine.stats();
    const view = sources.engine.adminView(limit);
    let cluster: AdminStats['cluster'] = null;
    let onlineUsers = stats.onlineUsers;
    let channels = stats.channels;
    let topChannels = view.topChannels;
    const link = sources.cluster;
    if (link) {
      const live = new Set(link.nodes());
      let stored = new Map<string, { sessions: number; connections: number; users: number; channels?: number; top?: [string, number][] }>();
      try {
        const [rows, online] = await Promise.all([link.readNodeStats(), link.readOnline()]);
        stored = rows;
        onlineUsers = online.length;
        // Channels and their members summed over the nodes' lists: a user with sessions on two
        // nodes counts twice in one channel, and beyond 1,000 channels on one node the count of
        // channels is a lower bound.
        const members = new Map<string, number>();
        for (const row of rows.values()) for (const [name, count] of row.top ?? []) members.set(name, (members.get(name) ?? 0) + count);
        channels = Math.max(members.size, ...[...rows.values()].map((row) => row.channels ?? 0));
        topChannels = [...members].map(([channel, count]) => ({ channel, members: count })).sort((a, b) => b.members - a.members || (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0)).slice(0, limit);
      } catch {
        // Redis is out of reach: this node's own row and what it can see itself, and `ready: false`.
        stored.set(link.nodeId, view.nodes.get(null) ?? { sessions: 0, connections: 0, users: 0 });
      }
      const ids = new Set<string>([link.nodeId, ...live, ...stored.keys()]);
      const rows = [...ids].map((nodeId): AdminNodeRow => {
        const self = nodeId === link.nodeId;
        const { sessions, connections, users } = stored.get(nodeId) ?? { sessions: 0, connections: 0, users: 0 };
        return { nodeId: link.nameOf(nodeId), self, lease: live.has(nodeId) || (self && link.isReady()) ? 'live' : 'expired', sessions, connections, users };
      });
      rows.sort((a, b) => Number(b.self) - Number(a.self) || (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
      cluster = { ready: link.isReady(), nodes: rows };
    }

    const proc = sources.process;
    const memory = proc?.memory() ?? { rss: 0, heapUsed: 0, heapTotal: 0 };
    const outbound = proc?.outbound() ?? { totalBytes: 0, maxBytes: 0 };

    return {
      time: new Date(at).toISOString(),
      nodeId: link ? link.nameOf(link.nodeId) : null,
      connections: stats.connections,
      sessions: stats.sessions,
      onlineUsers,
      channels,
      topChannels,
      rates,
      totals: { eventsIn: current.eventsIn, eventsOut: current.eventsOut, errors: sources.metrics.errors?.counts() ?? {} },
      process: {
        residentMemoryBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        heapTotalBytes: memory.heapTotal,
        outboundBufferBytes: outbound.totalBytes,
        outboundBufferMaxBytes: outbound.maxBytes,
        eventLoopLag: proc?.eventLoopLag() ?? null,
      },
      cluster,
      webhooks: sources.webhooks ? { targets: sources.webhooks.stats() } : null,
    };
  };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
