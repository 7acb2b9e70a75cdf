import { useEffect, useState } from 'react';
import type { Channel, Member } from '@presence/client';

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
  member: Member;
  lastSeen: string | null;
}

const KEEP_LEFT = 8;

/** Members who left this channel since the page joined it, newest first, until they come back. */
export function useRecentlyLeft(channel: Channel): LeftMember[] {
  const [left, setLeft] = useState<LeftMember[]>([]);
  useEffect(() => {
    setLeft([]);
    const offLeave = channel.on('leave', (member, lastSeen) =>
      setLeft((list) => [{ member, lastSeen }, ...list.filter((l) => l.member.userId !== member.userId)].slice(0, KEEP_LEFT)),
    );
    const offJoin = channel.on('join', (member) => setLeft((list) => list.filter((l) => l.member.userId !== member.userId)));
    const offSync = channel.on('sync', (members) => setLeft((list) => list.filter((l) => !members.has(l.member.userId))));
    return () => {
      offLeave();
      offJoin();
      offSync();
    };
  }, [channel]);
  return left;
}
