// Read slabs (native/addon/read_slabs.cc): a receiver keeps the 2 MiB slabs
// its reads came from warm while data streams, and once no slab has been
// taken for a couple of seconds it gives all but a few back to the system —
// an idle process does not keep a burst's read memory. The transfer is over
// the fabric (bytes counted by the stack, no kernel connection).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const BYTES = 64 << 20;
const IDLE_KEEP = 4; // read_slabs.cc kIdleKeep

test('after a 64 MiB burst a receiver keeps its free read slabs warm, then trims them to a few once idle', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['sink', 'quiet'], { execArgv: ['--expose-gc'] });
  const { port } = await h.next(server);
  const client = h.start('../fabric/fixtures/bulk-client.js', [port, BYTES, 7, 0]);
  const r = await h.next(client, 60000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const res = r.results[0];
  assert.ifError(res.error);
  assert.deepStrictEqual([res.bypassed, res.kernel], [true, false]);

  // The reads are garbage once the sink dropped them: a collection hands
  // their slabs back to the pool, which keeps them (no slab was taken since).
  h.send(server, { cmd: 'gc' });
  const { stats: warm } = await h.nextMatching(server, (m) => m.gced);
  assert.strictEqual(warm.bytesIn >= BYTES, true, `server received ${warm.bytesIn}`);
  t.diagnostic(`after the burst: ${warm.readSlabs} slabs mapped, ${warm.readSlabsFree} free`);
  assert.ok(warm.readSlabsFree > IDLE_KEEP, `only ${warm.readSlabsFree} free slabs after 64 MiB`);

  // Idle: within a few trim periods only the idle reserve is left.
  let idle = warm;
  for (let i = 0; i < 40 && idle.readSlabsFree > IDLE_KEEP; i++) {
    await new Promise((r) => setTimeout(r, 250));
    h.send(server, { cmd: 'stats' });
    idle = (await h.nextMatching(server, (m) => m.stats)).stats;
  }
  t.diagnostic(`idle: ${idle.readSlabs} slabs mapped, ${idle.readSlabsFree} free`);
  assert.strictEqual(idle.readSlabsFree, IDLE_KEEP);
  assert.strictEqual(warm.readSlabs - idle.readSlabs, warm.readSlabsFree - IDLE_KEEP);

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.ok(!fs.existsSync(h.fabricPath()));
});
