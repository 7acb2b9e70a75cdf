import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';

/**
 * Ports for the servers tests start, below Linux's ephemeral range (32768 and up): a port from that
 * range can be handed to any outgoing connection the moment its server is down (a Redis killed to
 * be restarted on the same port, or one found free but not yet bound), and redis-server then fails
 * to bind it. Chosen at random so that test processes running side by side rarely try the same.
 */
const PORT_RANGE = { from: 20_000, to: 32_000 } as const;

/** A free TCP port on loopback, outside the ephemeral range (the probe socket is closed before use). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = PORT_RANGE.from + Math.floor(Math.random() * (PORT_RANGE.to - PORT_RANGE.from));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port between ${PORT_RANGE.from} and ${PORT_RANGE.to}`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.end('PING\r\n');
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A real `redis-server` process owned by a test: on a free port, with nothing persisted, so a
 * restart comes back empty. `kill` is SIGKILL, like a crash.
 */
export class RedisServer {
  private process?: ChildProcess;

  private constructor(
    readonly port: number,
    private readonly extraArgs: string[],
  ) {}

  /** `extraArgs`: more redis-server options, e.g. `['--requirepass', 'secret']`. */
  static async start(port?: number, extraArgs: string[] = []): Promise<RedisServer> {
    // A free port can be taken by another process (tests run side by side) between the probe and
    // redis-server's bind: then it exits at once, and another port is tried.
    for (let attempt = 1; ; attempt += 1) {
      const server = new RedisServer(port ?? (await freePort()), extraArgs);
      try {
        await server.launch();
        return server;
      } catch (error) {
        await server.kill();
        if (port !== undefined || attempt >= 5) throw error;
      }
    }
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private async launch(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', ...this.extraArgs], {
      stdio: 'ignore',
    });
    this.process = child;
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`redis-server exited (${code}); is it installed?`))));
    exited.catch(() => {});
    const deadline = Date.now() + 20_000;
    while (!(await portAnswers(this.port))) {
      if (child.exitCode !== null) await exited;
      if (Date.now() > deadline) throw new Error('redis-server did not start');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // What answered may be another process on the port, ours exiting because it could not bind.
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (child.exitCode !== null || child.signalCode !== null) await exited;
  }

  /** SIGKILL: Redis vanishes without a goodbye, as in a crash. */
  async kill(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
    this.process = undefined;
  }

  /** Starts an empty redis-server on the same port again. */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.kill();
  }
}
