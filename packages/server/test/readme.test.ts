import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { startTestServer, sleep } from './support/harness.js';

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
    // The example uses the browser's WebSocket API (onopen/onmessage, event.data), which ws implements.
    const run = new Function('WebSocket', 'console', `${code}\nreturn ws;`);
    const ws = run(WebSocket, fakeConsole) as WebSocket;
    for (let i = 0; i < 50 && !logged.some(([type]) => type === 'ack'); i += 1) await sleep(20);
    ws.close();
    const types = logged.map(([type]) => type);
    assert.deepEqual(types.slice(0, 1), ['welcome']);
    assert.ok(types.includes('presence.sync'), `saw ${types.join(', ')}`);
    const self = server.engine.userPresence('ada', { trusted: true });
    assert.equal(self.status, 'busy');
    assert.equal(self.message, 'In a call');
  });
});
