/**
 * The operations dashboard: polls `GET /realtime/admin/stats` every second and renders it. Plain
 * DOM code (no framework): the page is a handful of numbers, a few charts and tables. Text from
 * the server (channel names, node ids, error codes) only ever goes into `textContent`.
 *
 * The charts keep the last minute of answers. Rates the server does not compute (errors per
 * second) come from two successive answers of the same node: the difference of its counters over
 * the time between them.
 */
import type { AdminStats } from '../../../server/src/http/admin-stats.js';
import { drawTimeChart, type Point, type Series } from './chart.js';
import './dashboard.css';

const POLL_MS = 1000;
const WINDOW_MS = 60_000;
/** The dashboard key or the API key: either reads the stats. */
const KEY_STORAGE = 'presence.dashboard.apiKey';
const MIB = 1024 * 1024;
/** Error codes drawn as lines of their own; the rest are summed as "other". */
const ERROR_LINES = 4;
const STATS_URL = 'realtime/admin/stats';

const byId = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`dashboard.html lacks #${id}`);
  return element as T;
};

const keyForm = byId<HTMLFormElement>('key-form');
const keyInput = byId<HTMLInputElement>('api-key');
const keyReason = byId<HTMLParagraphElement>('key-reason');
const statsSection = byId<HTMLElement>('stats');
const updated = byId<HTMLParagraphElement>('updated');
const scope = byId<HTMLParagraphElement>('scope');
const channelsBody = byId<HTMLTableElement>('channels-table').tBodies[0];
const channelsEmpty = byId<HTMLParagraphElement>('channels-empty');
const nodesSection = byId<HTMLElement>('nodes-section');
const nodesBody = byId<HTMLTableElement>('nodes-table').tBodies[0];
const webhooksSection = byId<HTMLElement>('webhooks-section');
const webhooksBody = byId<HTMLTableElement>('webhooks-table').tBodies[0];
const webhooksDead = byId<HTMLParagraphElement>('webhooks-dead');
const svgById = (id: string) => byId(id) as unknown as SVGSVGElement;
const charts = {
  rates: { svg: svgById('rates-chart'), legend: byId<HTMLUListElement>('rates-legend') },
  lag: { svg: svgById('lag-chart'), legend: byId<HTMLUListElement>('lag-legend') },
  memory: { svg: svgById('memory-chart'), legend: byId<HTMLUListElement>('memory-legend') },
  outbound: { svg: svgById('outbound-chart'), legend: byId<HTMLUListElement>('outbound-legend') },
  errors: { svg: svgById('errors-chart'), legend: byId<HTMLUListElement>('errors-legend') },
};
const errorsBody = byId<HTMLTableElement>('errors-table').tBodies[0];
const errorsEmpty = byId<HTMLParagraphElement>('errors-empty');

/** The key lives in this tab's session storage only: never in local storage, cookies or the URL. */
let apiKey = sessionStorage.getItem(KEY_STORAGE) ?? '';
/** The answers of the last minute, oldest first. */
const history: { t: number; stats: AdminStats }[] = [];
const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const precise = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  apiKey = keyInput.value.trim();
  sessionStorage.setItem(KEY_STORAGE, apiKey);
  keyInput.value = '';
  void poll();
});

type Outcome = { kind: 'stats'; stats: AdminStats } | { kind: 'key'; reason: string } | { kind: 'error'; reason: string };

async function fetchStats(): Promise<Outcome> {
  let response: Response;
  try {
    response = await fetch(STATS_URL, {
      headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
      cache: 'no-store',
    });
  } catch {
    return { kind: 'error', reason: 'Server unreachable; retrying…' };
  }
  if (response.ok) return { kind: 'stats', stats: (await response.json()) as AdminStats };
  const code = await response
    .json()
    .then((body: { error?: { code?: string } }) => body.error?.code ?? '')
    .catch(() => '');
  if (response.status === 401 || response.status === 403) {
    return {
      kind: 'key',
      reason: apiKey
        ? `The server refused that key (${code || response.status}).`
        : 'This server needs a key: its dashboard key (PRESENCE_DASHBOARD_KEY) or its API key (PRESENCE_API_KEY).',
    };
  }
  return { kind: 'error', reason: `The server answered ${response.status} ${code}; retrying…` };
}

