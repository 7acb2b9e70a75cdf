/**
 * Draws the results as one SVG: a panel per rate scenario, latency (p99 solid, p50 dashed) against
 * offered load, both on log scales, one line per system, the objective as a horizontal rule.
 * Filled points passed their step, hollow ones failed it.
 *
 *   node --import tsx bench/chart.ts bench/results/full.json   # writes bench/results/full.svg
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { SystemName } from './loadgen/wire.js';
import { isResult, type Results } from './lib/report.js';
import { SYSTEM_LABELS } from './lib/systems.js';
import type { ScaleoutResult } from './scenarios/scaleout.js';
import type { LadderResult, StepResult } from './scenarios/steps.js';

const COLORS: Record<SystemName, string> = { presence: '#1f6feb', ws: '#6e7781', socketio: '#d1242f', pusher: '#8250df' };
const PANEL_W = 520;
const PANEL_H = 340;
const MARGIN = { left: 64, right: 16, top: 40, bottom: 52 };

interface Panel {
  title: string;
  unit: string;
  sloMs: number;
  series: Array<{ system: SystemName; steps: StepResult[] }>;
}

export function renderChart(results: Results): string {
  const panels: Panel[] = [];
  const add = (key: 'fanout' | 'typing' | 'churn' | 'multinode', title: string, unit: string, sloMs: number) => {
    const section = results.scenarios[key] as Partial<Record<SystemName, unknown>>;
    const series: Panel['series'] = [];
    for (const system of results.options.systems) {
      const r = section[system] as LadderResult | undefined;
      if (isResult(r) && r.steps.length > 0) series.push({ system, steps: r.steps.filter((s) => !s.superseded).sort((a, b) => a.offeredRate - b.offeredRate) });
    }
    if (series.length > 0) panels.push({ title, unit, sloMs, series });
  };
  const o = results.options;
  add('fanout', `Fan-out: ${o.fanout.channels} channels × ${o.fanout.members} members`, 'presence updates/s offered', o.sloMs);
  add('typing', `Typing storm: 1 channel × ${o.big.members} members`, 'typing transitions/s offered', o.big.sloMs);
  add('churn', `Join/leave churn: 1 channel × ${o.big.members} members`, 'joins + leaves/s offered', o.big.sloMs);
  add('multinode', `Multi-node fan-out: 2 nodes + Redis`, 'presence updates/s offered', o.sloMs);

  const scaleout = isResult(results.scenarios.scaleout) && results.scenarios.scaleout.runs.length > 0 ? results.scenarios.scaleout : undefined;
  const columns = panels.length > 1 || scaleout ? 2 : 1;
  const rows = panels.length === 0 && scaleout ? 0 : Math.max(1, Math.ceil(panels.length / columns));
  const legendH = 56;
  const width = columns * PANEL_W;
  const height = (rows + (scaleout ? 1 : 0)) * PANEL_H + legendH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  const when = results.finishedAt.slice(0, 16).replace('T', ' ');
  const variant = o.presenceEntry ? `; Presence = ${variantName(o.presenceEntry)}` : '';
  const runKind = `${results.mode === 'quick' ? 'quick' : 'full-scale'} run, ${when} UTC${variant}`;
  if (panels.length === 0 && scaleout) {
    parts.push(text(12, 20, `Presence scaling out through one Redis (${runKind}) — dots are runs, lines join their medians`, 'start', 13, '#24292f', 'bold'));
    parts.push(
      text(12, 44, `${scaleout.summary[0]?.usersPerNode ?? scaleout.options.users} users and ${scaleout.options.rate} updates/s per node, channels of ${scaleout.options.channelSize}; all nodes share one core`, 'start', 12, '#24292f'),
    );
    parts.push(renderScaleoutPanel(scaleout, 'cpu', 0, legendH));
    parts.push(renderScaleoutPanel(scaleout, 'heap', PANEL_W, legendH));
    parts.push('</svg>');
    return parts.join('\n');
  }
  parts.push(text(12, 20, `Latency against offered load (${runKind}) — p99 solid, p50 dashed; hollow points failed the step`, 'start', 13, '#24292f', 'bold'));
  let x = 12;
  for (const system of results.options.systems) {
    parts.push(`<line x1="${x}" y1="40" x2="${x + 24}" y2="40" stroke="${COLORS[system]}" stroke-width="3"/>`);
    parts.push(text(x + 30, 44, SYSTEM_LABELS[system], 'start', 12, '#24292f'));
    x += 40 + SYSTEM_LABELS[system].length * 7;
  }
  parts.push(`<line x1="${x}" y1="40" x2="${x + 24}" y2="40" stroke="#bf8700" stroke-width="1.5" stroke-dasharray="2 3"/>`);
  parts.push(text(x + 30, 44, 'p99 objective of the scenario', 'start', 12, '#24292f'));
  panels.forEach((panel, i) => {
    const ox = (i % columns) * PANEL_W;
    const oy = legendH + Math.floor(i / columns) * PANEL_H;
    parts.push(renderPanel(panel, ox, oy));
  });
  if (scaleout) {
    const oy = legendH + rows * PANEL_H;
    parts.push(renderScaleoutPanel(scaleout, 'cpu', 0, oy));
    parts.push(renderScaleoutPanel(scaleout, 'heap', PANEL_W, oy));
  }
  if (panels.length === 0 && !scaleout) parts.push(text(width / 2, legendH + 40, 'no rate scenario in this run', 'middle', 13, '#57606a'));
  parts.push('</svg>');
  return parts.join('\n');
}

function renderPanel(panel: Panel, ox: number, oy: number): string {
  const { sloMs } = panel;
  const steps = panel.series.flatMap((s) => s.steps);
  const rates = steps.map((s) => s.offeredRate);
  const latencies = steps.flatMap((s) => [s.latency.p50Ms, s.latency.p99Ms]).filter((v) => v > 0);
  const xMin = decadeFloor(Math.min(...rates));
  const xMax = decadeCeil(Math.max(...rates) * 1.05);
  const yMin = decadeFloor(Math.max(0.05, Math.min(...latencies, sloMs)));
  const yMax = decadeCeil(Math.max(...latencies, sloMs) * 1.2);
  const plotW = PANEL_W - MARGIN.left - MARGIN.right;
  const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
  const px = (v: number) => ox + MARGIN.left + ((Math.log10(v) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * plotW;
  const py = (v: number) => oy + MARGIN.top + plotH - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * plotH;
  const parts: string[] = [];
  parts.push(text(ox + MARGIN.left, oy + 22, panel.title, 'start', 13, '#24292f', 'bold'));
  parts.push(`<rect x="${ox + MARGIN.left}" y="${oy + MARGIN.top}" width="${plotW}" height="${plotH}" fill="#f6f8fa" stroke="#d0d7de"/>`);
  for (const tick of logTicks(xMin, xMax)) {
    const x = px(tick.value);
    parts.push(`<line x1="${x.toFixed(1)}" y1="${oy + MARGIN.top}" x2="${x.toFixed(1)}" y2="${oy + MARGIN.top + plotH}" stroke="${tick.major ? '#d0d7de' : '#eaeef2'}"/>`);
    if (tick.label) parts.push(text(x, oy + MARGIN.top + plotH + 16, formatNumber(tick.value), 'middle', 11, '#57606a'));
  }
  for (const tick of logTicks(yMin, yMax)) {
    const y = py(tick.value);
    parts.push(`<line x1="${ox + MARGIN.left}" y1="${y.toFixed(1)}" x2="${ox + MARGIN.left + plotW}" y2="${y.toFixed(1)}" stroke="${tick.major ? '#d0d7de' : '#eaeef2'}"/>`);
    if (tick.label) parts.push(text(ox + MARGIN.left - 6, y + 4, formatNumber(tick.value), 'end', 11, '#57606a'));
  }
  parts.push(text(ox + MARGIN.left + plotW / 2, oy + PANEL_H - 14, panel.unit, 'middle', 12, '#24292f'));
  parts.push(
    `<text x="${ox + 16}" y="${oy + MARGIN.top + plotH / 2}" text-anchor="middle" font-size="12" fill="#24292f" transform="rotate(-90 ${ox + 16} ${oy + MARGIN.top + plotH / 2})">latency, ms</text>`,
  );
  const sloY = py(sloMs);
  parts.push(`<line x1="${ox + MARGIN.left}" y1="${sloY.toFixed(1)}" x2="${ox + MARGIN.left + plotW}" y2="${sloY.toFixed(1)}" stroke="#bf8700" stroke-width="1.5" stroke-dasharray="2 3"/>`);
  parts.push(text(ox + MARGIN.left + plotW - 4, sloY - 4, `${sloMs} ms`, 'end', 11, '#9a6700'));
  for (const { system, steps: series } of panel.series) {
    const color = COLORS[system];
    const path = (pick: (s: StepResult) => number) =>
      series
        .filter((s) => pick(s) > 0)
        .map((s, i) => `${i === 0 ? 'M' : 'L'}${px(s.offeredRate).toFixed(1)},${py(pick(s)).toFixed(1)}`)
        .join(' ');
    parts.push(`<path d="${path((s) => s.latency.p50Ms)}" fill="none" stroke="${color}" stroke-width="1.5" stroke-dasharray="5 4" opacity="0.8"/>`);
    parts.push(`<path d="${path((s) => s.latency.p99Ms)}" fill="none" stroke="${color}" stroke-width="2.5"/>`);
    for (const s of series) {
      if (s.latency.p99Ms <= 0) continue;
      const fill = s.passed ? color : '#ffffff';
      parts.push(
        `<circle cx="${px(s.offeredRate).toFixed(1)}" cy="${py(s.latency.p99Ms).toFixed(1)}" r="3.5" fill="${fill}" stroke="${color}" stroke-width="1.5"><title>${SYSTEM_LABELS[system]}: ${formatNumber(s.offeredRate)}/s offered, p50 ${s.latency.p50Ms} ms, p99 ${s.latency.p99Ms} ms${s.note ? ` (${escape(s.note)})` : ''}</title></circle>`,
      );
    }
  }
  return parts.join('\n');
}

/**
 * Scale-out: a figure per node count (on a log2 axis), each run a dot and the medians joined,
 * local channels solid, cross-node dashed. The CPU panel marks the goal, 15 % above one node.
 */
