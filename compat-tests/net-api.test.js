// Dual-mode compat: the net.Socket API tour of fixtures/net-api.js. Each run
// proves the path of its four connections by the fabric's counter and the
// kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('the net.Socket API behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'net-api.js');
  const { paths: _kp, bypassedDelta: _kd, fallbackReasons: _kf, ...k } = kernel;
  const { paths: _bp, bypassedDelta: _bd, fallbackReasons: _bf, ...b } = bypass;
  assert.deepStrictEqual(b, k);
  assert.deepStrictEqual(k.states, ['opening', 'open', 'readOnly']);
  assert.strictEqual(k.reply, 'half-closed reply');
  assert.deepStrictEqual(k.bytes, [13, 17]);
  assert.deepStrictEqual(k.big, { got: 8 * 1024 * 1024, ok: true });
  assert.strictEqual(k.serverWaits, true);
  assert.strictEqual(k.nothingReadWhilePaused, true);
  assert.deepStrictEqual(k.onread, { total: 8 * 1024 * 1024, manyCalls: true });
  assert.strictEqual(k.refused.code, 'ECONNREFUSED');
  assert.deepStrictEqual(k.bound, { address: '127.0.0.1', samePort: true });
  // Four connections, both ends in this process: each counted by both ends.
  // The refused connect has no listener to be bypassed to: the kernel's, and
  // counted as such.
  const names = ['tour', 'big', 'onread', 'bound'];
  assertPaths(kernel, bypass, (r) => names.map((n) => r.paths[n]), { delta: 8, reasons: { 'no-listener': 1 } });
});
