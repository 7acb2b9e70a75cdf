import { spawn, type ChildProcess } from 'node:child_process';

/**
 * A command run by a test in a process group of its own, so that a signal reaches everything it
 * started: `npx` starts the server as a child and does not pass signals on. Output is collected.
 */
export class ProcessGroup {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcess;

  constructor(command: string, args: string[], options: { cwd?: string; env: NodeJS.ProcessEnv }) {
    this.child = spawn(command, args, { ...options, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.child.stdout!.on('data', (chunk: Buffer) => (this.stdout += chunk.toString()));
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  /** Sends `signal` to every process of the group. */
  signal(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** True while any process of the group is alive (the leader may exit before its children). */
  alive(): boolean {
    try {
      process.kill(-this.child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** Resolves when every process of the group has gone; rejects after `ms`. */
  async gone(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.alive()) {
      if (Date.now() > deadline) throw new Error(`the processes of group ${this.child.pid} did not exit in ${ms} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The first stdout line (JSON) whose `msg` is `msg`; rejects after `ms` or if the group ends first. */
  async logLine<T = Record<string, unknown>>(msg: string, ms: number): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      // Only whole lines: the last piece may still be arriving.
      for (const line of this.stdout.split('\n').slice(0, -1)) {
        if (!line.startsWith('{')) continue;
        const parsed = JSON.parse(line) as { msg?: string };
        if (parsed.msg === msg) return parsed as T;
      }
      if (!this.alive()) throw new Error(`exited before logging "${msg}":\n${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no "${msg}" within ${ms} ms:\n${this.stdout}\n${this.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** SIGKILL to whatever of the group is left; for cleanup. */
  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.gone(5000);
  }
}
