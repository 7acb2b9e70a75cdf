/**
 * docs/server-sdk.md and the package README: every `ts` block type-checks against the built
 * package, the examples run against real servers (the webhook handler as a real HTTP server
 * receiving signed requests), and the reference tables list every method, option and error code.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as sdk from '../src/index.js';
import { PresenceServerClient, createUserToken, signWebhook } from '../src/index.js';
import { codeBlocks, interfaceMembers, readDoc, REPO_ROOT, runnableBody, typeErrors, type CodeBlock } from '../../client/test/support/doc-blocks.js';
import { API_KEY, JWT_SECRET, Socket, keyPair, startPresenceServer, type TestServer } from './support/server.js';

const DOC = 'docs/server-sdk.md';
const README = 'packages/node/README.md';
const doc = readDoc(DOC);
const blocks = codeBlocks(doc, ['ts']);

/** The one `ts` block of the guide that contains `text`. */
function block(text: string): CodeBlock {
  const found = blocks.filter((b) => b.code.includes(text));
  assert.equal(found.length, 1, `exactly one ts block in ${DOC} contains ${JSON.stringify(text)}`);
  return found[0];
}

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (...args: string[]) => (...args: unknown[]) => Promise<unknown>;

/** Runs an example with these modules and environment; `tail` is appended (e.g. a `return`). */
async function run(example: CodeBlock, env: Record<string, string>, modules: Record<string, unknown> = {}, tail = ''): Promise<{ result: unknown; logged: unknown[][] }> {
  const logged: unknown[][] = [];
  const body = `${runnableBody(example.code)}\n${tail}`;
  const result = await new AsyncFunction('modules', 'console', 'process', body)(
    { '@presence/node': sdk, ...modules },
    { log: (...args: unknown[]) => logged.push(args) },
    { env },
  );
  return { result, logged };
}

const ec = keyPair('ec');

