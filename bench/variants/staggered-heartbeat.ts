/**
 * Builds a copy of the Presence server with the heartbeat sweep spread over its interval, to
 * measure the change recommended in docs/performance.md without touching the server's sources:
 *
 *   node --import tsx bench/variants/staggered-heartbeat.ts
 *   npm run bench -- --scenarios=fanout --presence-entry=bench/scratch/variants/staggered-heartbeat/packages/server/bin/presence.ts
 *
 * Today the sweep pings every connection in one loop every PRESENCE_HEARTBEAT_INTERVAL_MS; at
 * 10,000 connections that loop (and the burst of pongs it provokes) holds the event loop for a few
 * hundred milliseconds. The variant pings a twentieth of the connections every twentieth of the
 * interval: the same liveness checks, the same deadlines, no stall.
 */
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = join(REPO, 'bench/scratch/variants/staggered-heartbeat/packages/server');

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
for (const part of ['src', 'bin', 'package.json']) cpSync(join(REPO, 'packages/server', part), join(OUT, part), { recursive: true });

const file = join(OUT, 'src/transport/websocket.ts');
let source = readFileSync(file, 'utf8');
const replace = (from: string, to: string) => {
  if (!source.includes(from)) throw new Error(`websocket.ts changed; this variant no longer applies (missing: ${from.trim().split('\n')[0]})`);
  source = source.replace(from, to);
};
replace(
  'const HEARTBEAT_CLOSE_GRACE_MS = 1000;',
  'const HEARTBEAT_CLOSE_GRACE_MS = 1000;\n/** The sweep visits one slice of the connections per tick, SWEEP_SLICES ticks per interval. */\nconst SWEEP_SLICES = 20;',
);
replace(
  'this.heartbeat = setInterval(() => this.sweep(), config.heartbeatIntervalMs);',
  'this.heartbeat = setInterval(() => this.sweep(), Math.max(10, Math.floor(config.heartbeatIntervalMs / SWEEP_SLICES)));',
);
replace(
  `  private sweep(): void {
    const deadline = this.now() - 2 * this.options.config.heartbeatIntervalMs;
    for (const [connection, ws] of this.connections) {`,
  `  private sweepSlice = 0;

  private sweep(): void {
    const slice = this.sweepSlice;
    this.sweepSlice = (slice + 1) % SWEEP_SLICES;
    const deadline = this.now() - 2 * this.options.config.heartbeatIntervalMs;
    let index = 0;
    for (const [connection, ws] of this.connections) {
      if (index++ % SWEEP_SLICES !== slice) continue;`,
);
writeFileSync(file, source);
process.stdout.write(`wrote ${join(OUT, 'bin/presence.ts')}\n`);
