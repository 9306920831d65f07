// Dual-mode compat: socket.resetAndDestroy() sends RST (the peer sees
// ECONNRESET), connected or still connecting. Each run proves the path of
// both connections by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('resetAndDestroy resets the connection in kernel and bypass mode alike', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'reset.js');
  // Each socket's own events, in the order it saw them.
  assert.deepStrictEqual(kernel.seen, {
    a: ['close:false'],
    b: ['remote:undefined', 'close:false'],
    serverOfA: [['error:ECONNRESET', 'close']],
    serverOfB: [['error:ECONNRESET', 'close']],
  });
  assert.deepStrictEqual(bypass.seen, kernel.seen);
  // Paths: the kernel's table has the connections in kernel mode only.
  const pairs = (r) => ['a', 'b'].map((n) => [r.paths[n].bypassed, r.paths[n].kernel]);
  assert.deepStrictEqual(pairs(kernel), Array(2).fill([false, true]));
  assert.deepStrictEqual(pairs(bypass), Array(2).fill([true, false]));
  assert.strictEqual(kernel.bypassedDelta, 0);
  // Two connections (b is reset once it is up), both ends in this process:
  // each counted by both ends.
  assert.strictEqual(bypass.bypassedDelta, 4);
  assert.deepStrictEqual(bypass.fallbackReasons, {});
});
