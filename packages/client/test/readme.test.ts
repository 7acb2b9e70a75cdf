/**
 * The README's client section: its bundle size is the measured one, the bundle holds nothing but
 * the client and the protocol package (no server, no Node built-ins, no schema or validator
 * code), and its example type-checks.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { kib, measureClientBundle, validatorModules } from '../scripts/size.js';
import { codeBlocks, readDoc, typeErrors } from './support/doc-blocks.js';

const readme = readDoc('README.md');
const section = /^## Client SDK\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';

describe('README: Client SDK', () => {
  test('states the measured minified + gzipped size', async () => {
    const size = await measureClientBundle();
    const stated = /\*\*(\d+(?:\.\d+)?) KiB\*\* minified and gzipped/.exec(section)?.[1];
    assert.ok(stated, 'the Client SDK section states the size as **N.N KiB** minified and gzipped');
    // Within 5 %: small changes need no README edit, growth does.
    const measured = size.gzippedBytes / 1024;
    assert.ok(Math.abs(measured - Number(stated)) <= Number(stated) * 0.05, `README says ${stated} KiB, measured ${kib(size.gzippedBytes)}: update the README`);
  });

  test('the browser bundle holds only the client and the protocol package', async () => {
    const { inputs } = await measureClientBundle();
    const outside = inputs.filter((input) => !/^(src|\.\.\/protocol\/dist)\//.test(input));
    assert.deepEqual(outside, [], 'no server code, no Node built-ins, no ws');
  });

  test('the browser bundle holds no schema or validator module', async () => {
    const size = await measureClientBundle();
    assert.deepEqual(validatorModules(size), [], 'the client imports types and constants of @presence/protocol only, never @presence/protocol/schema');
    // The pattern does catch them: the protocol's schema module and the schema library.
    assert.deepEqual(
      validatorModules({ inputs: ['../protocol/dist/schema.js', '../../node_modules/@sinclair/typebox/build/esm/type/object/object.mjs', '../protocol/dist/messages.js'] }),
      ['../protocol/dist/schema.js', '../../node_modules/@sinclair/typebox/build/esm/type/object/object.mjs'],
    );
  });

  test('its example type-checks', () => {
    const blocks = codeBlocks(section, ['ts']);
    assert.equal(blocks.length, 1);
    assert.deepEqual(typeErrors('README.md', blocks), []);
  });
});
