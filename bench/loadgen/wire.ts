/**
 * How a bench client speaks to each system. Presence gets its own protocol v1 commands. The two
 * baselines have no presence model, so the client sends them the member object Presence would
 * have built (same fields, same sizes) and they relay it: the messages on the wire are the same.
 *
 * `pusher` is Presence again, spoken to through its Pusher Channels endpoint as pusher-js speaks
 * it: each client subscribes to the presence channel with a signed `channel_data`, and its updates
 * are client events (whispers) carrying the same member object the baselines relay, which the
 * server relays to the channel's other subscribers.
 *
 * Socket.IO is spoken over a plain `ws` socket (Engine.IO v4 framing: `0` open, `2`/`3`
 * ping/pong, `40` connect, `42[...]` event), so every system pays the same client-side cost and
 * the load generator is not what limits the slowest system.
 */

import { createHmac } from 'node:crypto';

export type SystemName = 'presence' | 'ws' | 'socketio' | 'pusher';

/** What a wire needs to know about a client. */
export interface WireClient {
  readonly idx: number;
  readonly userId: string;
  readonly channel: string;
  sessionId?: string;
  /** Pusher: the socket id of `pusher:connection_established`, which subscriptions are signed with. */
  socketId?: string;
  /** The member object the baselines relay; Presence builds its own. */
  member: BenchMember;
  eventSeq: number;
}

export interface BenchMember {
  userId: string;
  status: string;
  message?: string;
  meta: Record<string, string>;
  lastSeen: string;
  lastActive: string;
  devices: string[];
  channelMeta: Record<string, string>;
  joinedAt: string;
}

export function displayName(idx: number): string {
  return `User ${idx}`;
}

export function avatar(idx: number): string {
  return `/avatars/u${idx}.png`;
}

export function newMember(idx: number, userId: string): BenchMember {
  const now = new Date().toISOString();
  return {
    userId,
    status: 'online',
    meta: { name: displayName(idx), avatar: avatar(idx) },
    lastSeen: now,
    lastActive: now,
    devices: ['bench'],
    channelMeta: {},
    joinedAt: now,
  };
}

/** Update kinds, rotated per sender: user meta, status (+ message), channel meta. */
export const UPDATE_KINDS = ['meta', 'status', 'channel.meta'] as const;
export type UpdateKind = (typeof UPDATE_KINDS)[number];

export interface Wire {
  readonly system: SystemName;
  /** `features`: Presence connect features (`occupancy` for large rooms). */
  url(base: string, client: WireClient, features?: string): string;
  /** Confirms a join: Presence and Socket.IO send a member snapshot, the bare server `joined`. */
  readonly joinedToken: Buffer;
  join(client: WireClient, marker?: string): string;
  /**
   * Joins as a listener nobody is told about, to fill a large channel in linear time (see
   * big-channel.ts): Presence joins while invisible (`reveal` makes a client visible later); the
   * baselines subscribe to the room without a broadcast and without a place in its member list.
   */
  quietJoin(client: WireClient): string[];
  readonly quietJoinedToken: Buffer;
  /** Frames that make a quietly joined client visible (Presence only). */
  reveal(client: WireClient): string[];
  leave(client: WireClient): string;
  update(client: WireClient, kind: UpdateKind, marker: string): string;
  typing(client: WireClient, typing: boolean): string;
}

const q = encodeURIComponent;

const presenceWire: Wire = {
  system: 'presence',
  url(base, c, features) {
    const session = c.sessionId ? `&sessionId=${q(c.sessionId)}` : '';
    const wanted = features ? `&features=${q(features)}` : '';
    return `${base}/realtime?userId=${q(c.userId)}&device=bench&name=${q(displayName(c.idx))}&avatar=${q(avatar(c.idx))}${session}${wanted}`;
  },
  joinedToken: Buffer.from('"presence.sync"'),
  join(c, marker) {
    return marker === undefined
      ? `{"type":"join","channel":"${c.channel}"}`
      : `{"type":"join","channel":"${c.channel}","meta":{"b":"${marker}"}}`;
  },
  quietJoin(c) {
    return ['{"type":"status","status":"invisible"}', this.join(c)];
  },
  quietJoinedToken: Buffer.from('"presence.sync"'),
  reveal() {
    return ['{"type":"status","status":"online"}'];
  },
  leave(c) {
    return `{"type":"leave","channel":"${c.channel}"}`;
  },
  update(c, kind, marker) {
    switch (kind) {
      case 'meta':
        return `{"type":"meta","meta":{"b":"${marker}"}}`;
      case 'status':
        return `{"type":"status","status":"${c.eventSeq % 2 === 0 ? 'busy' : 'away'}","message":"${marker}"}`;
      case 'channel.meta':
        return `{"type":"channel.meta","channel":"${c.channel}","meta":{"b":"${marker}"}}`;
    }
  },
  typing(c, typing) {
    return `{"type":"typing","channel":"${c.channel}","typing":${typing}}`;
  },
};

