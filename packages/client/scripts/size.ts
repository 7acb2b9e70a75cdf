/**
 * Measures what the client costs a web page: each entry point of the package bundled for the
 * browser on its own (with @presence/protocol, which is all it depends on), minified and gzipped.
 * `npm run size` prints them; docs/client.md and the README quote them, and tests keep the
 * figures in agreement and every entry within its budget.
 */
import { gzipSync } from 'node:zlib';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

/** One import path of the package, measured apart from the others. */
export interface BundleEntry {
  /** What an application imports, e.g. `@presence/client`. */
  importPath: string;
  /** The module the bundle starts from, relative to packages/client. */
  source: string;
  /** Most the entry may cost, minified and gzipped, in bytes (a test holds it to this). */
  budgetBytes: number;
}

/**
 * Every entry point, the default WebSocket client first. A transport published as its own
 * import path (`@presence/client/<name>`) gets a row here, so that its cost is known apart from
 * the default entry's (a test checks that every export of package.json is listed).
 */
export const ENTRIES: readonly BundleEntry[] = [
  { importPath: '@presence/client', source: 'src/index.ts', budgetBytes: 11 * 1024 },
  // The same client over HTTP heartbeats, for pages that cannot hold a WebSocket.
  { importPath: '@presence/client/http', source: 'src/http.ts', budgetBytes: 14 * 1024 },
];

export interface BundleSize {
  minifiedBytes: number;
  gzippedBytes: number;
  /** Modules that ended up in the bundle, relative to packages/client. */
  inputs: string[];
}

export async function measureBundle(entry: Pick<BundleEntry, 'source'>): Promise<BundleSize> {
  const result = await build({
    absWorkingDir: fileURLToPath(new URL('..', import.meta.url)),
    entryPoints: [entry.source],
    bundle: true,
    minify: true,
    format: 'esm',
    // A browser target: any Node built-in or server module in the graph fails the build.
    platform: 'browser',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const code = result.outputFiles[0].contents;
  return {
    minifiedBytes: code.byteLength,
    gzippedBytes: gzipSync(code, { level: 9 }).byteLength,
    inputs: Object.keys(result.metafile.inputs),
  };
}

/** The default entry (`@presence/client`, over WebSocket). */
export function measureClientBundle(): Promise<BundleSize> {
  return measureBundle(ENTRIES[0]);
}

/** Every entry, each bundled on its own. */
export async function measureEntries(): Promise<(BundleEntry & BundleSize)[]> {
  const measured: (BundleEntry & BundleSize)[] = [];
  for (const entry of ENTRIES) measured.push({ ...entry, ...(await measureBundle(entry)) });
  return measured;
}

/**
 * Modules that validate messages: the protocol's schemas and the schema library they are built
 * with. The server decodes with them; the client trusts its server and must not pay for them.
 */
export const VALIDATOR_MODULE = /(^|\/)(protocol\/(dist|src)\/schema\.[jt]s$|node_modules\/@sinclair\/typebox\/|node_modules\/(ajv|typebox)\/)/;

/** Inputs of the bundle that are validator code (see VALIDATOR_MODULE); empty is the contract. */
export function validatorModules(size: Pick<BundleSize, 'inputs'>): string[] {
  return size.inputs.filter((input) => VALIDATOR_MODULE.test(input));
}

export const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const entry of await measureEntries()) {
    console.log(
      `${entry.importPath}: ${kib(entry.minifiedBytes)} minified, ${kib(entry.gzippedBytes)} minified + gzipped (${entry.gzippedBytes} bytes; budget ${kib(entry.budgetBytes)})`,
    );
  }
}
