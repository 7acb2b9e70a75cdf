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
 * goes to every receiver: fan-out cost is one `JSON.stringify` plus one queue push per socket.
 */
export class Fanout {
  constructor(private readonly observer?: EngineObserver) {}

  toSession(session: Session, message: ServerMessage): void {
    if (!session.sink) return;
    session.sink.send(JSON.stringify(message), message.type);
    this.observer?.sent(message.type, 1);
  }

  toChannel(channel: Channel, message: ServerMessage, exclusions: BroadcastExclusions = {}): void {
    let json: string | undefined;
    let receivers = 0;
    for (const member of channel.members.values()) {
      if (member.user.record.userId === exclusions.exceptUserId) continue;
      for (const session of member.sessions) {
        if (session === exclusions.exceptSession || !session.sink) continue;
        json ??= JSON.stringify(message);
        session.sink.send(json, message.type);
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
