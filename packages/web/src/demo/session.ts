/** Who the demo user is in this tab, kept in session storage so a reload keeps the same user. */
export interface DemoSession {
  name: string;
  /** A built-in picture's path, or undefined for initials. */
  avatar?: string;
  room: string;
  /** A JWT for servers with auth configured; without it the demo uses development mode (`?userId=`). */
  token?: string;
}

export const ROOMS = ['lobby', 'design', 'support'] as const;

const STORAGE_KEY = 'presence.demo.session';

export function loadSession(): DemoSession | null {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as DemoSession;
    return typeof parsed.name === 'string' && typeof parsed.room === 'string' ? parsed : null;
  } catch {
    return null;
  }
}

export function saveSession(session: DemoSession | null): void {
  if (session) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/**
 * The user id for a name in development mode: "Ada Lovelace" → `ada-lovelace`. The same name in
 * two tabs is one user with two sessions, which is what presence is about.
 */
export function userIdFor(name: string): string {
  const slug = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
  return slug || 'guest';
}

/** The realtime endpoint of the server that served this page. */
export function realtimeUrl(): string {
  const url = new URL('realtime', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  return url.href;
}
