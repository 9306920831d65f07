// SIDESTEP_FAULTS: loss, duplication, reordering and delay injected where
// packets enter the fabric. TCP must deliver every byte intact regardless,
// for every seed; and the counters prove the faults really happened.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('./support/harness');

const SEEDS = [1, 2, 3, 4, 5, 6];
// Across all seeds: a dropped packet may be a pure ACK (nothing to resend),
// so retransmissions are asserted over the whole set, not per seed.
const totals = { dropped: 0, retransmits: 0 };

for (const seed of SEEDS) {
  test(`3 MiB echo survives loss, duplication, reordering and delay (seed ${seed})`, async (t) => {
    const h = new Harness(t);
    const faults = `loss=0.03,dup=0.02,reorder=0.05,delay=300us,seed=${seed}`;
    const p = h.start('in-process.js', [], { env: { SIDESTEP_FAULTS: faults } });
    const r = await h.next(p, 60000);
    assert.strictEqual(r.echoedIntact, true, `seed ${seed}: ${r.length} bytes came back`);
    assert.deepStrictEqual(r.bypassed, [true, true]);
    const st = r.stats;
    assert.ok(st.faultsDropped + st.faultsDuplicated + st.faultsReordered > 0, 'faults were injected');
    assert.ok(st.faultsDelayed > 0, 'packets were delayed');
    totals.dropped += st.faultsDropped;
    totals.retransmits += st.retransmits;
    assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  });
}

test('over all seeds, packets were lost and data was retransmitted', () => {
  assert.ok(totals.dropped > 0 && totals.retransmits > 0, JSON.stringify(totals));
});

test('HTTP between two processes under faults: every response intact', async (t) => {
  const h = new Harness(t);
  const env = { SIDESTEP_FAULTS: 'loss=0.02,dup=0.02,reorder=0.05,seed=11' };
  const server = h.start('http-server.js', [], { env });
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 20, 10, 0], { env });
  const report = await h.next(client, 60000);
  assert.ifError(report.error);
  assert.strictEqual(report.responses.length, 30);
  report.responses.forEach((r, i) => {
    const path = i < 20 ? `/ka/${i}` : `/fresh/${i - 20}`;
    const len = i < 20 && i % 2 ? 100000 : 0;
    assert.strictEqual(r.body, `hello ${len ? 'POST' : 'GET'} ${path} ${len}`);
  });
  assert.ok(report.sockets.every((s) => s.bypassed && !s.kernel));
  await h.exit(client);
  h.send(server, { cmd: 'close' });
  await h.exit(server);
});
