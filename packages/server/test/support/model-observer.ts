import assert from 'node:assert/strict';
import type { Member, ServerMessage } from '@presence/protocol';

/*
 * What one connection makes of the frames it receives, as a client SDK would: the member list of
 * each channel (its first `presence.sync` with every later join, leave and update applied) and
 * who is typing. Checks on the way what must hold of any frame sequence: `seq` runs without
 * gaps, a re-sync equals the replayed list, joins and leaves alternate, an update changes
 * something, nobody is shown offline in a list, and typing is never echoed to the typist.
 */

export interface ChannelView {
  /** `members`: the v1 list and events; `occupancy`: counts and a sample (large rooms). */
  mode: 'members' | 'occupancy';
  members: Map<string, Member>;
  seq: number;
  /** The model step of the sync this view started from: typing that started before it is unknown here. */
  syncStep: number;
  typing: Set<string>;
  /** Occupancy mode: what the last `presence.occupancy` messages said (`members` holds the sample). */
  count: number;
  statuses: { online: number; away: number; busy: number };
  /**
   * The members held at the last check of this view (or its sync), and the joins and leaves seen
   * since, per user: between two checks a user flips once when their membership changed, else never.
   */
  baseline: Set<string>;
  flips: Map<string, number>;
}

/** What the frames of one step said, for the flap and leak checks. */
export interface StepReport {
  /** `channel\0userId` → number of joins and leaves seen. */
  flips: Map<string, number>;
  /** Users shown as present (join, update, sync member, typing: true), per channel. */
  shown: { channel: string; userId: string; how: string }[];
}

const visibleFields = (m: Member) => JSON.stringify({ ...m, lastSeen: undefined, lastActive: undefined });

/** A view from a member list: a fresh start (nothing before it is known here). */
function freshView(members: Map<string, Member>, seq: number, step: number): ChannelView {
  return {
    mode: 'members',
    members,
    seq,
    syncStep: step,
    typing: new Set(),
    count: 0,
    statuses: { online: 0, away: 0, busy: 0 },
    baseline: new Set(members.keys()),
    flips: new Map(),
  };
}

export class ObserverLog {
  readonly views = new Map<string, ChannelView>();

  /**
   * @param windowed the channels may be large rooms: a window's update may carry only moved
   *   `lastSeen`/`lastActive` (a change and its undoing inside one window, timestamps moved).
   */
  constructor(
    readonly userId: string,
    readonly label: string,
    private readonly windowed = false,
  ) {}