function renderScaleoutPanel(result: ScaleoutResult, figure: 'cpu' | 'heap', ox: number, oy: number): string {
  const pick = figure === 'cpu' ? (r: { cpuPerDeliveryUs: number }) => r.cpuPerDeliveryUs : (r: { heapPerUser: number }) => r.heapPerUser / 1024;
  const nodes = [...new Set(result.runs.map((r) => r.nodes))].sort((a, b) => a - b);
  const values = [...result.runs.map(pick), ...result.summary.map(pick)];
  const one = result.summary.find((s) => s.variant === 'local' && s.nodes === 1);
  const goal = figure === 'cpu' && one ? one.cpuPerDeliveryUs * (1 + result.goals.flatness.goal) : undefined;
  const top = Math.max(...values, goal ?? 0) * 1.1 || 1;
  const step = niceStep(top / 4);
  const yMax = Math.ceil(top / step) * step;
  const plotW = PANEL_W - MARGIN.left - MARGIN.right;
  const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
  const span = Math.max(1, Math.log2(nodes.at(-1)! / nodes[0]));
  const px = (n: number) => ox + MARGIN.left + 24 + ((Math.log2(n / nodes[0]) / span) * (plotW - 48));
  const py = (v: number) => oy + MARGIN.top + plotH - (v / yMax) * plotH;
  const parts: string[] = [];
  const title = figure === 'cpu' ? 'Scale-out: server CPU per delivered update' : 'Scale-out: heap per user on each node (after GC)';
  parts.push(text(ox + MARGIN.left, oy + 22, title, 'start', 13, '#24292f', 'bold'));
  parts.push(`<rect x="${ox + MARGIN.left}" y="${oy + MARGIN.top}" width="${plotW}" height="${plotH}" fill="#f6f8fa" stroke="#d0d7de"/>`);
  for (const n of nodes) {
    parts.push(`<line x1="${px(n).toFixed(1)}" y1="${oy + MARGIN.top}" x2="${px(n).toFixed(1)}" y2="${oy + MARGIN.top + plotH}" stroke="#eaeef2"/>`);
    parts.push(text(px(n), oy + MARGIN.top + plotH + 16, String(n), 'middle', 11, '#57606a'));
  }
  for (let v = 0; v <= yMax + step / 2; v += step) {
    parts.push(`<line x1="${ox + MARGIN.left}" y1="${py(v).toFixed(1)}" x2="${ox + MARGIN.left + plotW}" y2="${py(v).toFixed(1)}" stroke="#eaeef2"/>`);
    parts.push(text(ox + MARGIN.left - 6, py(v) + 4, formatNumber(v), 'end', 11, '#57606a'));
  }
  parts.push(text(ox + MARGIN.left + plotW / 2, oy + PANEL_H - 14, 'nodes (same users and updates/s per node)', 'middle', 12, '#24292f'));
  const unit = figure === 'cpu' ? 'CPU µs per delivery' : 'KB per user of the node';
  parts.push(
    `<text x="${ox + 16}" y="${oy + MARGIN.top + plotH / 2}" text-anchor="middle" font-size="12" fill="#24292f" transform="rotate(-90 ${ox + 16} ${oy + MARGIN.top + plotH / 2})">${unit}</text>`,
  );
  if (goal !== undefined) {
    parts.push(`<line x1="${ox + MARGIN.left}" y1="${py(goal).toFixed(1)}" x2="${ox + MARGIN.left + plotW}" y2="${py(goal).toFixed(1)}" stroke="#bf8700" stroke-width="1.5" stroke-dasharray="2 3"/>`);
    parts.push(text(ox + MARGIN.left + plotW - 4, py(goal) - 4, 'goal: 1 node + 15 %', 'end', 11, '#9a6700'));
  }
  const color = COLORS.presence;
  for (const variant of ['local', 'cross'] as const) {
    const medians = result.summary.filter((s) => s.variant === variant);
    if (medians.length === 0) continue;
    const path = medians.map((s, i) => `${i === 0 ? 'M' : 'L'}${px(s.nodes).toFixed(1)},${py(pick(s)).toFixed(1)}`).join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2.5"${variant === 'cross' ? ' stroke-dasharray="6 4" opacity="0.8"' : ''}/>`);
    for (const r of result.runs.filter((run) => run.variant === variant)) {
      parts.push(
        `<circle cx="${px(r.nodes).toFixed(1)}" cy="${py(pick(r)).toFixed(1)}" r="3" fill="${variant === 'local' ? color : '#ffffff'}" stroke="${color}" stroke-width="1.2"><title>${variant}, ${r.nodes} nodes, run ${r.run}: ${pick(r).toFixed(1)}</title></circle>`,
      );
    }
  }
  // Key, inside the plot's top left corner.
  const kx = ox + MARGIN.left + 10;
  const ky = oy + MARGIN.top + 14;
  parts.push(`<line x1="${kx}" y1="${ky - 4}" x2="${kx + 22}" y2="${ky - 4}" stroke="${color}" stroke-width="2.5"/>`);
  parts.push(text(kx + 28, ky, 'local channels', 'start', 11, '#24292f'));
  if (result.summary.some((s) => s.variant === 'cross')) {
    parts.push(`<line x1="${kx + 120}" y1="${ky - 4}" x2="${kx + 142}" y2="${ky - 4}" stroke="${color}" stroke-width="2.5" stroke-dasharray="6 4"/>`);
    parts.push(text(kx + 148, ky, `${Math.round(result.options.crossFraction * 100)} % of members on other nodes`, 'start', 11, '#24292f'));
  }
  return parts.join('\n');
}

