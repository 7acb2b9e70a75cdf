/** What the soak orchestrator and its child processes say to each other over IPC. */

export interface SampleRequest {
  soak: 'sample';
  id: number;
  gc: boolean;
  /** Profiling aid: write a heap snapshot to this path (after the GC) before answering. */
  heapSnapshot?: string;
}

export interface ServerSample {
  soakReply: number;
  node: string;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  /** Bytes used per V8 heap space: growth in `code_space` is compiled code, not data. */
  heapSpaces: Record<string, number>;
  /** Event-loop delay since the previous sample, measured before any forced GC. */
  lagP99Ms: number;
  lagMaxMs: number;
  /** `engine.stats()`: connections, sessions, onlineUsers, channels. */
  stats: { connections: number; sessions: number; onlineUsers: number; channels: number };
  /** `engine.inspect()`: sizes of the live state. */
  inspect: Record<string, number>;
  /** Timers the presence model armed that have neither fired nor been cleared. */
  engineTimers: number;
  /** `cluster.inspect()` with two nodes: cached user records, announced writes not yet seen back, known nodes. */
  cluster?: Record<string, number>;
}

/** Churn settings, passed to the generator as JSON in its argv. */
export interface ChurnOptions {
  urls: string[];
  clients: number;
  users: number;
  channels: number;
  /** Commands per second over the whole population. */
  commandsPerSecond: number;
  /** Connections ended per second (each slot reconnects after a short pause). */
  disconnectsPerSecond: number;
  seed: number;
}

export interface ChurnCounters {
  connected: number;
  opened: number;
  closedClean: number;
  closedAbrupt: number;
  loggedOut: number;
  resumed: number;
  moved: number;
  commands: number;
  messagesIn: number;
  errorsIn: number;
  closedByServer: number;
  failedConnects: number;
}

export type ChurnReport = { churnReport: number; counters: ChurnCounters; errorCodes: Record<string, number> };
