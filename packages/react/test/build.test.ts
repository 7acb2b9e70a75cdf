/**
 * The built package as bundlers see it: `dist/index.js` starts with the `'use client'` directive,
 * which the Next.js App Router needs to treat the hooks as client code when a server component
 * imports them. (TypeScript keeps a directive prologue; this checks that it still does.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';

const packageDir = fileURLToPath(new URL('..', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

describe('@presence/react build', () => {
  test("dist/index.js starts with 'use client'", () => {
    execFileSync(process.execPath, [tsc, '-b', packageDir], { stdio: 'pipe' });
    const entry = readFileSync(`${packageDir}dist/index.js`, 'utf8');
    assert.match(entry, /^'use client';\n/, 'the directive is the first statement of the entry');
    const manifest = JSON.parse(readFileSync(`${packageDir}package.json`, 'utf8')) as { exports: Record<string, { default: string }> };
    assert.equal(manifest.exports['.'].default, './dist/index.js', 'the entry checked is the one published');
  });
});
