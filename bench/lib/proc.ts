import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(BENCH_DIR, '..');
const PROBE = join(BENCH_DIR, 'support', 'probe.mjs');

/** Which cores the pieces run on: the server alone on one, everything else on the other. */
export interface Pinning {
  server?: string;
  loadgen?: string;
}

export function defaultPinning(enabled: boolean): Pinning {
  if (!enabled || availableParallelism() < 2 || !existsSync('/usr/bin/taskset')) return {};
  return { server: '0', loadgen: '1' };
}

export function pinned(cores: string | undefined, command: string, args: string[]): [string, string[]] {
  // taskset execs the command, so the child's pid is the pinned process itself.
  return cores ? ['taskset', ['-c', cores, command, ...args]] : [command, args];
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** CPU time (user + system) of a process in seconds, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds every core of the machine spent busy (steal included), from /proc/stat. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    void idle;
    void iowait;
    return (user + nice + system + irq + softirq + (steal ?? 0)) / 100;
  } catch {
    return 0;
  }
}

/**
 * Samples how much CPU the machine spends on processes other than the given ones (and this
 * one), in cores, over `ms`. Other tenants' work on this shared machine shows up here.
 */
export async function foreignCpu(pids: number[], ms: number): Promise<number> {
  const ours = () => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) + selfCpuSeconds();
  const busy0 = machineBusySeconds();
  const ours0 = ours();
  const t0 = performance.now();
  await sleep(ms);
  const seconds = (performance.now() - t0) / 1000;
  return Math.max(0, (machineBusySeconds() - busy0 - (ours() - ours0)) / seconds);
}

export function selfCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

export function rssBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The hard limit on open files for processes started from here (fixed unless raised by root). */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = Number(line?.split(/\s{2,}/)[1]);
    return Number.isFinite(soft) ? soft : 1024;
  } catch {
    return 1024;
  }
}

export interface ProbeResult {
  /** Why the probe could not read the figures (then they are zeros). */
  error?: string;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  lagP99Ms: number;
  lagMaxMs: number;
  elu: number;
}

const running = new Set<Child>();

/** Stops every child still running (the bench was interrupted). */
export function killAllChildren(): void {
  for (const child of running) if (child.alive) child.process.kill('SIGKILL');
}

/** A child process the bench started, with its output kept for error messages. */
export class Child {
  readonly process: ChildProcess;
  readonly pid: number;
  private output = '';
  private exitInfo?: { code: number | null; signal: NodeJS.Signals | null };
  readonly exited: Promise<void>;
  private probeId = 0;
  private readonly probes = new Map<number, (result: ProbeResult) => void>();

  constructor(readonly name: string, command: string, args: string[], env: NodeJS.ProcessEnv, ipc: boolean) {
    this.process = spawn(command, args, {
      cwd: REPO_DIR,
      env,
      stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    });
    this.pid = this.process.pid!;
    running.add(this);
    const keep = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString('utf8')).slice(-8000);
    };
    this.process.stdout!.on('data', keep);
    this.process.stderr!.on('data', keep);
    this.exited = new Promise((done) => {
      this.process.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(this);
        for (const resolveProbe of this.probes.values()) resolveProbe(emptyProbe());
        this.probes.clear();
        done();
      });
    });
    this.process.on('message', (message: { benchProbeReply?: number } & ProbeResult) => {
      if (typeof message?.benchProbeReply !== 'number') return;
      // A probe that could not read the figures says why; its figures read as zeros.
      this.probes.get(message.benchProbeReply)?.(message.error !== undefined ? { ...emptyProbe(), error: message.error } : message);
      this.probes.delete(message.benchProbeReply);
    });
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  get exit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.exitInfo;
  }

  get recentOutput(): string {
    return this.output;
  }

  /** Memory and event-loop figures from the preloaded probe; `gc` forces a full collection first. */
  probe(gc: boolean, timeoutMs = 30_000): Promise<ProbeResult> {
    if (!this.alive || !this.process.connected) return Promise.resolve(emptyProbe());
    const id = ++this.probeId;
    return new Promise((done) => {
      const timer = setTimeout(() => {
        this.probes.delete(id);
        done(emptyProbe());
      }, timeoutMs);
      this.probes.set(id, (result) => {
        clearTimeout(timer);
        done(result);
      });
      this.process.send({ benchProbe: true, id, gc });
    });
  }

  cpuSeconds(): number {
    return cpuSeconds(this.pid);
  }

  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (this.alive) this.process.kill('SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

function emptyProbe(): ProbeResult {
  return { rss: 0, heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0, lagP99Ms: 0, lagMaxMs: 0, elu: 0 };
}

/** Waits until something accepts TCP on the port, or the child exits (then the reason is thrown). */
export async function waitForPort(child: Child, port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!child.alive) throw new ChildExitedError(child);
    if (await canConnect(port)) return;
    await Promise.race([sleep(50), child.exited]);
  }
  throw new Error(`${child.name} did not listen on port ${port} within ${timeoutMs} ms:\n${child.recentOutput}`);
}

