// Dual-mode compat: the net.Socket API tour of fixtures/net-api.js. Each run
// proves the path of its four connections by the fabric's counter and the
// kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('the net.Socket API behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'net-api.js');
  const { paths: kp, bypassedDelta: kd, fallbackReasons: _kf, ...k } = kernel;
  const { paths: bp, bypassedDelta: bd, fallbackReasons: bf, ...b } = bypass;
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
  // Paths: the kernel's table has the connections in kernel mode only.
  const names = ['tour', 'big', 'onread', 'bound'];
  const pairs = (paths) => names.map((n) => [paths[n].bypassed, paths[n].kernel]);
  assert.deepStrictEqual(pairs(kp), Array(4).fill([false, true]));
  assert.deepStrictEqual(pairs(bp), Array(4).fill([true, false]));
  assert.strictEqual(kd, 0);
  // Four connections, both ends in this process: each counted by both ends.
  // The refused connect has no listener to be bypassed to: the kernel's, and
  // counted as such.
  assert.strictEqual(bd, 8);
  assert.deepStrictEqual(bf, { 'no-listener': 1 });
});
