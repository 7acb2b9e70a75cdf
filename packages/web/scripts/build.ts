/**
 * Builds the demo and the dashboard into `packages/server/public/`, which the server's CLI serves
 * and its tarball ships: one bundled script and one stylesheet per page, the pages' HTML, and the
 * avatar pictures. Everything a page needs comes from this server: no CDN, no web fonts. The
 * packages it uses are bundled from their sources, so the build does not depend on their own `dist`
 * directories.
 *
 *   node --import tsx packages/web/scripts/build.ts [outdir]
 */
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { AVATAR_PICTURES, avatarSvg } from '../src/shared/avatars.js';

const WEB = fileURLToPath(new URL('..', import.meta.url));
const PACKAGES = resolve(WEB, '..');

/** This package is private: its pages ship inside `@presence/server`, so they are built there. */
export const DEFAULT_OUTDIR = join(PACKAGES, 'server', 'public');

export interface WebBuild {
  outdir: string;
  /** Output files, relative to `outdir`. */
  files: string[];
}

/** Bundles both pages into `outdir` (emptied first). */
export async function buildWeb(target: string = DEFAULT_OUTDIR): Promise<WebBuild> {
  const outdir = resolve(target);
  await rm(outdir, { recursive: true, force: true });
  await mkdir(join(outdir, 'avatars'), { recursive: true });
  const result = await build({
    absWorkingDir: WEB,
    entryPoints: { demo: 'src/demo/main.tsx', dashboard: 'src/dashboard/main.ts' },
    outdir,
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
    jsx: 'automatic',
    // The workspace packages from source: one build step, and no stale `dist` can sneak in.
    alias: {
      '@presence/protocol': join(PACKAGES, 'protocol/src/index.ts'),
      '@presence/client': join(PACKAGES, 'client/src/index.ts'),
      '@presence/react': join(PACKAGES, 'react/src/index.ts'),
    },
    define: { 'process.env.NODE_ENV': '"production"' },
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  });
  for (const page of ['index.html', 'dashboard.html']) await copyFile(join(WEB, 'src/pages', page), join(outdir, page));
  await copyFile(join(WEB, 'src/pages/favicon.svg'), join(outdir, 'favicon.svg'));
  for (const picture of AVATAR_PICTURES) await writeFile(join(outdir, 'avatars', `${picture.id}.svg`), avatarSvg(picture));
  const bundled = Object.keys(result.metafile.outputs).map((file) => resolve(WEB, file).slice(outdir.length + 1));
  return {
    outdir,
    files: [...bundled, 'index.html', 'dashboard.html', 'favicon.svg', ...AVATAR_PICTURES.map((p) => `avatars/${p.id}.svg`)].sort(),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const outdir = process.argv[2] ? resolve(process.argv[2]) : DEFAULT_OUTDIR;
  const { files } = await buildWeb(outdir);
  console.log(`@presence/web: ${files.length} files in ${outdir}`);
}
