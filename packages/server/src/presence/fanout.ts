import type { ServerMessage } from '@presence/protocol';
import type { Channel, EngineObserver, Session } from './state.js';

export interface BroadcastExclusions {
  /** A session that gets its own answer instead (the joiner gets `presence.sync`). */
  exceptSession?: Session;
  /** A user none of whose sessions receive it (the typer). */
  exceptUserId?: string;
}

/**
 * Writes server messages to sessions. A channel message is serialized once and the same string
 * goes to every receiver: fan-out cost is one serialization plus one queue push per socket. A
 * member inside a join or update is not serialized again: its cached JSON (ChannelMember.rendered)
 * is spliced in.
 */
export class Fanout {
  constructor(private readonly observer?: EngineObserver) {}

  toSession(session: Session, message: ServerMessage): void {
    if (!session.sink) return;
    session.sink.send(JSON.stringify(message), message.type);
    this.observer?.sent(message.type, 1);
  }

  toChannel(channel: Channel, message: ServerMessage, exclusions: BroadcastExclusions = {}): void {
    const { exceptSession, exceptUserId } = exclusions;
    let json: string | undefined;
    let receivers = 0;
    for (const member of channel.members.values()) {
      if (exceptUserId !== undefined && member.user.record.userId === exceptUserId) continue;
      for (const session of member.sessions) {
        const sink = session.sink;
        if (sink === null || session === exceptSession) continue;
        json ??= serializeForChannel(channel, message);
        sink.send(json, message.type);
        receivers += 1;
      }
    }
    if (receivers > 0) this.observer?.sent(message.type, receivers);
  }

  /** Sends one pre-built JSON string to many sessions (watchers); returns how many got it. */
  toSessions(sessions: Iterable<Session>, json: string, type: ServerMessage['type']): number {
    let receivers = 0;
    for (const session of sessions) {
      if (!session.sink) continue;
      session.sink.send(json, type);
      receivers += 1;
    }
    if (receivers > 0) this.observer?.sent(type, receivers);
    return receivers;
  }
}

/**
 * `JSON.stringify(message)`, byte for byte; a join or update carrying the member's cached view
 * reuses that view's JSON instead of serializing it again.
 */
function serializeForChannel(channel: Channel, message: ServerMessage): string {
  if (message.type !== 'presence.update' && message.type !== 'presence.join') return JSON.stringify(message);
  const rendered = channel.members.get(message.member.userId)?.rendered;
  if (rendered === undefined || rendered.view !== message.member) return JSON.stringify(message);
  let out = '{';
  for (const [key, value] of Object.entries(message)) {
    if (value === undefined) continue;
    if (out.length > 1) out += ',';
    out += `${JSON.stringify(key)}:${key === 'member' ? rendered.json : JSON.stringify(value)}`;
  }
  return `${out}}`;
}
