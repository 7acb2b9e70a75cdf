import type { Meta, UserPresence } from '@presence/protocol';
import type { ChannelMember, Session } from './state.js';

/*
 * What the presence model tells the world: one typed stream of domain events. The protocol-v1
 * fan-out is one listener of it; webhooks, other wire protocols or an audit log are others. The
 * events describe what others may see: an invisible user produces exactly what an offline user
 * would (a leave and `user.offline`, then nothing until they come back into sight).
 */

/** Fields every event has. */
interface EventBase {
  /**
   * Names the change, not the emission: every node that emits the same change gives it the same
   * id (`<cause>/<type>/<channel>/<user>`, the cause being the origin node's change number, which
   * travels with the replicated operation or record). Use it to deduplicate.
   */
  id: string;
  /**
   * True when the change was made on this node (a command, a timer or an HTTP call here); false
   * when this node learnt of another node's change (a replicated operation, a read of the shared
   * state). In a cluster, webhooks queue only the local ones: each change is queued by its writer.
   */
  local: boolean;
  userId: string;
  /** The user's presence as everyone may see it after the change (offline when hidden). */
  view: UserPresence;
}

/** Fields of the events about one user as a whole (sent to their watchers in protocol v1). */
interface UserEventBase extends EventBase {
  /**
   * Who may see the user changed too (visibility or contacts): a listener that applies privacy
   * must re-evaluate every viewer, including those it used to hide the user from.
   */
  privacyChanged: boolean;
}

/** The user came into sight: first session, back from invisible, or a crashed node's users back. */
export interface UserOnlineEvent extends UserEventBase {
  type: 'user.online';
}

/** The user left sight: last session ended (after the offline delay), logout, or went invisible. */
export interface UserOfflineEvent extends UserEventBase {
  type: 'user.offline';
  /** When they were last seen (frozen at the moment they went invisible). */
  lastSeen: string | null;
}

/**
 * The user's status as others see it changed: manual status, custom state, message, expiry,
 * idle/active, devices or last activity. `metaChanged` says the user meta changed in the same step.
 */
export interface UserStatusEvent extends UserEventBase {
  type: 'user.status';
  metaChanged: boolean;
}

/** Only the user's meta (name, avatar …) changed. */
export interface UserMetaEvent extends UserEventBase {
  type: 'user.meta';
}

/** Nothing others see changed, but who may see it did (visibility or contacts). */
export interface UserPrivacyEvent extends UserEventBase {
  type: 'user.privacy';
}

/** Fields of the events of one channel: each takes the channel's next `seq`. */
interface ChannelEventBase extends EventBase {
  channel: string;
  /** The channel's sequence number on this node, one more than its previous event's. */
  seq: number;
}

/** Fields of the events that carry the member as others now see them. */
interface MemberEventBase extends ChannelEventBase {
  /** The membership (the user's announced view plus channel meta and `joinedAt`). */
  member: ChannelMember;
  channelMeta: Meta;
  /** When the user last came into sight in the channel (ms since the epoch). */
  joinedAt: number;
  /**
   * A session that gets its own answer instead of this event (the joiner gets `presence.sync`).
   * Listeners that do not write to sessions ignore it.
   */
  answered?: Session;
}

/** A user became a visible member: first session joined, or came into sight while joined. */
export interface MemberJoinedEvent extends MemberEventBase {
  type: 'member.joined';
}

/** The presence of a member changed (the same change as the user event beside it). */
export interface MemberUpdatedEvent extends MemberEventBase {
  type: 'member.updated';
}

/** The member's own meta in this channel (cursor, mode …) changed. */
export interface MemberMetaEvent extends MemberEventBase {
  type: 'member.meta';
}

/** A visible member left: last session left or ended, or the user went out of sight. */
export interface MemberLeftEvent extends ChannelEventBase {
  type: 'member.left';
  lastSeen: string | null;
}

/** Typing started or stopped (refreshes are not events). Never for an invisible user. */
export interface TypingEvent {
  type: 'typing.started' | 'typing.stopped';
  id: string;
  local: boolean;
  channel: string;
  userId: string;
}

export type UserEvent = UserOnlineEvent | UserOfflineEvent | UserStatusEvent | UserMetaEvent | UserPrivacyEvent;
export type MemberEvent = MemberJoinedEvent | MemberUpdatedEvent | MemberMetaEvent | MemberLeftEvent;
export type PresenceEvent = UserEvent | MemberEvent | TypingEvent;
export type PresenceEventType = PresenceEvent['type'];

/**
 * Receives every event, synchronously and in order, while the model's state is the state right
 * after the change: a listener may read it (who is in the channel) but must not change it.
 */
export type PresenceEventListener = (event: PresenceEvent) => void;

/**
 * Where an event's id comes from. Every entry into the model (a command, a timer, an HTTP call,
 * a replicated operation) runs inside one cause; the ids of the events it causes are derived from
 * it, and replicated operations carry it so other nodes derive the same ids.
 */
export class ChangeCauses {
  private counter = 0;
  private current: { id: string; local: boolean } | undefined;

  private readonly prefix: string;

  /** `bootId` is unique to this process: a node restarted under the same name numbers anew. */
  constructor(private readonly bootId: string) {
    this.prefix = `${bootId}.`;
  }

  /** Runs `change` as a new change of this node. Nested calls keep the outer cause. */
  local<T>(change: () => T): T {
    if (this.current) return change();
    return this.run({ id: this.nextLocalId(), local: true }, change);
  }

  /**
   * Runs `change` as what this node learnt from the shared state without a change to name (a read
   * of a shard): fresh ids, but not a change made here.
   */
  observed<T>(change: () => T): T {
    if (this.current) return change();
    return this.run({ id: this.nextLocalId(), local: false }, change);
  }

  /**
   * Runs `change` as the effect of a change named `id` by its origin: another node, or this one
   * when its own write comes back through the shared store.
   */
  remote<T>(id: string, change: () => T): T {
    return this.run({ id, local: id.startsWith(this.prefix) }, change);
  }

  /** The cause of what runs now; a fresh local one outside any change (not expected, but safe). */
  now(): { id: string; local: boolean } {
    return this.current ?? { id: this.nextLocalId(), local: true };
  }

  private nextLocalId(): string {
    return `${this.prefix}${(this.counter += 1).toString(36)}`;
  }

  private run<T>(cause: { id: string; local: boolean }, change: () => T): T {
    const outer = this.current;
    this.current = cause;
    try {
      return change();
    } finally {
      this.current = outer;
    }
  }
}
