/**
 * The product as it is installed, not as it runs in this repository:
 *
 * - every published package declares what it ships and ships what it declares: `exports`, `files`,
 *   `license`, a README whose code type-checks, a CHANGELOG entry for its version, and no tests,
 *   build info, or source maps whose sources are missing (`npm pack --dry-run`);
 * - the server packed with the protocol installs into an empty folder with `--offline` and
 *   `npx @presence/server` serves the API, the pages and the WebSocket, alone and with Redis;
 * - the Dockerfile, compose.yaml and the load balancer's configuration name only files, scripts,
 *   services and ports that exist (they cannot be built here).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { parse as parseYaml } from 'yaml';
import { codeBlocks, typeErrors } from '../../client/test/support/doc-blocks.js';
import { DEFAULT_CONFIG } from '../src/config/config.js';
import { ROUTES } from '../src/http/api.js';
import { packServer, type PackedServer } from '../scripts/pack.js';
import { TestClient } from './support/harness.js';
import { ProcessGroup } from './support/process-group.js';
import { RedisServer } from './support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

interface PackageJson {
  name: string;
  version: string;
  private?: boolean;
  main?: string;
  types?: string;
  exports?: unknown;
  files?: string[];
  license?: string;
  bin?: string | Record<string, string>;
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
}

interface DryRun {
  name: string;
  files: { path: string }[];
}

const rootPackage = JSON.parse(read('package.json')) as PackageJson & { workspaces: string[] };

/** The workspaces that are published (not private), by folder. */
const published: { dir: string; pkg: PackageJson }[] = rootPackage.workspaces
  .map((dir) => ({ dir, pkg: JSON.parse(read(`${dir}/package.json`)) as PackageJson }))
  .filter(({ pkg }) => !pkg.private);

/** Every path a package.json points at: main, types, each exports target, each bin. */
function declaredTargets(pkg: PackageJson): string[] {
  const targets: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') targets.push(value);
    else if (value && typeof value === 'object') for (const inner of Object.values(value)) walk(inner);
  };
  walk(pkg.exports);
  walk(pkg.bin);
  if (pkg.main) targets.push(pkg.main);
  if (pkg.types) targets.push(pkg.types);
  return [...new Set(targets.map((t) => posix.normalize(t)))];
}

