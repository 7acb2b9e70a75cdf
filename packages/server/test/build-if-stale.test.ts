/**
 * `npm start` builds only when a source is newer than the last build: the staleness check on
 * temporary trees with chosen modification times, and the real script on this repository.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, type TestContext } from 'node:test';
import { buildStaleness, recordBuild, repositoryBuild, type BuildInputs } from '../scripts/build-if-stale.js';

const SCRIPT = fileURLToPath(new URL('../scripts/build-if-stale.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Writes `path` with its mtime `secondsAgo` in the past. */
function file(path: string, secondsAgo: number): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, 'x');
  const at = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(path, at, at);
  return path;
}

/** A package with sources, a config file and outputs, all an hour old, and no build recorded. */
function tree(t: TestContext): { dir: string; inputs: BuildInputs } {
  const dir = mkdtempSync(join(tmpdir(), 'presence-build-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  file(join(dir, 'pkg/src/index.ts'), 3600);
  file(join(dir, 'pkg/src/deep/er/model.ts'), 3600);
  file(join(dir, 'pkg/tsconfig.json'), 3600);
  file(join(dir, 'pkg/dist/index.js'), 3600);
  file(join(dir, 'pkg/public/index.html'), 3600);
  return {
    dir,
    inputs: {
      sources: [join(dir, 'pkg/src'), join(dir, 'pkg/tsconfig.json'), join(dir, 'pkg/absent-dir')],
      outputs: [join(dir, 'pkg/dist/index.js'), join(dir, 'pkg/public/index.html')],
      stamp: join(dir, 'cache/build-stamp'),
    },
  };
}

describe('build staleness', () => {
  it('is stale until a build is recorded, then fresh', (t) => {
    const { inputs } = tree(t);
    assert.deepEqual(buildStaleness(inputs), { stale: true, reason: 'no build recorded yet' });
    recordBuild(inputs, Date.now() - 60_000);
    assert.deepEqual(buildStaleness(inputs), { stale: false });
  });

  it('a source changed after the build started makes it stale, however deep; one changed before does not', (t) => {
    const { dir, inputs } = tree(t);
    recordBuild(inputs, Date.now() - 60_000);
    file(join(dir, 'pkg/src/deep/er/model.ts'), 120); // before the build started
    assert.deepEqual(buildStaleness(inputs), { stale: false });
    file(join(dir, 'pkg/src/deep/er/model.ts'), 30); // saved while it ran, or after
    const staleness = buildStaleness(inputs);
    assert.equal(staleness.stale, true);
    assert.match(staleness.stale ? staleness.reason : '', /pkg\/src\/deep\/er\/model\.ts changed since the last build$/);
  });

  it('a new source file or a changed config file makes it stale', (t) => {
    const { dir, inputs } = tree(t);
    recordBuild(inputs, Date.now() - 60_000);
    file(join(dir, 'pkg/src/new.ts'), 0);
    assert.equal(buildStaleness(inputs).stale, true);
    file(join(dir, 'pkg/src/new.ts'), 3600);
    file(join(dir, 'pkg/tsconfig.json'), 0);
    assert.equal(buildStaleness(inputs).stale, true);
  });

  it('a missing output makes it stale; newer files in node_modules or dist below a source do not', (t) => {
    const { dir, inputs } = tree(t);
    recordBuild(inputs, Date.now() - 60_000);
    file(join(dir, 'pkg/src/node_modules/dep/index.js'), 0);
    file(join(dir, 'pkg/src/dist/out.js'), 0);
    assert.deepEqual(buildStaleness(inputs), { stale: false });
    rmSync(join(dir, 'pkg/public'), { recursive: true });
    const staleness = buildStaleness(inputs);
    assert.equal(staleness.stale, true);
    assert.match(staleness.stale ? staleness.reason : '', /pkg\/public\/index\.html is missing$/);
  });

  it("this repository's build reads every package's sources and the server's bin", () => {
    const inputs = repositoryBuild(ROOT);
    for (const dir of ['protocol/src', 'server/src', 'server/bin', 'client/src', 'react/src', 'node/src', 'web/src', 'web/scripts']) {
      assert.ok(inputs.sources.includes(join(ROOT, 'packages', dir)), `sources include packages/${dir}`);
    }
    assert.ok(inputs.outputs.includes(join(ROOT, 'packages/server/dist/bin/presence.js')));
  });

  it('the script runs `npm run build` when stale, records it, and then runs nothing until a source changes', (t) => {
    // A repository of the same layout whose build writes the two outputs and counts its runs.
    const root = mkdtempSync(join(tmpdir(), 'presence-start-'));
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const build = [
      "const fs = require('node:fs');",
      "for (const f of ['packages/server/dist/bin/presence.js', 'packages/server/public/index.html']) { fs.mkdirSync(require('node:path').dirname(f), { recursive: true }); fs.writeFileSync(f, ''); }",
      "fs.appendFileSync('builds.log', 'built\\n');",
      "if (fs.existsSync('fail')) process.exit(3);",
    ].join(' ');
    writeFileSync(join(root, 'build.cjs'), build);
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'fixture', private: true, scripts: { build: 'node build.cjs' } }));
    file(join(root, 'packages/server/src/index.ts'), 3600);
    file(join(root, 'packages/web/src/demo/main.tsx'), 3600);
    const start = () => {
      const started = Date.now();
      const run = spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, '--root', root], { cwd: ROOT, encoding: 'utf8' });
      return { ...run, tookMs: Date.now() - started };
    };
    const log = join(root, 'builds.log');
    const builds = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l === 'built').length : 0);

    const first = start();
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stderr, /^presence: building \(no build recorded yet\)\n/);
    assert.equal(builds(), 1);

    const second = start();
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.stderr, '', 'fresh: no build, no output');
    assert.equal(builds(), 1);
    t.diagnostic(`a fresh check took ${second.tookMs} ms (node and tsx start-up included)`);

    file(join(root, 'packages/web/src/demo/main.tsx'), 0);
    const third = start();
    assert.equal(third.status, 0, third.stderr);
    assert.match(third.stderr, /^presence: building \(packages\/web\/src\/demo\/main\.tsx changed since the last build\)\n/);
    assert.equal(builds(), 2);

    // A failed build is not recorded: the start stops, and the next one tries again.
    writeFileSync(join(root, 'fail'), '');
    file(join(root, 'packages/server/src/index.ts'), 0);
    const failed = start();
    assert.equal(failed.status, 3);
    assert.match(failed.stderr, /presence: the build failed \(3\); not starting/);
    rmSync(join(root, 'fail'));
    assert.match(start().stderr, /^presence: building \(packages\/server\/src\/index\.ts changed/);
    assert.equal(builds(), 4);
  });
});
