import type { Member, Meta, ServerMessage, UserPresence } from '@presence/protocol';

/*
 * Member objects and their JSON, reused while a member does not change.
 *
 * A member list (`presence.sync`) is sent to every joiner and every resumed session; in a large
 * channel that is thousands of members per snapshot, and a burst of joins asks for a snapshot per
 * joiner. Rebuilding and re-serializing every member each time made a join storm quadratic in CPU
 * *and* in garbage. Here each member is built and serialized once per change.
 *
 * What a member view depends on: the user's announced view (replaced, never mutated, whenever it
 * changes), the member's channel meta (likewise replaced on change) and the join time. The channel
 * meta object belongs to exactly one membership, so it keys the cache, and the entry is valid while
 * the other two inputs are the same. Member objects are treated as immutable once built.
 */

interface Entry {
  user: UserPresence;
  joinedAt: number;
  member: Member;
  json?: string;
}

const entries = new WeakMap<Meta, Entry>();

/** The member built by `build`, or the one built last time for exactly these inputs. */
export function cachedMember(user: UserPresence, channelMeta: Meta, joinedAt: number, build: () => Member): Member {
  const entry = entries.get(channelMeta);
  if (entry !== undefined && entry.user === user && entry.joinedAt === joinedAt) return entry.member;
  const member = build();
  entries.set(channelMeta, { user, joinedAt, member });
  return member;
}

/** `JSON.stringify(member)`, computed once per member object that came from `cachedMember`. */
export function memberJson(member: Member): string {
  const entry = entries.get(member.channelMeta);
  if (entry === undefined || entry.member !== member) return JSON.stringify(member);
  return (entry.json ??= JSON.stringify(member));
}

/**
 * `JSON.stringify(message)`, byte for byte, with the members of member-carrying messages taken
 * from the cache. Keys keep the message's own order; undefined values are left out as
 * JSON.stringify does.
 */
export function serializeMessage(message: ServerMessage): string {
  switch (message.type) {
    case 'presence.sync':
      return withRendered(message, 'members', `[${message.members.map(memberJson).join(',')}]`);
    case 'presence.join':
    case 'presence.update':
      return withRendered(message, 'member', memberJson(message.member));
    default:
      return JSON.stringify(message);
  }
}

function withRendered(message: object, key: string, rendered: string): string {
  let out = '{';
  for (const [name, value] of Object.entries(message)) {
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue;
    if (out.length > 1) out += ',';
    out += `${JSON.stringify(name)}:${name === key ? rendered : JSON.stringify(value)}`;
  }
  return `${out}}`;
}
