// Dual-mode compat: socket.resetAndDestroy() sends RST (the peer sees
// ECONNRESET), connected or still connecting. Each run proves the path of
// both connections by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

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
  // Two connections (b is reset once it is up), both ends in this process:
  // each counted by both ends.
  assertPaths(kernel, bypass, (r) => [r.paths.a, r.paths.b], { delta: 4 });
});
