// Thousands of connections from one stack to one server: every connect finds
// a local port at once. (Each connect used to look at every held port that
// already carried a connection to that peer: with ~1,300 held the process
// spent its time choosing ports, and the bench's 10,000-connection run
// stalled.) Bypassed, proven by the counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('../support/harness');

const N = 4000;

test(`${N} connections held at once to one server from one process: all bypassed`, async (t) => {
  const h = new Harness(t);
  const p = h.start('../fabric/fixtures/many-connections.js', [N]);
  const r = await h.next(p, 60000);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  assert.strictEqual(r.opened, N);
  // Both ends in this process: each connection counted by both.
  assert.strictEqual(r.bypassedDelta, 2 * N);
  assert.strictEqual(r.kernelSeen, 0);
  assert.deepStrictEqual(r.fallbackReasons, {});
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
