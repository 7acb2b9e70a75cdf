import type { WelcomeMessage } from '@presence/protocol';
import type { ServerConfig } from '../config/config.js';
import type { Session } from './state.js';
import { factsOf, selfView } from './user-presence.js';
import { toIso } from './validation.js';

/** The limits part of `welcome`: built once per engine, since config does not change while running. */
export function welcomeLimits({ limits }: ServerConfig): WelcomeMessage['limits'] {
  return {
    maxFrameBytes: limits.maxFrameBytes,
    maxMetaBytes: limits.maxMetaBytes,
    maxMetaDepth: limits.maxMetaDepth,
    maxMetaKeys: limits.maxMetaKeys,
    maxMessageLength: limits.maxMessageLength,
    maxChannelNameLength: limits.maxChannelNameLength,
    maxChannelsPerSession: limits.maxChannelsPerSession,
    maxSessionsPerUser: limits.maxSessionsPerUser,
    maxWatchedUsers: limits.maxWatchedUsers,
    rateLimitPerSecond: limits.rateLimitPerSecond,
    rateLimitBurst: limits.rateLimitBurst,
    maxOutboundBufferBytes: limits.maxOutboundBufferBytes,
  };
}

/** What a session is told first: who it is, the server's timeouts and limits, and its own presence. */
export function welcomeMessage(session: Session, resumed: boolean, config: ServerConfig, limits: WelcomeMessage['limits'], now: number): WelcomeMessage {
  return {
    type: 'welcome',
    userId: session.user.record.userId,
    sessionId: session.id,
    resumed,
    serverTime: toIso(now),
    timeouts: {
      heartbeatMs: config.heartbeatIntervalMs,
      idleMs: config.idleTimeoutMs,
      offlineDelayMs: config.offlineDelayMs,
      typingMs: config.typingTimeoutMs,
    },
    limits,
    states: { ...config.states },
    self: selfView(factsOf(session.user), config.states),
  };
}
