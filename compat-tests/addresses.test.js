// Dual-mode compat: addresses and families each end reports, for every kind
// of listen host (including dual-stack '::' taking IPv4 clients, which the
// kernel reports as ::ffff:127.0.0.1) and for 'localhost'. Each run proves
// its path by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('local/remote address and family match the kernel for every listen host', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'addresses.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  assert.strictEqual(kernel.cases.length, 6);
  // Ports differ run to run; everything else must be identical.
  const seen = (r) => r.cases.map(({ bypassed, kernel: k, ...rest }) => rest);
  assert.deepStrictEqual(seen(bypass), seen(kernel));
  // Six connections, both ends in this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => r.cases, {
    delta: 12,
    describe: (r) => JSON.stringify(r.cases.map((c) => [c.host, c.target, c.bypassed, c.kernel])),
  });
});