/** The test runner's environment, minus what would configure the server or the npm of this repo. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(PRESENCE_|npm_)/i.test(key) || ['PORT', 'HOST', 'NODE_ENV', 'REDIS_URL', 'LOG_LEVEL', 'NODE_OPTIONS', 'INIT_CWD'].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

describe('published packages', () => {
  const packs = new Map<string, Set<string>>();

  before(() => {
    // The declared targets live in dist/; `npm test` has built it (pretest), a direct run builds here.
    execFileSync('npx', ['tsc', '-b', ...published.map((p) => p.dir).filter((dir) => existsSync(join(ROOT, dir, 'tsconfig.json')))], { cwd: ROOT, stdio: 'inherit' });
    // --ignore-scripts: the listing needs no fresh build of the pages (the install test below packs for real).
    const output = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts', ...published.flatMap((p) => ['-w', p.dir])], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const result of JSON.parse(output) as DryRun[]) packs.set(result.name, new Set(result.files.map((f) => f.path)));
  });

  test('are the four packages, and web and bench stay private', () => {
    assert.deepEqual(
      published.map((p) => p.pkg.name).filter((name) => ['@presence/protocol', '@presence/server', '@presence/client', '@presence/react'].includes(name)).sort(),
      ['@presence/client', '@presence/protocol', '@presence/react', '@presence/server'],
    );
    for (const name of ['@presence/web', '@presence/bench']) assert.ok(!published.some((p) => p.pkg.name === name), `${name} is private`);
  });

  for (const { dir, pkg } of published) {
    describe(pkg.name, () => {
      const files = (): Set<string> => packs.get(pkg.name) ?? assert.fail(`npm pack listed nothing for ${pkg.name}`);

      test('declares exports, files and license, and ships README.md, CHANGELOG.md and LICENSE', () => {
        assert.ok(pkg.exports, 'exports');
        assert.ok(pkg.files && pkg.files.length > 0, 'files');
        assert.equal(pkg.license, 'MIT');
        for (const file of ['package.json', 'README.md', 'CHANGELOG.md', 'LICENSE']) assert.ok(files().has(file), `${pkg.name} ships ${file}`);
        assert.equal(read(`${dir}/LICENSE`), read('LICENSE'), 'the license text is the repository\'s');
      });

      test('ships every file its package.json points at', () => {
        for (const target of declaredTargets(pkg)) assert.ok(files().has(target), `${pkg.name}: ${target} is in the tarball`);
      });

      test('has a CHANGELOG entry for its version', () => {
        const changelog = read(`${dir}/CHANGELOG.md`);
        assert.match(changelog, /^# Changelog$/m);
        assert.match(changelog, new RegExp(`^## \\[${pkg.version.replace(/\./g, '\\.')}\\]`, 'm'), `an entry for ${pkg.version}`);
      });

      test('ships no tests, no build info, and source maps only with their sources', () => {
        const maps: string[] = [];
        for (const path of files()) {
          assert.doesNotMatch(path, /(^|\/)tests?\//, `${pkg.name} ships a test folder: ${path}`);
          assert.doesNotMatch(path, /\.test\.[a-z]+$/, `${pkg.name} ships a test: ${path}`);
          assert.doesNotMatch(path, /\.tsbuildinfo$/, `${pkg.name} ships build info: ${path}`);
          if (path.endsWith('.map')) maps.push(path);
        }
        for (const path of maps) {
          const map = JSON.parse(read(`${dir}/${path}`)) as { file?: string; sourceRoot?: string; sources: string[] };
          for (const source of map.sources) {
            const shipped = posix.normalize(posix.join(posix.dirname(path), map.sourceRoot ?? '', source));
            assert.ok(files().has(shipped), `${pkg.name}: ${path} maps to ${shipped}, which is not in the tarball`);
          }
          if (map.file) assert.ok(files().has(posix.join(posix.dirname(path), map.file)), `${pkg.name}: ${path} belongs to a shipped file`);
        }
      });

      test('the code in its README type-checks', () => {
        const blocks = codeBlocks(read(`${dir}/README.md`), ['ts', 'tsx']);
        assert.deepEqual(typeErrors(`${dir}/README.md`, blocks), []);
      });
    });
  }
});

describe('the server installed from its tarball', () => {
  let base: string;
  let packed: PackedServer;
  let redis: RedisServer | undefined;
  let notCached: string | undefined;
  const groups: ProcessGroup[] = [];
  const installed = (path: string): string => join(packed.outdir, 'node_modules/@presence/server', path);

  before(() => {
    base = mkdtempSync(join(tmpdir(), 'presence-install-'));
    // Builds server and pages (prepack), packs protocol and server, and writes the lockfile.
    packed = packServer(join(base, 'app'));
    const started = Date.now();
    // Only the npm cache: every dependency is in it since this repository's `npm ci`, by integrity.
    try {
      execFileSync('npm', ['ci', '--offline', '--omit=dev', '--no-audit', '--no-fund'], { cwd: packed.outdir, env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? '');
      if (!/ENOTCACHED/.test(stderr)) throw err;
      // A cache other than the one `npm ci` filled (a cleaned or relocated cache): nothing to install from.
      notCached = `the npm cache lacks a dependency of the server, so it cannot be installed offline (run npm ci in the repository first): ${/request to (\S+) failed/.exec(stderr)?.[1] ?? stderr.trim()}`;
      return;
    }
    console.log(`offline install: ${Date.now() - started} ms`);
  });

  after(async () => {
    for (const group of groups) await group.kill();
    await redis?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  const npx = (args: string[], env: Record<string, string>): ProcessGroup => {
    const group = new ProcessGroup('npx', ['--offline', ...args], { cwd: packed.outdir, env: cleanEnv(env) });
    groups.push(group);
    return group;
  };

  test('the folder holds the two tarballs, their package.json and lockfile, and production dependencies only', (t) => {
    if (notCached) return t.skip(notCached);
    assert.deepEqual(readdirSync(packed.outdir).sort(), ['node_modules', 'package-lock.json', 'package.json', ...Object.values(packed.tarballs)].sort());
    const server = JSON.parse(readFileSync(installed('package.json'), 'utf8')) as PackageJson;
    assert.deepEqual(Object.keys(server.bin as Record<string, string>), ['presence-server'], 'one bin, which npx @presence/server runs');
    // Production dependencies only: none of the server's dev dependencies came along.
    for (const dev of ['fast-check', 'ajv', 'playwright-core', 'yaml', 'typescript']) assert.ok(!existsSync(join(packed.outdir, 'node_modules', dev)), `${dev} is not installed`);
  });

  test('ships the Lua scripts, the pages and the compiled CLI', (t) => {
    if (notCached) return t.skip(notCached);
    const scripts = readdirSync(join(ROOT, 'packages/server/lua')).filter((f) => f.endsWith('.lua'));
    assert.ok(scripts.length > 0);
    for (const script of scripts) assert.equal(readFileSync(installed(`lua/${script}`), 'utf8'), read(`packages/server/lua/${script}`), `lua/${script}`);
    for (const page of ['index.html', 'dashboard.html', 'demo.js', 'dashboard.js', 'favicon.svg']) assert.ok(statSync(installed(`public/${page}`)).size > 0, `public/${page}`);
    assert.match(readFileSync(installed('dist/bin/presence.js'), 'utf8'), /^#!\/usr\/bin\/env node\n/);
  });

  test('npx @presence/server --help lists the settings', (t) => {
    if (notCached) return t.skip(notCached);
    const help = execFileSync('npx', ['--offline', '@presence/server', '--help'], { cwd: packed.outdir, env: cleanEnv(), encoding: 'utf8' });
    for (const name of ['PORT', 'REDIS_URL', 'PRESENCE_JWT_SECRET']) assert.ok(help.includes(name), `--help mentions ${name}`);
  });

  test('npx @presence/server alone: health, the dashboard, the demo and a WebSocket; SIGTERM ends it', async (t) => {
    if (notCached) return t.skip(notCached);
    const server = npx(['@presence/server'], { PORT: '0', HOST: '127.0.0.1' });
    const listening = await server.logLine<{ url: string; websocket: string; dashboard?: string }>('presence server listening', 30_000);
    assert.equal(listening.dashboard, `${listening.url}/dashboard`, 'the CLI found the pages');

    assert.equal((await fetch(`${listening.url}${ROUTES.health}`)).status, 200);
    assert.equal((await fetch(`${listening.url}${ROUTES.ready}`)).status, 200);
    const dashboard = await fetch(`${listening.url}/dashboard`);
    assert.equal(dashboard.status, 200);
    assert.equal(dashboard.headers.get('content-type'), 'text/html; charset=utf-8');
    const html = await dashboard.text();
    assert.equal(html, readFileSync(installed('public/dashboard.html'), 'utf8'));
    const script = /<script[^>]+src="\/?([^"]+)"/.exec(html)?.[1];
    assert.ok(script, 'the dashboard loads a script');
    assert.equal((await fetch(`${listening.url}/${script}`)).status, 200, `/${script}`);
    assert.equal((await fetch(`${listening.url}/`)).status, 200, 'the demo');

    const client = await TestClient.connect({ wsUrl: listening.websocket }, { userId: 'installed' });
    assert.equal(client.welcome.userId, 'installed');

    server.signal('SIGTERM');
    assert.equal((await client.closed).code, 1001);
    await server.gone(15_000);
    assert.match(server.stdout, /"msg":"shutting down"/);
  });

  test('npx @presence/server with REDIS_URL: the Lua scripts load, the node registers, /readyz is 200', async (t) => {
    if (notCached) return t.skip(notCached);
    redis = await RedisServer.start();
    const server = npx(['@presence/server'], { PORT: '0', HOST: '127.0.0.1', REDIS_URL: redis.url, PRESENCE_NODE_ID: 'installed' });
    const listening = await server.logLine<{ url: string; websocket: string }>('presence server listening', 30_000);
    assert.equal((await fetch(`${listening.url}${ROUTES.ready}`)).status, 200);
    assert.equal((await fetch(`${listening.url}/dashboard`)).status, 200);

    const client = await TestClient.connect({ wsUrl: listening.websocket }, { userId: 'clustered' });
    assert.equal(client.welcome.userId, 'clustered');
    const inspect = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await inspect.connect();
      const nodes = await inspect.zrange('{presence}:registry', 0, -1);
      assert.equal(nodes.length, 1);
      assert.match(nodes[0], /^installed@/, 'the node registered itself through its Lua script');
    } finally {
      inspect.disconnect();
      client.ws.close();
    }

    server.signal('SIGTERM');
    await server.gone(15_000);
  });
});

describe('Dockerfile, compose.yaml and the load balancer', () => {
  const dockerfile = read('Dockerfile');
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.trim().startsWith('#'))
    .map((line) => {
      const [keyword, ...rest] = line.trim().split(/\s+/);
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    });
  const compose = parseYaml(read('compose.yaml'), { merge: true }) as {
    services: Record<string, { build?: string; image?: string; environment?: Record<string, string>; volumes?: string[]; ports?: string[]; depends_on?: unknown; healthcheck?: unknown }>;
  };
  const haproxy = read('deploy/haproxy.cfg');
  const port = String(DEFAULT_CONFIG.port);

  test('the Dockerfile has two stages and copies only what exists and is not ignored', () => {
    const stages = instructions.filter((i) => i.keyword === 'FROM');
    assert.equal(stages.length, 2, 'a build stage and a runtime stage');
    assert.match(stages[0].args, /^node:20\S* AS build$/);
    assert.match(stages[1].args, /^node:20\S*$/);
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    let copies = 0;
    for (const copy of instructions.filter((i) => i.keyword === 'COPY')) {
      const parts = copy.args.split(/\s+/);
      if (parts[0].startsWith('--from=')) {
        assert.equal(parts[0], '--from=build', 'copies from the build stage');
        continue;
      }
      for (const source of parts.slice(0, -1)) {
        copies += 1;
        assert.ok(existsSync(join(ROOT, source)), `COPY ${source}: exists in the repository`);
        for (const pattern of ignored) assert.ok(!posix.normalize(source).startsWith(pattern.replace(/^\*\*\//, '')), `COPY ${source} is not excluded by .dockerignore (${pattern})`);
      }
    }
    assert.ok(copies >= 4);
    // npm ci needs every workspace's package.json.
    const sources = instructions.filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from=')).flatMap((i) => i.args.split(/\s+/).slice(0, -1).map((s) => s.replace(/\/$/, '')));
    for (const workspace of rootPackage.workspaces) {
      assert.ok(sources.some((s) => s === `${workspace}/package.json` || workspace === s || workspace.startsWith(`${s}/`)), `the build stage copies ${workspace}/package.json`);
    }
  });

  test('the Dockerfile runs npm scripts that exist and the server package\'s CLI on the default port', () => {
    const runs = instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join(' && ');
    assert.match(runs, /npm ci --no-audit/);
    assert.match(runs, /npm ci --omit=dev/);
    const scripts = [...runs.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1]);
    assert.deepEqual(scripts, ['build', 'pack:server']);
    for (const script of scripts) assert.ok(rootPackage.scripts?.[script], `npm run ${script} is a script of the root package`);
    // pack:server writes the folder the runtime stage copies.
    assert.match(runs, /npm run pack:server -- (\S+)/);
    const release = /npm run pack:server -- (\S+)/.exec(runs)![1];
    assert.ok(instructions.some((i) => i.keyword === 'COPY' && i.args.startsWith(`--from=build ${release}`)), `the runtime stage copies ${release}`);

    assert.deepEqual(instructions.filter((i) => i.keyword === 'EXPOSE').map((i) => i.args), [port]);
    const server = JSON.parse(read('packages/server/package.json')) as PackageJson;
    const cmd = JSON.parse(instructions.find((i) => i.keyword === 'CMD')!.args) as string[];
    assert.deepEqual(cmd, ['node', `node_modules/${server.name}/${posix.normalize((server.bin as Record<string, string>)['presence-server'])}`]);
    assert.match(dockerfile, new RegExp(`process\\.env\\.PORT \\|\\| ${port}\\}${ROUTES.ready}`), 'the health check asks /readyz on the port the server listens on');
    assert.match(dockerfile, /^ENV NODE_ENV=production$/m);
    assert.match(dockerfile, /^USER node$/m);
  });

  test('compose.yaml: Redis, two Presence nodes of this image, and the load balancer with its configuration', () => {
    const services = compose.services;
    const nodes = Object.entries(services).filter(([, s]) => s.build === '.');
    assert.deepEqual(nodes.map(([name]) => name), ['presence1', 'presence2']);
    assert.ok(existsSync(join(ROOT, 'Dockerfile')));
    for (const [name, node] of nodes) {
      const env = node.environment ?? {};
      const redisUrl = new URL(env.REDIS_URL);
      assert.ok(services[redisUrl.hostname], `${name}: REDIS_URL names the service ${redisUrl.hostname}`);
      assert.match(services[redisUrl.hostname].image ?? '', /^redis:/);
      assert.equal(redisUrl.port || '6379', '6379');
      assert.equal(env.PRESENCE_NODE_ID, name);
      assert.equal(env.PORT, undefined, `${name} listens on the default port`);
      for (const secret of ['PRESENCE_JWT_SECRET', 'PRESENCE_API_KEY']) assert.match(env[secret], new RegExp(`^\\$\\{${secret}:\\?`), `${name}: ${secret} must be given`);
      assert.deepEqual(node.depends_on, { [redisUrl.hostname]: { condition: 'service_healthy' } });
    }

    const lb = services.lb;
    assert.match(lb.image ?? '', /^haproxy:/);
    assert.deepEqual(lb.ports, [`${port}:${port}`]);
    const [configSource, configTarget] = lb.volumes![0].split(':');
    assert.equal(configSource, './deploy/haproxy.cfg');
    assert.ok(existsSync(join(ROOT, configSource)), `${configSource} exists`);
    assert.equal(configTarget, '/usr/local/etc/haproxy/haproxy.cfg', 'where the haproxy image reads its configuration');
  });

  test('the load balancer listens on the published port, balances over the compose nodes and checks /readyz', () => {
    assert.match(haproxy, new RegExp(`^\\s*bind :${port}$`, 'm'));
    assert.match(haproxy, /^\s*mode http$/m, 'HTTP mode passes WebSocket upgrades through');
    assert.match(haproxy, /^\s*timeout tunnel \S+$/m, 'a WebSocket outlives the HTTP timeouts');
    assert.match(haproxy, new RegExp(`^\\s*http-check send meth GET uri ${ROUTES.ready}$`, 'm'));
    const servers = [...haproxy.matchAll(/^\s*server (\S+) (\S+):(\d+)\b/gm)].map((m) => ({ name: m[1], host: m[2], port: m[3] }));
    assert.deepEqual(
      servers.map((s) => s.host),
      Object.entries(compose.services).filter(([, s]) => s.build === '.').map(([name]) => name),
      'one server line per Presence service of compose.yaml',
    );
    for (const server of servers) assert.equal(server.port, port, `${server.name} on the server's default port`);
  });

  test('docs/operations.md explains each file', () => {
    const ops = read('docs/operations.md');
    for (const file of ['Dockerfile', 'compose.yaml', 'deploy/haproxy.cfg', '.dockerignore', 'npm run pack:server']) assert.ok(ops.includes(file), `docs/operations.md mentions ${file}`);
  });
});