function text(x: number, y: number, content: string, anchor: string, size: number, color: string, weight = 'normal'): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" text-anchor="${anchor}" font-size="${size}" font-weight="${weight}" fill="${color}">${escape(content)}</text>`;
}

/** `…/staggered-heartbeat/packages/server/bin/presence.ts` → `staggered-heartbeat`. */
function variantName(entry: string): string {
  const parts = entry.split('/');
  const at = parts.lastIndexOf('packages');
  return at > 0 ? parts[at - 1] : entry;
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** 1, 2 or 5 times a power of ten, at least `v`. */
function niceStep(v: number): number {
  const base = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * base).find((step) => step >= v) ?? 10 * base;
}

const decadeFloor = (v: number) => 10 ** Math.floor(Math.log10(v));
const decadeCeil = (v: number) => 10 ** Math.ceil(Math.log10(v));

function logTicks(min: number, max: number): Array<{ value: number; major: boolean; label: boolean }> {
  const ticks: Array<{ value: number; major: boolean; label: boolean }> = [];
  const decades = Math.round(Math.log10(max / min));
  for (let d = Math.log10(min); d <= Math.log10(max) + 1e-9; d += 1) {
    const base = 10 ** Math.round(d);
    for (const m of [1, 2, 5]) {
      const value = base * m;
      if (value < min * 0.999 || value > max * 1.001) continue;
      ticks.push({ value, major: m === 1, label: m === 1 || decades <= 3 });
    }
  }
  return ticks;
}

function formatNumber(v: number): string {
  if (v >= 1000) return `${Number((v / 1000).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const input = process.argv[2];
  if (!input) {
    process.stderr.write('usage: node --import tsx bench/chart.ts RESULTS.json [OUT.svg]\n');
    process.exit(2);
  }
  const out = process.argv[3] ?? input.replace(/\.json$/, '') + '.svg';
  writeFileSync(out, renderChart(JSON.parse(readFileSync(input, 'utf8')) as Results));
  process.stdout.write(`wrote ${out}\n`);
}
