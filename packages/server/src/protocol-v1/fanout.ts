import type { ServerMessage } from '@presence/protocol';
import type { LargeRoomSettings } from '../config/config.js';
import type { Clock } from '../presence/clock.js';
import type { MemberEvent, PresenceEvent, UserEvent } from '../presence/events.js';
import type { Channel, PresenceState, Session, SessionOutput, SessionSink } from '../presence/state.js';
import { hiddenView, mayView } from '../presence/user-presence.js';
import type { WatcherIndex } from '../presence/watchers.js';
import { LargeRooms, syncMessage, type RoomObserver } from './large-rooms.js';
import { memberJson } from './member-json.js';

/** Counters the v1 writer reports to; metrics implement it. */
export type FanoutObserver = RoomObserver;

export interface FanoutOptions {
  state: PresenceState;
  watchers: WatcherIndex;
  /** The windows of large rooms run on it (the model's clock: tests advance it by hand). */
  clock: Clock;
  largeRooms: LargeRoomSettings;
  observer?: FanoutObserver;
}

/**
 * Protocol v1 on the way out: one listener of the presence events that turns each into the v1
 * frame for every session that should see it (channel members, watchers), and the model's direct
 * answers to one session. A channel message is serialized once and the same string goes to every
 * receiver: fan-out costs one serialization plus one queue push per socket. Members are spliced in
 * from a cached JSON string, so a sync of a big channel costs one string join. Channels past a
 * large-room threshold are handed to `LargeRooms` (windows, occupancy).
 */
export class ProtocolV1Fanout implements SessionOutput {
  private readonly state: PresenceState;
  private readonly watchers: WatcherIndex;
  private readonly observer: FanoutObserver | undefined;
  private readonly rooms: LargeRooms;

  constructor(options: FanoutOptions) {
    this.state = options.state;
    this.watchers = options.watchers;
    this.observer = options.observer;
    const observer = options.observer;
    this.rooms = new LargeRooms(options.state, options.clock, options.largeRooms, {
      sent: (type, receivers) => observer?.sent(type, receivers),
      modeChanged: (mode, on) => observer?.modeChanged?.(mode, on),
    });
  }

  /** What of a channel's changes is still to go out (large rooms; see LargeRooms.pending). */
  pending(channel: string): { window: boolean; timer: boolean } {
    return this.rooms.pending(channel);
  }

  /** Whether the channel is in occupancy mode (large rooms; see LargeRooms.inOccupancyMode). */
  inOccupancyMode(channel: string): boolean {
    return this.rooms.inOccupancyMode(channel);
  }

  /** The presence-event listener. */
  readonly onEvent = (event: PresenceEvent): void => {
    switch (event.type) {
      case 'member.joined':
      case 'member.updated':
      case 'member.meta':
      case 'member.left':
        this.memberEvent(event);
        break;
      case 'typing.started':
      case 'typing.stopped': {
        const channel = this.state.channels.get(event.channel);
        if (!channel) break;
        const message = { type: 'typing', channel: event.channel, userId: event.userId, typing: event.type === 'typing.started' } as const;
        // Never to the typer's own sessions, nor to a large room's occupancy viewers.
        this.toChannel(channel, 'typing', JSON.stringify(message), undefined, undefined, event.userId, this.rooms.typing(channel));
        break;
      }
      default:
        this.toWatchers(event);
        if (event.type === 'user.offline') this.rooms.userHidden(event.userId);
    }
  };

  send(session: Session, message: ServerMessage): void {
    if (!session.sink) return;
    session.sink.send(JSON.stringify(message), message.type);
    this.observer?.sent(message.type, 1);
  }

  /** `presence.sync`, assembled from each member's cached JSON (the same shape JSON.stringify gives). */
  sync(session: Session, channel: Channel): void {
    if (!session.sink || this.rooms.sync(session, channel)) return;
    const parts: string[] = [];
    for (const member of channel.members.values()) {
      if (member.user.announcedVisible) parts.push(memberJson(member));
    }
    session.sink.send(syncMessage(channel.name, parts, channel.seq), 'presence.sync', channel.name, channel.seq);
    this.observer?.sent('presence.sync', 1);
  }

  /**
   * A join, leave or update: to every session in the channel at once, or to a large room's window.
   * The message is built once, with the member's cached JSON spliced in (the same bytes
   * `JSON.stringify` gives, without building or serializing the member again).
   */
  private memberEvent(event: MemberEvent): void {
    const channel = this.state.channels.get(event.channel);
    if (!channel) return;
    const message = (seq: number) => {
      if (event.type === 'member.left') {
        return JSON.stringify({ type: 'presence.leave', channel: event.channel, userId: event.userId, lastSeen: event.lastSeen, seq });
      }
      const type = event.type === 'member.joined' ? 'presence.join' : 'presence.update';
      return `{"type":"${type}","channel":${JSON.stringify(event.channel)},"member":${memberJson(event.member)},"seq":${seq}}`;
    };
    const type = event.type === 'member.left' ? 'presence.leave' : event.type === 'member.joined' ? 'presence.join' : 'presence.update';
    const answered = event.type === 'member.left' ? undefined : event.answered;
    const inRoom = this.rooms.memberEvent(channel, event, (seq, skip) => this.toChannel(channel, type, message(seq), seq, answered, undefined, skip));
    if (inRoom) return;
    this.toChannel(channel, type, message(event.seq), event.seq, answered);
    if (this.rooms.reached(channel)) this.rooms.open(channel);
  }

  /** Sends one pre-built message to every session in the channel but the excluded ones. */
  private toChannel(
    channel: Channel,
    type: ServerMessage['type'],
    json: string,
    seq: number | undefined,
    exceptSession?: Session,
    exceptUserId?: string,
    skip?: (sink: SessionSink) => boolean,
  ): void {
    let receivers = 0;
    for (const member of channel.members.values()) {
      if (exceptUserId !== undefined && member.user.record.userId === exceptUserId) continue;
      for (const session of member.sessions) {
        const sink = session.sink;
        if (sink === null || session === exceptSession || skip?.(sink)) continue;
        sink.send(json, type, channel.name, seq);
        receivers += 1;
      }
    }
    if (receivers > 0) this.observer?.sent(type, receivers);
  }

  /**
   * Tells the user's watchers, each as privacy allows: those who may see the user get the view
   * (also after a privacy change alone: they may just have gained sight of the user); those who
   * may not get the hidden view, and only when they just lost sight of the user (the hidden view
   * itself never changes).
   */
  private toWatchers(event: UserEvent): void {
    const sessions = this.watchers.watchersOf(event.userId);
    if (!sessions) return;
    const user = this.state.users.get(event.userId);
    if (!user) return;
    let allowedJson: string | undefined;
    let refusedJson: string | undefined;
    let allowed = 0;
    let refused = 0;
    for (const session of sessions) {
      if (!session.sink) continue;
      if (mayView(user.record, session.user.record.userId)) {
        allowedJson ??= JSON.stringify({ type: 'user.update', user: event.view });
        session.sink.send(allowedJson, 'user.update');
        allowed += 1;
      } else if (event.privacyChanged) {
        refusedJson ??= JSON.stringify({ type: 'user.update', user: hiddenView(event.userId) });
        session.sink.send(refusedJson, 'user.update');
        refused += 1;
      }
    }
    if (allowed + refused > 0) this.observer?.sent('user.update', allowed + refused);
  }
}

