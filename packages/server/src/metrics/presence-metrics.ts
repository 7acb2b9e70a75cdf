/**
 * The server's metric set, on prom-client: gauges read from the model's stats at scrape time,
 * counters fed by the transport and the model, and the node's own health figures (memory,
 * event-loop lag). The standard `process_*` and `nodejs_*` metrics are added beside these by the
 * server (see `processMetrics`).
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { CLIENT_MESSAGE_TYPES, ERROR_CODES, type ErrorCode } from '@presence/protocol';
import { Counter, type Gauge, type Histogram, type Registry } from 'prom-client';
import type { PresenceStats } from '../presence/service.js';
import { LabelCounts, PlainHistogram, oncePerScrape, scrapedGauge } from './prometheus.js';

/** 0.1 ms … 1 s: fan-out is in-process queueing, so most samples should sit in the low buckets. */
export const FANOUT_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

const REFUSAL_REASONS: ReadonlySet<string> = new Set(['event_loop_lag', 'outbound_buffer']);
const OUTBOUND_TYPES: readonly string[] = [
  'welcome',
  'presence.sync',
  'presence.join',
  'presence.leave',
  'presence.update',
  'typing',
  'user.sync',
  'user.update',
  'ack',
  'error',
  'pong',
  'session.token',
  // Every message of the Pusher endpoint (docs/pusher.md), whatever its event.
  'pusher',
];

/**
 * Standard close codes (1000–1015) and the server's own 4xxx codes. A client may close with any
 * code in 3000–4999, so everything else is folded into `other` to keep the series bounded.
 */
/** The server's own codes: protocol v1's, then the Pusher endpoint's (docs/pusher.md#codes). */
const SERVER_CLOSE_CODES: ReadonlySet<number> = new Set([4000, 4001, 4002, 4003, 4008, 4009, 4029, 4007, 4100, 4101, 4200, 4201]);

function closeCodeLabel(code: number): string {
  if (Number.isInteger(code) && ((code >= 1000 && code <= 1015) || SERVER_CLOSE_CODES.has(code))) {
    return String(code);
  }
  return 'other';
}

export interface PresenceMetrics {
  registry: Registry;
  connections: Gauge;
  sessions: Gauge;
  onlineUsers: Gauge;
  channels: Gauge;
  /** Inbound commands by type; unknown types are counted as `unknown`. */
  eventsIn: LabelCounts;
  /** Outbound messages by type, one per receiving connection; other types as `other`. */
  eventsOut: LabelCounts;
  /** Errors answered on WebSockets by code; an unknown code is counted as `INTERNAL`. */
  errors: LabelCounts;
  connectionsOpened: Counter;
  connectionsClosed: Counter<'code'>;
  /** Upgrades refused with OVERLOADED, by reason (`event_loop_lag`, `outbound_buffer`). */
  connectionsRefused: Counter<'reason'>;
  /**
   * Seconds from receiving a command until all resulting frames were queued to every receiver.
   * Rendering only: observe through `observeFanout`, whose counts replace this one's at each scrape.
   */
  fanoutLatency: Histogram;
  /** HTTP responses by route template (never the raw path) and status. */
  httpRequests: Counter<'route' | 'status'>;
  /** Unload beacons (`POST /realtime/disconnect`) with a valid session token. */
  unloadBeacons: Counter;
  residentMemory: Gauge;
  /** Mean event loop delay since the previous scrape. */
  eventLoopLag: Gauge;
  /** p99 and max event loop delay since the previous scrape. */
  eventLoopLagP99: Gauge;
  eventLoopLagMax: Gauge;

  /** Counts one inbound command; `type` is client-supplied, so it is bounded to protocol types. */
  commandReceived(type: unknown): void;
  /** Counts `receivers` copies of one outbound message type. */
  messageSent(type: string, receivers?: number): void;
  errorSent(code: ErrorCode | string): void;
  connectionOpened(): void;
  connectionClosed(code: number): void;
  connectionRefused(reason: string): void;
  /** Observes a fan-out duration in seconds. */
  observeFanout(seconds: number): void;
  /** Stops the event loop monitor; safe to call more than once. */
  close(): void;
}

export interface PresenceMetricsOptions {
  /** Sampling resolution of the event loop monitor. @default 20 */
  eventLoopResolutionMs?: number;
  /** In a cluster: nodes with a live lease and whether the shared state is reachable. */
  cluster?: () => { nodes: number; ready: boolean };
  /** Unsent bytes of the node's sockets, and whether new connections are being refused for load. */
  load?: () => { outbound: { totalBytes: number; maxBytes: number }; overloaded: boolean };
}

