// SIDESTEP_FAULTS between two processes: a client and an echo server, both
// injecting loss, duplication, reordering and delay into what they send, move
// bulk data both ways; every seed must deliver every byte intact.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const BYTES = 1024 * 1024; // each way

for (const seed of SEEDS) {
  test(`two processes, 1 MiB each way under faults, byte-exact (seed ${seed})`, async (t) => {
    const h = new Harness(t);
    // A 4 KiB MTU makes ~256 data segments per MiB each way, so every seed hits
    // every kind of fault many times.
    const faults = (s) => ({ SIDESTEP_MTU: '4096', SIDESTEP_FAULTS: `loss=0.03,dup=0.02,reorder=0.05,delay=300us,seed=${s}` });
    const server = h.start('../fabric/fixtures/server.js', ['echo'], { env: faults(seed + 1000) });
    const { port } = await h.next(server);
    const client = h.start('../fabric/fixtures/bulk-client.js', [port, BYTES, seed, 0], { env: faults(seed) });
    const { results: [r] } = await h.next(client, 60000);
    assert.ifError(r.error);
    assert.deepStrictEqual([r.bypassed, r.kernel], [true, false], JSON.stringify({ disabledReason: r.stats.disabledReason, fallbackReasons: r.stats.fallbackReasons }));
    assert.strictEqual(r.recvBytes, BYTES);
    assert.strictEqual(r.recvSha, r.sentSha, `seed ${seed}: the echo differs`);
    const conn = await h.nextMatching(server, (m) => m.event === 'conn');
    assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false]);
    h.send(server, { cmd: 'stats' });
    const { stats: ss } = await h.nextMatching(server, (m) => m.stats);
    // Both sides injected faults (into data and pure ACKs alike), and TCP
    // repaired the lost data.
    for (const [who, st] of [['client', r.stats], ['server', ss]]) {
      assert.ok(st.faultsDropped > 0 && st.faultsDuplicated + st.faultsReordered > 0 && st.faultsDelayed > 0,
        `${who} injected faults: ${JSON.stringify(st)}`);
    }
    assert.ok(r.stats.retransmits + ss.retransmits > 0, 'lost segments were retransmitted');
    assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
    h.send(server, { cmd: 'close' });
    assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
    assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
  });
}