describe('docs/server-sdk.md', () => {
  let server: TestServer;
  const sockets: Socket[] = [];
  let env: Record<string, string>;
  const connect = async (userId: string) => {
    const socket = await Socket.open(server, { token: await createUserToken({ userId }, JWT_SECRET) });
    sockets.push(socket);
    return socket;
  };

  before(async () => {
    server = await startPresenceServer({ auth: { jwtPublicKey: ec.publicKey } });
    env = { PRESENCE_URL: server.url, PRESENCE_API_KEY: API_KEY, PRESENCE_JWT_SECRET: JWT_SECRET, PRESENCE_JWT_PRIVATE_KEY: ec.privateKey };
  });
  after(async () => {
    await Promise.all(sockets.map((s) => s.close()));
    await server.shutdown();
  });

  test('has its examples, and every one (and the README) type-checks against the package', () => {
    assert.ok(blocks.length >= 7, `expected the examples, found ${blocks.length} ts blocks`);
    assert.deepEqual(typeErrors(DOC, blocks), []);
    const readme = codeBlocks(readFileSync(`${REPO_ROOT}/${README}`, 'utf8'), ['ts']);
    assert.equal(readme.length, 1);
    assert.deepEqual(typeErrors(README, readme), []);
  });

  test('the quick start runs', async () => {
    await (await connect('grace')).request({ type: 'join', channel: 'doc:42', meta: { mode: 'viewing' } });
    const { logged } = await run(block('Standup'), env);
    const ada = server.engine.userPresence('ada', { trusted: true });
    assert.equal(ada.status, 'offline', 'ada has no session yet');
    const self = server.engine.updateUser('ada', {});
    assert.equal(self.manualStatus, 'busy');
    assert.equal(self.state, 'in-call');
    assert.equal(self.message, 'Standup');
    assert.deepEqual(logged[0], ['grace', 'online', { mode: 'viewing' }]);
    assert.deepEqual(logged[1], ['ada', 'offline', undefined]);
    assert.deepEqual(logged[2].slice(0, 2), ['grace', 'online']);
  });

  test('the lists example runs', async () => {
    await (await connect('ada')).request({ type: 'join', channel: 'doc:42', meta: { mode: 'editing' } });
    const { logged } = await run(block('iterateOnlineUsers'), env);
    assert.match(String(logged[0][0]), /^ada is in doc:42 since \d{4}-/);
    assert.deepEqual(logged[0][1], { mode: 'editing' });
    assert.deepEqual(logged.at(-1), ['present:', { online: 1, busy: 1 }], 'grace online, ada busy');
  });

  test('the errors example runs', async () => {
    const { logged } = await run(block('withRetry'), env);
    assert.equal(logged[0][0], 'not one of the server’s PRESENCE_STATES:');
    assert.deepEqual(logged[1], ['busy']);
  });

  test('the token example runs, and the server accepts both tokens', async () => {
    const { result, logged } = await run(block('PRESENCE_JWT_PRIVATE_KEY'), env, {}, 'return { token, signed };');
    assert.deepEqual(logged, [[true, true]]);
    const { token, signed } = result as { token: string; signed: string };
    const ada = new PresenceServerClient({ baseUrl: server.url, token });
    assert.ok(Array.isArray(await ada.getUserChannels('ada')), 'the HS256 token is accepted');
    await assert.rejects(ada.getChannelPresence('room:other'), (error: sdk.PresenceApiError) => error.code === 'CHANNEL_FORBIDDEN');
    const grace = await Socket.open(server, { token: signed });
    sockets.push(grace);
    assert.equal(grace.welcome()?.userId, 'grace', 'the ES256 token is accepted');
    assert.equal(grace.welcome()?.self.visibility, 'contacts');
    assert.deepEqual(grace.welcome()?.self.meta, { avatar: 'https://example.com/grace.png' });
  });

  test('the webhook handler runs as a real server: valid, duplicate, rotated, tampered and unsigned requests', async () => {
    let listening: http.Server | undefined;
    const nodeHttp = {
      ...http,
      createServer: (...args: Parameters<typeof http.createServer>) => {
        const created = http.createServer(...args);
        // The example listens on 3000; the test on a free loopback port.
        const listen = created.listen.bind(created);
        created.listen = ((..._ignored: unknown[]) => listen(0, '127.0.0.1')) as typeof created.listen;
        listening = created;
        return created;
      },
    };
    const { logged } = await run(block("req.headers['presence-signature']"), { PRESENCE_WEBHOOK_SECRETS: 'new-secret,old-secret' }, { 'node:http': nodeHttp });
    assert.ok(listening, 'the example started a server');
    const webhook = listening;
    try {
      if (!webhook.listening) await new Promise((resolve) => webhook.once('listening', resolve));
      const url = `http://127.0.0.1:${(webhook.address() as AddressInfo).port}/webhooks/presence`;
      const post = async (body: string, signature?: string) => {
        const response = await fetch(url, { method: 'POST', body, headers: signature ? { 'presence-signature': signature } : {} });
        return { status: response.status, text: await response.text() };
      };
      const event = { id: 'evt-1', type: 'user.online', createdAt: new Date().toISOString(), data: { userId: 'ada' } };
      const body = JSON.stringify(event);

      assert.deepEqual(await post(body, await signWebhook(body, 'new-secret')), { status: 204, text: '' });
      assert.deepEqual(await post(body, await signWebhook(body, ['old-secret', 'new-secret'])), { status: 204, text: '' }, 'a retry during a rotation');
      assert.deepEqual(logged, [['user.online', { userId: 'ada' }]], 'handled once: the retry was deduplicated by id');

      const second = JSON.stringify({ ...event, id: 'evt-2', type: 'user.offline' });
      assert.equal((await post(second, await signWebhook(second, 'old-secret'))).status, 204, 'the old secret still works');
      assert.deepEqual(await post(second.replace('offline', 'online'), await signWebhook(second, 'new-secret')), { status: 400, text: 'SIGNATURE_MISMATCH' });
      assert.deepEqual(await post(second, await signWebhook(second, 'someone-else')), { status: 400, text: 'SIGNATURE_MISMATCH' });
      assert.deepEqual(await post(second), { status: 400, text: 'MISSING_SIGNATURE' });
      const stale = await signWebhook(second, 'new-secret', { now: Date.now() - 10 * 60_000 });
      assert.deepEqual(await post(second, stale), { status: 400, text: 'TIMESTAMP_OUT_OF_TOLERANCE' });
      assert.equal((await fetch(url.replace('/webhooks/presence', '/other'))).status, 404);
      assert.equal(logged.length, 2);
    } finally {
      webhook.closeAllConnections();
      await new Promise((resolve) => webhook.close(resolve));
    }
  });

  test('the Fetch API handler and the signWebhook example run', async () => {
    const { result } = await run(block('request.arrayBuffer()'), {}, {}, 'return handle;');
    const handle = result as (request: Request, secret: string) => Promise<Response>;
    const body = JSON.stringify({ id: 'evt-9', type: 'user.meta', createdAt: new Date().toISOString(), data: {} });
    const request = async (secret: string) => new Request('http://receiver.test/', { method: 'POST', body, headers: { 'presence-signature': await signWebhook(body, secret) } });
    assert.equal((await handle(await request('s3cret'), 's3cret')).status, 204);
    const refused = await handle(await request('other'), 's3cret');
    assert.equal(refused.status, 400);
    assert.equal(await refused.text(), 'SIGNATURE_MISMATCH');

    const { logged } = await run(block('test-secret'), {});
    assert.deepEqual(logged, [['evt-1']]);
  });

  test('lists every method of the client, every option, and every error code of the client and of verifyWebhook', () => {
    const methods = Object.getOwnPropertyNames(PresenceServerClient.prototype).filter((name) => name !== 'constructor' && name !== 'call');
    assert.ok(methods.length >= 14);
    for (const method of methods) assert.match(doc, new RegExp(`^\\| \`${method}\\(`, 'm'), `${DOC}: a row for ${method}()`);
    for (const option of interfaceMembers('packages/node/src/client.ts', 'PresenceServerClientOptions')) {
      assert.match(doc, new RegExp(`^\\| \`${option}\` \\|`, 'm'), `${DOC}: a row for the option ${option}`);
    }
    const codesOf = (file: string, type: string) => {
      const source = readFileSync(`${REPO_ROOT}/packages/node/src/${file}`, 'utf8');
      const union = new RegExp(`export type ${type} =([^;]+);`).exec(source)?.[1] ?? '';
      return [...union.matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]);
    };
    const codes = [...codesOf('errors.ts', 'ClientErrorCode'), ...codesOf('webhooks.ts', 'WebhookVerificationErrorCode')];
    assert.equal(codes.length, 9);
    for (const code of codes) assert.match(doc, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${DOC}: a row for ${code}`);
  });
});
