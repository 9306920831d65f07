// Dual-mode compat: cluster workers sharing a port, round robin. In bypass
// mode the primary's listener stays on the kernel (a bypassed connection
// can't be handed to a worker), so the app must simply keep working.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('a round-robin cluster serves and spreads connections in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'cluster.js');
  for (const r of [kernel, bypass]) {
    assert.strictEqual(r.answered, 20);
    assert.strictEqual(r.fromWorkers, true);
    assert.strictEqual(r.distinct, 2, 'both workers got connections');
  }
});