let timer: ReturnType<typeof setTimeout> | undefined;
let polling = false;

async function poll(): Promise<void> {
  if (polling) return;
  polling = true;
  clearTimeout(timer);
  try {
    const outcome = await fetchStats();
    if (outcome.kind === 'stats') {
      keyForm.hidden = true;
      statsSection.hidden = false;
      render(outcome.stats);
    } else if (outcome.kind === 'key') {
      const wasHidden = keyForm.hidden;
      keyForm.hidden = false;
      statsSection.hidden = true;
      keyReason.textContent = outcome.reason;
      updated.textContent = 'Waiting for a key';
      if (wasHidden) keyInput.focus();
      // No point asking again with the same key; the form submission polls.
      return;
    } else {
      updated.textContent = outcome.reason;
    }
    timer = setTimeout(() => void poll(), POLL_MS);
  } finally {
    polling = false;
  }
}

function render(stats: AdminStats): void {
  setStat('connections', stats.connections);
  setStat('sessions', stats.sessions);
  setStat('onlineUsers', stats.onlineUsers);
  setStat('channels', stats.channels);
  setStat('eventsIn', stats.rates?.eventsInPerSecond);
  setStat('eventsOut', stats.rates?.eventsOutPerSecond);
  updated.textContent = `Updated ${new Date(stats.time).toLocaleTimeString()}`;
  scope.textContent = stats.cluster
    ? `Node ${stats.nodeId}: connections, sessions, rates, errors, event-loop lag, memory and unsent bytes are this node's (each node's dashboard shows its own); online users and channels are the cluster's.`
    : stats.rates
      ? `Rates averaged over the last ${numbers.format(stats.rates.windowSeconds)} s.`
      : 'Rates appear with the next update.';

  channelsBody.replaceChildren(
    ...stats.topChannels.map(({ channel, members }) => row([channel, numbers.format(members)], [false, true])),
  );
  channelsEmpty.hidden = stats.topChannels.length > 0;

  nodesSection.hidden = stats.cluster === null;
  if (stats.cluster) {
    nodesBody.replaceChildren(
      ...stats.cluster.nodes.map((node) =>
        row(
          [node.self ? `${node.nodeId} (this node)` : node.nodeId, node.lease, String(node.connections), String(node.sessions), String(node.users)],
          [false, false, true, true, true],
        ),
      ),
    );
  }

  const webhooks = stats.webhooks;
  webhooksSection.hidden = webhooks === null;
  if (webhooks) {
    const now = Date.parse(stats.time);
    webhooksBody.replaceChildren(
      ...webhooks.targets.map((target) => {
        const waited = target.oldestPendingAt === null ? '–' : `${numbers.format(Math.max(0, (now - Date.parse(target.oldestPendingAt)) / 1000))} s`;
        const tr = row(
          [target.url, numbers.format(target.backlog), waited, numbers.format(target.delivered), numbers.format(target.failedAttempts), numbers.format(target.deadLetters), numbers.format(target.dropped)],
          [false, true, true, true, true, true, true],
        );
        if (target.deadLetters > 0 || target.dropped > 0) tr.className = 'alert';
        return tr;
      }),
    );
    const latest = webhooks.targets
      .flatMap((target) => target.recentDeadLetters.map((letter) => ({ ...letter, url: target.url })))
      .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))[0];
    webhooksDead.textContent = latest
      ? `Last dead letter: ${latest.type} ${latest.id} to ${latest.url}, ${latest.reason} after ${latest.attempts} attempt${latest.attempts === 1 ? '' : 's'}, at ${new Date(latest.at).toLocaleTimeString()}.`
      : 'No dead letters.';
  }

  const t = Date.parse(stats.time);
  // A node answering with an older time (another node behind a balancer, a clock step) starts over.
  if (history.length > 0 && t < history[history.length - 1].t) history.length = 0;
  history.push({ t, stats });
  // One answer older than the window stays: the first rate in the window is computed from it.
  while (history.length > 2 && history[1].t < t - WINDOW_MS) history.shift();
  drawCharts(t);
  renderErrors(stats, t);
}

