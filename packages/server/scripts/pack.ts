/**
 * Packs the server into a folder that installs it with `npm ci`: the tarballs of `@presence/protocol`
 * and `@presence/server`, a `package.json` that depends on them, and a `package-lock.json` that pins
 * every runtime dependency to the version this workspace's lockfile has, so an installed server runs
 * on exactly the dependencies the tests ran on. `npm pack` builds each package first (its `prepack`),
 * pages included. The Docker image installs such a folder; a test installs one with `--offline`.
 *
 *   node --import tsx packages/server/scripts/pack.ts <outdir>      (npm run pack:server -- <outdir>)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The name of the package.json written beside the tarballs (private: it only installs them). */
const INSTALL_NAME = 'presence-server-install';

/** The workspaces packed, as `npm pack -w` names them: the server and what it needs from here. */
export const PACKED_WORKSPACES = ['packages/protocol', 'packages/server'] as const;

/** One entry of `packages` in a lockfile (v3). */
interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  bin?: Record<string, string>;
  dev?: boolean;
  devOptional?: boolean;
  peer?: boolean;
  [field: string]: unknown;
}

interface PackResult {
  name: string;
  version: string;
  filename: string;
  integrity: string;
}

/** The lockfile written beside the tarballs. */
export interface InstallLockfile {
  name: string;
  lockfileVersion: 3;
  requires: true;
  packages: { '': { name: string; dependencies: Record<string, string> } } & Record<string, unknown>;
}

export interface PackedServer {
  outdir: string;
  /** Tarball file names in `outdir`, by package name. */
  tarballs: Record<string, string>;
}

/** The lockfile entry a package at `from` gets for `name`: Node's lookup, nearest `node_modules` up. */
function lookUp(packages: Record<string, LockEntry>, from: string, name: string): string | undefined {
  let dir = from;
  for (;;) {
    const path = `${dir ? `${dir}/` : ''}node_modules/${name}`;
    if (packages[path]) return path;
    if (!dir) return undefined;
    const parent = dir.lastIndexOf('/node_modules/');
    dir = parent < 0 ? '' : dir.slice(0, parent);
  }
}

/** Where a registry keeps the tarball of `name@version` (`<registry>@scope/name/-/name-1.2.3.tgz`). */
export function tarballUrl(registry: string, name: string, version: string): string {
  const base = registry.endsWith('/') ? registry : `${registry}/`;
  return `${base}${name}/-/${name.slice(name.lastIndexOf('/') + 1)}-${version}.tgz`;
}

/**
 * The lockfile of a folder whose package.json depends on the given tarballs: their own entries, and
 * every package they need at run time copied from the workspace lockfile, each with the URL of its
 * tarball on `registry` when the workspace lockfile has none. A workspace package is found under
 * its folder (`packages/server`) there; what is nested below it moves below `node_modules/<name>`.
 */
