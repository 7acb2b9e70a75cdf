import type { ServerMessage } from '@presence/protocol';
import type { LargeRoomSettings } from '../config/config.js';
import type { Clock, TimerHandle } from '../presence/clock.js';
import type { MemberEvent } from '../presence/events.js';
import type { Channel, PresenceState, Session, SessionSink, WindowFrame } from '../presence/state.js';
import { memberJson } from './member-json.js';
import {
  EMPTY_SAMPLE,
  diffFields,
  diffSamples,
  isEmptyDiff,
  personalIds,
  personalSample,
  sharedSample,
  wholeSample,
  type Sample,
  type SampleDiff,
} from './occupancy-sample.js';

/** What a room tells the fan-out's observer. */
export interface RoomObserver {
  /** `receivers` connections were sent one message of `type`. */
  sent(type: ServerMessage['type'], receivers: number): void;
  /** A room's mode started or ended. */
  modeChanged?(mode: 'window' | 'occupancy', on: boolean): void;
}

/** Recent joiners a room remembers for its sample, in multiples of the sample size. */
const RECENT_JOINS = 2;

/**
 * Protocol v1's state of one channel that reached a large-room threshold (docs/protocol.md,
 * "Large rooms"). Kept for as long as the channel exists: once windowed, the channel's `seq` on
 * the wire counts the messages sent, no longer the model's events.
 */
class Room {
  /** The `seq` of the last membership message v1 receivers were sent. */
  seq: number;
  /** Joins, leaves and updates go out once per window. */
  windowed = false;
  /** Sessions that opted in get occupancy instead of the member list. */
  occupancy = false;
  /** While windowed: every visible member's JSON as the v1 receivers hold it (as of the last window). */
  held: Map<string, string> | undefined = undefined;
  /** `presence.sync` of `held`, built once per window for every joiner of that window. */
  heldSync: string | undefined = undefined;
  /** Members changed in this window, with the `lastSeen` of their latest leave in it. */
  readonly pending = new Map<string, string | null>();
  timer: TimerHandle | undefined = undefined;
  timerDueAt = 0;
  /** `"count":…,"statuses":{…}` as last sent to occupancy receivers. */
  countsSent = '';
  /** The sample every viewer without people of their own present shares, as last sent. */
  shared: Sample = EMPTY_SAMPLE;
  /** Viewers who got a sample of their own (watched users or contacts present), as last sent. */
  readonly personal = new Map<Session, Sample>();
  sampledAt = -Infinity;
  sampleDirty = false;
  /** A member of a sample went invisible: the next window sends the sample without them, due or not. */
  sampleNow = false;
  /** Recent joins, newest last (bounded): the sample's last rank. */
  readonly recentJoins: string[] = [];

  constructor(
    readonly channel: Channel,
    seq: number,
  ) {
    this.seq = seq;
  }
}

/** The visible members of a channel (its status counts add up to them). */
export function visibleCount(channel: Channel): number {
  const { online, away, busy } = channel.counts;
  return online + away + busy;
}

/** `"count":…,"statuses":{…}` of a channel now. */
function countsFields(channel: Channel): string {
  const { online, away, busy } = channel.counts;
  return `"count":${online + away + busy},"statuses":{"online":${online},"away":${away},"busy":${busy}}`;
}

function isOccupancyViewer(room: Room, sink: SessionSink): boolean {
  return room.occupancy && sink.occupancy === true;
}

/**
 * The large rooms of one node. A channel becomes a room when its visible members reach a
 * threshold; from then on the v1 fan-out hands it the channel's membership events, typing and
 * syncs. Windowed, a room buffers which members changed and, when the window closes, sends every
 * v1 receiver the same frame of their last states (computed against what they hold, so a change
 * undone inside the window, or a leave and rejoin, sends nothing). In occupancy mode, sessions
 * that opted in are sent counts and a sample instead. The window timer comes from the injected
 * clock, so tests run windows in milliseconds.
 */
export class LargeRooms {
  private readonly rooms = new WeakMap<Channel, Room>();
  /** The same rooms, to find those that show a user (a room whose channel ended is dropped on sight). */
  private readonly live = new Set<Room>();

