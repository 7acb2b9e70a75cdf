/**
 * docs/client.md: every `ts` block type-checks against the built package, the quick start runs
 * against a real server, and the reference tables list every client error code and option.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as wsModule from 'ws';
import * as clientModule from '../src/index.js';
import { CLIENT_ERRORS, type PresenceClient } from '../src/index.js';
import { codeBlocks, interfaceMembers, readDoc, runnableBody, typeErrors } from './support/doc-blocks.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { until } from './support/wait.js';

const doc = readDoc('docs/client.md');
const blocks = codeBlocks(doc, ['ts']);

describe('docs/client.md', () => {
  let server: TestServer;
  before(async () => {
    server = await startPresenceServer();
  });
  after(() => server.shutdown());

  test('has examples, and every one type-checks', () => {
    assert.ok(blocks.length >= 8, `expected the examples, found ${blocks.length} ts blocks`);
    assert.deepEqual(typeErrors('docs/client.md', blocks), []);
  });

  test('the quick start runs against a real server', async () => {
    const quickStart = /## Quick start[\s\S]*?```ts\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(quickStart, 'the quick start has a ts block');
    assert.match(quickStart, /ws:\/\/localhost:8080\/realtime/);
    const body = runnableBody(quickStart.replace('ws://localhost:8080/realtime', server.wsUrl)) + '\nreturn client;';
    const logged: unknown[][] = [];
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (...args: string[]) => (...args: unknown[]) => Promise<unknown>;
    const run = new AsyncFunction('modules', 'console', body);
    const client = (await run({ ws: wsModule, '@presence/client': clientModule }, { log: (...args: unknown[]) => logged.push(args) })) as PresenceClient;
    try {
      assert.deepEqual(logged[0], ['members:', ['ada']]);
      const ada = server.engine.userPresence('ada', { trusted: true });
      assert.equal(ada.status, 'busy');
      assert.equal(ada.message, 'In a call');
      await until(() => client.channel('room:lobby').members.get('ada')?.channelMeta.mode === 'viewing', 'the example joined with its meta');
    } finally {
      client.close();
    }
  });

  test('lists every client error code', () => {
    for (const code of Object.keys(CLIENT_ERRORS)) {
      assert.match(doc, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `docs/client.md: a row for ${code}`);
    }
  });

  test('lists every option of PresenceClientOptions', () => {
    const options = interfaceMembers('packages/client/src/client.ts', 'PresenceClientOptions');
    assert.ok(options.includes('url') && options.includes('typingPauseMs'), 'inherited options are included');
    for (const option of options) {
      assert.match(doc, new RegExp(`^\\| \`${option}\` \\|`, 'm'), `docs/client.md: a row for the option ${option}`);
    }
  });
});
