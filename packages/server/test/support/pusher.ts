/**
 * The real Pusher libraries against a test server: pusher-js (and Laravel Echo over it) as an
 * app's page would use them, and the `pusher` server library as the app's backend, which signs
 * every subscription the way a Laravel or Node auth endpoint does.
 */
import PusherServer from 'pusher';
import pusherJsModule from 'pusher-js';
import Echo from 'laravel-echo';
import { startTestServer } from './harness.js';

/** pusher-js's class: its typings say `export default`, its Node build is `module.exports = Pusher`. */
type PusherJs = import('pusher-js').default;
const PusherJs = pusherJsModule as unknown as typeof import('pusher-js').default;
export type { PusherJs };

export const APP = { appId: '4242', key: 'test-app-key', secret: 'test-app-secret-of-some-length' } as const;

type Overrides = Parameters<typeof startTestServer>[0];

export async function startPusherServer(overrides: Overrides = {}) {
  const server = await startTestServer({ pusher: { ...APP, webhookUrls: [] }, ...overrides });
  const backend = pusherBackend(server.port);
  return { ...server, backend, pusherUrl: `ws://127.0.0.1:${server.port}/app/${APP.key}?protocol=7` };
}

export type PusherTestServer = Awaited<ReturnType<typeof startPusherServer>>;

/** Where pusher-js connects and the app's backend calls: a test server, or a node of a cluster. */
export interface PusherEndpoint {
  port: number;
  backend: PusherServer;
}

/** The `pusher` server library of the test app, pointed at a server on this port. */
export function pusherBackend(port: number): PusherServer {
  return new PusherServer({ appId: APP.appId, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(port), useTLS: false });
}

/** Who the app's auth endpoint says the page's user is; `deny` makes it sign with a wrong secret. */
export interface PageUser {
  userId?: string | number;
  info?: Record<string, unknown>;
  deny?: boolean;
}

function options(server: PusherEndpoint, user: PageUser) {
  const forged = new PusherServer({ appId: APP.appId, key: APP.key, secret: 'not-the-secret', host: '127.0.0.1', port: String(server.port), useTLS: false });
  return {
    cluster: 'local',
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws' as const],
    disableStats: true,
    channelAuthorization: {
      transport: 'ajax' as const,
      endpoint: '/unused',
      // The app's auth endpoint, in-process: the same signature a backend would return.
      customHandler: (params: { socketId: string; channelName: string }, callback: (error: Error | null, data: { auth: string; channel_data?: string } | null) => void) => {
        const signer = user.deny ? forged : server.backend;
        const presence = params.channelName.startsWith('presence-') && user.userId !== undefined ? { user_id: user.userId as string, user_info: user.info } : undefined;
        callback(null, signer.authorizeChannel(params.socketId, params.channelName, presence));
      },
    },
  };
}

/** A pusher-js client, as on a page, connected (resolves once `connected`). */
export async function pusherJs(server: PusherEndpoint, user: PageUser = {}): Promise<PusherJs> {
  const client = new PusherJs(APP.key, options(server, user));
  await connected(client);
  return client;
}

/** A Laravel Echo instance over pusher-js, connected. */
export async function echo(server: PusherEndpoint, user: PageUser = {}): Promise<Echo<'pusher'>> {
  const instance = new Echo({ broadcaster: 'pusher', key: APP.key, Pusher: pusherJsModule, ...options(server, user) });
  await connected(instance.connector.pusher as PusherJs);
  return instance;
}

export function connected(client: PusherJs): Promise<void> {
  return new Promise((resolve, reject) => {
    if (client.connection.state === 'connected') return resolve();
    client.connection.bind('connected', () => resolve());
    client.connection.bind('failed', () => reject(new Error('pusher-js failed to connect')));
  });
}

/** Resolves with the first value `poll` returns that is not undefined, checking every 10 ms. */
export async function eventually<T>(poll: () => T | undefined, what: string, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = poll();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
