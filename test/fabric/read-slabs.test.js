// Read slabs (native/addon/read_slabs.cc): a receiver reuses the 2 MiB slabs
// its reads came from while data streams (far fewer are mapped than the data
// needs), and once no slab has been taken for a couple of seconds it gives all
// but a few back to the system — an idle process does not keep a burst's read
// memory. The transfer is over the fabric (no kernel connection).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const BYTES = 256 << 20;
const SLAB = 2 << 20;
const IDLE_KEEP = 4; // read_slabs.cc kIdleKeep

test('a receiver reuses its read slabs during a 256 MiB burst, then trims them to a few once idle', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['sink', 'quiet'], { execArgv: ['--expose-gc'] });
  const { port } = await h.next(server);
  const client = h.start('../fabric/fixtures/bulk-client.js', [port, BYTES, 7, 0]);
  const r = await h.next(client, 60000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const res = r.results[0];
  assert.ifError(res.error);
  assert.deepStrictEqual([res.bypassed, res.kernel], [true, false]);

  h.send(server, { cmd: 'stats' });
  const { stats: burst } = await h.nextMatching(server, (m) => m.stats);
  assert.ok(burst.bytesIn >= BYTES, `server received ${burst.bytesIn}`);
  t.diagnostic(`after the burst: ${burst.readSlabs} slabs mapped, ${burst.readSlabsFree} free`);
  // Reused while streaming: fewer slabs than the bytes would fill.
  assert.ok(burst.readSlabs < BYTES / SLAB, `${burst.readSlabs} slabs mapped for ${BYTES / SLAB} slabs' worth`);
  assert.ok(burst.readSlabs > IDLE_KEEP + 2, `only ${burst.readSlabs} slabs mapped`);

  // The reads are garbage (the sink dropped them): a collection hands their
  // slabs back to the pool; with nothing read since, the pool trims them.
  h.send(server, { cmd: 'gc' });
  let idle = (await h.nextMatching(server, (m) => m.gced)).stats;
  const settled = (s) => s.readSlabsFree <= IDLE_KEEP && s.readSlabs <= IDLE_KEEP + 2;
  for (let i = 0; i < 48 && !settled(idle); i++) {
    await new Promise((done) => setTimeout(done, 250));
    h.send(server, { cmd: 'stats' });
    idle = (await h.nextMatching(server, (m) => m.stats)).stats;
  }
  t.diagnostic(`idle: ${idle.readSlabs} slabs mapped, ${idle.readSlabsFree} free`);
  assert.ok(idle.readSlabsFree <= IDLE_KEEP, `${idle.readSlabsFree} free slabs kept while idle`);
  assert.ok(idle.readSlabs <= IDLE_KEEP + 2, `${idle.readSlabs} slabs still mapped while idle`);

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
