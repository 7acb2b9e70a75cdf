import type { ServerMessage } from '@presence/protocol';
import type { PresenceEvent, UserEvent } from '../presence/events.js';
import type { Channel, ChannelMember, PresenceState, Session, SessionOutput } from '../presence/state.js';
import { hiddenView, mayView, memberView, shownJoinedAt } from '../presence/user-presence.js';
import type { WatcherIndex } from '../presence/watchers.js';

/** Counters the v1 writer reports to; metrics implement it. */
export interface FanoutObserver {
  /** `receivers` connections were sent one message of `type`. */
  sent(type: ServerMessage['type'], receivers: number): void;
}

/**
 * Protocol v1 on the way out: one listener of the presence events that turns each into the v1
 * frame for every session that should see it (channel members, watchers), and the model's direct
 * answers to one session. A channel message is serialized once and the same string goes to every
 * receiver: fan-out costs one serialization plus one queue push per socket. Members are spliced in
 * from a cached JSON string, so a sync of a big channel costs one string join.
 */
export class ProtocolV1Fanout implements SessionOutput {
  constructor(
    private readonly state: PresenceState,
    private readonly watchers: WatcherIndex,
    private readonly observer?: FanoutObserver,
  ) {}

  /** The presence-event listener. */
  readonly onEvent = (event: PresenceEvent): void => {
    switch (event.type) {
      case 'member.joined':
        this.memberMessage('presence.join', event.channel, event.member, event.seq, event.answered);
        break;
      case 'member.updated':
      case 'member.meta':
        this.memberMessage('presence.update', event.channel, event.member, event.seq, event.answered);
        break;
      case 'member.left': {
        const channel = this.state.channels.get(event.channel);
        if (!channel) break;
        const message = { type: 'presence.leave', channel: event.channel, userId: event.userId, lastSeen: event.lastSeen, seq: event.seq } as const;
        this.toChannel(channel, 'presence.leave', JSON.stringify(message), event.seq);
        break;
      }
      case 'typing.started':
      case 'typing.stopped': {
        const channel = this.state.channels.get(event.channel);
        if (!channel) break;
        const message = { type: 'typing', channel: event.channel, userId: event.userId, typing: event.type === 'typing.started' } as const;
        // Never to the typer's own sessions.
        this.toChannel(channel, 'typing', JSON.stringify(message), undefined, undefined, event.userId);
        break;
      }
      default:
        this.toWatchers(event);
    }
  };

  send(session: Session, message: ServerMessage): void {
    if (!session.sink) return;
    session.sink.send(JSON.stringify(message), message.type);
    this.observer?.sent(message.type, 1);
  }

  /** `presence.sync`, assembled from each member's cached JSON (the same shape JSON.stringify gives). */
  sync(session: Session, channel: Channel): void {
    if (!session.sink) return;
    const parts: string[] = [];
    for (const member of channel.members.values()) {
      if (member.user.announcedVisible) parts.push(memberJson(member));
    }
    session.sink.send(
      `{"type":"presence.sync","channel":${JSON.stringify(channel.name)},"members":[${parts.join(',')}],"seq":${channel.seq}}`,
      'presence.sync',
      channel.name,
      channel.seq,
    );
    this.observer?.sent('presence.sync', 1);
  }

  /**
   * `presence.join` / `presence.update` with the member's cached JSON spliced in: the same bytes
   * `JSON.stringify` gives for the message, without building or serializing the member again.
   */
  private memberMessage(type: 'presence.join' | 'presence.update', name: string, member: ChannelMember, seq: number, answered?: Session): void {
    const channel = this.state.channels.get(name);
    if (!channel) return;
    const json = `{"type":"${type}","channel":${JSON.stringify(name)},"member":${memberJson(member)},"seq":${seq}}`;
    this.toChannel(channel, type, json, seq, answered);
  }

  /** Sends one pre-built message to every session in the channel but the excluded ones. */
  private toChannel(channel: Channel, type: ServerMessage['type'], json: string, seq: number | undefined, exceptSession?: Session, exceptUserId?: string): void {
    let receivers = 0;
    for (const member of channel.members.values()) {
      if (exceptUserId !== undefined && member.user.record.userId === exceptUserId) continue;
      for (const session of member.sessions) {
        const sink = session.sink;
        if (sink === null || session === exceptSession) continue;
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

/**
 * The member as JSON, cached while the user's announced view and the channel meta stay the same
 * objects. Only the string is kept (not the view it came from): it is all a sync or an event
 * needs, and a view with its date strings would double what every membership holds.
 */
function memberJson(member: ChannelMember): string {
  const { rendered } = member;
  if (rendered && rendered.published === member.user.published && rendered.channelMeta === member.channelMeta) return rendered.json;
  const json = flat(JSON.stringify(memberView(member.user.published, member.channelMeta, shownJoinedAt(member))));
  member.rendered = { published: member.user.published, channelMeta: member.channelMeta, json };
  return json;
}

/**
 * The same string, stored flat. V8 builds a long JSON.stringify result as a tree of pieces; this
 * one is kept for as long as the membership lasts, and the tree costs about 100 bytes more than
 * one flat string. Converting it to a number makes V8 flatten it in place (the result is unused).
 */
function flat(text: string): string {
  Number(text);
  return text;
}
