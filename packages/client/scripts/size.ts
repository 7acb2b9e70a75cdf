/**
 * Measures what the client costs a web page: bundled for the browser (with @presence/protocol,
 * which is all it depends on), minified and gzipped, for each entry point. `npm run size` prints
 * them; the README quotes them and tests keep the two in agreement.
 */
import { gzipSync } from 'node:zlib';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

export interface BundleSize {
  minifiedBytes: number;
  gzippedBytes: number;
  /** Modules that ended up in the bundle, relative to packages/client. */
  inputs: string[];
}

/** The entry points a page can import: the WebSocket client (the default) and the HTTP transport. */
export const ENTRIES = { '@presence/client': 'src/index.ts', '@presence/client/http': 'src/http.ts' } as const;

/** Most the default entry may cost a page, minified and gzipped (a test holds it to this). */
export const MAX_DEFAULT_ENTRY_BYTES = 11 * 1024;

export async function measureClientBundle(entry: string = ENTRIES['@presence/client']): Promise<BundleSize> {
  const result = await build({
    absWorkingDir: fileURLToPath(new URL('..', import.meta.url)),
    entryPoints: [entry],
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
  for (const [name, entry] of Object.entries(ENTRIES)) {
    const size = await measureClientBundle(entry);
    console.log(`${name}: ${kib(size.minifiedBytes)} minified, ${kib(size.gzippedBytes)} minified + gzipped (${size.gzippedBytes} bytes)`);
  }
}
