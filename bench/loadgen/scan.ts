/**
 * Reading what the load generator needs out of received frames without parsing them: at tens of
 * thousands of frames a second on one core, `JSON.parse` of every frame would make the load
 * generator the bottleneck. Every system is read the same way, so none is favoured.
 *
 * A latency marker is a JSON string `"L:<sender>:<seq>:<sent µs>"` that the sender puts in the
 * data it changes (user meta, status message, channel meta, join meta); the receiver finds every
 * marker in the frame. A member object can carry older markers too (e.g. the last meta marker in
 * a channel-meta update), so the receiver counts a marker only when its `seq` is the highest it has
 * seen from that sender.
 */

const MARK = Buffer.from('"L:');
const SYNC = Buffer.from('"presence.sync"');
const SYNC_END = Buffer.from('],"seq":');
const USER_ID = Buffer.from('"userId":"');
const TYPING_TRUE = Buffer.from(',"typing":true');
const TYPING_FALSE = Buffer.from(',"typing":false');
const LEAVE = Buffer.from('"presence.leave"');
const JOIN = Buffer.from('"presence.join"');

const ZERO = 48;

export type MarkerVisitor = (sender: number, seq: number, sentMicros: number) => void;

/**
 * Calls `visit` for every marker in the frame, except inside `presence.sync` messages: a snapshot
 * repeats old markers of every member and is not a delivery of any of them. Presence may batch a
 * snapshot with events in one array frame; a snapshot ends at its `],"seq":` (member objects have
 * no `seq` key and the bench's meta values never contain one).
 */
export function scanMarkers(frame: Buffer, visit: MarkerVisitor): void {
  let skipFrom = frame.indexOf(SYNC);
  let skipTo = skipFrom === -1 ? -1 : frame.indexOf(SYNC_END, skipFrom);
  if (skipFrom !== -1 && skipTo === -1) skipTo = frame.length;
  let at = frame.indexOf(MARK);
  while (at !== -1) {
    if (skipFrom !== -1 && at > skipFrom) {
      if (at < skipTo) {
        at = frame.indexOf(MARK, skipTo);
        continue;
      }
      skipFrom = frame.indexOf(SYNC, skipTo);
      skipTo = skipFrom === -1 ? -1 : frame.indexOf(SYNC_END, skipFrom);
      if (skipFrom !== -1 && skipTo === -1) skipTo = frame.length;
      continue;
    }
    let p = at + 3;
    let sender = 0;
    for (let b = frame[p]; b >= ZERO && b <= ZERO + 9; b = frame[++p]) sender = sender * 10 + (b - ZERO);
    p += 1;
    let seq = 0;
    for (let b = frame[p]; b >= ZERO && b <= ZERO + 9; b = frame[++p]) seq = seq * 10 + (b - ZERO);
    p += 1;
    let sent = 0;
    for (let b = frame[p]; b >= ZERO && b <= ZERO + 9; b = frame[++p]) sent = sent * 10 + (b - ZERO);
    visit(sender, seq, sent);
    at = frame.indexOf(MARK, p);
  }
}

/** `"userId":"<id>"` followed by `,"typing":true|false`: the typing events of a frame. */
export function scanTyping(frame: Buffer, visit: (userId: string, typing: boolean) => void): void {
  let at = frame.indexOf(USER_ID);
  while (at !== -1) {
    const start = at + USER_ID.length;
    const end = frame.indexOf(34 /* " */, start);
    if (end === -1) return;
    const after = end + 1;
    if (frame.compare(TYPING_TRUE, 0, TYPING_TRUE.length, after, after + TYPING_TRUE.length) === 0) {
      visit(frame.toString('latin1', start, end), true);
    } else if (frame.compare(TYPING_FALSE, 0, TYPING_FALSE.length, after, after + TYPING_FALSE.length) === 0) {
      visit(frame.toString('latin1', start, end), false);
    }
    at = frame.indexOf(USER_ID, after);
  }
}

/** The user id of every `presence.leave` in the frame. */
export function scanLeaves(frame: Buffer, visit: (userId: string) => void): void {
  let at = frame.indexOf(LEAVE);
  while (at !== -1) {
    const idAt = frame.indexOf(USER_ID, at);
    if (idAt === -1) return;
    const start = idAt + USER_ID.length;
    const end = frame.indexOf(34, start);
    if (end === -1) return;
    visit(frame.toString('latin1', start, end));
    at = frame.indexOf(LEAVE, end);
  }
}

export function countOccurrences(frame: Buffer, needle: Buffer): number {
  let count = 0;
  for (let at = frame.indexOf(needle); at !== -1; at = frame.indexOf(needle, at + needle.length)) count += 1;
  return count;
}

const OCCUPANCY = Buffer.from('"presence.occupancy"');
const COUNT = Buffer.from('"count":');
const JOINED_AT = Buffer.from('"joinedAt":');
const UPDATE = Buffer.from('"presence.update"');

/**
 * How many are in the channel after this frame, as a client would tell (`previous` before it): the
 * `count` of the last `presence.occupancy`; else the members of a `presence.sync` (one `joinedAt`
 * each, the joins after it in the frame included) less its leaves; else the previous count plus
 * joins less leaves.
 */
export function channelCount(frame: Buffer, previous: number): number {
  const occupancy = frame.lastIndexOf(OCCUPANCY);
  if (occupancy !== -1) {
    let p = frame.indexOf(COUNT, occupancy) + COUNT.length;
    let count = 0;
    for (let b = frame[p]; b >= ZERO && b <= ZERO + 9; b = frame[++p]) count = count * 10 + (b - ZERO);
    return count;
  }
  if (frame.indexOf(SYNC) !== -1) return countOccurrences(frame, JOINED_AT) - countOccurrences(frame, UPDATE) - countOccurrences(frame, LEAVE);
  return previous + countOccurrences(frame, JOIN) - countOccurrences(frame, LEAVE);
}

export const JOIN_EVENT = JOIN;
export const LEAVE_EVENT = LEAVE;
export const SYNC_EVENT = SYNC;
