import type { UserPresence, WebhookEvent, WebhookEventType } from '@presence/protocol';
import type { WebhookConfig } from '../config/config.js';
import type { PresenceEvent } from '../presence/events.js';
import { WebhookEventMapper, orderingKey, type ChannelOccupancy } from './event-mapper.js';
import type { WebhookFormat } from './format.js';
import { createHttpSender } from './http-sender.js';
import type { ShownState } from './outbox-file.js';
import { OUTBOX_FILE } from './outbox-file.js';

export interface PresenceFormatOptions {
  config: WebhookConfig;
  /** The model's state, read while an event is emitted (channel occupied / vacated). */
  occupancy: ChannelOccupancy;
  /** A user's presence as a trusted caller sees it: the offline view of a user reaped at start. */
  userView: (userId: string) => UserPresence;
  now: () => number;
}

/** Presence's own webhooks (docs/webhooks.md): `Presence-Signature`, one event per POST. */
export function presenceFormat(options: PresenceFormatOptions): WebhookFormat<WebhookEvent> {
  const { config, now } = options;
  const wanted: ReadonlySet<WebhookEventType> = new Set(config.events);
  const mapper = new WebhookEventMapper(config.events, options.occupancy, now);
  return {
    name: 'presence',
    outboxFile: OUTBOX_FILE,
    map: (event: PresenceEvent) => mapper.map(event),
    key: orderingKey,
    sender: (url) => createHttpSender({ url, secrets: config.secrets, timeoutMs: config.timeoutMs, now }),
    occupancy: (event) => (event.type === 'channel.occupied' ? 'occupied' : event.type === 'channel.vacated' ? 'vacated' : undefined),
    track: (event, shown) => shown.apply(event),
    reap(shown: ShownState, cause: string, at: number, vacated?: ReadonlySet<string>): WebhookEvent[] {
      const createdAt = new Date(at).toISOString();
      const events: WebhookEvent[] = [];
      const views = new Map<string, UserPresence>();
      const viewOf = (userId: string) => {
        let view = views.get(userId);
        if (!view) views.set(userId, (view = options.userView(userId)));
        return view;
      };
      for (const [channel, members] of shown.channels) {
        for (const userId of members) {
          if (wanted.has('channel.member_left')) {
            events.push({ id: `${cause}/member.left/${channel}/${userId}`, type: 'channel.member_left', createdAt, data: { channel, userId, lastSeen: viewOf(userId).lastSeen } });
          }
        }
        if (wanted.has('channel.vacated') && members.size > 0 && (vacated === undefined || vacated.has(channel))) {
          events.push({ id: `${cause}/channel.vacated/${channel}/`, type: 'channel.vacated', createdAt, data: { channel } });
        }
      }
      for (const userId of shown.users) {
        if (!wanted.has('user.offline')) break;
        const view = viewOf(userId);
        events.push({ id: `${cause}/user.offline//${userId}`, type: 'user.offline', createdAt, data: { userId, user: view, lastSeen: view.lastSeen } });
      }
      return events;
    },
  };
}
