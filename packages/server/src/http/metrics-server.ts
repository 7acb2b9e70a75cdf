/**
 * `/metrics` on a port of its own (`PRESENCE_METRICS_PORT`), as Soketi and Centrifugo offer it: the
 * scrape endpoint can then be reachable from the monitoring network only, while the main port
 * faces clients. This server answers `GET /metrics` and nothing else.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { PresenceError } from '../errors.js';
import type { Logger } from '../log.js';
import { EXPOSITION_CONTENT_TYPE } from '../metrics/index.js';

export interface MetricsServerOptions {
  port: number;
  host: string;
  registry: Registry;
  log: Logger;
  /** Counts each response as the API does (`presence_http_requests_total`). */
  count?: (route: string, status: number) => void;
}

export interface MetricsServer {
  server: Server;
  /** The bound port (the real one when `port` was 0). */
  port: number;
  /** `http://host:port/metrics`. */
  url: string;
  close(): Promise<void>;
}

export async function listenMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, log, count } = options;
  const reply = (res: ServerResponse, status: number, contentType: string, body: string, route: string): void => {
    res.statusCode = status;
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    count?.(route, status);
    res.end(body);
  };
  const fail = (res: ServerResponse, error: PresenceError, route: string): void => {
    if (error.code === 'METHOD_NOT_ALLOWED') res.setHeader('Allow', 'GET');
    reply(res, error.httpStatus, 'application/json; charset=utf-8', JSON.stringify({ error: { code: error.code, message: error.message } }), route);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return fail(res, new PresenceError('NOT_FOUND', 'This port serves /metrics only.'), 'unmatched');
    if (req.method !== 'GET') return fail(res, new PresenceError('METHOD_NOT_ALLOWED', '/metrics accepts GET.'), '/metrics');
    reply(res, 200, EXPOSITION_CONTENT_TYPE, await registry.metrics(), '/metrics');
  };

  const server = createServer((req, res) => {
    req.on('error', () => {});
    handle(req, res).catch((error: unknown) => {
      log.error('metrics scrape failed', { err: error });
      if (!res.headersSent) fail(res, new PresenceError('INTERNAL'), '/metrics');
      else res.destroy();
    });
  });
  server.on('clientError', (_error, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const shown = host === '0.0.0.0' || host === '[::]' ? 'localhost' : host;
  return {
    server,
    port: address.port,
    url: `http://${shown}:${address.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
