/**
 * docs/react.md: every `tsx` block type-checks against the built packages, and the hook table
 * names every hook the package exports.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as react from '../src/index.js';
import { codeBlocks, readDoc, typeErrors } from '../../client/test/support/doc-blocks.js';

const doc = readDoc('docs/react.md');

describe('docs/react.md', () => {
  test('has examples, and every one type-checks', () => {
    const blocks = codeBlocks(doc, ['ts', 'tsx']);
    assert.ok(blocks.length >= 5, `expected the examples, found ${blocks.length} blocks`);
    assert.deepEqual(typeErrors('docs/react.md', blocks), []);
  });

  test('the hook table lists every exported hook', () => {
    const hooks = Object.keys(react).filter((name) => name.startsWith('use'));
    assert.ok(hooks.length >= 7, `found ${hooks.join(', ')}`);
    for (const hook of hooks) {
      assert.match(doc, new RegExp(`^\\| \`${hook}\\(`, 'm'), `docs/react.md: a row for ${hook}`);
    }
  });
});
