export { startServer, type RunningServer, type ServerOptions } from './server.js';
export { resolveConfig, DEFAULT_CONFIG, DEFAULT_LIMITS, DEFAULT_STATES, type ServerConfig, type ServerLimits } from './config/config.js';
export { loadConfig, ConfigError } from './config/env.js';
export { PresenceEngine, type SessionSink, type Attachment } from './presence/engine.js';
export { ManualClock, systemClock, type Clock } from './presence/clock.js';
export { MemoryUserStore, type UserStore, type UserRecord } from './store/user-store.js';
export { PresenceError } from './errors.js';
export { configSecrets, createLogger, silentLogger, type Logger, type LoggerOptions } from './log.js';
