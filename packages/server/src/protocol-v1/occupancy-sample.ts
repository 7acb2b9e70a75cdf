import type { Channel, Session } from '../presence/state.js';
import { memberJson } from './member-json.js';

/**
 * The sample of an occupancy-mode channel: a bounded list of members a viewer sees besides the
 * counts. Who is in it, in order: the viewer's watched users and contacts who are present, then
 * who is typing, then the members already in it (a sample is stable: it changes when one of them
 * leaves or someone of higher rank arrives, not with every join), then the most recent joiners.
 */
export interface Sample {
  /** User ids, in rank order. */
  readonly ids: readonly string[];
  /** Each one's member JSON as of the sample. */
  readonly json: ReadonlyMap<string, string>;
  /** Who of the sample was typing, as a JSON array. */
  readonly typing: string;
}

export const EMPTY_SAMPLE: Sample = { ids: [], json: new Map(), typing: '[]' };

/** What changed from one sample to the next, ready to splice into a `presence.occupancy`. */
export interface SampleDiff {
  /** `"added":[…],` or empty. */
  readonly added: string;
  /** `"removed":[…],` or empty. */
  readonly removed: string;
  readonly typingChanged: boolean;
}

function isVisibleMember(channel: Channel, userId: string): boolean {
  return channel.members.get(userId)?.user.announcedVisible === true;
}

/** The sample of these ids as they are now (those no longer visible members left out). */
function build(channel: Channel, ids: readonly string[]): Sample {
  const kept: string[] = [];
  const json = new Map<string, string>();
  const typing: string[] = [];
  for (const id of ids) {
    const member = channel.members.get(id);
    if (!member?.user.announcedVisible) continue;
    kept.push(id);
    json.set(id, memberJson(member));
    if (channel.typing.has(id)) typing.push(id);
  }
  return { ids: kept, json, typing: JSON.stringify(typing) };
}

/** Appends visible members of `candidates` not yet taken, until `ids` holds `size`. */
function take(channel: Channel, ids: string[], taken: Set<string>, candidates: Iterable<string>, size: number): void {
  for (const id of candidates) {
    if (ids.length >= size) return;
    if (taken.has(id) || !isVisibleMember(channel, id)) continue;
    taken.add(id);
    ids.push(id);
  }
}

/** The most recent joiners first, from a log of joins (newest last, possibly repeated). */
function* newestFirst(joins: readonly string[]): Iterable<string> {
  for (let i = joins.length - 1; i >= 0; i -= 1) yield joins[i];
}

/**
 * The sample every viewer without watched users or contacts present gets: typing first, then the
 * previous sample's members still present, then recent joiners, then anyone (in channel order).
 */
export function sharedSample(channel: Channel, previous: Sample, recentJoins: readonly string[], size: number): Sample {
  const ids: string[] = [];
  const taken = new Set<string>();
  take(channel, ids, taken, channel.typing.keys(), size);
  take(channel, ids, taken, previous.ids, size);
  take(channel, ids, taken, newestFirst(recentJoins), size);
  if (ids.length < size) take(channel, ids, taken, channel.members.keys(), size);
  return build(channel, ids);
}

/** The viewer's watched users and contacts who are visible members (never the viewer), at most `size`. */
export function personalIds(channel: Channel, session: Session, size: number): string[] {
  const own = session.user.record.userId;
  const ids: string[] = [];
  const taken = new Set<string>([own]);
  if (session.watching.size > 0) take(channel, ids, taken, session.watching, size);
  const contacts = session.user.record.contacts;
  if (contacts.length > 0) take(channel, ids, taken, contacts, size);
  return ids;
}

/** The viewer's own people first, then the shared sample, at most `size`. */
export function personalSample(channel: Channel, personal: readonly string[], shared: Sample, size: number): Sample {
  const ids = personal.slice(0, size);
  const taken = new Set(ids);
  take(channel, ids, taken, shared.ids, size);
  return build(channel, ids);
}

/** Members new in `next` or changed since `previous`, and those no longer in it. */
export function diffSamples(previous: Sample, next: Sample): SampleDiff {
  const added: string[] = [];
  for (const id of next.ids) {
    const json = next.json.get(id)!;
    if (previous.json.get(id) !== json) added.push(json);
  }
  const removed: string[] = [];
  for (const id of previous.ids) if (!next.json.has(id)) removed.push(id);
  return {
    added: added.length > 0 ? `"added":[${added.join(',')}],` : '',
    removed: removed.length > 0 ? `"removed":${JSON.stringify(removed)},` : '',
    typingChanged: previous.typing !== next.typing,
  };
}

export function isEmptyDiff(diff: SampleDiff): boolean {
  return diff.added === '' && diff.removed === '' && !diff.typingChanged;
}

/** `"sample":[…],"typing":[…]`: a whole sample, for a viewer starting from nothing. */
export function wholeSample(sample: Sample): string {
  return `"sample":[${sample.ids.map((id) => sample.json.get(id)!).join(',')}],"typing":${sample.typing}`;
}

/** `"added":…,"removed":…,"typing":[…]` of a diff (typing always goes with a sample change). */
export function diffFields(diff: SampleDiff, next: Sample): string {
  return `${diff.added}${diff.removed}"typing":${next.typing}`;
}
