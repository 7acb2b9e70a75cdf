/**
 * The open-files limit caps `maxConnections` (src/transport/open-files.ts): past it the kernel
 * would complete handshakes that the process then cannot accept, and clients would see their
 * connection dropped with no answer (found by the 50,000-connection benchmark).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { resolveConfig } from '../src/config/config.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { connectionCeiling, parseOpenFileLimit, readOpenFileLimit, reservedFiles } from '../src/transport/open-files.js';
import { TestClient } from './support/harness.js';

const LINUX_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
`;

describe('open-files limit', () => {
  it('reads the soft limit from /proc/<pid>/limits; unlimited or unreadable is no limit', () => {
    assert.equal(parseOpenFileLimit(LINUX_LIMITS), 20_000);
    assert.equal(parseOpenFileLimit(LINUX_LIMITS.replace('20000                20000', '1024                 524288')), 1024);
    assert.equal(parseOpenFileLimit(LINUX_LIMITS.replace('20000                20000', 'unlimited            unlimited')), undefined);
    assert.equal(parseOpenFileLimit('nothing here'), undefined);
    assert.equal(readOpenFileLimit('/nonexistent/limits'), undefined);
    if (existsSync('/proc/self/limits')) {
      const limit = readOpenFileLimit();
      assert.ok(limit === undefined || limit > 0, `this process's limit: ${limit}`);
    }
  });

  it('keeps 5 % of the descriptors (64 to 1,024) for everything that is not a WebSocket', () => {
    assert.equal(reservedFiles(20_000), 1000);
    assert.equal(reservedFiles(1024), 64);
    assert.equal(reservedFiles(1_048_576), 1024);
    assert.equal(connectionCeiling(100_000, 20_000), 19_000);
    assert.equal(connectionCeiling(100_000, 1024), 960);
    assert.equal(connectionCeiling(500, 20_000), 500, 'a configured limit below the ceiling stands');
    assert.equal(connectionCeiling(100_000, undefined), 100_000, 'no cap where the limit is unknown');
    assert.equal(connectionCeiling(100_000, 10), 1, 'never below one connection');
  });

  it('a server whose limit cannot hold maxConnections warns at start and refuses the excess with TOO_MANY_CONNECTIONS (4029)', async (t) => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('warn', (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
    const config = resolveConfig({ port: 0, host: '127.0.0.1', limits: { maxConnections: 100_000, maxEventLoopLagMs: 0 } });
    // 66 descriptors keep 64 in reserve: room for two sockets.
    const server = await startServer(config, { log, openFileLimit: 66 });
    t.after(() => server.shutdown());
    const warning = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('the open-files limit caps connections'));
    assert.ok(warning, `a warning at start; logged: ${JSON.stringify(lines.map((l) => l.msg))}`);
    assert.deepEqual([warning.openFileLimit, warning.reserved, warning.maxConnections, warning.configured], [66, 64, 2, 100_000]);

    const wsUrl = `ws://127.0.0.1:${server.port}/realtime`;
    const ann = await TestClient.connect({ wsUrl }, { userId: 'ann' });
    const bob = await TestClient.connect({ wsUrl }, { userId: 'bob' });
    const cid = await TestClient.connect({ wsUrl }, { userId: 'cid' });
    t.after(async () => {
      for (const c of [ann, bob, cid]) await c.close().catch(() => {});
    });
    assert.equal(ann.welcome.userId, 'ann');
    assert.equal(bob.welcome.userId, 'bob');
    const refusal = cid.messages[0];
    assert.equal(refusal.type === 'error' && refusal.code, 'TOO_MANY_CONNECTIONS');
    assert.equal((await cid.closed).code, 4029);
  });

  it('no warning and no cap when the limit holds maxConnections', async (t) => {
    const lines: string[] = [];
    const config = resolveConfig({ port: 0, host: '127.0.0.1', limits: { maxConnections: 100, maxEventLoopLagMs: 0 } });
    const server = await startServer(config, { log: createLogger('warn', (line) => lines.push(line)), openFileLimit: 20_000 });
    t.after(() => server.shutdown());
    assert.equal(lines.filter((l) => l.includes('open-files')).length, 0);
  });
});
