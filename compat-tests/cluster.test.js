// Dual-mode compat: cluster workers sharing a port, under both scheduling
// policies. In bypass mode each worker registers its own bypass listener for
// the shared port (shim/node/cluster.ts) and a sidestep client's connections
// are spread across the workers over the fabric, with no kernel connection;
// a client without the hook still gets in through the kernel path Node's
// cluster set up; a worker killed with SIGKILL gets no more connections.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, runMode } = require('./support/dual-mode');

for (const [policy, host] of [['rr', 'local'], ['none', 'local'], ['rr', 'any'], ['none', 'any']]) {
  const name = `${policy === 'rr' ? 'round-robin' : 'SCHED_NONE'} cluster on ${host === 'any' ? "'::'" : '127.0.0.1'}`;
  test(`a ${name} serves, spreads and survives a dead worker in both modes`, async (t) => {
    const [kernel, bypass] = await runBothModes(t, 'cluster.js', { args: [policy, host] });
    for (const r of [kernel, bypass]) {
      assert.strictEqual(r.policy, policy);
      assert.strictEqual(r.answered, 24);
      assert.strictEqual(r.fromWorkers, true);
      assert.strictEqual(r.consistent, true, 'client and worker agree on the path');
      assert.strictEqual(r.plainAnswered, 6, 'a client without the hook is served');
      assert.strictEqual(r.plainFromWorkers, true);
      assert.strictEqual(r.afterKill.answered, 12);
      assert.strictEqual(r.afterKill.fromSurvivors, true, 'the killed worker gets no connection');
    }
    // Kernel mode is Node's cluster as ever.
    assert.strictEqual(kernel.bypassed, 0);
    assert.strictEqual(kernel.kernelTuples, 24);
    assert.deepStrictEqual(kernel.fallbackReasons, {});
    // SCHED_RR spreads exactly; under SCHED_NONE the kernel picks (often unevenly).
    if (policy === 'rr') assert.deepStrictEqual(kernel.perWorker, [8, 8, 8]);
    // Bypass mode: every connection over the fabric, proven, and spread.
    assert.strictEqual(bypass.bypassed, 24);
    assert.strictEqual(bypass.kernelTuples, 0, 'no kernel ESTABLISHED connection for any 4-tuple');
    assert.ok(bypass.connectionsBypassed >= 36, `fabric carried ${bypass.connectionsBypassed} connections`);
    assert.strictEqual(bypass.distinct, 3, `spread: ${bypass.perWorker}`);
    assert.ok(bypass.perWorker.every((n) => n >= 4), `spread: ${bypass.perWorker}`);
    assert.strictEqual(bypass.afterKill.bypassed, 12);
    assert.strictEqual(bypass.afterKill.distinct, 2, 'both survivors still get connections');
    // Only the round-robin primary's own listener stays on the kernel.
    assert.deepStrictEqual(bypass.fallbackReasons, policy === 'rr' ? { cluster: 1 } : {});
  });
}

test('SIDESTEP_STRICT=1: a round-robin cluster runs bypassed, without strict-mode errors', async (t) => {
  // The primary's own listener only serves clients without sidestep (the
  // workers are bypassed): strict mode must not refuse it.
  const bypass = await runMode(t, 'cluster.js', 'bypass', { args: ['rr', 'local'], env: { SIDESTEP_STRICT: '1' } });
  assert.strictEqual(bypass.answered, 24);
  assert.strictEqual(bypass.bypassed, 24);
  assert.strictEqual(bypass.kernelTuples, 0);
  assert.strictEqual(bypass.distinct, 3);
  assert.strictEqual(bypass.plainAnswered, 6);
});
