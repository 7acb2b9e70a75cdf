import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startTestServer, sleep } from './support/harness.js';

mkdirSync(fileURLToPath(new URL('../../../node_modules/.cache/', import.meta.url)), { recursive: true });

/** How many `activity` commands the server counted (presence_events_in_total). */
function activityCommands(metrics: string): number {
  return Number(/^presence_events_in_total\{type="activity"\} (\d+)$/m.exec(metrics)?.[1] ?? 0);
}

async function until(predicate: () => Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it('starts with the two commands: install-and-start and test', () => {
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    assert.match(firstBlock, /^npm install && npm start/m);
    assert.match(firstBlock, /^npm test/m);
  });

  it('runs the plain-WebSocket browser example against a real server', async () => {
    const server = await startTestServer();
    after(() => server.shutdown());
    const example = /From a browser page[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example, 'README has the browser example');
    const code = example.replace('ws://localhost:8080', server.wsUrl.replace(/\/realtime$/, ''));
    const logged: unknown[][] = [];
    const fakeConsole = { log: (...args: unknown[]) => logged.push(args) };
    // The page's own addEventListener: the test plays the user's keystrokes and pointer moves.
    const listeners = new Map<string, (() => void)[]>();
    const addEventListener = (type: string, listener: () => void) => listeners.set(type, [...(listeners.get(type) ?? []), listener]);
    // The example uses the browser's WebSocket API (onopen/onmessage, event.data), which ws implements.
    const run = new Function('WebSocket', 'console', 'addEventListener', `${code}\nreturn ws;`);
    const ws = run(WebSocket, fakeConsole, addEventListener) as WebSocket;
    for (let i = 0; i < 50 && !logged.some(([type]) => type === 'ack'); i += 1) await sleep(20);
    assert.deepEqual([...listeners.keys()].sort(), ['keydown', 'pointermove']);
    for (let i = 0; i < 3; i += 1) for (const listener of [...listeners.values()].flat()) listener();
    await until(async () => activityCommands(await server.metrics.registry.metrics()) > 0, 'the activity command');
    ws.close();
    const types = logged.map(([type]) => type);
    assert.deepEqual(types.slice(0, 1), ['welcome']);
    assert.ok(types.includes('presence.sync'), `saw ${types.join(', ')}`);
    const self = server.engine.userPresence('ada', { trusted: true });
    assert.equal(self.status, 'busy');
    assert.equal(self.message, 'In a call');
    // Six events, one activity: the snippet sends it once in a while, not on every move.
    assert.equal(activityCommands(await server.metrics.registry.metrics()), 1);
  });

  it('runs the Node 20 example, with ws, as a script against a real server', async (t) => {
    const server = await startTestServer();
    t.after(() => server.shutdown());
    const example = /On Node 20[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example, 'README has the Node 20 example');
    assert.match(example, /^import WebSocket from 'ws';$/m);
    // A module in this repository, so that `ws` resolves as it does in an app that installed it.
    const dir = mkdtempSync(join(fileURLToPath(new URL('../../../node_modules/.cache/', import.meta.url)), 'readme-node-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const script = join(dir, 'grace.mjs');
    writeFileSync(script, example.replace('ws://localhost:8080', server.wsUrl.replace(/\/realtime$/, '')));
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    await until(async () => /^ack /m.test(stdout) || child.exitCode !== null, 'the join to be acknowledged');
    assert.equal(stderr, '');
    assert.match(stdout, /^welcome \{"type":"welcome","userId":"grace"/m);
    assert.match(stdout, /^presence\.sync \{"type":"presence\.sync","channel":"room:lobby"/m);
    await until(async () => activityCommands(await server.metrics.registry.metrics()) === 1, 'the activity command');
    const grace = server.engine.userPresence('grace', { trusted: true });
    assert.equal(grace.status, 'online');
    assert.deepEqual(grace.devices, ['cli']);
  });
});