  constructor(
    private readonly state: PresenceState,
    private readonly clock: Clock,
    private readonly settings: LargeRoomSettings,
    private readonly observer: RoomObserver,
  ) {}

  private sent(type: ServerMessage['type'], receivers: number): void {
    this.observer.sent(type, receivers);
  }

  /**
   * What of a channel's changes has not gone out yet: `window`, a window's membership messages
   * (v1 receivers' lists lag until it closes); `timer`, anything at all (counts, a sample, a mode
   * switch). Tests check every receiver's view once they went.
   */
  pending(name: string): { window: boolean; timer: boolean } {
    const channel = this.state.channels.get(name);
    const room = channel && this.rooms.get(channel);
    if (!room) return { window: false, timer: false };
    return { window: room.windowed && room.pending.size > 0, timer: room.timer !== undefined };
  }

  /**
   * Whether a channel shows occupancy instead of its member list to the viewers that opted in: in
   * occupancy mode, or at its threshold already (the switch comes with the next window).
   */
  inOccupancyMode(name: string): boolean {
    const channel = this.state.channels.get(name);
    if (!channel) return false;
    const { occupancyMembers } = this.settings;
    return this.rooms.get(channel)?.occupancy === true || (occupancyMembers > 0 && visibleCount(channel) >= occupancyMembers);
  }

  /** Whether a channel without a room has reached a threshold (read after each of its events). */
  reached(channel: Channel): boolean {
    const { windowMembers, occupancyMembers } = this.settings;
    const visible = visibleCount(channel);
    return (windowMembers > 0 && visible >= windowMembers) || (occupancyMembers > 0 && visible >= occupancyMembers);
  }

  /**
   * Makes the channel a room. Its v1 receivers are up to date (its events were sent one by one
   * until now), so the room starts from the channel's `seq`. Its modes start right after the
   * change that crossed the line (on the next turn, so that a joiner whose join crossed it gets its
   * answer first), like every later switch.
   */
  open(channel: Channel): void {
    const room = new Room(channel, channel.seq);
    this.rooms.set(channel, room);
    this.live.add(room);
    this.arm(room, 0);
  }

  /**
   * A membership event: false when the channel is no room (the fan-out sends it at once). In a
   * windowed room the member is noted for the window; otherwise `send` sends it now with the room's
   * next `seq`, leaving out the sessions `skip` names (occupancy viewers).
   */
  memberEvent(channel: Channel, event: MemberEvent, send: (seq: number, skip: (sink: SessionSink) => boolean) => void): boolean {
    const room = this.rooms.get(channel);
    if (!room) return false;
    if (event.type === 'member.joined') this.noteJoin(room, event.userId);
    if (room.windowed) {
      if (event.type === 'member.left') room.pending.set(event.userId, event.lastSeen);
      else if (!room.pending.has(event.userId)) room.pending.set(event.userId, null);
    } else {
      room.seq += 1;
      send(room.seq, (sink) => isOccupancyViewer(room, sink));
    }
    if (room.occupancy) room.sampleDirty = true;
    // The window closes even when nothing is windowed: the counts go out then. A change that crossed
    // a threshold closes it at once: every change sent the old way after the line is a cost (a room
    // filling at 1,000 joins a second would send each early member a window's worth of joins).
    this.arm(room, this.switchDue(room) ? 0 : this.settings.windowMs);
    return true;
  }

  /**
   * A user went out of sight. One who went invisible is never shown anew, not even for the rest of
   * a window: every room whose receivers or samples still hold them closes its window now (their
   * leave goes out at once, a joiner's list no longer holds them, no sample keeps them). A user who
   * went offline is only stale there, as any change is until its window closes.
   */
  userHidden(userId: string): void {
    if (this.state.users.get(userId)?.record.manual.status !== 'invisible') return;
    for (const room of this.live) {
      if (this.state.channels.get(room.channel.name) !== room.channel) {
        this.live.delete(room);
        continue;
      }
      const sampled = room.occupancy && inSample(room, userId);
      if (!room.held?.has(userId) && !sampled) continue;
      if (sampled) room.sampleNow = true;
      if (room.timer !== undefined) this.clock.clearTimer(room.timer);
      this.flush(room);
    }
  }