export class ChildExitedError extends Error {
  constructor(readonly child: Child) {
    const exit = child.exit;
    super(`${child.name} exited (code ${exit?.code ?? '?'}${exit?.signal ? `, ${exit.signal}` : ''}) before it was ready`);
  }

  /** The server's own explanation: the message of its "failed to start" log line when there is one. */
  get reason(): string {
    for (const line of this.child.recentOutput.split('\n').reverse()) {
      try {
        const entry = JSON.parse(line) as { msg?: string; err?: { message?: string } };
        if (entry.err?.message) return entry.err.message;
        if (entry.msg && /fail|error/i.test(entry.msg)) return entry.msg;
      } catch {
        // not a log line
      }
    }
    return this.child.recentOutput.trim().split('\n').slice(-1)[0] ?? '';
  }
}

/**
 * How the Presence server is started: the built CLI when the build is up to date, else the sources
 * via tsx. An incremental build rewrites only the outputs that changed, so the build is compared as
 * a whole: its newest output must be newer than the newest source.
 */
export function presenceEntry(): string[] {
  const server = join(REPO_DIR, 'packages/server');
  const built = join(server, 'dist/bin/presence.js');
  if (existsSync(built) && newestMtime(join(server, 'src')) <= newestMtime(join(server, 'dist'))) return [built];
  return ['--import', 'tsx', join(server, 'bin/presence.ts')];
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

export interface NodeServerOptions {
  name: string;
  /** Script and its node flags (e.g. `['--import', 'tsx', 'file.ts']`). */
  entry: string[];
  env: Record<string, string>;
  port: number;
  cores?: string;
  extraNodeFlags?: string[];
}

/** Starts a measured server: pinned, GC exposed for the memory probe, the probe preloaded. */
export async function startNodeServer(options: NodeServerOptions): Promise<Child> {
  const args = ['--expose-gc', ...(options.extraNodeFlags ?? []), '--import', PROBE, ...options.entry];
  const [command, argv] = pinned(options.cores, process.execPath, args);
  const child = new Child(options.name, command, argv, { ...process.env, ...options.env }, true);
  try {
    await waitForPort(child, options.port);
  } catch (error) {
    await child.stop();
    throw error;
  }
  return child;
}

/** A throwaway redis-server on a free port: no persistence, pinned with the load generator. */
export async function startRedis(cores?: string): Promise<{ child: Child; url: string; port: number }> {
  const port = await freePort();
  const [command, argv] = pinned(cores, 'redis-server', [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--protected-mode', 'no',
    '--maxclients', '10000',
  ]);
  const child = new Child('redis-server', command, argv, process.env, false);
  await waitForPort(child, port);
  return { child, url: `redis://127.0.0.1:${port}`, port };
}