/** Registers the presence metrics in `registry` (a prom-client registry). */
export function createPresenceMetrics(
  registry: Registry,
  stats: () => PresenceStats,
  options: PresenceMetricsOptions = {},
): PresenceMetrics {
  // One stats() call per scrape, shared by the four gauges, so they describe the same instant.
  const snapshot = oncePerScrape(stats);
  const gauge = (name: string, help: string, read: () => number) => scrapedGauge(registry, name, help, read);

  const connections = gauge(
    'presence_connections',
    'Authenticated WebSocket connections on this node (sessions with a live socket).',
    () => snapshot().connections,
  );
  const sessions = gauge(
    'presence_sessions',
    'Sessions on this node, including those inside their offline delay.',
    () => snapshot().sessions,
  );
  const onlineUsers = gauge(
    'presence_online_users',
    'Users seen as present by others (invisible users are not counted).',
    () => snapshot().onlineUsers,
  );
  const channels = gauge('presence_channels', 'Channels with at least one visible member.', () => snapshot().channels);

  const cluster = options.cluster;
  gauge(
    'presence_cluster_nodes',
    'Nodes with a live lease, as this node last saw the registry (1 without Redis).',
    () => (cluster ? cluster().nodes : 1),
  );
  gauge(
    'presence_cluster_ready',
    '1 while the shared state (Redis) is reachable and this node is registered; always 1 without Redis.',
    () => (!cluster || cluster().ready ? 1 : 0),
  );

  // Read once per scrape, like the stats: the outbound scan visits every connection.
  const load = options.load;
  const loadNow = oncePerScrape(() => load?.());
  gauge(
    'presence_outbound_buffer_bytes',
    'Bytes queued for sending but not yet handed to the kernel, over all connections of this node.',
    () => loadNow()?.outbound.totalBytes ?? 0,
  );
  gauge(
    'presence_outbound_buffer_max_bytes',
    'Bytes queued but unsent on the connection with the most (slow consumers are closed past the per-connection limit).',
    () => loadNow()?.outbound.maxBytes ?? 0,
  );
  gauge(
    'presence_overloaded',
    '1 while new connections are refused with OVERLOADED (event-loop lag or outbound buffers past their limit).',
    () => (loadNow()?.overloaded ? 1 : 0),
  );

  // The two per-message counters: plain numbers on the hot path, rendered at scrape time.
  const eventsIn = new LabelCounts(registry, {
    name: 'presence_events_in_total',
    help: 'Inbound WebSocket commands by type.',
    label: 'type',
    values: [...CLIENT_MESSAGE_TYPES, 'pusher'],
    fallback: 'unknown',
  });
  const eventsOut = new LabelCounts(registry, {
    name: 'presence_events_out_total',
    help: 'Outbound WebSocket messages by type, counted once per receiving connection.',
    label: 'type',
    values: OUTBOUND_TYPES,
    fallback: 'other',
  });
  // Plain numbers too: the admin stats read them synchronously for the dashboard's error rates.
  const errors = new LabelCounts(registry, {
    name: 'presence_errors_total',
    help: 'Errors answered to clients, by error code.',
    label: 'code',
    values: ERROR_CODES,
    fallback: 'INTERNAL',
  });
  const connectionsOpened = new Counter({
    name: 'presence_connections_opened_total',
    help: 'WebSocket connections accepted.',
    registers: [registry],
  });
  const connectionsClosed = new Counter({
    name: 'presence_connections_closed_total',
    help: 'WebSocket connections closed, by close code.',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const connectionsRefused = new Counter({
    name: 'presence_connections_refused_total',
    help: 'WebSocket upgrades refused with OVERLOADED, by reason.',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  // Observed once per command: a plain-array histogram, like the two counters above.
  const fanout = new PlainHistogram(registry, {
    name: 'presence_fanout_latency_seconds',
    help: 'Time from receiving a command until all resulting frames were queued to every receiver.',
    buckets: FANOUT_BUCKETS,
  });
  const fanoutLatency = fanout.histogram;
  const httpRequests = new Counter({
    name: 'presence_http_requests_total',
    help: 'HTTP API responses by route template and status.',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });

  const unloadBeacons = new Counter({
    name: 'presence_unload_beacons_total',
    help: 'Unload beacons (POST /realtime/disconnect) accepted with a valid session token.',
    registers: [registry],
  });

  const residentMemory = gauge(
    'presence_process_resident_memory_bytes',
    'Resident set size of the server process.',
    () => process.memoryUsage.rss(),
  );

  const loop: IntervalHistogram = monitorEventLoopDelay({ resolution: options.eventLoopResolutionMs ?? 20 });
  loop.enable();
  let closed = false;
  // The histogram is reset after each scrape (as prom-client's nodejs_eventloop_lag_* are), so
  // each value describes the interval since the previous scrape instead of an average over the
  // whole uptime. With no sample in the interval (two scrapes within one resolution tick) the
  // previous value stands.
  let lag = { mean: 0, p99: 0, max: 0 };
  const lagNow = oncePerScrape(() => {
    if (!closed) {
      if (loop.count > 0) lag = { mean: loop.mean / 1e9, p99: loop.percentile(99) / 1e9, max: loop.max / 1e9 };
      loop.reset();
    }
    return lag;
  });
  const eventLoopLag = gauge(
    'presence_event_loop_lag_seconds',
    'Mean event loop delay since the previous scrape.',
    () => lagNow().mean,
  );
  const eventLoopLagP99 = gauge(
    'presence_event_loop_lag_p99_seconds',
    '99th percentile of the event loop delay since the previous scrape.',
    () => lagNow().p99,
  );
  const eventLoopLagMax = gauge(
    'presence_event_loop_lag_max_seconds',
    'Maximum event loop delay since the previous scrape.',
    () => lagNow().max,
  );

  return {
    registry,
    connections,
    sessions,
    onlineUsers,
    channels,
    eventsIn,
    eventsOut,
    errors,
    connectionsOpened,
    connectionsClosed,
    connectionsRefused,
    fanoutLatency,
    httpRequests,
    unloadBeacons,
    residentMemory,
    eventLoopLag,
    eventLoopLagP99,
    eventLoopLagMax,
    commandReceived(type) {
      eventsIn.add(type);
    },
    messageSent(type, receivers = 1) {
      eventsOut.add(type, receivers);
    },
    errorSent(code) {
      errors.add(code);
    },
    connectionOpened() {
      connectionsOpened.inc();
    },
    connectionClosed(code) {
      connectionsClosed.inc({ code: closeCodeLabel(code) });
    },
    connectionRefused(reason) {
      connectionsRefused.inc({ reason: REFUSAL_REASONS.has(reason) ? reason : 'other' });
    },
    observeFanout(seconds) {
      fanout.observe(seconds);
    },
    close() {
      if (closed) return;
      closed = true;
      loop.disable();
    },
  };
}
