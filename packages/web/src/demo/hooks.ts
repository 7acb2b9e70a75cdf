import { useEffect, useState } from 'react';
import type { Member } from '@presence/client';
import { usePresenceListener, type DemoChannelMeta, type DemoUserMeta } from './presence.js';

/** The current time, refreshed every `everyMs`, for "last seen … ago" lines. */
export function useNow(everyMs: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

export interface LeftMember {
  member: Member<DemoUserMeta, DemoChannelMeta>;
  lastSeen: string | null;
}

const KEEP_LEFT = 8;

/**
 * Members who left this channel since the component mounted, newest first, until they come back
 * (a member list after a reconnect reports who came back as a join too). Mount it per channel.
 */
export function useRecentlyLeft(channel: string): LeftMember[] {
  const [left, setLeft] = useState<LeftMember[]>([]);
  usePresenceListener(channel, (event) => {
    const { userId } = event.member;
    if (event.type === 'leave') {
      setLeft((list) => [{ member: event.member, lastSeen: event.lastSeen }, ...list.filter((l) => l.member.userId !== userId)].slice(0, KEEP_LEFT));
    } else if (event.type === 'join') {
      setLeft((list) => list.filter((l) => l.member.userId !== userId));
    }
  });
  return left;
}
