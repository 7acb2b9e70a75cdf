import { join } from 'node:path';
import type { Collected, ConnectResult, CountReport, FillRequest, InitRequest, Mode, ScheduleRequest, ScheduleResult } from '../loadgen/worker.js';
import { BENCH_DIR, Child } from './proc.js';

/** Connections one load-generator process may hold, under the open-files limit with a margin. */
export function connectionsPerWorker(openFiles: number): number {
  return Math.max(100, openFiles - 500);
}

export interface ConnectProgress {
  ready: number;
  failed: number;
  target: number;
}

export type ProgressListener = (worker: number, progress: ConnectProgress) => void;

/** The load-generator processes of one scenario, driven together. */
export class LoadGen {
  private readonly workers: WorkerHandle[];

  private constructor(workers: WorkerHandle[]) {
    this.workers = workers;
  }

  static async start(count: number, cores: string | undefined, onProgress?: ProgressListener): Promise<LoadGen> {
    const workers: WorkerHandle[] = [];
    for (let i = 0; i < count; i += 1) workers.push(new WorkerHandle(i, cores, onProgress));
    await Promise.all(workers.map((w) => w.ready));
    return new LoadGen(workers);
  }

  get size(): number {
    return this.workers.length;
  }

  get pids(): number[] {
    return this.workers.map((w) => w.child.pid);
  }

  cpuSeconds(): number {
    return this.workers.reduce((sum, w) => sum + w.child.cpuSeconds(), 0);
  }

  async init(args: Omit<InitRequest, 'worker' | 'workers'>): Promise<void> {
    await Promise.all(this.workers.map((w, i) => w.call('init', { ...args, worker: i, workers: this.workers.length })));
  }

  async connect(concurrency: number): Promise<ConnectResult> {
    const perWorker = Math.max(1, Math.ceil(concurrency / this.workers.length));
    const results = (await Promise.all(this.workers.map((w) => w.call('connect', { concurrency: perWorker })))) as ConnectResult[];
    return mergeConnect(results);
  }

