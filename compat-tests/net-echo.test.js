// Dual-mode compat: the same net exchange under the hook with SIDESTEP=0
// (kernel) and with bypass; the observable behaviour must be identical, and
// the bypass run must prove it didn't touch kernel TCP.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('net echo with half-close behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'net-echo.js');
  assert.strictEqual(kernel.bypassed, false);
  assert.strictEqual(kernel.kernel, true);
  assert.strictEqual(bypass.bypassed, true);
  assert.strictEqual(bypass.kernel, false);
  for (const r of [kernel, bypass]) {
    assert.strictEqual(r.data, 'hello worldbye');
    assert.deepStrictEqual(r.bytes, [11, 14]);
  }
  assert.deepStrictEqual(bypass.client, kernel.client);
  assert.deepStrictEqual(bypass.server, kernel.server);
});
