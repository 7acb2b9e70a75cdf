import { PresenceError } from './errors.js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { DEFAULT_WEBHOOK_SETTINGS, type ServerConfig } from './config/config.js';
import { isDevMode } from './config/config.js';
import { configWarnings } from './config/env.js';
import { createTokenVerifier } from './auth/tokens.js';
import { createAdminStats } from './http/admin-stats.js';
import { ROUTES, createHttpApi } from './http/api.js';
import { PUSHER_API_PREFIX, createPusherApi } from './http/pusher-api.js';
import { listenMetrics, type MetricsServer } from './http/metrics-server.js';
import { createStaticFiles } from './http/static-files.js';
import type { Logger } from './log.js';
import { EventLoopWindow, createPresenceMetrics, createWebhookMetrics, processMetrics, type PresenceMetrics } from './metrics/index.js';
import { offsetClock, systemClock, type Clock } from './presence/clock.js';
import { ClusterLink } from './cluster/cluster-link.js';
import { decodeRecord } from './cluster/user-records.js';
import { publicView } from './presence/user-presence.js';
import { RedisService } from './cluster/redis-service.js';
import { hasPusherChannels, type SharedService } from './cluster/shared-service.js';
import { PusherRelay } from './cluster/pusher-relay.js';
import { PresenceNode } from './presence-node.js';
import { FileUserStore } from './store/file-user-store.js';
import { MemoryUserStore, type UserStore } from './store/user-store.js';
import { connectionCeiling, readOpenFileLimit, reservedFiles } from './transport/open-files.js';
import { WebSocketTransport } from './transport/websocket.js';
import { Webhooks, type WebhooksOptions } from './webhooks/webhooks.js';
import { pusherFormat, pusherProtocolHooks } from './webhooks/pusher-format.js';

export interface ServerOptions {
  log: Logger;
  /** The model's clock; tests may inject a manual one. @default systemClock */
  clock?: Clock;
  /**
   * Where user records live (single node). @default a FileUserStore in `config.dataDir` when it is
   * set, else a MemoryUserStore
   */
  store?: UserStore;
  /**
   * The shared service of a cluster. @default a RedisService when `config.redisUrl` or
   * `config.redisClusterNodes` is set,
   * else none (a single node with the memory store)
   */
  sharedService?: SharedService;
  /**
   * A directory of built web pages (the demo and the dashboard) served at `/` on the same port;
   * API paths always go to the API. @default none: only the API and the WebSocket endpoint
   */
  publicDir?: string;
  /**
   * The process's open-files limit; `maxConnections` is capped below it (transport/open-files.ts).
   * @default read from the operating system (Linux), else no cap
   */
  openFileLimit?: number;
  /**
   * Tests only: replaces parts of the webhook delivery (a shorter backoff, more or less
   * concurrency). The URLs, secrets and settings come from `config.webhooks`.
   */
  webhooks?: Pick<WebhooksOptions, 'retry' | 'concurrency' | 'random' | 'sender'>;
  /** Tests only: how often a cluster's delivering node reads the pending index and sweeps Redis. */
  clusterWebhooks?: { pollMs?: number; sweepMs?: number };
}

export interface RunningServer {
  /** `http://host:port`; the WebSocket endpoint is `ws://host:port/realtime`. */
  url: string;
  port: number;
  engine: PresenceNode;
  /** Set when the node is part of a cluster. */
  cluster?: ClusterLink;
  /** Set when webhooks are configured. */
  webhooks?: Webhooks;
  /** Set when Pusher-format webhooks are configured (`PRESENCE_PUSHER_WEBHOOK_URLS`). */
  pusherWebhooks?: Webhooks;
  /** This node's presence metrics; `/metrics` renders them after the process-wide `process_*`/`nodejs_*` ones. */
  metrics: PresenceMetrics;
  /** `http://host:port/metrics` when the metrics have a port of their own (`metricsPort`). */
  metricsUrl?: string;
  httpServer: Server;
  /** Closes clients with 1001, stops listening, clears every timer. Safe to call twice. */
  shutdown(reason?: string): Promise<void>;
}

