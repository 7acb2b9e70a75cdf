/**
 * Before/after of two builds of the server on the same machine, in one run: alternates the
 * fan-out and connections scenarios between a baseline build and a candidate build, so drift of
 * the machine (other load, thermal state) falls on both alike, then prints the medians and
 * spreads and writes them as JSON.
 *
 *   node --import tsx bench/compare-builds.ts --baseline=DIR --candidate=DIR [--runs=3] [--out=FILE] [--label-baseline=…] [--label-candidate=…]
 *
 * DIR is a checkout whose server is built (`npm ci && npm run build` in it): build the older
 * commit beside this one with `git worktree add ../old <commit>`. The bar it checks is the one the
 * engine split was held to: the candidate's median max-sustained rate at least the baseline's
 * median minus the larger of the baseline's spread and 5 %, and memory per connection at most the
 * baseline's plus 5 %.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCH = dirname(fileURLToPath(import.meta.url));

interface Figures {
  maxSustainedRate: number;
  rssPerConnection: number;
  heapPerConnection: number;
}

function option(name: string, fallback?: string): string {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const value = arg ? arg.slice(name.length + 3) : fallback;
  if (value === undefined) throw new Error(`--${name}=… is required`);
  return value;
}

function runOnce(checkout: string, out: string): Figures {
  const entry = join(resolve(checkout), 'packages/server/dist/bin/presence.js');
  const result = spawnSync(process.execPath, ['--import', 'tsx', join(BENCH, 'run.ts'), '--scenarios=fanout,connections', '--systems=presence', `--presence-entry=${entry}`, `--out=${out}`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (result.status !== 0) throw new Error(`bench run for ${checkout} exited ${result.status}`);
  const json = JSON.parse(readFileSync(out, 'utf8'));
  const fanout = json.scenarios.fanout.presence;
  const connections = json.scenarios.connections.presence;
  return { maxSustainedRate: fanout.maxSustainedRate, rssPerConnection: connections.rssPerConnection, heapPerConnection: connections.heapPerConnection };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function main(): void {
  const baseline = option('baseline');
  const candidate = option('candidate');
  const runs = Number(option('runs', '3'));
  const out = resolve(option('out', join(BENCH, 'scratch', 'compare-builds.json')));
  const labels = { baseline: option('label-baseline', baseline), candidate: option('label-candidate', candidate) };
  const scratch = join(BENCH, 'scratch');
  mkdirSync(scratch, { recursive: true });
  const figures: Record<'baseline' | 'candidate', Figures[]> = { baseline: [], candidate: [] };
  for (let i = 1; i <= runs; i += 1) {
    for (const side of ['baseline', 'candidate'] as const) {
      process.stdout.write(`\n== run ${i}/${runs}: ${side} (${labels[side]})\n`);
      figures[side].push(runOnce(side === 'baseline' ? baseline : candidate, join(scratch, `compare-${side}-${i}.json`)));
    }
  }
  const summary = (side: 'baseline' | 'candidate') => {
    const rates = figures[side].map((f) => f.maxSustainedRate);
    return {
      rates,
      rateMedian: median(rates),
      rateSpread: Math.max(...rates) - Math.min(...rates),
      rssPerConnectionMedian: median(figures[side].map((f) => f.rssPerConnection)),
      heapPerConnectionMedian: median(figures[side].map((f) => f.heapPerConnection)),
    };
  };
  const base = summary('baseline');
  const cand = summary('candidate');
  const rateFloor = base.rateMedian - Math.max(base.rateSpread, 0.05 * base.rateMedian);
  const memoryCeiling = base.rssPerConnectionMedian * 1.05;
  const verdict = { rateFloor, rateMet: cand.rateMedian >= rateFloor, memoryCeiling, memoryMet: cand.rssPerConnectionMedian <= memoryCeiling };
  const row = (name: string, s: typeof base) =>
    `| ${name} | ${s.rates.join(', ')} | ${s.rateMedian} | ${s.rateSpread} | ${(s.rssPerConnectionMedian / 1000).toFixed(1)} KB | ${(s.heapPerConnectionMedian / 1000).toFixed(1)} KB |`;
  const table = [
    '| build | max sustained rate per run (updates/s) | median | spread | RSS per connection (median) | heap per connection (median) |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
    row(labels.baseline, base),
    row(labels.candidate, cand),
    '',
    `rate: candidate median ${cand.rateMedian} vs floor ${Math.round(rateFloor)} → ${verdict.rateMet ? 'met' : 'NOT met'}; ` +
      `memory: ${(cand.rssPerConnectionMedian / 1000).toFixed(1)} KB vs ceiling ${(memoryCeiling / 1000).toFixed(1)} KB → ${verdict.memoryMet ? 'met' : 'NOT met'}`,
  ].join('\n');
  process.stdout.write(`\n${table}\n`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ labels, runs, figures, baseline: base, candidate: cand, verdict }, null, 2)}\n`);
  process.stdout.write(`results: ${out}\n`);
}

main();
