import { createHmac, randomUUID } from 'node:crypto';
import type { PresenceEvent } from '../presence/events.js';
import { derivedId, type ChannelOccupancy } from './event-mapper.js';
import type { OutgoingEvent, WebhookFormat } from './format.js';
import { createHttpSender } from './http-sender.js';
import type { ShownState } from './outbox-file.js';

/*
 * Pusher-format webhooks (docs/pusher.md#webhooks), through the same delivery as Presence's own:
 * `{"time_ms", "events": [event]}` signed with the app secret in `X-Pusher-Signature`, one event
 * per POST. `member_added`, `member_removed` and a presence channel's `channel_occupied` /
 * `channel_vacated` follow the Presence channel's visible members (so the offline delay applies);
 * public and private channels are occupied by their subscribers, and `client_event` reports a
 * relayed client event: those two come from the Pusher protocol through `hooks`.
 */

export const PUSHER_OUTBOX_FILE = 'pusher-webhooks.jsonl';

export type PusherWebhookName = 'channel_occupied' | 'channel_vacated' | 'member_added' | 'member_removed' | 'client_event';

/** One event of Pusher's webhook body. */
export interface PusherWebhookBodyEvent {
  name: PusherWebhookName;
  channel: string;
  user_id?: string;
  event?: string;
  data?: string;
  socket_id?: string;
}

export interface PusherWebhookEvent extends OutgoingEvent {
  readonly type: PusherWebhookName;
  /** When the change happened (ms since the epoch): the body's `time_ms`. */
  readonly time_ms: number;
  readonly event: PusherWebhookBodyEvent;
}

export interface PusherFormatOptions {
  key: string;
  secret: string;
  timeoutMs: number;
  occupancy: ChannelOccupancy;
  now: () => number;
}

const PRESENCE_PREFIX = 'presence-';

/** The native channel a Pusher channel name stands for (`presence-X` is X); other names as they are. */
function nativeChannel(channel: string): string {
  return channel.startsWith(PRESENCE_PREFIX) ? channel.slice(PRESENCE_PREFIX.length) : channel;
}

/** The body of one POST. */
export function pusherWebhookBody(event: PusherWebhookEvent): string {
  return JSON.stringify({ time_ms: event.time_ms, events: [event.event] });
}

export function pusherFormat(options: PusherFormatOptions): WebhookFormat<PusherWebhookEvent> {
  const { key, secret, timeoutMs, now, occupancy } = options;
  const make = (id: string, event: PusherWebhookBodyEvent): PusherWebhookEvent => ({ id, type: event.name, time_ms: now(), event });
  return {
    name: 'pusher',
    outboxFile: PUSHER_OUTBOX_FILE,
    map(event: PresenceEvent): PusherWebhookEvent[] {
      if (event.type !== 'member.joined' && event.type !== 'member.left') return [];
      const channel = PRESENCE_PREFIX + event.channel;
      const out: PusherWebhookEvent[] = [];
      const alone = !occupancy.hasOtherVisibleMember(event.channel, event.userId);
      // Occupied before its first member comes, vacated after its last one went, as Pusher orders them.
      if (event.type === 'member.joined') {
        if (alone) out.push(make(derivedId(event.id, 'channel_occupied', channel, event.userId), { name: 'channel_occupied', channel }));
        out.push(make(event.id, { name: 'member_added', channel, user_id: event.userId }));
      } else {
        out.push(make(event.id, { name: 'member_removed', channel, user_id: event.userId }));
        if (alone) out.push(make(derivedId(event.id, 'channel_vacated', channel, event.userId), { name: 'channel_vacated', channel }));
      }
      return out;
    },
    // A presence channel's events are ordered in the native channel's queue: in a cluster that is
    // the slot whose index decides occupied and vacated (docs/webhooks.md#clusters).
    key: (event) => `channel:${nativeChannel(event.event.channel)}`,
    shownChannel: (channel) => PRESENCE_PREFIX + channel,
    sender: (url) =>
      createHttpSender({
        url,
        secrets: [secret],
        timeoutMs,
        now,
        request: (entry) => {
          // From the stored body: in a cluster the queue's entry carries only the event's id and type.
          const body = pusherWebhookBody(JSON.parse(entry.body) as PusherWebhookEvent);
          return { body, headers: { 'x-pusher-key': key, 'x-pusher-signature': createHmac('sha256', secret).update(body).digest('hex') } };
        },
      }),
    occupancy: (event) => (event.event.name === 'channel_occupied' ? 'occupied' : event.event.name === 'channel_vacated' ? 'vacated' : undefined),
    track(event: PusherWebhookEvent, shown: ShownState): void {
      const { name, channel, user_id: userId } = event.event;
      if (name === 'channel_occupied') shown.memberShown(channel, undefined);
      else if (name === 'member_added' && userId !== undefined) shown.memberShown(channel, userId);
      else if (name === 'member_removed' && userId !== undefined) shown.memberGone(channel, userId);
      else if (name === 'channel_vacated') shown.channels.delete(channel);
    },
    reap(shown: ShownState, cause: string, _at: number, vacated?: ReadonlySet<string>): PusherWebhookEvent[] {
      const out: PusherWebhookEvent[] = [];
      for (const [channel, members] of shown.channels) {
        for (const userId of members) out.push(make(`${cause}/member_removed/${channel}/${userId}`, { name: 'member_removed', channel, user_id: userId }));
        if (vacated === undefined || vacated.has(channel)) out.push(make(`${cause}/channel_vacated/${channel}/`, { name: 'channel_vacated', channel }));
      }
      return out;
    },
  };
}

/**
 * What the Pusher protocol reports that the presence events do not (its `PusherHooks`): public
 * and private channels occupied and vacated by their subscribers, and relayed client events.
 */
export function pusherProtocolHooks(webhooks: { send(events: readonly PusherWebhookEvent[]): void }, now: () => number) {
  const cause = `pusher-${randomUUID().slice(0, 8)}`;
  let counter = 0;
  const send = (event: PusherWebhookBodyEvent) => {
    const id = `${cause}.${(counter += 1).toString(36)}/${event.name}/${event.channel}/${event.user_id ?? ''}`;
    webhooks.send([{ id, type: event.name, time_ms: now(), event }]);
  };
  return {
    occupied: (channel: string) => send({ name: 'channel_occupied', channel }),
    vacated: (channel: string) => send({ name: 'channel_vacated', channel }),
    clientEvent: (e: { channel: string; event: string; data: string; socketId: string; userId?: string }) =>
      send({ name: 'client_event', channel: e.channel, event: e.event, data: e.data, socket_id: e.socketId, ...(e.userId !== undefined ? { user_id: e.userId } : {}) }),
  };
}