  consume(frames: ServerMessage[], step: number): StepReport {
    const report: StepReport = { flips: new Map(), shown: [] };
    const flip = (channel: string, userId: string) => {
      const k = `${channel}\u0000${userId}`;
      report.flips.set(k, (report.flips.get(k) ?? 0) + 1);
      const view = this.views.get(channel)!;
      view.flips.set(userId, (view.flips.get(userId) ?? 0) + 1);
    };
    for (const frame of frames) {
      switch (frame.type) {
        case 'presence.sync': {
          const view = this.views.get(frame.channel);
          const members = new Map(frame.members.map((m) => [m.userId, m]));
          for (const m of frame.members) {
            assert.notEqual(m.status, 'offline', `${this.label}: a sync of ${frame.channel} lists ${m.userId} as offline`);
            report.shown.push({ channel: frame.channel, userId: m.userId, how: 'sync' });
          }
          if (view && view.mode === 'members') {
            // The same connection, still in the channel: the diffs it applied must add up to this.
            assert.equal(frame.seq, view.seq, `${this.label}: a re-sync of ${frame.channel} has seq ${frame.seq}, the events reached ${view.seq}`);
            assert.deepEqual(sorted(view.members), sorted(members), `${this.label}: replayed events of ${frame.channel} differ from the new sync`);
            view.members = members;
          } else {
            // The first list, or the end of occupancy mode: the list starts anew.
            this.views.set(frame.channel, freshView(members, frame.seq, step));
          }
          break;
        }
        case 'presence.occupancy': {
          let view = this.views.get(frame.channel);
          const members = frame.sample ?? frame.added ?? [];
          for (const m of members) {
            assert.notEqual(m.status, 'offline', `${this.label}: the sample of ${frame.channel} shows ${m.userId} offline`);
            report.shown.push({ channel: frame.channel, userId: m.userId, how: 'sample' });
          }
          if (frame.sample) {
            view = freshView(new Map(frame.sample.map((m) => [m.userId, m])), -1, step);
            view.mode = 'occupancy';
            this.views.set(frame.channel, view);
          } else {
            assert.ok(view?.mode === 'occupancy', `${this.label}: a sample diff of ${frame.channel} without a whole sample first`);
            for (const userId of frame.removed ?? []) {
              assert.ok(view.members.delete(userId), `${this.label}: ${userId} removed from a sample of ${frame.channel} that did not hold them`);
            }
            for (const m of frame.added ?? []) view.members.set(m.userId, m);
          }
          view.count = frame.count;
          view.statuses = frame.statuses;
          assert.equal(frame.statuses.online + frame.statuses.away + frame.statuses.busy, frame.count, `${this.label}: statuses of ${frame.channel} do not add up to the count`);
          if (frame.typing) view.typing = new Set(frame.typing);
          else assert.ok(frame.added === undefined && frame.removed === undefined, `${this.label}: a sample diff without typing`);
          break;
        }
        case 'presence.join':
        case 'presence.update':
        case 'presence.leave': {
          const view = this.views.get(frame.channel);
          assert.ok(view, `${this.label}: ${frame.type} for ${frame.channel} without a sync first (or after leaving it)`);
          assert.equal(view.mode, 'members', `${this.label}: ${frame.type} for ${frame.channel} in occupancy mode`);
          assert.equal(frame.seq, view.seq + 1, `${this.label}: seq gap in ${frame.channel}: ${view.seq} then ${frame.seq}`);
          view.seq = frame.seq;
          if (frame.type === 'presence.leave') {
            assert.ok(view.members.has(frame.userId), `${this.label}: leave of ${frame.userId}, who was not listed in ${frame.channel}`);
            view.members.delete(frame.userId);
            flip(frame.channel, frame.userId);
            break;
          }
          const { member } = frame;
          assert.notEqual(member.status, 'offline', `${this.label}: ${frame.type} shows ${member.userId} offline in ${frame.channel}`);
          const before = view.members.get(member.userId);
          if (frame.type === 'presence.join') {
            assert.equal(before, undefined, `${this.label}: second join of ${member.userId} in ${frame.channel}`);
            flip(frame.channel, member.userId);
          } else {
            assert.ok(before, `${this.label}: update of ${member.userId}, who is not listed in ${frame.channel}`);
            if (this.windowed) assert.notEqual(JSON.stringify(member), JSON.stringify(before), `${this.label}: a window's update of ${member.userId} in ${frame.channel} that changes nothing`);
            else assert.notEqual(visibleFields(member), visibleFields(before), `${this.label}: an update of ${member.userId} in ${frame.channel} that changes nothing`);
          }
          view.members.set(member.userId, member);
          report.shown.push({ channel: frame.channel, userId: member.userId, how: frame.type });
          break;
        }
        case 'typing': {
          const view = this.views.get(frame.channel);
          assert.ok(view, `${this.label}: typing in ${frame.channel}, which it is not in`);
          assert.equal(view.mode, 'members', `${this.label}: a typing event in ${frame.channel} in occupancy mode`);
          assert.notEqual(frame.userId, this.userId, `${this.label}: typing echoed to the typist's own session`);
          if (frame.typing) {
            assert.ok(!view.typing.has(frame.userId), `${this.label}: typing: true twice for ${frame.userId} (only transitions are sent)`);
            view.typing.add(frame.userId);
            report.shown.push({ channel: frame.channel, userId: frame.userId, how: 'typing' });
          } else {
            view.typing.delete(frame.userId);
          }
          break;
        }
        default:
          break;
      }
    }
    return report;
  }

  /** The connection's session left these channels (or the connection ended): no more events. */
  keepOnly(channels: Iterable<string>): void {
    const keep = new Set(channels);
    for (const name of [...this.views.keys()]) if (!keep.has(name)) this.views.delete(name);
  }
}

export function sorted(members: Map<string, Member> | Member[]): Member[] {
  const list = members instanceof Map ? [...members.values()] : [...members];
  return list.sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
}
