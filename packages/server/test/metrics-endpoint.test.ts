/**
 * `/metrics` of a running server: the standard process_* and nodejs_* metrics beside every
 * presence_* one, and `PRESENCE_METRICS_PORT` moving the endpoint to a port of its own.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { TestClient, startTestServer } from './support/harness.js';

/** Every metric family the presence metrics render (the full list is checked against the docs in docs.test.ts). */
const PRESENCE_FAMILIES = [
  'presence_connections',
  'presence_sessions',
  'presence_online_users',
  'presence_channels',
  'presence_cluster_nodes',
  'presence_cluster_ready',
  'presence_outbound_buffer_bytes',
  'presence_outbound_buffer_max_bytes',
  'presence_overloaded',
  'presence_events_in_total',
  'presence_events_out_total',
  'presence_errors_total',
  'presence_connections_opened_total',
  'presence_connections_closed_total',
  'presence_connections_refused_total',
  'presence_fanout_latency_seconds',
  'presence_http_requests_total',
  'presence_process_resident_memory_bytes',
  'presence_event_loop_lag_seconds',
  'presence_event_loop_lag_p99_seconds',
  'presence_event_loop_lag_max_seconds',
];

function families(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) \S+$/gm)].map((m) => m[1]);
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('/metrics', () => {
  test('serves the standard process_* and nodejs_* metrics and every presence_* one, each family once', async (t) => {
    const server = await startTestServer();
    t.after(() => server.shutdown());
    const client = await TestClient.connect(server, { userId: 'ann' });
    t.after(() => client.close());
    await client.request({ type: 'join', channel: 'room' });

    const response = await fetch(`${server.url}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await response.text();

    assert.ok((sample(text, 'process_cpu_seconds_total') ?? -1) > 0, 'process_cpu_seconds_total has a value');
    assert.ok((sample(text, 'process_resident_memory_bytes') ?? 0) > 0);
    assert.ok(sample(text, 'nodejs_eventloop_lag_seconds') !== undefined, 'nodejs_eventloop_lag_seconds');
    assert.ok((sample(text, 'nodejs_heap_size_used_bytes') ?? 0) > 0);
    assert.match(text, /^nodejs_version_info\{version="v\d+\.\d+\.\d+",major="\d+",minor="\d+",patch="\d+"\} 1$/m);

    const rendered = families(text);
    for (const family of PRESENCE_FAMILIES) assert.ok(rendered.includes(family), `renders ${family}`);
    assert.deepEqual(rendered.filter((f, i) => rendered.indexOf(f) !== i), [], 'no family is rendered twice');
    assert.ok(rendered.indexOf('process_cpu_seconds_total') < rendered.indexOf('presence_connections'), 'process metrics first');

    // The hot-path counters (plain numbers until a scrape) show what happened.
    assert.equal(sample(text, 'presence_connections'), 1);
    assert.equal(sample(text, 'presence_events_in_total{type="join"}'), 1);
    assert.equal(sample(text, 'presence_events_out_total{type="welcome"}'), 1);
    assert.ok((sample(text, 'presence_events_out_total{type="ack"}') ?? 0) >= 1);
    assert.equal(sample(text, 'presence_fanout_latency_seconds_count'), 1);
    const labelSets = [...text.matchAll(/^[a-z_]+\{([^}]*)\}/gm)].map((m) => m[1]);
    assert.ok(labelSets.length > 0);
    assert.deepEqual(labelSets.filter((labels) => /"(ann|room)"/.test(labels)), [], 'no user id or channel name in any label');
  });

  test('PRESENCE_METRICS_PORT: the metrics are on that port, and the main port answers 404 for /metrics', async (t) => {
    const server = await startTestServer({ metricsPort: 0 });
    t.after(() => server.shutdown());
    assert.ok(server.metricsUrl, 'the running server reports its metrics URL');
    const metricsUrl = new URL(server.metricsUrl);
    assert.equal(metricsUrl.pathname, '/metrics');
    assert.notEqual(Number(metricsUrl.port), server.port);

    const main = await fetch(`${server.url}/metrics`);
    assert.equal(main.status, 404);
    assert.equal(((await main.json()) as { error: { code: string } }).error.code, 'NOT_FOUND');
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200, 'the rest of the API stays on the main port');

    const scrape = await fetch(metricsUrl);
    assert.equal(scrape.status, 200);
    assert.equal(scrape.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await scrape.text();
    assert.ok(sample(text, 'process_cpu_seconds_total') !== undefined);
    assert.ok(sample(text, 'nodejs_eventloop_lag_seconds') !== undefined);
    assert.equal(sample(text, 'presence_connections'), 0);
    assert.equal(sample(text, 'presence_http_requests_total{route="unmatched",status="404"}'), 1, 'the refused scrape on the main port was counted as an unknown path');

    const other = await fetch(new URL('/healthz', metricsUrl));
    assert.equal(other.status, 404, 'the metrics port serves /metrics only');
    const post = await fetch(metricsUrl, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET');
    assert.equal(sample(await (await fetch(metricsUrl)).text(), 'presence_http_requests_total{route="/metrics",status="200"}'), 1, 'scrapes on the metrics port are counted');

    await server.shutdown();
    await assert.rejects(fetch(metricsUrl), 'the metrics port closes with the server');
  });

  test('a metrics port already in use fails the start, like the main port', async (t) => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const { port } = squatter.address() as AddressInfo;
    await assert.rejects(startTestServer({ metricsPort: port }), (error: NodeJS.ErrnoException) => error.code === 'EADDRINUSE');
  });
});
