// Dual-mode compat: when a server closes one connection in its 'data'
// handler, the connections whose bytes and FIN came in the same batch still
// get their bytes before their EOF. Each run proves its path by the fabric's
// counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('a socket closed in its data handler: its neighbours still get bytes, then EOF, in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'closed-neighbour.js');
  for (const r of [kernel, bypass]) {
    const lists = Object.entries(r.ends);
    assert.strictEqual(lists.length, 4, JSON.stringify(r.ends));
    // One was destroyed on its bytes; every other got its bytes, then EOF.
    const destroyed = lists.filter(([, l]) => l.includes('destroyed'));
    assert.strictEqual(destroyed.length, 1);
    for (const [i, l] of lists) {
      if (l.includes('destroyed')) assert.deepStrictEqual(l, [`data:${i}:hello`, 'destroyed']);
      else assert.deepStrictEqual(l, [`data:${i}:hello`, 'end']);
    }
  }
  // Four connections, both ends in this process: each counted by both ends.
  assert.strictEqual(kernel.paths.length, 4);
  assertPaths(kernel, bypass, (r) => r.paths, { delta: 8 });
});