export function lockfileFor(
  workspaceLock: { packages: Record<string, LockEntry> },
  packed: PackResult[],
  workspaceOf: Record<string, string>,
  registry?: string,
): InstallLockfile {
  const lock = workspaceLock.packages;
  const out: Record<string, LockEntry> = {};
  const ownNames = new Set(packed.map((p) => p.name));
  const queue: Array<{ from: string; to: string; entry: LockEntry }> = [];
  for (const pack of packed) {
    const source = lock[workspaceOf[pack.name]];
    if (!source) throw new Error(`the workspace lockfile has no entry for ${workspaceOf[pack.name]}`);
    const entry: LockEntry = { version: pack.version, resolved: `file:${pack.filename}`, integrity: pack.integrity };
    for (const field of ['license', 'dependencies', 'optionalDependencies', 'peerDependencies', 'peerDependenciesMeta', 'bin', 'engines']) {
      if (source[field] !== undefined) entry[field] = source[field];
    }
    out[`node_modules/${pack.name}`] = entry;
    queue.push({ from: workspaceOf[pack.name], to: `node_modules/${pack.name}`, entry });
  }
  while (queue.length > 0) {
    const { from, to, entry } = queue.shift()!;
    const needed = { ...entry.dependencies, ...entry.optionalDependencies };
    for (const name of Object.keys(needed)) {
      if (ownNames.has(name)) continue;
      const found = lookUp(lock, from, name);
      if (!found) {
        if (entry.optionalDependencies?.[name]) continue;
        throw new Error(`the workspace lockfile has no ${name} for ${from}; run npm install`);
      }
      const target = found.startsWith(`${from}/`) ? `${to}${found.slice(from.length)}` : found;
      if (out[target]) continue;
      // Dev flags describe the workspace; here everything is a production dependency.
      const { dev: _dev, devOptional: _devOptional, peer: _peer, ...copied } = lock[found];
      // A lockfile written without `resolved` (omit-lockfile-registry-resolved) makes npm fetch each
      // package's metadata to find its tarball; with the URL, the tarball's integrity finds it in
      // the npm cache, so an offline install needs only what `npm ci` cached. (An alias has `name`.)
      if (copied.resolved === undefined && copied.version !== undefined && registry !== undefined) copied.resolved = tarballUrl(registry, typeof copied.name === 'string' ? copied.name : name, copied.version);
      out[target] = copied;
      queue.push({ from: found, to: target, entry: copied });
    }
  }
  const dependencies = Object.fromEntries(packed.map((p) => [p.name, `file:${p.filename}`]));
  const sorted = Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
  return { name: INSTALL_NAME, lockfileVersion: 3, requires: true, packages: { '': { name: INSTALL_NAME, dependencies }, ...sorted } };
}

/** Packs the server and the protocol into `outdir` and writes the package.json and lockfile beside them. */
export function packServer(target: string): PackedServer {
  const outdir = resolve(target);
  mkdirSync(outdir, { recursive: true });
  const args = ['pack', '--json', '--pack-destination', outdir, ...PACKED_WORKSPACES.flatMap((w) => ['-w', w])];
  // stdio: the prepack builds print their progress to stdout, which must not mix with the JSON.
  const output = execFileSync('npm', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const packed = parsePackOutput(output);
  const workspaceOf: Record<string, string> = {};
  for (const workspace of PACKED_WORKSPACES) {
    const { name } = JSON.parse(readFileSync(join(ROOT, workspace, 'package.json'), 'utf8')) as { name: string };
    workspaceOf[name] = workspace;
  }
  const workspaceLock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const registry = execFileSync('npm', ['config', 'get', 'registry'], { cwd: ROOT, encoding: 'utf8' }).trim();
  const lockfile = lockfileFor(workspaceLock, packed, workspaceOf, registry);
  const { dependencies } = lockfile.packages[''];
  writeFileSync(join(outdir, 'package.json'), `${JSON.stringify({ name: INSTALL_NAME, private: true, dependencies }, null, 2)}\n`);
  writeFileSync(join(outdir, 'package-lock.json'), `${JSON.stringify(lockfile, null, 2)}\n`);
  return { outdir, tarballs: Object.fromEntries(packed.map((p) => [p.name, p.filename])) };
}

/** `npm pack --json` prints one JSON array; lifecycle output, if any reached stdout, comes before it. */
function parsePackOutput(output: string): PackResult[] {
  const start = output.search(/^\[/m);
  if (start < 0) throw new Error(`npm pack printed no JSON:\n${output}`);
  const results = JSON.parse(output.slice(start)) as PackResult[];
  if (results.length !== PACKED_WORKSPACES.length) throw new Error(`npm pack packed ${results.length} packages, expected ${PACKED_WORKSPACES.length}`);
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const target = process.argv[2];
  if (!target) {
    process.stderr.write('usage: node --import tsx packages/server/scripts/pack.ts <outdir>\n');
    process.exit(2);
  }
  const { outdir, tarballs } = packServer(target);
  console.log(`packed ${Object.values(tarballs).join(', ')} into ${outdir}; install with: cd ${outdir} && npm ci --omit=dev`);
}
