import type { ManualStatus, Status, UserPresence } from '@presence/client';
import type { DemoUserMeta } from './presence.js';

type DemoUser = Pick<UserPresence<DemoUserMeta>, 'userId' | 'meta'>;

export function displayName(user: DemoUser): string {
  const name = user.meta.name;
  return typeof name === 'string' && name.trim() ? name.trim() : user.userId;
}

export function initials(name: string): string {
  const words = name.split(/[\s_.-]+/).filter(Boolean);
  const picked = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] ?? '?'];
  return picked.map((w) => [...w][0]).join('').toUpperCase();
}

/** A stable, readable background for a user's initials. */
export function colorFor(userId: string): string {
  let hash = 0;
  for (const char of userId) hash = (hash * 31 + char.codePointAt(0)!) | 0;
  return `hsl(${Math.abs(hash) % 360} 55% 38%)`;
}

/** Only pictures from this server or from https URLs are shown; anything else falls back to initials. */
export function avatarUrl(user: Pick<DemoUser, 'meta'>): string | undefined {
  const avatar = user.meta.avatar;
  if (typeof avatar !== 'string') return undefined;
  if (/^avatars\/[a-z]+\.svg$/.test(avatar) || /^https:\/\//.test(avatar)) return avatar;
  return undefined;
}

export const STATUS_LABELS: Record<Status | 'invisible', string> = {
  online: 'Online',
  away: 'Away',
  busy: 'Busy',
  offline: 'Offline',
  invisible: 'Invisible',
};

/** `in-call` → `In call`. */
export function stateLabel(state: string): string {
  const words = state.replace(/[-_]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function statusLine(user: Pick<UserPresence, 'status' | 'state' | 'message' | 'expiresAt'>, manual?: ManualStatus | null): string {
  const parts = [manual === 'invisible' ? 'Invisible (others see you offline)' : STATUS_LABELS[user.status]];
  if (user.state) parts.push(stateLabel(user.state));
  if (user.message) parts.push(`“${user.message}”`);
  if (user.expiresAt) parts.push(`until ${clockTime(user.expiresAt)}`);
  return parts.join(' · ');
}

export function clockTime(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function lastSeenText(iso: string | null, now: number): string {
  if (!iso) return 'offline, never seen';
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 10) return 'last seen just now';
  if (seconds < 60) return `last seen ${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `last seen ${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `last seen ${hours} h ago`;
  return `last seen ${new Date(iso).toLocaleDateString()}`;
}

/** "Ada is typing…", "Ada and Grace are typing…", "4 people are typing…". */
export function typingLine(names: string[]): string {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return `${names.length} people are typing…`;
}