  /** A typing change: whom of the channel's sessions to leave out, or undefined when it is no room. */
  typing(channel: Channel): ((sink: SessionSink) => boolean) | undefined {
    const room = this.rooms.get(channel);
    if (!room) return undefined;
    if (room.occupancy) {
      // Occupancy viewers learn who is typing with the sample.
      room.sampleDirty = true;
      this.arm(room, this.settings.windowMs);
    }
    return (sink) => isOccupancyViewer(room, sink);
  }

  /**
   * The channel's state for one session (after a join, a resume, a heartbeat that needs it), or
   * false when the channel is no room: a whole occupancy message for an occupancy viewer, else the
   * member list as every v1 receiver holds it, with the room's `seq`.
   */
  sync(session: Session, channel: Channel): boolean {
    const room = this.rooms.get(channel);
    const sink = session.sink;
    if (!room || !sink) return false;
    if (isOccupancyViewer(room, sink)) {
      this.sendWholeOccupancy(room, session, sink);
      return true;
    }
    sink.send(this.syncText(room), 'presence.sync', channel.name, room.seq);
    this.sent('presence.sync', 1);
    return true;
  }

  /** The `presence.sync` of a room for a v1 receiver. */
  private syncText(room: Room): string {
    const { channel } = room;
    if (room.held === undefined) return syncMessage(channel.name, currentMembers(channel), room.seq);
    room.heldSync ??= syncMessage(channel.name, [...room.held.values()], room.seq);
    return room.heldSync;
  }

  private noteJoin(room: Room, userId: string): void {
    const log = room.recentJoins;
    log.push(userId);
    const keep = RECENT_JOINS * this.settings.sampleSize;
    if (log.length > 2 * keep) log.splice(0, log.length - keep);
  }

  /** Makes sure the room's timer fires within `delayMs`. */
  private arm(room: Room, delayMs: number): void {
    const due = this.clock.now() + delayMs;
    if (room.timer !== undefined) {
      if (room.timerDueAt <= due) return;
      this.clock.clearTimer(room.timer);
    }
    room.timerDueAt = due;
    room.timer = this.clock.setTimer(delayMs, () => this.flush(room));
  }

  /** The window closed (or the sample is due): send what it holds, then reconsider the modes. */
  private flush(room: Room): void {
    room.timer = undefined;
    const { channel } = room;
    // The channel emptied and ended: nobody is left to tell.
    if (this.state.channels.get(channel.name) !== channel) {
      this.live.delete(room);
      return;
    }
    const window = room.windowed ? this.closeWindow(room) : undefined;
    const occupancy = room.occupancy ? this.occupancyUpdate(room) : undefined;
    if (window || occupancy) {
      let v1 = 0;
      for (const member of channel.members.values()) {
        for (const session of member.sessions) {
          const sink = session.sink;
          if (sink === null) continue;
          if (isOccupancyViewer(room, sink)) occupancy?.(session, sink);
          else if (window) {
            sendWindow(sink, window);
            v1 += 1;
          }
        }
      }
      if (window && v1 > 0) for (const message of window.messages) this.sent(message.type, v1);
    }
    this.evaluate(room);
    if (room.occupancy && room.sampleDirty) this.arm(room, Math.max(0, room.sampledAt + this.settings.sampleIntervalMs - this.clock.now()));
  }

