import type { ChannelMember } from '../presence/state.js';
import { memberView, shownJoinedAt } from '../presence/user-presence.js';

/**
 * The member as JSON, cached while the user's announced view and the channel meta stay the same
 * objects. Only the string is kept (not the view it came from): it is all a sync or an event
 * needs, and a view with its date strings would double what every membership holds.
 */
export function memberJson(member: ChannelMember): string {
  const { rendered } = member;
  if (rendered && rendered.published === member.user.published && rendered.channelMeta === member.channelMeta) return rendered.json;
  const json = flat(JSON.stringify(memberView(member.user.published, member.channelMeta, shownJoinedAt(member))));
  member.rendered = { published: member.user.published, channelMeta: member.channelMeta, json };
  return json;
}

/**
 * The same string, stored flat. V8 builds a long JSON.stringify result as a tree of pieces; this
 * one is kept for as long as the membership lasts, and the tree costs about 100 bytes more than
 * one flat string. Converting it to a number makes V8 flatten it in place (the result is unused).
 */
function flat(text: string): string {
  Number(text);
  return text;
}
