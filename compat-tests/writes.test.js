// Dual-mode compat: writes queued while connecting count in bytes and
// complete in order; a throttled writer to a slow reader drains without a
// timeout; a 120 KB string written and ended at once arrives whole (issue
// 15, items 2 and 3). Bypass proven by the kernel's table on every
// connection's server side.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('queued, slow and large writes behave the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'writes.js', { ms: 30000 });
  assert.deepStrictEqual(bypass.queued, kernel.queued);
  assert.deepStrictEqual(kernel.queued.order, ['utf8', 'default', 'hex', 'base64', 'buffer', 'latin1', 'end']);
  assert.deepStrictEqual(bypass.slow, kernel.slow);
  assert.deepStrictEqual(kernel.slow, { received: 2e6, events: ['all flushed', 'end'] });
  assert.deepStrictEqual(bypass.big, kernel.big);
  assert.strictEqual(kernel.big.same, true);
  assert.ok(kernel.paths.every((p) => !p.bypassed && p.kernel));
  assert.strictEqual(bypass.paths.length, 3);
  assert.ok(bypass.paths.every((p) => p.bypassed && !p.kernel), JSON.stringify(bypass.paths));
});
