// Preloaded (`node --import`) into every measured server process, Presence and baselines alike.
// It only answers the orchestrator over the IPC channel: a forced GC (when --expose-gc is on),
// memory, event-loop delay and utilization since the previous probe. It generates no load.
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { writeHeapSnapshot } from 'node:v8';

if (typeof process.send === 'function') {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let elu = performance.eventLoopUtilization();
  process.on('message', (message) => {
    if (!message || message.benchProbe !== true) return;
    if (message.gc && typeof globalThis.gc === 'function') {
      // Twice: the first pass can leave weak/finalizer work that the second one frees.
      globalThis.gc();
      globalThis.gc();
    }
    // Profiling aid (not used by the scenarios): a heap snapshot at the given path.
    if (typeof message.heapSnapshot === 'string') writeHeapSnapshot(message.heapSnapshot);
    let memory;
    try {
      memory = process.memoryUsage();
    } catch (error) {
      // Reading memory opens a file; out of descriptors (EMFILE) it throws. The probe must never
      // be what ends the server it measures: answer with zeros, which the orchestrator reports.
      process.send({ benchProbeReply: message.id, error: String(error?.message ?? error) });
      return;
    }
    const current = performance.eventLoopUtilization();
    const since = performance.eventLoopUtilization(current, elu);
    elu = current;
    const reply = {
      benchProbeReply: message.id,
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      heapTotal: memory.heapTotal,
      external: memory.external,
      arrayBuffers: memory.arrayBuffers,
      lagP99Ms: delay.percentile(99) / 1e6,
      lagMaxMs: delay.max / 1e6,
      elu: since.utilization,
    };
    delay.reset();
    process.send(reply);
  });
  // The probe must never keep a server alive on its own, nor outlive the bench that started it.
  process.channel?.unref();
  process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
