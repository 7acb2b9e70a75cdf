import type { ActivityTarget } from './activity.js';

export interface UnloadBeaconOptions {
  /** Where `pagehide` comes from. @default globalThis (the window) */
  target?: ActivityTarget;
  /** Sends the beacon. @default navigator.sendBeacon */
  send?: (url: string, body: string) => boolean;
}

/**
 * The unload beacon: when the page really goes away (`pagehide` without `persisted`: not put in
 * the back/forward cache, from which it could come back), it tells the server with
 * `navigator.sendBeacon`, so others see this tab leave after the server's short unload grace
 * instead of the offline delay. The session token is the beacon's only credential.
 */
export class UnloadBeacon {
  private listening = false;

  constructor(
    private readonly url: string,
    private readonly target: ActivityTarget,
    private readonly send: (url: string, body: string) => boolean,
    private readonly token: () => string | undefined,
  ) {}

  start(): void {
    if (this.listening) return;
    this.listening = true;
    this.target.addEventListener('pagehide', this.onPageHide);
  }

  stop(): void {
    if (!this.listening) return;
    this.listening = false;
    this.target.removeEventListener('pagehide', this.onPageHide);
  }

  private readonly onPageHide = (event: unknown): void => {
    if ((event as { persisted?: boolean }).persisted) return;
    const sessionToken = this.token();
    if (!sessionToken) return;
    try {
      this.send(this.url, JSON.stringify({ sessionToken }));
    } catch {
      // A page on its way out has nobody to tell; the server falls back to the offline delay.
    }
  };
}

/**
 * The beacon for a client, unless turned off or the environment has no `pagehide` and
 * `navigator.sendBeacon` (Node, workers).
 */
export function createUnloadBeacon(realtimeUrl: string, options: false | UnloadBeaconOptions | undefined, token: () => string | undefined): UnloadBeacon | undefined {
  if (options === false) return undefined;
  const g = globalThis as { addEventListener?: unknown; navigator?: { sendBeacon?: (url: string, body: string) => boolean } };
  const target = options?.target ?? (typeof g.addEventListener === 'function' ? (globalThis as unknown as ActivityTarget) : undefined);
  const sendBeacon = g.navigator?.sendBeacon;
  const send = options?.send ?? (typeof sendBeacon === 'function' ? (url: string, body: string) => sendBeacon.call(g.navigator, url, body) : undefined);
  if (!target || !send) return undefined;
  return new UnloadBeacon(beaconUrl(realtimeUrl), target, send, token);
}

/** `wss://host/realtime` → `https://host/realtime/disconnect` (the query, with its token, dropped). */
export function beaconUrl(realtimeUrl: string): string {
  const url = new URL(realtimeUrl);
  url.protocol = url.protocol === 'wss:' || url.protocol === 'https:' ? 'https:' : 'http:';
  url.search = '';
  url.hash = '';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/disconnect`;
  return url.toString();
}
