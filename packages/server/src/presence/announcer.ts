import type { Status } from '@presence/protocol';
import type { StateBase } from '../config/config.js';
import type { ChangeCauses, PresenceEvent, PresenceEventListener, UserEvent } from './events.js';
import type { Channel, ChannelMember, PresenceState, Session, UserState } from './state.js';
import { factsOf, isVisible, publicView, sameVisiblePresence, shownJoinedAt } from './user-presence.js';

/**
 * Turns changes of the model's state into domain events. It alone decides what others were told:
 * it compares a user's presence with the view last announced, flips visibility (a join or a leave
 * in every channel of the user), numbers each channel's events, and hands every event to the
 * listeners in order.
 */
export class Announcer {
  private readonly listeners: PresenceEventListener[] = [];
  /** Users others can see now, kept as visibility flips so stats cost nothing. */
  visibleUserCount = 0;

  constructor(
    private readonly state: PresenceState,
    private readonly states: Record<string, StateBase>,
    private readonly causes: ChangeCauses,
    /** Called before a user leaves sight in a channel: typing ends first, as it would on a leave. */
    private readonly beforeHidden: (channel: Channel, user: UserState) => void,
  ) {}

  subscribe(listener: PresenceEventListener): () => void {
    this.listeners.push(listener);
    return () => {
      const at = this.listeners.indexOf(listener);
      if (at >= 0) this.listeners.splice(at, 1);
    };
  }

  /** A user dropped from this node without events (nobody here can see them any more). */
  forget(user: UserState): void {
    if (user.announcedVisible) this.visibleUserCount -= 1;
    user.announcedVisible = false;
  }

  /**
   * Compares the user's presence with what others were last told and announces the difference:
   * join/leave in every channel when visibility flips, update otherwise, and the user event.
   */
  announce(user: UserState, privacyChanged = false): void {
    const facts = factsOf(user);
    const visible = isVisible(facts);
    const view = publicView(facts, this.states);
    const before = user.published;
    const wasVisible = user.announcedVisible;
    const shownAt = user.record.shownAt;
    // A node that missed the user's time out of sight (it read only the newest record) still owes
    // its members the join times that moved with it.
    const reshown = visible && wasVisible && shownAt !== user.shownAt;
    const changed = !sameVisiblePresence(view, before) || visible !== wasVisible || reshown;
    const userId = user.record.userId;
    if (!changed) {
      // Keep the announced view as it was (timestamps included): snapshots must match the events.
      if (privacyChanged) this.emitUser({ type: 'user.privacy', userId, view: before, privacyChanged: true });
      return;
    }
    user.published = view;
    user.announcedVisible = visible;
    user.shownAt = shownAt;
    if (visible !== wasVisible) this.visibleUserCount += visible ? 1 : -1;

    for (const name of user.channels) {
      const channel = this.state.channels.get(name);
      if (!channel) continue;
      const member = channel.members.get(userId)!;
      if (visible && !wasVisible) {
        this.memberJoined(channel, member);
      } else if (!visible && wasVisible) {
        this.beforeHidden(channel, user);
        this.memberLeft(channel, user, view.lastSeen, before.status);
      } else if (visible) {
        if (view.status !== before.status) {
          count(channel, before.status, -1);
          count(channel, view.status, 1);
        }
        this.memberChanged('member.updated', channel, member);
      }
    }
    if (visible && !wasVisible) this.emitUser({ type: 'user.online', userId, view, privacyChanged });
    else if (!visible && wasVisible) this.emitUser({ type: 'user.offline', userId, view, privacyChanged, lastSeen: view.lastSeen });
    else {
      // Metas are replaced, never mutated: a new object is a change.
      const metaChanged = view.meta !== before.meta;
      const onlyMeta = metaChanged && sameVisiblePresence({ ...view, meta: before.meta }, before);
      if (onlyMeta) this.emitUser({ type: 'user.meta', userId, view, privacyChanged });
      else this.emitUser({ type: 'user.status', userId, view, privacyChanged, metaChanged });
    }
  }

  /** The user is a new visible member (or came into sight there). */
  memberJoined(channel: Channel, member: ChannelMember, answered?: Session): void {
    count(channel, member.user.published.status, 1);
    this.memberChanged('member.joined', channel, member, answered);
  }

  /** The member's view or channel meta changed. */
  memberChanged(type: 'member.joined' | 'member.updated' | 'member.meta', channel: Channel, member: ChannelMember, answered?: Session): void {
    const user = member.user;
    const userId = user.record.userId;
    const cause = this.causes.now();
    this.emit({
      type,
      id: `${cause.id}/${type}/${channel.name}/${userId}`,
      local: cause.local,
      channel: channel.name,
      seq: ++channel.seq,
      userId,
      view: user.published,
      member,
      channelMeta: member.channelMeta,
      joinedAt: shownJoinedAt(member),
      answered,
    });
  }

  /**
   * A visible member is gone from the channel (the caller has removed them already, or will).
   * `countedStatus`: the status they were counted under (the announced one, unless the caller
   * is announcing a new view right now).
   */
  memberLeft(channel: Channel, user: UserState, lastSeen: string | null, countedStatus: Status = user.published.status): void {
    count(channel, countedStatus, -1);
    const userId = user.record.userId;
    const cause = this.causes.now();
    const id = `${cause.id}/member.left/${channel.name}/${userId}`;
    // With their last session gone the user is out of sight, though not announced so yet.
    const view = user.sessions.size === 0 ? publicView(factsOf(user), this.states) : user.published;
    this.emit({ type: 'member.left', id, local: cause.local, channel: channel.name, seq: ++channel.seq, userId, view, lastSeen });
  }

  typing(channel: Channel, userId: string, typing: boolean): void {
    const type = typing ? 'typing.started' : 'typing.stopped';
    const cause = this.causes.now();
    this.emit({ type, id: `${cause.id}/${type}/${channel.name}/${userId}`, local: cause.local, channel: channel.name, userId });
  }

  private emitUser(event: DistributiveOmit<UserEvent, 'id' | 'local'>): void {
    const cause = this.causes.now();
    this.emit({ ...event, id: `${cause.id}/${event.type}//${event.userId}`, local: cause.local } as UserEvent);
  }

  private emit(event: PresenceEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Moves a visible member in or out of the channel's count of their status. */
function count(channel: Channel, status: Status, delta: 1 | -1): void {
  if (status !== 'offline') channel.counts[status] += delta;
}
