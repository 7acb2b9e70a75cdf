import type { Member, UserPresence } from '@presence/protocol';
import { jsonEqual } from './json.js';

/**
 * Whether two views of a user differ in anything an application shows. `lastSeen`, `lastActive`
 * and `joinedAt` are left out: after a server restart every member gets new ones, and reporting
 * that as an update would be noise.
 */
export function samePresence(a: UserPresence, b: UserPresence): boolean {
  return (
    a.status === b.status &&
    a.state === b.state &&
    a.message === b.message &&
    a.expiresAt === b.expiresAt &&
    jsonEqual(a.meta, b.meta) &&
    jsonEqual(a.devices, b.devices)
  );
}

export function sameMember(a: Member, b: Member): boolean {
  return samePresence(a, b) && jsonEqual(a.channelMeta, b.channelMeta);
}

export interface MemberDiff<M extends Member = Member> {
  joined: M[];
  left: M[];
  updated: { member: M; previous: M }[];
}

/** What changed from one member list to the next, as the events an application would have seen. */
export function diffMembers<M extends Member>(before: ReadonlyMap<string, M>, after: ReadonlyMap<string, M>): MemberDiff<M> {
  const diff: MemberDiff<M> = { joined: [], left: [], updated: [] };
  for (const [userId, previous] of before) {
    if (!after.has(userId)) diff.left.push(previous);
  }
  for (const [userId, member] of after) {
    const previous = before.get(userId);
    if (!previous) diff.joined.push(member);
    else if (!sameMember(previous, member)) diff.updated.push({ member, previous });
  }
  return diff;
}
