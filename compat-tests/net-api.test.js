// Dual-mode compat: the net.Socket API tour of fixtures/net-api.js.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('the net.Socket API behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'net-api.js');
  assert.strictEqual(kernel.bypassed, false);
  assert.strictEqual(bypass.bypassed, true);
  const { bypassed: _k, ...k } = kernel;
  const { bypassed: _b, ...b } = bypass;
  assert.deepStrictEqual(b, k);
  assert.deepStrictEqual(k.states, ['opening', 'open', 'readOnly']);
  assert.strictEqual(k.reply, 'half-closed reply');
  assert.deepStrictEqual(k.bytes, [13, 17]);
  assert.deepStrictEqual(k.big, { got: 8 * 1024 * 1024, ok: true });
  assert.strictEqual(k.serverWaits, true);
  assert.strictEqual(k.nothingReadWhilePaused, true);
  assert.deepStrictEqual(k.onread, { total: 8 * 1024 * 1024, manyCalls: true });
  assert.strictEqual(k.refused.code, 'ECONNREFUSED');
  assert.deepStrictEqual(k.bound, { address: '127.0.0.1', samePort: true, bypassed: true });
});
