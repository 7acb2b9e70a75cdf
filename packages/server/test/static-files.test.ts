/**
 * The web pages served at `/` (ServerOptions.publicDir): only files of the fixed types inside the
 * directory, clean URLs, no listings, no way out of the directory, and the API always wins.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../src/config/config.js';
import { PAGE_CONTENT_SECURITY_POLICY } from '../src/http/static-files.js';
import { silentLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';

/** A raw request: fetch would normalize `..` and percent-escapes before they reach the server. */
function rawGet(server: RunningServer, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: server.port, path, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('static files (publicDir)', () => {
  let base: string;
  let server: RunningServer;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'presence-static-'));
    const root = join(base, 'public');
    await mkdir(join(root, 'avatars'), { recursive: true });
    await mkdir(join(root, 'folder'), { recursive: true });
    await writeFile(join(root, 'index.html'), '<!doctype html><title>demo</title>');
    await writeFile(join(root, 'dashboard.html'), '<!doctype html><title>dashboard</title>');
    await writeFile(join(root, 'demo.js'), 'console.log(1);');
    await writeFile(join(root, 'demo.css'), 'body{}');
    await writeFile(join(root, 'avatars', 'sun.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
    await writeFile(join(root, '.env'), 'SECRET=1');
    await writeFile(join(root, 'notes.md'), '# not a served type');
    await writeFile(join(root, 'metrics.html'), 'shadowed by the API');
    await writeFile(join(base, 'outside.txt'), 'outside the public directory');
    server = await startServer(resolveConfig({ port: 0, host: '127.0.0.1' }), { log: silentLogger, publicDir: root });
  });

  after(async () => {
    await server.shutdown();
    await rm(base, { recursive: true, force: true });
  });

  it('serves pages with clean URLs, their types, revalidation and a content security policy', async () => {
    const index = await rawGet(server, '/');
    assert.equal(index.status, 200);
    assert.equal(index.body, '<!doctype html><title>demo</title>');
    assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(index.headers['cache-control'], 'no-cache');
    assert.equal(index.headers['x-content-type-options'], 'nosniff');
    assert.equal(index.headers['content-security-policy'], PAGE_CONTENT_SECURITY_POLICY);
    assert.match(PAGE_CONTENT_SECURITY_POLICY, /script-src 'self'/);

    assert.equal((await rawGet(server, '/dashboard')).body, '<!doctype html><title>dashboard</title>');
    assert.equal((await rawGet(server, '/dashboard.html?x=1')).status, 200);
    assert.equal((await rawGet(server, '/demo.js')).headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal((await rawGet(server, '/demo.css')).headers['content-type'], 'text/css; charset=utf-8');
    const svg = await rawGet(server, '/avatars/sun.svg');
    assert.equal(svg.headers['content-type'], 'image/svg+xml');
    assert.equal(svg.headers['content-security-policy'], undefined, 'the policy is for pages');

    const etag = index.headers.etag as string;
    assert.match(etag, /^W\/"/);
    const again = await rawGet(server, '/', { 'if-none-match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body, '');
    const head = await rawGet(server, '/', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal(head.headers['content-length'], String(index.body.length));
  });

  it('never leaves the directory, lists nothing and serves no other types', async () => {
    for (const path of [
      '/../outside.txt',
      '/avatars/../../outside.txt',
      '/%2e%2e/outside.txt',
      '/..%2foutside.txt',
      '/avatars%2f..%2f..%2foutside.txt',
      '/avatars/..\\..\\outside.txt',
      '/.env',
      '/notes.md',
      '/avatars',
      '/avatars/',
      '/folder',
      '/folder/',
      '/index.html/',
      '/missing.js',
      '//demo.js',
    ]) {
      const answer = await rawGet(server, path);
      assert.equal(answer.status, 404, `${path} → ${answer.status}`);
      assert.equal(answer.headers['content-type'], 'application/json; charset=utf-8', `${path}: the API's 404`);
      assert.doesNotMatch(answer.body, /outside the public directory|SECRET/);
    }
  });

  it('leaves API paths and other methods to the API', async () => {
    const metrics = await rawGet(server, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /presence_connections/);
    assert.equal((await rawGet(server, '/realtime/admin/stats')).headers['content-type'], 'application/json; charset=utf-8');
    const post = await rawGet(server, '/', {}, 'POST');
    assert.equal(post.status, 404);
  });

  it('is off without publicDir', async () => {
    const bare = await startServer(resolveConfig({ port: 0, host: '127.0.0.1' }), { log: silentLogger });
    try {
      assert.equal((await rawGet(bare, '/')).status, 404);
    } finally {
      await bare.shutdown();
    }
  });
});
