// Dual-mode compat: socket.resetAndDestroy() sends RST (the peer sees
// ECONNRESET), connected or still connecting.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('resetAndDestroy resets the connection in kernel and bypass mode alike', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'reset.js');
  assert.deepStrictEqual(kernel.bypassed, [false]);
  assert.deepStrictEqual(bypass.bypassed, [true]);
  assert.deepStrictEqual(bypass.seen, kernel.seen);
  assert.deepStrictEqual(kernel.seen, ['a:close:false', 'b:close:false', 'server:close', 'server:close', 'server:error:ECONNRESET', 'server:error:ECONNRESET']);
});
