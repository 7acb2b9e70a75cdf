/**
 * A Presence node for soak runs: the real `startServer` with configuration from the environment,
 * plus a control channel that exists only here. The orchestrator (`soak.ts`) talks to it over the
 * IPC channel of the child process, never over HTTP, so nothing of it reaches the production API.
 *
 * It answers `sample` with memory (after a forced GC when asked and `--expose-gc` is on),
 * event-loop lag since the previous sample, the engine's counts, and the timers the engine holds.
 * Timers are counted by wrapping the engine's clock: every timer the model arms goes through it,
 * so a timer the engine forgot to clear shows up without looking inside the engine.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { loadConfig } from '../../packages/server/src/config/env.js';
import { createLogger } from '../../packages/server/src/log.js';
import { systemClock, type Clock, type TimerHandle } from '../../packages/server/src/presence/clock.js';
import { startServer } from '../../packages/server/src/server.js';
import type { SampleRequest, ServerSample } from './messages.js';

/** Wraps the system clock and keeps the set of timers that are armed and have neither fired nor been cleared. */
function countingClock(base: Clock): { clock: Clock; live: () => number } {
  const armed = new Set<TimerHandle>();
  const clock: Clock = {
    now: () => base.now(),
    setTimer(delayMs, callback) {
      const handle: TimerHandle = base.setTimer(delayMs, () => {
        armed.delete(handle);
        callback();
      });
      armed.add(handle);
      return handle;
    },
    clearTimer(handle) {
      if (handle) armed.delete(handle);
      base.clearTimer(handle);
    },
  };
  return { clock, live: () => armed.size };
}

async function main(): Promise<void> {
  if (typeof process.send !== 'function') throw new Error('bench/soak/server.ts is started by bench/soak/soak.ts (it needs an IPC channel)');
  const config = loadConfig(process.env, []);
  const log = createLogger(config.logLevel);
  const timers = countingClock(systemClock);
  const server = await startServer(config, { log, clock: timers.clock });
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();

  const sample = (request: SampleRequest, reply: (sample: ServerSample) => void): void => {
    // Lag is read before the forced GC, whose pause is ours, not the server's.
    const lagP99Ms = lag.percentile(99) / 1e6;
    const lagMaxMs = lag.max / 1e6;
    const gc = (globalThis as { gc?: () => void }).gc;
    if (request.gc && gc) {
      // Twice: the first pass can leave finalizer work that the second one frees.
      gc();
      gc();
    }
    const memory = process.memoryUsage();
    if (request.heapSnapshot) writeHeapSnapshot(request.heapSnapshot);
    // The delay monitor records the GC pause on its next tick; reset only once that has passed.
    setTimeout(() => {
      lag.reset();
      reply(figures);
    }, 50);
    const figures: ServerSample = {
      soakReply: request.id,
      node: server.cluster?.nodeId ?? 'single',
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      heapTotal: memory.heapTotal,
      external: memory.external,
      heapSpaces: Object.fromEntries(getHeapSpaceStatistics().map((space) => [space.space_name, space.space_used_size])),
      lagP99Ms,
      lagMaxMs,
      stats: server.engine.stats(),
      inspect: server.engine.inspect(),
      engineTimers: timers.live(),
      cluster: server.cluster?.inspect(),
    };
  };

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void server.shutdown('soak finished').finally(() => process.exit(0));
  };
  process.on('message', (message: SampleRequest | { soak: 'stop' }) => {
    if (message?.soak === 'sample') sample(message, (figures) => process.send!(figures));
    else if (message?.soak === 'stop') stop();
  });
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Never outlive the orchestrator.
  process.on('disconnect', stop);
  process.send({ soakReady: true, port: server.port, node: server.cluster?.nodeId ?? 'single' });
}

main().catch((error: unknown) => {
  process.stderr.write(`soak server failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