  /**
   * The window's messages: for each member changed in it, their state now against what the v1
   * receivers hold (one message, or none when it is what they hold), each with the next `seq`.
   */
  private closeWindow(room: Room): WindowFrame | undefined {
    const { channel, pending } = room;
    const held = room.held!;
    const messages: { json: string; type: ServerMessage['type']; seq: number }[] = [];
    const name = JSON.stringify(channel.name);
    for (const [userId, lastSeen] of pending) {
      const member = channel.members.get(userId);
      const now = member?.user.announcedVisible ? memberJson(member) : undefined;
      const before = held.get(userId);
      if (now === before) continue;
      const seq = (room.seq += 1);
      if (now === undefined) {
        held.delete(userId);
        messages.push({
          json: `{"type":"presence.leave","channel":${name},"userId":${JSON.stringify(userId)},"lastSeen":${JSON.stringify(lastSeen)},"seq":${seq}}`,
          type: 'presence.leave',
          seq,
        });
      } else {
        held.set(userId, now);
        const type = before === undefined ? 'presence.join' : 'presence.update';
        messages.push({ json: `{"type":"${type}","channel":${name},"member":${now},"seq":${seq}}`, type, seq });
      }
    }
    pending.clear();
    if (messages.length === 0) return undefined;
    room.heldSync = undefined;
    const text = messages.length === 1 ? messages[0].json : `[${messages.map((m) => m.json).join(',')}]`;
    return { channel: channel.name, text, messages };
  }

  /**
   * What each occupancy viewer gets now, or undefined when nothing changed: the counts when they
   * changed, and the sample's diff when it is due (at most once per sample interval). Viewers
   * without people of their own present share one message; the others get their own.
   */
  private occupancyUpdate(room: Room): ((session: Session, sink: SessionSink) => void) | undefined {
    const { channel } = room;
    const counts = countsFields(channel);
    const countsChanged = counts !== room.countsSent;
    const now = this.clock.now();
    const sampleDue = room.sampleNow || (room.sampleDirty && now - room.sampledAt >= this.settings.sampleIntervalMs);
    if (!countsChanged && !sampleDue) return undefined;
    room.countsSent = counts;
    const head = `{"type":"presence.occupancy","channel":${JSON.stringify(channel.name)},${counts}`;
    const countsOnly = countsChanged ? `${head}}` : undefined;
    if (!sampleDue) return countsOnly === undefined ? undefined : this.sender(() => countsOnly);

    const previous = room.shared;
    const next = sharedSample(channel, previous, room.recentJoins, this.settings.sampleSize);
    room.shared = next;
    room.sampledAt = now;
    room.sampleDirty = false;
    room.sampleNow = false;
    const sharedDiff = diffSamples(previous, next);
    const sharedText = isEmptyDiff(sharedDiff) ? countsOnly : `${head},${diffFields(sharedDiff, next)}}`;
    const personal = room.personal;
    // Viewers who left the channel or the node are forgotten here, once per sample.
    for (const session of personal.keys()) if (!session.channels.has(channel.name) || session.sink === null) personal.delete(session);
    return this.sender((session) => {
      const own = personalIds(channel, session, this.settings.sampleSize);
      const base = personal.get(session);
      if (own.length === 0 && base === undefined) return sharedText;
      let target: Sample = next;
      if (own.length > 0) {
        target = personalSample(channel, own, next, this.settings.sampleSize);
        personal.set(session, target);
      } else {
        personal.delete(session);
      }
      const diff: SampleDiff = diffSamples(base ?? previous, target);
      return isEmptyDiff(diff) ? countsOnly : `${head},${diffFields(diff, target)}}`;
    });
  }

  private sender(textFor: (session: Session) => string | undefined): (session: Session, sink: SessionSink) => void {
    return (session, sink) => {
      const text = textFor(session);
      if (text === undefined) return;
      sink.send(text, 'presence.occupancy');
      this.sent('presence.occupancy', 1);
    };
  }

  /** A whole occupancy message: the counts, and the sample from scratch. */
  private sendWholeOccupancy(room: Room, session: Session, sink: SessionSink): void {
    const { channel } = room;
    const own = personalIds(channel, session, this.settings.sampleSize);
    let sample = room.shared;
    if (own.length > 0) {
      sample = personalSample(channel, own, room.shared, this.settings.sampleSize);
      room.personal.set(session, sample);
    } else {
      room.personal.delete(session);
    }
    const counts = countsFields(channel);
    sink.send(`{"type":"presence.occupancy","channel":${JSON.stringify(channel.name)},${counts},${wholeSample(sample)}}`, 'presence.occupancy');
    this.sent('presence.occupancy', 1);
    if (counts !== room.countsSent) {
      // The others were sent other counts: the next window sends everyone these (or newer) ones.
      room.countsSent = '';
      this.arm(room, this.settings.windowMs);
    }
  }

