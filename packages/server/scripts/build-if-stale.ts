/**
 * `npm start`'s first step: runs `npm run build` only when a source changed since the last build
 * this script ran, so `npm start -- --help` on a built checkout answers at once instead of
 * type-checking and bundling every package first.
 *
 *   node --import tsx packages/server/scripts/build-if-stale.ts [--force] [--root DIR]
 *
 * A build counts from the moment it started: a file saved while it ran is newer, and the next
 * start builds again. The Lua scripts are read by the server at run time, so they need no build.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(fileURLToPath(new URL('../../../', import.meta.url)));

export interface BuildInputs {
  /** Directories (searched recursively) and files whose changes call for a build. */
  sources: string[];
  /** Files the build writes and the start needs: a missing one calls for a build. */
  outputs: string[];
  /** Written after each build, with the time the build started as its mtime. */
  stamp: string;
}

/** What `npm run build` reads and what `npm start` needs of it, in this repository. */
export function repositoryBuild(root: string = ROOT): BuildInputs {
  const packages = ['protocol', 'server', 'client', 'react', 'node', 'web'];
  return {
    sources: [
      ...packages.map((name) => join(root, 'packages', name, 'src')),
      join(root, 'packages', 'server', 'bin'),
      join(root, 'packages', 'web', 'scripts'),
      ...packages.map((name) => join(root, 'packages', name, 'tsconfig.json')),
      join(root, 'tsconfig.base.json'),
      join(root, 'package-lock.json'),
    ],
    outputs: [join(root, 'packages', 'server', 'dist', 'bin', 'presence.js'), join(root, 'packages', 'server', 'public', 'index.html')],
    stamp: join(root, 'node_modules', '.cache', 'presence', 'build-stamp'),
  };
}

export type Staleness = { stale: false } | { stale: true; reason: string };

/** Newer than the stamp: the first such file found under `path`, skipping dependencies and outputs. */
function newerFile(path: string, sinceMs: number): string | undefined {
  let stats;
  try {
    stats = statSync(path);
  } catch {
    return undefined; // a source that does not exist (yet) changes nothing
  }
  if (!stats.isDirectory()) return stats.mtimeMs > sinceMs ? path : undefined;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name === 'dist') continue;
    const found = newerFile(join(path, entry.name), sinceMs);
    if (found) return found;
  }
  return undefined;
}

/** Whether a build is due, and why: no build recorded, an output missing, or a newer source. */
export function buildStaleness(inputs: BuildInputs): Staleness {
  if (!existsSync(inputs.stamp)) return { stale: true, reason: 'no build recorded yet' };
  const missing = inputs.outputs.find((output) => !existsSync(output));
  if (missing) return { stale: true, reason: `${missing} is missing` };
  const builtAt = statSync(inputs.stamp).mtimeMs;
  for (const source of inputs.sources) {
    const newer = newerFile(source, builtAt);
    if (newer) return { stale: true, reason: `${newer} changed since the last build` };
  }
  return { stale: false };
}

/** Records a build that started at `startedAtMs`. */
export function recordBuild(inputs: BuildInputs, startedAtMs: number): void {
  mkdirSync(dirname(inputs.stamp), { recursive: true });
  writeFileSync(inputs.stamp, `${new Date(startedAtMs).toISOString()}\n`);
  const at = new Date(startedAtMs);
  utimesSync(inputs.stamp, at, at);
}

function main(): void {
  const { values } = parseArgs({ options: { force: { type: 'boolean' }, root: { type: 'string' } } });
  const root = values.root ? resolve(values.root) : ROOT;
  const inputs = repositoryBuild(root);
  const staleness: Staleness = values.force ? { stale: true, reason: '--force' } : buildStaleness(inputs);
  if (!staleness.stale) return;
  process.stderr.write(`presence: building (${staleness.reason.replaceAll(root + sep, '')})\n`);
  const startedAt = Date.now();
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  if (build.status !== 0) {
    process.stderr.write(`presence: the build failed (${build.status ?? build.signal}); not starting\n`);
    process.exit(build.status ?? 1);
  }
  recordBuild(inputs, startedAt);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
