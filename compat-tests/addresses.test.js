// Dual-mode compat: addresses and families each end reports, for every kind
// of listen host (including dual-stack '::' taking IPv4 clients, which the
// kernel reports as ::ffff:127.0.0.1) and for 'localhost'.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('local/remote address and family match the kernel for every listen host', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'addresses.js');
  assert.ok(kernel.every((c) => !c.bypassed));
  assert.ok(bypass.every((c) => c.bypassed), JSON.stringify(bypass.map((c) => [c.host, c.target, c.bypassed])));
  // Ports differ run to run; everything else must be identical.
  assert.deepStrictEqual(bypass.map(({ bypassed, ...rest }) => rest), kernel.map(({ bypassed, ...rest }) => rest));
});
