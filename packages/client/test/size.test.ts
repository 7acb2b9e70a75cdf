/**
 * Bundle sizes: every entry point of the package, bundled for the browser on its own, stays
 * within its budget (the default WebSocket entry within 11 KiB minified and gzipped), every
 * export of package.json is measured, and docs/client.md states the measured figures.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ENTRIES, kib, measureBundle, measureEntries, validatorModules, type BundleEntry, type BundleSize } from '../scripts/size.js';
import { readDoc } from './support/doc-blocks.js';

const KIB = 1024;
let measured: Promise<(BundleEntry & BundleSize)[]> | undefined;
const sizes = () => (measured ??= measureEntries());

describe('bundle sizes', () => {
  test('the default entry, @presence/client over WebSocket, is at most 11 KiB minified and gzipped', async () => {
    const [first] = await sizes();
    assert.equal(first.importPath, '@presence/client');
    assert.ok(first.budgetBytes <= 11 * KIB, 'its budget is not raised past 11 KiB');
    assert.ok(first.gzippedBytes <= 11 * KIB, `@presence/client is ${kib(first.gzippedBytes)} (${first.gzippedBytes} bytes): more than 11 KiB`);
  });

  test('every entry is within its budget', async () => {
    for (const entry of await sizes()) {
      assert.ok(entry.gzippedBytes <= entry.budgetBytes, `${entry.importPath} is ${entry.gzippedBytes} bytes, over its budget of ${entry.budgetBytes}`);
    }
  });

  test('every import path that package.json exports is measured on its own', () => {
    const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string; exports: Record<string, unknown> };
    const exported = Object.keys(manifest.exports)
      .filter((path) => !path.endsWith('.json'))
      .map((path) => (path === '.' ? manifest.name : `${manifest.name}/${path.replace(/^\.\//, '')}`));
    assert.deepEqual(ENTRIES.map((entry) => entry.importPath).sort(), exported.sort(), 'scripts/size.ts lists every entry point');
  });

  test('docs/client.md states each measured size and budget', async () => {
    const doc = readDoc('docs/client.md');
    for (const entry of await sizes()) {
      const escaped = entry.importPath.replace(/[/.]/g, '\\$&');
      const row = new RegExp(`^\\| \`${escaped}\` \\| ([\\d.]+) KiB \\| \\*\\*([\\d.]+) KiB\\*\\* \\| ([\\d.]+) KiB \\|`, 'm').exec(doc);
      assert.ok(row, `docs/client.md: a row | \`${entry.importPath}\` | N KiB | **N KiB** | N KiB | in the bundle size table`);
      const [, minified, gzipped, budget] = row.map(Number);
      // Within 5 %: small changes need no edit, growth does.
      assert.ok(Math.abs(entry.minifiedBytes / KIB - minified) <= minified * 0.05, `docs say ${minified} KiB minified, measured ${kib(entry.minifiedBytes)}`);
      assert.ok(Math.abs(entry.gzippedBytes / KIB - gzipped) <= gzipped * 0.05, `docs say ${gzipped} KiB gzipped, measured ${kib(entry.gzippedBytes)}`);
      assert.equal(budget, entry.budgetBytes / KIB, 'the budget stated is the one tested');
    }
  });
});

describe('the HTTP transport is a separate import', () => {
  test('the default entry holds nothing of it; @presence/client/http holds it and no validator', async () => {
    const [main, http] = await Promise.all(ENTRIES.map((entry) => measureBundle(entry)));
    assert.deepEqual(
      main.inputs.filter((input) => /heartbeat-socket|src\/http\.ts/.test(input)),
      [],
      'the HTTP transport is only in @presence/client/http',
    );
    assert.ok(http.inputs.some((input) => input.endsWith('src/heartbeat-socket.ts')));
    assert.deepEqual(validatorModules(http), []);
  });
});