  /** Whether the room's visible members call for a mode to start or end. */
  private switchDue(room: Room): boolean {
    const { windowMembers, occupancyMembers } = this.settings;
    const visible = visibleCount(room.channel);
    const ends = (threshold: number) => threshold === 0 || visible * 10 <= threshold * 9;
    const starts = (threshold: number) => threshold > 0 && visible >= threshold;
    const windows = room.windowed ? ends(windowMembers) : starts(windowMembers);
    const occupancy = room.occupancy ? ends(occupancyMembers) : starts(occupancyMembers);
    return windows || occupancy;
  }

  /**
   * Starts or ends the room's modes by its visible members: each starts at its threshold and ends
   * at 0.9 of it. Called when a window closes (at once when a change crossed a line), when the v1
   * receivers hold the current state. Occupancy viewers get a whole new state at each switch of theirs.
   */
  private evaluate(room: Room): void {
    const { channel } = room;
    const { windowMembers, occupancyMembers } = this.settings;
    const visible = visibleCount(channel);
    if (!room.windowed && windowMembers > 0 && visible >= windowMembers) {
      room.windowed = true;
      room.held = new Map();
      for (const [userId, member] of channel.members) if (member.user.announcedVisible) room.held.set(userId, memberJson(member));
      this.observer.modeChanged?.('window', true);
    } else if (room.windowed && room.pending.size === 0 && (windowMembers === 0 || visible * 10 <= windowMembers * 9)) {
      room.windowed = false;
      room.held = undefined;
      room.heldSync = undefined;
      this.observer.modeChanged?.('window', false);
    }
    const startOccupancy = !room.occupancy && occupancyMembers > 0 && visible >= occupancyMembers;
    const endOccupancy = room.occupancy && (occupancyMembers === 0 || visible * 10 <= occupancyMembers * 9);
    if (!startOccupancy && !endOccupancy) return;
    if (startOccupancy) {
      room.occupancy = true;
      room.shared = sharedSample(channel, EMPTY_SAMPLE, room.recentJoins, this.settings.sampleSize);
      room.sampledAt = this.clock.now();
      room.sampleDirty = false;
      room.countsSent = countsFields(channel);
    }
    for (const member of channel.members.values()) {
      for (const session of member.sessions) {
        const sink = session.sink;
        if (sink === null || sink.occupancy !== true) continue;
        if (startOccupancy) {
          this.sendWholeOccupancy(room, session, sink);
        } else {
          sink.send(this.syncText(room), 'presence.sync', channel.name, room.seq);
          this.sent('presence.sync', 1);
        }
      }
    }
    this.observer.modeChanged?.('occupancy', startOccupancy);
    if (endOccupancy) {
      room.occupancy = false;
      room.shared = EMPTY_SAMPLE;
      room.personal.clear();
      room.countsSent = '';
    }
  }
}

function inSample(room: Room, userId: string): boolean {
  if (room.shared.json.has(userId)) return true;
  for (const sample of room.personal.values()) if (sample.json.has(userId)) return true;
  return false;
}

/** The visible members' JSON, in channel order. */
function currentMembers(channel: Channel): string[] {
  const parts: string[] = [];
  for (const member of channel.members.values()) if (member.user.announcedVisible) parts.push(memberJson(member));
  return parts;
}

export function syncMessage(name: string, members: readonly string[], seq: number): string {
  return `{"type":"presence.sync","channel":${JSON.stringify(name)},"members":[${members.join(',')}],"seq":${seq}}`;
}

/** A window to one sink: as one shared frame where the sink can, else message by message. */
function sendWindow(sink: SessionSink, window: WindowFrame): void {
  if (window.messages.length === 1) {
    const [message] = window.messages;
    sink.send(message.json, message.type, window.channel, message.seq);
  } else if (sink.sendWindow) {
    sink.sendWindow(window);
  } else {
    for (const message of window.messages) sink.send(message.json, message.type, window.channel, message.seq);
  }
}
