import type { Member, Meta, SelfPresence, Status, UserPresence } from '@presence/protocol';
import type { StateBase } from '../config/config.js';
import type { UserRecord } from '../store/user-store.js';
import type { ChannelMember, UserState } from './state.js';
import { toIso } from './validation.js';

/** The facts a user's visible presence is computed from; the engine keeps them per user. */
export interface PresenceFacts {
  record: UserRecord;
  /** Number of sessions, live or inside their offline delay. */
  sessionCount: number;
  /** True when at least one session is not idle. */
  anyActive: boolean;
  /** Distinct device kinds of the sessions, sorted. */
  devices: string[];
}

/** The facts of a user as the model holds them now. */
export function factsOf(user: UserState): PresenceFacts {
  let anyActive = false;
  const devices = new Set<string>();
  for (const session of user.sessions.values()) {
    if (!session.idle) anyActive = true;
    devices.add(session.device);
  }
  return { record: user.record, sessionCount: user.sessions.size, anyActive, devices: [...devices].sort() };
}

/** A user others can see: present and not invisible. Invisible must look exactly like offline. */
export function isVisible(facts: PresenceFacts): boolean {
  return facts.sessionCount > 0 && facts.record.manual.status !== 'invisible';
}

/**
 * Effective status: offline without sessions (or invisible); else the manual status; else the
 * custom state's base; else automatic (online while any session is active, away when all idle).
 * A state whose base is `online` keeps the automatic behaviour, so an idle user still shows away.
 */
export function effectiveStatus(facts: PresenceFacts, states: Record<string, StateBase>): Status {
  if (!isVisible(facts)) return 'offline';
  const { manual } = facts.record;
  if (manual.status === 'away' || manual.status === 'busy') return manual.status;
  const base = manual.state ? states[manual.state] : undefined;
  if (base === 'away' || base === 'busy') return base;
  return facts.anyActive ? 'online' : 'away';
}

/** The presence everyone is allowed to see (channel co-members always get this view). */
export function publicView(facts: PresenceFacts, states: Record<string, StateBase>): UserPresence {
  const { record } = facts;
  const view: UserPresence = {
    userId: record.userId,
    status: effectiveStatus(facts, states),
    meta: record.meta,
    lastSeen: toIso(record.lastSeenAt),
    devices: [],
  };
  if (isVisible(facts)) {
    if (record.manual.state) view.state = record.manual.state;
    if (record.manual.message) view.message = record.manual.message;
    if (record.manual.expiresAt !== null) view.expiresAt = toIso(record.manual.expiresAt);
    view.devices = facts.devices;
  }
  if (record.lastActiveAt !== null) view.lastActive = toIso(record.lastActiveAt);
  return view;
}

/** What a viewer that privacy excludes sees: nothing beyond the id. */
export function hiddenView(userId: string): UserPresence {
  return { userId, status: 'offline', meta: {}, lastSeen: null, devices: [] };
}

/** Whether `viewerId` may see this user's user-level presence (watch lists, user queries). */
export function mayView(record: UserRecord, viewerId: string | undefined): boolean {
  if (viewerId === undefined || viewerId === record.userId) return true;
  switch (record.visibility) {
    case 'everyone':
      return true;
    case 'contacts':
      return record.contacts.includes(viewerId);
    case 'nobody':
      return false;
  }
}

export function selfView(facts: PresenceFacts, states: Record<string, StateBase>): SelfPresence {
  return {
    ...publicView(facts, states),
    manualStatus: facts.record.manual.status,
    visibility: facts.record.visibility,
    // The user sees their own state and message even while invisible.
    ...(facts.record.manual.state ? { state: facts.record.manual.state } : {}),
    ...(facts.record.manual.message ? { message: facts.record.manual.message } : {}),
    ...(facts.record.manual.expiresAt !== null ? { expiresAt: toIso(facts.record.manual.expiresAt) } : {}),
  };
}

export function memberView(user: UserPresence, channelMeta: Meta, joinedAt: number): Member {
  return { ...user, channelMeta, joinedAt: toIso(joinedAt) };
}

/**
 * Whether two views differ in anything worth an event. `lastSeen`/`lastActive` move with every
 * activity; pushing them would turn each keystroke into a broadcast, so they ride along with real
 * changes instead and are current in every snapshot.
 */
export function sameVisiblePresence(a: UserPresence, b: UserPresence): boolean {
  return (
    a.status === b.status &&
    a.state === b.state &&
    a.message === b.message &&
    a.expiresAt === b.expiresAt &&
    a.meta === b.meta &&
    a.devices.length === b.devices.length &&
    a.devices.every((device, i) => device === b.devices[i])
  );
}

/**
 * The join time others see: the later of the first session's join and the user's last return
 * from invisible, so a stay while invisible never shows. Read from what was last announced (the
 * cached member JSON is valid as long as the announced view is the same object).
 */
export function shownJoinedAt(member: ChannelMember): number {
  const { shownAt } = member.user;
  return shownAt !== undefined && shownAt > member.joinedAt ? shownAt : member.joinedAt;
}
