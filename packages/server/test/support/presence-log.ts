import assert from 'node:assert/strict';
import type { ServerMessage } from '@presence/protocol';

/*
 * What a receiver made of the presence messages it got: the witnesses the cluster tests (in
 * process and across processes) compare.
 */

export type PresenceEvent = Extract<ServerMessage, { type: 'presence.sync' | 'presence.join' | 'presence.leave' | 'presence.update' }>;

const MEMBERSHIP = new Set<string>(['presence.sync', 'presence.join', 'presence.leave', 'presence.update']);

/** Membership messages of one channel, in arrival order. */
export function presenceEvents(messages: ServerMessage[], channel: string): PresenceEvent[] {
  return messages.filter((m): m is PresenceEvent => MEMBERSHIP.has(m.type) && (m as PresenceEvent).channel === channel);
}

/** `join`/`leave` of one user in one channel, in order: a flap shows as an extra pair. */
export function joinsAndLeaves(messages: ServerMessage[], channel: string, userId: string): string[] {
  return presenceEvents(messages, channel).flatMap((e) => {
    if (e.type === 'presence.join' && e.member.userId === userId) return ['join'];
    if (e.type === 'presence.leave' && e.userId === userId) return ['leave'];
    return [];
  });
}

/**
 * The member list a client holds after its first sync plus every event since (`userId:status`,
 * sorted), asserting on the way that `seq` runs without gaps.
 */
export function replay(messages: ServerMessage[], channel: string): string[] {
  const members = new Map<string, string>();
  let seq: number | undefined;
  for (const event of presenceEvents(messages, channel)) {
    if (event.type === 'presence.sync') {
      members.clear();
      for (const m of event.members) members.set(m.userId, m.status);
    } else {
      assert.ok(seq !== undefined, 'events before the first sync');
      assert.equal(event.seq, seq + 1, `seq runs without gaps in ${channel}`);
      if (event.type === 'presence.leave') members.delete(event.userId);
      else members.set(event.member.userId, event.member.status);
    }
    seq = event.seq;
  }
  return [...members].map(([id, status]) => `${id}:${status}`).sort();
}
