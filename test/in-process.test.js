// Two sockets of one process are bypassed too: the stack's own loopback.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('./support/harness');

test('server and client in one process talk through the stack, not the kernel', async (t) => {
  const h = new Harness(t);
  const p = h.start('in-process.js');
  const r = await h.next(p, 30000);
  assert.strictEqual(r.echoedIntact, true, `echoed ${r.length} bytes`);
  assert.deepStrictEqual(r.bypassed, [true, true]);
  assert.strictEqual(r.bypassedOnConnection, true, "isBypassed answers inside 'connection'");
  assert.strictEqual(r.kernel, false);
  assert.strictEqual(r.stats.connectionsBypassed, 2); // one connect + one accept
  assert.ok(r.stats.bytesOut >= 2 * 3 * 1024 * 1024, `bytesOut ${r.stats.bytesOut}`);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
