// Dual-mode compat (issue 15, item 8): Node 25.6+ calls setTypeOfService /
// getTypeOfService on the handle, and a net.Server's blockList checks the
// accepted handle's peer. A bypassed socket answers both as a kernel socket
// does; the path is proven by the kernel's TCP table and the fabric's counter.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

const [major, minor] = process.versions.node.split('.').map(Number);
const atLeast = (M, m) => major > M || (major === M && minor >= m);

// Every Node runs it: where a Node lacks a method or option, the program must
// find it missing in bypass mode too.
test('type of service and a server blockList behave the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'tos-blocklist.js');
  const seen = (r) => {
    const { kernel: _k, bypassed: _b, ...rest } = r;
    return rest;
  };
  assert.deepStrictEqual([bypass.allowed, bypass.blocked].map(seen), [kernel.allowed, kernel.blocked].map(seen));
  assert.deepStrictEqual(bypass.served, kernel.served);
  for (const r of [kernel, bypass]) {
    assert.deepStrictEqual([r.allowed.data, r.allowed.events], ['hi', ['end']]);
    // libuv's handle has the TOS methods since Node 24.x's backport and 25.6.
    assert.strictEqual(r.allowed.handleHasTos, typeof process.binding('tcp_wrap').TCP.prototype.getTypeOfService === 'function');
    if (atLeast(25, 6)) assert.deepStrictEqual([r.allowed.tosBefore, r.allowed.tosAfter, r.allowed.handleHasTos], [0, 0x10, true]);
    // net.Server's blockList: Node 22.13+ and 23.4+.
    if (atLeast(23, 4) || (major === 22 && minor >= 13)) assert.deepStrictEqual(r.served, ['127.0.0.1']);
  }
  // The blocked client sees what the kernel run's sees (the server closes the
  // accepted handle at once: no data).
  if (kernel.served.length === 1) assert.strictEqual(bypass.blocked.data, '');
  // Two connections (the blocked one is accepted, then closed), both ends in
  // this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => [r.allowed, r.blocked], { delta: 4 });
});
