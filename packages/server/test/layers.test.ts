/**
 * The server's directories form layers, written once in docs/architecture.md: a unit (a directory
 * of src, or a file at its root) imports only units of lower layers, never one beside or above it.
 * So no import cycle between directories can come back unnoticed.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = resolve(here, '../src');
const doc = readFileSync(resolve(here, '../../../docs/architecture.md'), 'utf8');

/** Layers from the doc's `layers` block, top first; each line holds the units of one layer. */
function declaredLayers(): string[][] {
  const block = /```text layers\n([\s\S]*?)```/.exec(doc);
  assert.ok(block, 'docs/architecture.md has a ```text layers block');
  return block[1]
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((line) => line.split(/\s+/).map((unit) => unit.replace(/\/$/, '')));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** `presence` for src/presence/engine.ts, `server.ts` for src/server.ts. */
function unitOf(path: string): string {
  return relative(src, path).split('/')[0];
}

function imports(path: string): { target: string; line: number }[] {
  const found: { target: string; line: number }[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((text, i) => {
      for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
        found.push({ target: resolve(dirname(path), match[1]).replace(/\.js$/, '.ts'), line: i + 1 });
      }
    });
  return found;
}

describe('layers of packages/server/src', () => {
  const layers = declaredLayers();
  const rank = new Map<string, number>();
  layers.forEach((units, i) => units.forEach((unit) => rank.set(unit, layers.length - i)));

  it('every directory and root file of src has a layer in docs/architecture.md, and every layer named exists', () => {
    const units = new Set(sourceFiles(src).map(unitOf));
    for (const unit of units) assert.ok(rank.has(unit), `${unit} is missing from the layers in docs/architecture.md`);
    for (const unit of rank.keys()) assert.ok(units.has(unit), `docs/architecture.md names ${unit}, which src does not have`);
  });

  it('every import goes down a layer: none beside, none up, so no cycle between directories', () => {
    const wrong: string[] = [];
    for (const file of sourceFiles(src)) {
      const from = unitOf(file);
      for (const { target, line } of imports(file)) {
        const to = unitOf(target);
        if (to === from) continue;
        if ((rank.get(to) ?? Infinity) >= (rank.get(from) ?? -Infinity)) wrong.push(`${relative(src, file)}:${line} (${from}) imports ${relative(src, target)} (${to})`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});