function setStat(name: string, value: number | undefined): void {
  const cell = statsSection.querySelector<HTMLElement>(`[data-stat="${name}"]`);
  if (cell) cell.textContent = value === undefined ? '–' : numbers.format(value);
}

function row(texts: string[], numeric: boolean[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  texts.forEach((text, i) => {
    const td = document.createElement('td');
    td.textContent = text;
    if (numeric[i]) td.className = 'num';
    tr.append(td);
  });
  return tr;
}

/** A point per answer that has the figure; `pick` returns undefined where it has none. */
function pointsOf(pick: (stats: AdminStats) => number | null | undefined): Point[] {
  const points: Point[] = [];
  for (const { t, stats } of history) {
    const v = pick(stats);
    if (v !== null && v !== undefined) points.push({ t, v });
  }
  return points;
}

/** Per-second rates of each error code between successive answers of the same node. */
function errorRates(): { t: number; byCode: Map<string, number> }[] {
  const rates: { t: number; byCode: Map<string, number> }[] = [];
  for (let i = 1; i < history.length; i++) {
    const before = history[i - 1];
    const after = history[i];
    const seconds = (after.t - before.t) / 1000;
    if (seconds <= 0 || before.stats.nodeId !== after.stats.nodeId) continue;
    const byCode = new Map<string, number>();
    let restarted = false;
    for (const [code, count] of Object.entries(after.stats.totals.errors)) {
      const delta = count - (before.stats.totals.errors[code] ?? 0);
      if (delta < 0) restarted = true;
      else if (delta > 0) byCode.set(code, delta / seconds);
    }
    // Counters that went down: the node restarted in between, and the difference means nothing.
    if (!restarted) rates.push({ t: after.t, byCode });
  }
  return rates;
}

/** Bytes in the unit that suits the largest value: B, KiB or MiB. */
function byteUnit(max: number): { unit: string; divisor: number } {
  if (max >= MIB) return { unit: 'MiB', divisor: MIB };
  if (max >= 1024) return { unit: 'KiB', divisor: 1024 };
  return { unit: 'bytes', divisor: 1 };
}

function drawCharts(now: number): void {
  const chart = (name: keyof typeof charts, series: Series[], unit: string, legend: string[], minTop?: number) => {
    drawTimeChart(charts[name].svg, series, { unit, windowMs: WINDOW_MS, now, minTop });
    charts[name].legend.replaceChildren(
      ...series.map((s, i) => {
        const item = document.createElement('li');
        const swatch = document.createElement('span');
        swatch.className = `swatch ${s.className}`;
        item.append(swatch, legend[i]);
        return item;
      }),
    );
  };
  const latest = history[history.length - 1].stats;
  const last = (points: Point[]) => points[points.length - 1]?.v;
  const shown = (value: number | undefined, unit: string, format = numbers) => (value === undefined ? '–' : `${format.format(value)} ${unit}`);

  const ratesIn = pointsOf((s) => s.rates?.eventsInPerSecond);
  const ratesOut = pointsOf((s) => s.rates?.eventsOutPerSecond);
  chart(
    'rates',
    [
      { label: 'in', className: 'series-0', points: ratesIn },
      { label: 'out', className: 'series-1', points: ratesOut },
    ],
    'events/s',
    [`in: ${shown(last(ratesIn), 'events/s')}`, `out: ${shown(last(ratesOut), 'events/s')}`],
  );

  const p99 = pointsOf((s) => s.process.eventLoopLag?.p99Ms);
  const max = pointsOf((s) => s.process.eventLoopLag?.maxMs);
  chart(
    'lag',
    [
      { label: 'p99', className: 'series-0', points: p99 },
      { label: 'max', className: 'series-2', points: max },
    ],
    'ms',
    [`p99: ${shown(last(p99), 'ms', precise)}`, `max: ${shown(last(max), 'ms', precise)}`],
  );

  const rss = pointsOf((s) => s.process.residentMemoryBytes / MIB);
  const heap = pointsOf((s) => s.process.heapUsedBytes / MIB);
  chart(
    'memory',
    [
      { label: 'resident', className: 'series-0', points: rss },
      { label: 'heap used', className: 'series-1', points: heap },
    ],
    'MiB',
    [`resident (RSS): ${shown(last(rss), 'MiB')}`, `heap used: ${shown(last(heap), 'MiB')} of ${numbers.format(latest.process.heapTotalBytes / MIB)} MiB`],
  );

  const outboundMax = Math.max(0, ...history.map(({ stats }) => stats.process.outboundBufferBytes));
  const { unit, divisor } = byteUnit(outboundMax);
  const total = pointsOf((s) => s.process.outboundBufferBytes / divisor);
  const worst = pointsOf((s) => s.process.outboundBufferMaxBytes / divisor);
  chart(
    'outbound',
    [
      { label: 'all connections', className: 'series-0', points: total },
      { label: 'largest connection', className: 'series-2', points: worst },
    ],
    unit,
    [`all connections: ${shown(last(total), unit)}`, `largest on one connection: ${shown(last(worst), unit)}`],
  );

  const rates = errorRates();
  // The codes with the most errors in the window get lines; the rest share one.
  const inWindow = new Map<string, number>();
  for (const { byCode } of rates) for (const [code, rate] of byCode) inWindow.set(code, (inWindow.get(code) ?? 0) + rate);
  const ranked = [...inWindow.keys()].sort((a, b) => inWindow.get(b)! - inWindow.get(a)! || (a < b ? -1 : 1));
  const lines = ranked.length > ERROR_LINES ? ranked.slice(0, ERROR_LINES - 1) : ranked;
  const others = new Set(ranked.slice(lines.length));
  const series: Series[] = [
    { label: 'all', className: 'series-3', points: rates.map(({ t, byCode }) => ({ t, v: [...byCode.values()].reduce((a, b) => a + b, 0) })) },
    ...lines.map((code, i) => ({ label: code, className: `series-${[0, 1, 2, 4][i]}`, points: rates.map(({ t, byCode }) => ({ t, v: byCode.get(code) ?? 0 })) })),
  ];
  if (others.size > 0) {
    series.push({
      label: 'other',
      className: 'series-5',
      points: rates.map(({ t, byCode }) => ({ t, v: [...others].reduce((sum, code) => sum + (byCode.get(code) ?? 0), 0) })),
    });
  }
  chart(
    'errors',
    series,
    'errors/s',
    series.map((s) => `${s.label}: ${shown(last(s.points), 'errors/s', precise)}`),
  );
}

/** Each code's errors in the last minute (from the oldest answer of this node in it) and since start. */
function renderErrors(stats: AdminStats, now: number): void {
  // The oldest answer in the window; with no earlier answer than this one, the last minute is unknown.
  const found = history.find(({ t, stats: old }) => t >= now - WINDOW_MS && old.nodeId === stats.nodeId)?.stats;
  const base = found === stats ? undefined : found;
  const rows = Object.entries(stats.totals.errors)
    .map(([code, total]) => {
      const recent = base ? total - (base.totals.errors[code] ?? 0) : undefined;
      return { code, total, recent: recent !== undefined && recent >= 0 ? recent : undefined };
    })
    .sort((a, b) => (b.recent ?? 0) - (a.recent ?? 0) || b.total - a.total || (a.code < b.code ? -1 : 1));
  errorsBody.replaceChildren(
    ...rows.map(({ code, total, recent }) => {
      const tr = row([code, recent === undefined ? '–' : numbers.format(recent), numbers.format(total)], [false, true, true]);
      if (recent) tr.className = 'alert';
      return tr;
    }),
  );
  errorsEmpty.hidden = rows.length > 0;
}

void poll();
