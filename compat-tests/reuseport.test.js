// Dual-mode compat: two processes sharing a port with listen({ reusePort })
// (Node 22.12+; skipped before). The kernel spreads by a hash of the 4-tuple;
// bypassed, each server serves its own kernel socket over the fabric and the
// client goes where the kernel's own lookup of that 4-tuple points, so the
// spreading is the kernel's too.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('listen({ reusePort }) in two processes: both serve, in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'reuseport.js');
  if (kernel.unsupported) return t.skip(`Node ${process.versions.node} has no reusePort`);
  for (const r of [kernel, bypass]) {
    assert.strictEqual(r.samePort, true);
    assert.strictEqual(r.answered, 16);
    assert.strictEqual(r.fromServers, true);
    assert.strictEqual(r.consistent, true);
    assert.deepStrictEqual(r.serverFallbacks, [{}, {}]);
  }
  assert.deepStrictEqual([kernel.bypassed, kernel.kernelTuples], [0, 16]);
  assert.ok(kernel.distinct >= 1);
  assert.deepStrictEqual([bypass.bypassed, bypass.kernelTuples], [16, 0]);
  // (Both get some: all 16 on one has odds of 2 in 65536.)
  assert.ok(bypass.perServer.every((n) => n >= 1), `bypassed connections spread over the two: ${bypass.perServer}`);
});
