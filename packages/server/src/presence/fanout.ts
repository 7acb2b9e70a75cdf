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
 * goes to every receiver: fan-out cost is one serialization plus one queue push per socket (the
 * engine splices a member's cached JSON into joins and updates: see `memberEvent`).
 */
export class Fanout {
  constructor(private readonly observer?: EngineObserver) {}

  toSession(session: Session, message: ServerMessage): void {
    if (!session.sink) return;
    session.sink.send(JSON.stringify(message), message.type);
    this.observer?.sent(message.type, 1);
  }

  toChannel(channel: Channel, message: ServerMessage, exclusions: BroadcastExclusions = {}): void {
    this.toChannelJson(channel, message.type, JSON.stringify(message), exclusions);
  }

  /** Sends one pre-built JSON message to every session in the channel but the excluded ones. */
  toChannelJson(channel: Channel, type: ServerMessage['type'], json: string, exclusions: BroadcastExclusions = {}): void {
    const { exceptSession, exceptUserId } = exclusions;
    let receivers = 0;
    for (const member of channel.members.values()) {
      if (exceptUserId !== undefined && member.user.record.userId === exceptUserId) continue;
      for (const session of member.sessions) {
        const sink = session.sink;
        if (sink === null || session === exceptSession) continue;
        sink.send(json, type);
        receivers += 1;
      }
    }
    if (receivers > 0) this.observer?.sent(type, receivers);
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