  async mode(mode: Mode): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call('mode', { mode })));
  }

  /** Runs one open-loop schedule on every worker, each with its share of the rate, phase-shifted. */
  async schedule(op: 'fanout' | 'typing' | 'churn', request: ScheduleRequest): Promise<ScheduleResult> {
    const n = this.workers.length;
    const results = (await Promise.all(
      this.workers.map((w, i) =>
        w.call(op, { ...request, rate: request.rate / n, startAt: request.startAt + (i * 1000) / request.rate }),
      ),
    )) as ScheduleResult[];
    return {
      sent: sum(results, (r) => r.sent),
      scheduledInWindow: sum(results, (r) => r.scheduledInWindow),
      sentInWindow: sum(results, (r) => r.sentInWindow),
      expectedInWindow: sum(results, (r) => r.expectedInWindow),
      sendLagP99Ms: Math.max(...results.map((r) => r.sendLagP99Ms)),
      sendLagMaxMs: Math.max(...results.map((r) => r.sendLagMaxMs)),
    };
  }

  /** A large room's fill at `rate` joins per second over every worker (each its share, phase-shifted). */
  async fill(request: FillRequest): Promise<{ ready: number; failed: number; lastJoinAt: number; errors: Record<string, number> }> {
    const n = this.workers.length;
    const results = (await Promise.all(
      this.workers.map((w, i) => w.call('fill', { rate: request.rate / n, startAt: request.startAt + (i * 1000) / request.rate })),
    )) as Array<{ ready: number; failed: number; lastJoinAt: number; errors?: Record<string, number> }>;
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors ?? {})) errors[k] = (errors[k] ?? 0) + v;
    return { ready: sum(results, (r) => r.ready), failed: sum(results, (r) => r.failed), lastJoinAt: Math.max(...results.map((r) => r.lastJoinAt)), errors };
  }

  /** Every client's count of its channel (mode `count`), over every worker. */
  async counts(): Promise<CountReport> {
    const reports = (await Promise.all(this.workers.map((w) => w.call('counts', {})))) as CountReport[];
    return {
      counts: reports.flatMap((r) => r.counts),
      changedAt: reports.flatMap((r) => r.changedAt),
      bytes: reports.flatMap((r) => r.bytes),
      nodes: reports.flatMap((r) => r.nodes),
      lastJoinAt: Math.max(...reports.map((r) => r.lastJoinAt)),
      failed: sum(reports, (r) => r.failed),
    };
  }

  /** How many connected clients show `count`, changed at or after `since` (cheap to poll). */
  async countsRight(count: number, since: number): Promise<{ right: number; present: number }> {
    const results = (await Promise.all(this.workers.map((w) => w.call('countsRight', { count, since })))) as Array<{ right: number; present: number }>;
    return { right: sum(results, (r) => r.right), present: sum(results, (r) => r.present) };
  }

  /** Makes the first and last clients of each shard visible (the actors); resolves once sent. */
  async reveal(first: number, last: number): Promise<number> {
    const results = (await Promise.all(this.workers.map((w) => w.call('reveal', { first, last })))) as Array<{ sent: number }>;
    return sum(results, (r) => r.sent);
  }

  async poll(): Promise<{ deliveredInWindow: number; deliveredTotal: number; frames: number; ready: number }> {
    const results = (await Promise.all(this.workers.map((w) => w.call('poll', {})))) as Array<{ deliveredInWindow: number; deliveredTotal: number; frames: number; ready: number }>;
    return {
      deliveredInWindow: sum(results, (r) => r.deliveredInWindow),
      deliveredTotal: sum(results, (r) => r.deliveredTotal),
      frames: sum(results, (r) => r.frames),
      ready: sum(results, (r) => r.ready),
    };
  }

  async collect(): Promise<Collected[]> {
    return (await Promise.all(this.workers.map((w) => w.call('collect', {})))) as Collected[];
  }

  async storm(args: { observerEvery: number; concurrency: number; settleMs: number }): Promise<Array<ConnectResult & { dropped: number; backMs: number; events: Collected['events'] }>> {
    const perWorker = Math.max(1, Math.ceil(args.concurrency / this.workers.length));
    return (await Promise.all(this.workers.map((w) => w.call('storm', { ...args, concurrency: perWorker })))) as Array<
      ConnectResult & { dropped: number; backMs: number; events: Collected['events'] }
    >;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        if (w.child.alive) await w.call('close', {}).catch(() => undefined);
        await Promise.race([w.child.exited, new Promise((r) => setTimeout(r, 3000))]);
        await w.child.stop(1000);
      }),
    );
  }
}

class WorkerHandle {
  readonly child: Child;
  readonly ready: Promise<void>;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();

  constructor(index: number, cores: string | undefined, onProgress?: ProgressListener) {
    const args = ['--max-old-space-size=4096', '--max-semi-space-size=32', '--import', 'tsx', join(BENCH_DIR, 'loadgen', 'worker.ts')];
    const [command, argv] = cores ? ['taskset', ['-c', cores, process.execPath, ...args]] : [process.execPath, args];
    this.child = new Child(`loadgen-${index}`, command, argv, process.env, true);
    this.child.process.on('message', (message: { id?: number; ok?: boolean; result?: unknown; error?: string; progress?: ConnectProgress }) => {
      if (message.progress) {
        onProgress?.(index, message.progress);
        return;
      }
      if (typeof message.id !== 'number') return;
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`loadgen-${index}: ${message.error}`));
    });
    void this.child.exited.then(() => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`loadgen-${index} exited: ${this.child.recentOutput}`));
      this.pending.clear();
    });
    this.ready = Promise.resolve();
  }

  call(op: string, args: unknown): Promise<unknown> {
    if (!this.child.alive) return Promise.reject(new Error(`${this.child.name} is not running: ${this.child.recentOutput}`));
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.process.send({ id, op, args });
    });
  }
}

function sum<T>(items: T[], pick: (item: T) => number): number {
  return items.reduce((total, item) => total + pick(item), 0);
}

function mergeConnect(results: ConnectResult[]): ConnectResult {
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    ready: sum(results, (r) => r.ready),
    failed: sum(results, (r) => r.failed),
    elapsedMs: Math.max(...results.map((r) => r.elapsedMs)),
    resumed: sum(results, (r) => r.resumed),
    notResumed: sum(results, (r) => r.notResumed),
    errors,
  };
}
