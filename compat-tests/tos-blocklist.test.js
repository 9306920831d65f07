// Dual-mode compat (issue 15, item 8): Node 25.6+ calls setTypeOfService /
// getTypeOfService on the handle, and a net.Server's blockList checks the
// accepted handle's peer. A bypassed socket answers both as a kernel socket
// does; the path is proven by the kernel's TCP table and the fabric's counter.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

const [major, minor] = process.versions.node.split('.').map(Number);
const skip = major > 25 || (major === 25 && minor >= 6) ? false : `Node ${process.versions.node} has no setTypeOfService/getTypeOfService (25.6+)`;

test('type of service and a server blockList behave the same in kernel and bypass mode', { skip }, async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'tos-blocklist.js');
  for (const r of [kernel, bypass]) {
    assert.deepStrictEqual([r.allowed.tosBefore, r.allowed.tosAfter, r.allowed.handleHasTos], [0, 0x10, true]);
    assert.deepStrictEqual([r.allowed.data, r.allowed.events], ['hi', ['end']]);
    assert.deepStrictEqual(r.served, ['127.0.0.1']);
  }
  // The blocked client sees what the kernel run's sees (the server closes the
  // accepted handle at once: no data).
  assert.strictEqual(bypass.blocked.data, '');
  assert.deepStrictEqual(bypass.blocked.events, kernel.blocked.events);
  // Two connections (the blocked one is accepted, then closed), both ends in
  // this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => [r.allowed, r.blocked], { delta: 4 });
});
