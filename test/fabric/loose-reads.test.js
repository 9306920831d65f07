// When JS holds on to its reads (an app buffering a whole upload), their read
// slabs can't come back: past the slabs the runtime lets JS hold with none
// free (read_slabs.cc kLooseAfterBytes, 32 large slabs), reads get memory of their own from
// Node's allocator instead of fresh slabs. Every byte still arrives, in order
// (sha256 of the 96 MiB kept), over the fabric (no kernel connection).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('../support/harness');

const BYTES = 96 << 20;
const LOOSE_AFTER = 32; // read_slabs.cc kLooseAfterBytes: 32 large slabs

test('reads JS keeps past the slab limit get memory of their own, byte-exact', async (t) => {
  const h = new Harness(t);
  const p = h.start('../fabric/fixtures/retaining-receiver.js', [BYTES, 5]);
  const r = await h.next(p, 60000);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  assert.deepStrictEqual([r.exact, r.bytes], [true, BYTES]);
  assert.deepStrictEqual(r.paths, [{ bypassed: true, kernel: false }, { bypassed: true, kernel: false }]);
  assert.ok(r.stats.connectionsBypassed >= 2, `connections bypassed: ${r.stats.connectionsBypassed}`);
  t.diagnostic(`slabs made ${r.stats.readSlabsMade}, mapped ${r.stats.readSlabs}, loose reads ${r.stats.readsLoose}`);
  // The slabs stopped at the limit (the one being filled when it was reached
  // aside), and the rest of the 96 MiB went to loose reads.
  assert.ok(r.stats.readSlabsMade <= LOOSE_AFTER + 1, `${r.stats.readSlabsMade} slabs made`);
  assert.ok(r.stats.readsLoose > 0, 'no loose reads');
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
