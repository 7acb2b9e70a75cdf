/**
 * The operations dashboard: polls `GET /realtime/admin/stats` every second and renders it. Plain
 * DOM code (no framework): the page is a handful of numbers and two tables. Text from the server
 * (channel names, node ids) only ever goes into `textContent`.
 */
import type { AdminStats } from '../../../server/src/http/admin-stats.js';
import './dashboard.css';

const POLL_MS = 1000;
const HISTORY = 60;
const KEY_STORAGE = 'presence.dashboard.apiKey';
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
const chart = document.getElementById('rates-chart') as unknown as SVGSVGElement;
const peak = byId<HTMLSpanElement>('rates-peak');

/** The key lives in this tab's session storage only: never in local storage, cookies or the URL. */
let apiKey = sessionStorage.getItem(KEY_STORAGE) ?? '';
const history: { in: number; out: number }[] = [];
const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

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
      reason: apiKey ? `The server refused that key (${code || response.status}).` : 'This server needs its API key (PRESENCE_API_KEY).',
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
      updated.textContent = 'Waiting for the API key';
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
    ? `Node ${stats.nodeId}: connections, sessions and rates are this node's; online users and channels are the cluster's.`
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

  if (stats.rates) {
    history.push({ in: stats.rates.eventsInPerSecond, out: stats.rates.eventsOutPerSecond });
    if (history.length > HISTORY) history.shift();
    drawChart();
  }
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

const SVG_NS = 'http://www.w3.org/2000/svg';

function drawChart(): void {
  const width = 600;
  const height = 120;
  const max = Math.max(1, ...history.map((h) => Math.max(h.in, h.out)));
  const line = (pick: (h: { in: number; out: number }) => number, className: string) => {
    const path = document.createElementNS(SVG_NS, 'polyline');
    const step = width / (HISTORY - 1);
    const offset = HISTORY - history.length;
    path.setAttribute('points', history.map((h, i) => `${((offset + i) * step).toFixed(1)},${(height - 4 - (pick(h) / max) * (height - 8)).toFixed(1)}`).join(' '));
    path.setAttribute('class', className);
    return path;
  };
  chart.replaceChildren(line((h) => h.in, 'line in'), line((h) => h.out, 'line out'));
  peak.textContent = ` · top of the chart: ${numbers.format(max)} / s`;
}

void poll();