/** Applies an update to the member object the baselines relay, as Presence would to its own. */
function applyUpdate(c: WireClient, kind: UpdateKind, marker: string): BenchMember {
  const member = c.member;
  switch (kind) {
    case 'meta':
      member.meta.b = marker;
      break;
    case 'status':
      member.status = c.eventSeq % 2 === 0 ? 'busy' : 'away';
      member.message = marker;
      break;
    case 'channel.meta':
      member.channelMeta.b = marker;
      break;
  }
  return member;
}

function joinMember(c: WireClient, marker?: string): BenchMember {
  c.member.joinedAt = new Date().toISOString();
  c.member.channelMeta = marker === undefined ? {} : { b: marker };
  return c.member;
}

const wsWire: Wire = {
  system: 'ws',
  url(base, c) {
    return `${base}/realtime?userId=${q(c.userId)}`;
  },
  joinedToken: Buffer.from('"joined"'),
  join(c, marker) {
    return `{"type":"presence.join","channel":"${c.channel}","member":${JSON.stringify(joinMember(c, marker))},"seq":${c.eventSeq}}`;
  },
  quietJoin(c) {
    return [`{"type":"subscribe","channel":"${c.channel}"}`];
  },
  quietJoinedToken: Buffer.from('"joined"'),
  reveal() {
    return [];
  },
  leave(c) {
    return `{"type":"presence.leave","channel":"${c.channel}","userId":"${c.userId}","lastSeen":"${new Date().toISOString()}","seq":${c.eventSeq}}`;
  },
  update(c, kind, marker) {
    return `{"type":"presence.update","channel":"${c.channel}","member":${JSON.stringify(applyUpdate(c, kind, marker))},"seq":${c.eventSeq}}`;
  },
  typing(c, typing) {
    return `{"type":"typing","channel":"${c.channel}","userId":"${c.userId}","typing":${typing}}`;
  },
};

const socketioWire: Wire = {
  system: 'socketio',
  url(base) {
    return `${base}/socket.io/?EIO=4&transport=websocket`;
  },
  joinedToken: Buffer.from('"presence.sync"'),
  join(c, marker) {
    return `42["join",{"channel":"${c.channel}","member":${JSON.stringify(joinMember(c, marker))}}]`;
  },
  quietJoin(c) {
    return [`42["subscribe",{"channel":"${c.channel}","member":${JSON.stringify(joinMember(c))}}]`];
  },
  quietJoinedToken: Buffer.from('"subscribed"'),
  reveal() {
    return [];
  },
  leave(c) {
    return `42["leave",{"channel":"${c.channel}"}]`;
  },
  update(c, kind, marker) {
    return `42["update",{"channel":"${c.channel}","member":${JSON.stringify(applyUpdate(c, kind, marker))}}]`;
  },
  typing(c, typing) {
    return `42["typing",{"channel":"${c.channel}","userId":"${c.userId}","typing":${typing}}]`;
  },
};

/** The app the bench's Pusher clients belong to (the server is started with it). */
export const BENCH_PUSHER_APP = { appId: 'bench', key: 'bench-key', secret: 'bench-secret-not-for-production' } as const;

function pusherAuth(c: WireClient, channel: string, channelData: string): string {
  const signature = createHmac('sha256', BENCH_PUSHER_APP.secret).update(`${c.socketId}:${channel}:${channelData}`).digest('hex');
  return `${BENCH_PUSHER_APP.key}:${signature}`;
}

const pusherWire: Wire = {
  system: 'pusher',
  url(base) {
    return `${base}/app/${BENCH_PUSHER_APP.key}?protocol=7&client=bench&version=1`;
  },
  joinedToken: Buffer.from('"pusher_internal:subscription_succeeded"'),
  join(c, marker) {
    const channel = `presence-${c.channel}`;
    const info: Record<string, string> = { name: displayName(c.idx), avatar: avatar(c.idx) };
    if (marker !== undefined) info.b = marker;
    const channelData = JSON.stringify({ user_id: c.userId, user_info: info });
    return JSON.stringify({ event: 'pusher:subscribe', data: { channel, auth: pusherAuth(c, channel, channelData), channel_data: channelData } });
  },
  quietJoin() {
    throw new Error('the Pusher protocol has no quiet join');
  },
  quietJoinedToken: Buffer.from('"pusher_internal:subscription_succeeded"'),
  reveal() {
    return [];
  },
  leave(c) {
    return `{"event":"pusher:unsubscribe","data":{"channel":"presence-${c.channel}"}}`;
  },
  update(c, kind, marker) {
    return `{"event":"client-update","channel":"presence-${c.channel}","data":${JSON.stringify(applyUpdate(c, kind, marker))}}`;
  },
  typing(c, typing) {
    return `{"event":"client-typing","channel":"presence-${c.channel}","data":{"typing":${typing}}}`;
  },
};

export const WIRES: Record<SystemName, Wire> = { presence: presenceWire, ws: wsWire, socketio: socketioWire, pusher: pusherWire };
