import type { WebhookEvent, WebhookEventType } from '@presence/protocol';
import type { PresenceEvent } from '../presence/events.js';
import { memberView } from '../presence/user-presence.js';

/*
 * Presence events → webhook events. The webhook events are a public contract of their own (the
 * schemas in @presence/protocol), so the model's internals (`seq`, which is per node, `local`,
 * `privacyChanged`) stay out of them; `id` is the presence event's, the same on every node.
 */

/** What the mapper reads from the model's state at the moment of the event. */
export interface ChannelOccupancy {
  /** Anyone but `userId` visible in the channel now (see `PresenceReader.hasOtherVisibleMember`). */
  hasOtherVisibleMember(channel: string, userId: string): boolean;
}

/**
 * Maps each presence event to the webhook events it stands for, keeping only the wanted types.
 * `channel.occupied` and `channel.vacated` are derived from the state when a member joins or
 * leaves: nobody else visible there means the channel just got its first visible member or lost
 * its last. An invisible user produces exactly what going offline produces, because the presence
 * events already do.
 */
export class WebhookEventMapper {
  private readonly wanted: ReadonlySet<WebhookEventType>;

  constructor(
    wanted: Iterable<WebhookEventType>,
    private readonly occupancy: ChannelOccupancy,
    private readonly now: () => number,
  ) {
    this.wanted = new Set(wanted);
  }

  /** Whether the mapper can produce anything from this event at all (a cheap filter). */
  wants(type: WebhookEventType): boolean {
    return this.wanted.has(type);
  }

  map(event: PresenceEvent): WebhookEvent[] {
    const out: WebhookEvent[] = [];
    const createdAt = new Date(this.now()).toISOString();
    const want = (type: WebhookEventType) => this.wanted.has(type);
    switch (event.type) {
      case 'user.online':
      case 'user.status':
      case 'user.meta':
        if (want(event.type)) out.push({ id: event.id, type: event.type, createdAt, data: { userId: event.userId, user: event.view } });
        break;
      case 'user.offline':
        if (want('user.offline')) {
          out.push({ id: event.id, type: 'user.offline', createdAt, data: { userId: event.userId, user: event.view, lastSeen: event.lastSeen } });
        }
        break;
      case 'user.privacy':
        // Who may see the user changed, not what they are: webhooks go to a trusted backend.
        break;
      case 'member.joined': {
        if (want('channel.member_joined')) {
          out.push({
            id: event.id,
            type: 'channel.member_joined',
            createdAt,
            data: { channel: event.channel, userId: event.userId, member: memberView(event.view, event.channelMeta, event.joinedAt) },
          });
        }
        if (want('channel.occupied') && !this.occupancy.hasOtherVisibleMember(event.channel, event.userId)) {
          out.push({ id: derivedId(event.id, 'channel.occupied', event.channel, event.userId), type: 'channel.occupied', createdAt, data: { channel: event.channel } });
        }
        break;
      }
      case 'member.left': {
        if (want('channel.member_left')) {
          out.push({ id: event.id, type: 'channel.member_left', createdAt, data: { channel: event.channel, userId: event.userId, lastSeen: event.lastSeen } });
        }
        if (want('channel.vacated') && !this.occupancy.hasOtherVisibleMember(event.channel, event.userId)) {
          out.push({ id: derivedId(event.id, 'channel.vacated', event.channel, event.userId), type: 'channel.vacated', createdAt, data: { channel: event.channel } });
        }
        break;
      }
      case 'member.updated':
      case 'member.meta':
        if (want('channel.member_updated')) {
          out.push({
            id: event.id,
            type: 'channel.member_updated',
            createdAt,
            data: {
              channel: event.channel,
              userId: event.userId,
              member: memberView(event.view, event.channelMeta, event.joinedAt),
              change: event.type === 'member.meta' ? 'channel_meta' : 'presence',
            },
          });
        }
        break;
      case 'typing.started':
      case 'typing.stopped':
        if (want(event.type)) out.push({ id: event.id, type: event.type, createdAt, data: { channel: event.channel, userId: event.userId } });
        break;
    }
    return out;
  }
}

/**
 * The id of an event derived from a member event: the same cause (the part before the first `/`,
 * which cause ids never contain), so every node derives the same id from the same change.
 */
export function derivedId(memberEventId: string, type: string, channel: string, userId: string): string {
  const slash = memberEventId.indexOf('/');
  const cause = slash === -1 ? memberEventId : memberEventId.slice(0, slash);
  return `${cause}/${type}/${channel}/${userId}`;
}

/** The ordering key: one per user for user events, one per channel for channel and typing events. */
export function orderingKey(event: WebhookEvent): string {
  const data = event.data as { userId?: string; channel?: string };
  return data.channel === undefined ? `user:${data.userId}` : `channel:${data.channel}`;
}
