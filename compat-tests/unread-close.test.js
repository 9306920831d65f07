// Dual-mode compat: closing a connection whose peer's bytes are still
// unread resets it, as the kernel does (RFC 2525 2.17) — also where the
// kernel would hold those bytes in its receive queue and sidestep has them
// still in the peer's send buffer, in a ring no pump has taken yet, or in
// reads not yet handed to JS. Closing after reading everything ends with a
// FIN. Servers in the same process and in a peer process; each connection's
// path proven by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('a close with the peer\'s bytes unread resets, one after reading them all ends, in kernel and bypass mode alike', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'unread-close.js');
  const reset = ['error:ECONNRESET', 'close:true'];
  const clean = ['end', 'close:false'];
  for (const where of ['same process', 'peer process']) {
    assert.deepStrictEqual(kernel.seen[`destroyOnFirstRead (${where})`], reset, where);
    assert.deepStrictEqual(kernel.seen[`endsThenDestroyedOnFirstRead (${where})`], reset, where);
    assert.deepStrictEqual(kernel.seen[`tlsHandshakeFails (${where})`], reset, where);
    assert.deepStrictEqual(kernel.seen[`readsAllThenEnds (${where})`], clean, where);
    assert.deepStrictEqual(kernel.seen[`closesIdle (${where})`], clean, where);
  }
  assert.deepStrictEqual(bypass.seen, kernel.seen);
  // Ten connections: five with both ends counted here, five with one.
  assertPaths(kernel, bypass, (r) => r.paths, { delta: 15 });
});
