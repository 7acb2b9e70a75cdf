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
  members: Map<string, Member>;
  seq: number;
  /** The model step of the sync this view started from: typing that started before it is unknown here. */
  syncStep: number;
  typing: Set<string>;
}

/** What the frames of one step said, for the flap and leak checks. */
export interface StepReport {
  /** `channel\0userId` → number of joins and leaves seen. */
  flips: Map<string, number>;
  /** Users shown as present (join, update, sync member, typing: true), per channel. */
  shown: { channel: string; userId: string; how: string }[];
}

const visibleFields = (m: Member) => JSON.stringify({ ...m, lastSeen: undefined, lastActive: undefined });

export class ObserverLog {
  readonly views = new Map<string, ChannelView>();

  constructor(
    readonly userId: string,
    readonly label: string,
  ) {}

  consume(frames: ServerMessage[], step: number): StepReport {
    const report: StepReport = { flips: new Map(), shown: [] };
    const flip = (channel: string, userId: string) => {
      const k = `${channel}\u0000${userId}`;
      report.flips.set(k, (report.flips.get(k) ?? 0) + 1);
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
          if (view) {
            // The same connection, still in the channel: the diffs it applied must add up to this.
            assert.equal(frame.seq, view.seq, `${this.label}: a re-sync of ${frame.channel} has seq ${frame.seq}, the events reached ${view.seq}`);
            assert.deepEqual(sorted(view.members), sorted(members), `${this.label}: replayed events of ${frame.channel} differ from the new sync`);
            view.members = members;
          } else {
            this.views.set(frame.channel, { members, seq: frame.seq, syncStep: step, typing: new Set() });
          }
          break;
        }
        case 'presence.join':
        case 'presence.update':
        case 'presence.leave': {
          const view = this.views.get(frame.channel);
          assert.ok(view, `${this.label}: ${frame.type} for ${frame.channel} without a sync first (or after leaving it)`);
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
            assert.notEqual(visibleFields(member), visibleFields(before), `${this.label}: an update of ${member.userId} in ${frame.channel} that changes nothing`);
          }
          view.members.set(member.userId, member);
          report.shown.push({ channel: frame.channel, userId: member.userId, how: frame.type });
          break;
        }
        case 'typing': {
          const view = this.views.get(frame.channel);
          assert.ok(view, `${this.label}: typing in ${frame.channel}, which it is not in`);
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
