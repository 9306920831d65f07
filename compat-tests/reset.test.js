// Dual-mode compat: socket.resetAndDestroy() sends RST (the peer sees
// ECONNRESET), connected or still connecting.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('../test/support/harness');

async function run(t, mode) {
  const h = new Harness(t);
  const p = h.start('../../compat-tests/fixtures/reset.js', [], { env: { SIDESTEP: mode === 'kernel' ? '0' : '1' } });
  const r = await h.next(p, 20000);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  return r;
}

test('resetAndDestroy resets the connection in kernel and bypass mode alike', async (t) => {
  const kernel = await run(t, 'kernel');
  const bypass = await run(t, 'bypass');
  assert.deepStrictEqual(kernel.bypassed, [false]);
  assert.deepStrictEqual(bypass.bypassed, [true]);
  assert.deepStrictEqual(bypass.seen, kernel.seen);
  assert.deepStrictEqual(kernel.seen, ['a:close:false', 'b:close:false', 'server:close', 'server:close', 'server:error:ECONNRESET', 'server:error:ECONNRESET']);
});
