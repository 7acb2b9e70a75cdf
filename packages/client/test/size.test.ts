/**
 * What each entry point costs a page: the default (WebSocket) entry stays within its budget and
 * holds nothing of the HTTP transport; the HTTP transport is a separate import, measured apart.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ENTRIES, MAX_DEFAULT_ENTRY_BYTES, kib, measureClientBundle, validatorModules } from '../scripts/size.js';

describe('bundle sizes', () => {
  test(`the default entry is at most ${kib(MAX_DEFAULT_ENTRY_BYTES)} minified and gzipped, without the HTTP transport`, async () => {
    const size = await measureClientBundle(ENTRIES['@presence/client']);
    assert.ok(size.gzippedBytes <= MAX_DEFAULT_ENTRY_BYTES, `${kib(size.gzippedBytes)} is over the budget`);
    assert.deepEqual(
      size.inputs.filter((input) => /heartbeat-socket|src\/http\.ts/.test(input)),
      [],
      'the HTTP transport is only in @presence/client/http',
    );
  });

  test('@presence/client/http is measured apart, and holds no validator either', async () => {
    const main = await measureClientBundle(ENTRIES['@presence/client']);
    const http = await measureClientBundle(ENTRIES['@presence/client/http']);
    assert.ok(http.inputs.some((input) => input.endsWith('src/heartbeat-socket.ts')));
    assert.deepEqual(validatorModules(http), []);
    const extra = http.gzippedBytes - main.gzippedBytes;
    assert.ok(extra > 0 && extra < 4 * 1024, `the HTTP transport adds ${kib(extra)}`);
  });
});
