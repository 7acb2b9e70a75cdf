import type { ServerMessage } from '@presence/protocol';
import { ClusterLink } from '../../src/cluster/cluster-link.js';
import type { SharedService } from '../../src/cluster/shared-service.js';
import { resolveConfig, type ServerConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/log.js';
import { offsetClock, systemClock } from '../../src/presence/clock.js';
import type { Attachment } from '../../src/presence/engine.js';
import { PresenceNode } from '../../src/presence-node.js';
import type { SessionSink } from '../../src/presence/state.js';

/** A socket stand-in that records every frame the engine writes to it. */
export class RecordingSink implements SessionSink {
  readonly frames: ServerMessage[] = [];
  closedWith?: { code: number; reason: string };
  attachment?: Attachment;

  send(json: string): void {
    this.frames.push(JSON.parse(json) as ServerMessage);
  }

  close(code: number, reason: string): void {
    this.closedWith = { code, reason };
  }

  of<T extends ServerMessage['type']>(type: T): Extract<ServerMessage, { type: T }>[] {
    return this.frames.filter((f): f is Extract<ServerMessage, { type: T }> => f.type === type);
  }

  get sessionId(): string {
    return this.of('welcome')[0].sessionId;
  }
}

export interface ClusterNodeOptions {
  service: SharedService;
  config?: Parameters<typeof resolveConfig>[0];
  /** Added to this node's wall clock, to test that nothing trusts it. */
  clockSkewMs?: number;
  leaseTtlMs?: number;
  /** The configured node id (`PRESENCE_NODE_ID`); random when not set. */
  nodeId?: string;
}

/** One node of an in-process cluster: a real engine and a real cluster link, no sockets. */
export class ClusterNode {
  readonly engine: PresenceNode;
  readonly link: ClusterLink;
  readonly config: ServerConfig;

  private constructor(options: ClusterNodeOptions) {
    this.config = resolveConfig({ offlineDelayMs: 400, typingTimeoutMs: 600, syncIntervalMs: 400, ...options.config });
    const skew = options.clockSkewMs ?? 0;
    const base = { ...systemClock, now: () => Date.now() + skew };
    this.link = new ClusterLink({
      service: options.service,
      nodeId: options.nodeId,
      leaseTtlMs: options.leaseTtlMs ?? 300,
      syncIntervalMs: this.config.syncIntervalMs,
      offlineDelayMs: this.config.offlineDelayMs,
      clock: base,
      log: silentLogger,
      activityFlushMs: 100,
    });
    this.engine = new PresenceNode({
      config: this.config,
      clock: offsetClock(base, () => this.link.clockOffsetMs),
      store: this.link,
      cluster: this.link,
    });
  }

  static async start(options: ClusterNodeOptions): Promise<ClusterNode> {
    const node = new ClusterNode(options);
    await node.link.start(node.engine);
    return node;
  }

  async connect(userId: string, options: { sessionId?: string; device?: string } = {}): Promise<RecordingSink> {
    await this.engine.prepareConnect(userId, options.sessionId);
    const sink = new RecordingSink();
    sink.attachment = this.engine.connect({ identity: { userId, meta: {} }, sessionId: options.sessionId, device: options.device }, sink);
    return sink;
  }

  /** Runs a command the way the transport would; resolves with the ack data. */
  async send(sink: RecordingSink, command: Record<string, unknown>): Promise<Record<string, unknown> | undefined> {
    return await this.engine.handle(sink.attachment!, command as never);
  }

  async stop(): Promise<void> {
    this.engine.dispose();
    await this.link.close();
  }

  /** Dies without a word, as `kill -9` would. */
  async crash(): Promise<void> {
    await this.link.crash();
    this.engine.dispose();
  }
}

/** Polls until the condition holds (cluster state travels asynchronously). */
export async function eventually(condition: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