/** Builds the node (model, WebSocket transport, HTTP API, metrics) and starts listening. */
export async function startServer(config: ServerConfig, options: ServerOptions): Promise<RunningServer> {
  const { log } = options;
  const fileLimit = 'openFileLimit' in options ? options.openFileLimit : readOpenFileLimit();
  const ceiling = connectionCeiling(config.limits.maxConnections, fileLimit);
  if (ceiling < config.limits.maxConnections) {
    log.warn('the open-files limit caps connections below PRESENCE_MAX_CONNECTIONS; raise it (ulimit -n, systemd LimitNOFILE) to hold more', {
      openFileLimit: fileLimit,
      reserved: reservedFiles(fileLimit!),
      maxConnections: ceiling,
      configured: config.limits.maxConnections,
    });
    config = { ...config, limits: { ...config.limits, maxConnections: ceiling } };
  }
  const baseClock = options.clock ?? skewed(systemClock, config.clockSkewMs);
  const redisConfigured = config.redisUrl !== undefined || config.redisClusterNodes !== undefined;
  if (config.dataDir !== undefined && (redisConfigured || options.sharedService)) {
    throw new Error('dataDir cannot be combined with a cluster: user records live in the shared store');
  }
  if (config.auth.dashboardKey !== undefined && (config.auth.dashboardKey === config.auth.apiKey || isDevMode(config))) {
    // loadConfig says the same, naming the variable; this guards programmatic configurations.
    throw new Error('auth.dashboardKey must differ from auth.apiKey and needs another credential configured (without one, everything is open)');
  }
  const sharedService =
    options.sharedService ?? (redisConfigured ? new RedisService({ url: config.redisUrl, clusterNodes: config.redisClusterNodes, prefix: config.redisPrefix }) : undefined);
  if (config.pusher && sharedService && !hasPusherChannels(sharedService)) {
    throw new Error('the Pusher endpoint in a cluster needs a shared service that relays Pusher channels (PusherChannelService)');
  }
  const cluster = sharedService
    ? new ClusterLink({
        service: sharedService,
        nodeId: config.nodeId,
        leaseTtlMs: config.nodeLeaseMs,
        syncIntervalMs: config.syncIntervalMs,
        offlineDelayMs: config.offlineDelayMs,
        clock: baseClock,
        log,
      })
    : undefined;
  const store =
    cluster ??
    options.store ??
    (config.dataDir !== undefined
      ? // Opened (and read) before listening: the first client's connect already sees stored records.
        await FileUserStore.open({ dir: config.dataDir, log, now: () => baseClock.now(), connectedUsers: () => engine?.connectedUserIds() ?? [] })
      : new MemoryUserStore());
  const registry = new Registry();
  let engine: PresenceNode | undefined;
  const metrics = createPresenceMetrics(registry, () => engine!.stats(), {
    cluster: cluster ? () => ({ nodes: cluster.nodes().length, ready: cluster.isReady() }) : undefined,
    load: () => ({ outbound: transport.outboundBuffer(), overloaded: transport.overloaded() !== undefined }),
  });
  engine = new PresenceNode({
    config,
    // In a cluster, times are stamped on the shared service's clock (see ClusterLink).
    clock: cluster ? offsetClock(baseClock, () => cluster.clockOffsetMs) : baseClock,
    store,
    cluster,
    observer: { sent: (type, receivers) => metrics.messageSent(type, receivers) },
    log,
  });
  let webhooks: Webhooks | undefined;
  let pusherWebhooks: Webhooks | undefined;
  const pusherWebhookUrls = config.pusher?.webhookUrls ?? [];
  if (config.webhooks || pusherWebhookUrls.length > 0) {
    const node = engine;
    const webhookMetrics = createWebhookMetrics(registry, () =>
      [...(webhooks?.targets ?? []), ...(pusherWebhooks?.targets ?? [])].map(({ label, queue }) => ({
        url: label,
        backlog: queue.backlog,
        oldestPendingSeconds: queue.oldestQueuedAt === undefined ? 0 : Math.max(0, (baseClock.now() - queue.oldestQueuedAt) / 1000),
      })),
    );
    const common = {
      clock: baseClock,
      log,
      occupancy: node.engine.reader,
      userView: (userId: string) => node.engine.reader.viewOf(userId, undefined),
      dataDir: config.dataDir,
      observer: (url: string) => webhookMetrics.observerFor(url),
      // In a cluster the queues are in the shared store (docs/webhooks.md#clusters).
      cluster: cluster
        ? {
            sink: cluster.webhooks,
            store: cluster.webhooks,
            leaseTtlMs: config.nodeLeaseMs,
            ...options.clusterWebhooks,
            offlineView: (userId: string, fields: Record<string, string> | null) => {
              const record = decodeRecord(userId, fields ?? {});
              if (record.manual.status === 'invisible') return undefined;
              return publicView({ record, sessionCount: 0, anyActive: false, devices: [] }, config.states);
            },
          }
        : undefined,
      ...options.webhooks,
    };
    try {
      // Before anyone connects: what the previous run still owed is queued ahead of any new event.
      if (config.webhooks) {
        const presenceWebhooks = (webhooks = new Webhooks({ config: config.webhooks, ...common }));
        cluster?.webhooks.attach({ reap: presenceWebhooks, maxBacklog: config.webhooks.maxBacklog, dropped: (count) => presenceWebhooks.droppedAtWrite(count) });
      }
      if (config.pusher && pusherWebhookUrls.length > 0) {
        const { key, secret } = config.pusher;
        // In a cluster every join and leave is a candidate for occupied and vacated: the native
        // channel's index decides, as for Presence's own webhooks.
        const occupancy = cluster ? { hasOtherVisibleMember: () => false } : node.engine.reader;
        const pusher = (pusherWebhooks = new Webhooks({
          // Pusher's webhooks are signed with the app secret; the delivery settings are the defaults.
          config: { urls: pusherWebhookUrls, secrets: [secret], events: [], ...DEFAULT_WEBHOOK_SETTINGS },
          ...common,
          format: pusherFormat({ key, secret, timeoutMs: DEFAULT_WEBHOOK_SETTINGS.timeoutMs, occupancy, now: () => baseClock.now() }),
        }));
        cluster?.webhooks.attach({ reap: pusher, maxBacklog: DEFAULT_WEBHOOK_SETTINGS.maxBacklog, dropped: (count) => pusher.droppedAtWrite(count) });
      }
    } catch (error) {
      webhooks?.close();
      pusherWebhooks?.close();
      if (store !== options.store) await store.close().catch(() => {});
      throw error;
    }
    if (webhooks) node.subscribe(webhooks.onEvent);
    if (pusherWebhooks) {
      node.subscribe(pusherWebhooks.onEvent);
      node.pusher!.hooks = pusherProtocolHooks(pusherWebhooks, () => baseClock.now());
    }
  }
  // In a cluster, the Pusher endpoint's messages and channel lists go through the shared service.
  const pusherRelay =
    cluster && engine.pusher && sharedService && hasPusherChannels(sharedService)
      ? new PusherRelay({
          service: sharedService,
          cluster,
          localChannels: () => engine!.pusher!.localChannels(),
          localChannel: (name) => engine!.pusher!.localChannel(name),
          deliver: engine.pusher.receiveRelayed,
          log,
        })
      : undefined;
  if (pusherRelay) engine.pusher!.attachCluster(pusherRelay);
  if (cluster) {
    try {
      await cluster.start(engine);
    } catch (error) {
      await cluster.close().catch(() => {});
      const where = config.redisClusterNodes ? `the Redis Cluster at ${config.redisClusterNodes.map(redactUrl).join(',')}` : `Redis at ${redactUrl(config.redisUrl ?? '')}`;
      throw new Error(`cannot reach ${where}: ${(error as Error).message}`);
    }
    log.info('joined the cluster', { node: cluster.nodeId, nodes: cluster.nodes().length });
    webhooks?.startDelivery();
    pusherWebhooks?.startDelivery();
  }
  const verifier = createTokenVerifier(config.auth);
  const transport = new WebSocketTransport({
    config,
    engine,
    verifier,
    log,
    observer: {
      connectionOpened: () => metrics.connectionOpened(),
      connectionClosed: (code) => metrics.connectionClosed(code),
      connectionRefused: (reason) => metrics.connectionRefused(reason),
      commandReceived: (type) => metrics.commandReceived(type),
      errorSent: (code) => metrics.errorSent(code),
      sent: (type, receivers) => metrics.messageSent(type, receivers),
      commandHandled: (seconds) => metrics.observeFanout(seconds),
    },
  });
  let shuttingDown = false;
  const lagWindow = new EventLoopWindow();
  const adminStats = createAdminStats({
    engine,
    metrics,
    cluster,
    webhooks,
    process: { memory: () => process.memoryUsage(), outbound: () => transport.outboundBuffer(), eventLoopLag: () => lagWindow.read() },
  });
  // What a scrape renders: the standard process metrics, then this node's.
  const exposition = Registry.merge([processMetrics(), registry]);
  const pusherApi = engine.pusher
    ? createPusherApi({ pusher: engine.pusher, config, log, count: (route, status) => metrics.httpRequests.inc({ route, status: String(status) }) })
    : undefined;
  const api = createHttpApi({ pusherApi, queries: engine, sessions: engine, config, verifier, metrics: { registry: exposition, httpRequests: metrics.httpRequests, unloadBeacons: metrics.unloadBeacons }, serveMetrics: config.metricsPort === undefined, log, adminStats, isReady: () => (cluster && cluster.previousLayoutNodes.length > 0 ? new PresenceError('MIXED_CLUSTER', `nodes of the layout before sharding still run: ${cluster.previousLayoutNodes.join(', ')}`) : !shuttingDown && store.isReady() ? (transport.overloaded() ?? true) : false) });
  const staticFiles = options.publicDir
    ? createStaticFiles({ root: options.publicDir, reserved: [...new Set([...Object.values(ROUTES).map((route) => `/${route.split('/')[1]}`), PUSHER_API_PREFIX.slice(0, -1)])] })
    : undefined;
  const httpServer = createServer(
    staticFiles
      ? (req, res) => {
          staticFiles(req, res).then(
            (served) => {
              if (!served) api(req, res);
            },
            (error: unknown) => {
              log.error('static file failed', { err: error });
              if (!res.headersSent) api(req, res);
            },
          );
        }
      : api,
  );
  httpServer.on('upgrade', (request, socket, head) => transport.handleUpgrade(request, socket, head));
  httpServer.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  // Upgrade requests with huge headers are refused by Node before they reach us.
  httpServer.maxHeadersCount = 100;

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(config.port, config.host, () => {
      httpServer.off('error', reject);
      resolve();
    });
  }).catch(async (error: unknown) => {
    // A data directory stays locked while its store is open; a failed start must not keep it.
    webhooks?.close();
    pusherWebhooks?.close();
    if (store !== cluster && store !== options.store) await store.close().catch(() => {});
    throw error;
  });
  const metricsServer: MetricsServer | undefined =
    config.metricsPort === undefined
      ? undefined
      : await listenMetrics({
          port: config.metricsPort,
          host: config.host,
          registry: exposition,
          log,
          count: (route, status) => metrics.httpRequests.inc({ route, status: String(status) }),
        }).catch(async (error: unknown) => {
          await new Promise<void>((resolve) => httpServer.close(() => resolve()));
          if (store !== cluster && store !== options.store) await store.close().catch(() => {});
          throw error;
        });
  const address = httpServer.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host === '0.0.0.0' || host === '[::]' ? 'localhost' : host}:${address.port}`;

  if (isDevMode(config)) {
    log.warn('no auth configured: insecure development mode, any client may connect as ?userId=<id>; set PRESENCE_JWT_SECRET or PRESENCE_API_KEY', {});
  }
  for (const warning of configWarnings(config)) log.warn(warning);
  log.info('presence server listening', {
    url,
    websocket: `${url.replace(/^http/, 'ws')}/realtime`,
    ...(options.publicDir ? { demo: `${url}/`, dashboard: `${url}/dashboard` } : {}),
    ...(metricsServer ? { metrics: metricsServer.url } : {}),
    offlineDelayMs: config.offlineDelayMs,
    idleTimeoutMs: config.idleTimeoutMs,
  });

  let shutdownPromise: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown'): Promise<void> => {
    shutdownPromise ??= (async () => {
      shuttingDown = true;
      log.info('shutting down', { reason, connections: transport.connectionCount });
      const closed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await transport.shutdown();
      httpServer.closeAllConnections();
      await closed;
      await metricsServer?.close();
      // Disconnects above were published; leaving now lets other nodes start the offline delay at
      // once, so clients reconnecting elsewhere resume their sessions without a leave.
      await pusherRelay?.close();
      await cluster?.close();
      // Sessions are disposed without events below; the next start (with a data directory) tells
      // receivers that this run's users are gone.
      webhooks?.close();
      pusherWebhooks?.close();
      engine!.dispose();
      metrics.close();
      lagWindow.close();
      await store.close();
      log.info('stopped');
    })();
    return shutdownPromise;
  };

  return { url, port: address.port, engine, cluster, webhooks, pusherWebhooks, metrics, metricsUrl: metricsServer?.url, httpServer, shutdown };
}

function skewed(clock: Clock, skewMs: number): Clock {
  return skewMs === 0 ? clock : offsetClock(clock, () => skewMs);
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
