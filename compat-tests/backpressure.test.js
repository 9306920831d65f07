// Dual-mode compat: pause()/resume() push back on the writer for real
// (fixtures/backpressure.js), both directions: while the reader is paused
// mid-stream the writer's write() returns false and it waits for 'drain',
// Node's read buffer stays bounded, and 16 MB arrive byte-exact after resume.
// Each run proves the path of both connections by the fabric's counter and
// the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('pause() pushes back on the peer the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'backpressure.js', { ms: 40000 });
  for (const r of [kernel, bypass]) {
    for (const dir of ['toClient', 'toServer']) {
      assert.deepStrictEqual(r[dir], {
        atResume: { writerBlocked: true, writerSawFalse: true, bufferBounded: true, notAllSent: true },
        got: 16 * 1024 * 1024,
        exact: true,
        drainedAfterResume: true,
      }, dir);
    }
  }
  // Paths: the kernel's table has the connections in kernel mode only.
  const paths = (r) => ['toClient', 'toServer'].map((dir) => [r.paths[dir].bypassed, r.paths[dir].kernel]);
  assert.deepStrictEqual(paths(kernel), Array(2).fill([false, true]));
  assert.deepStrictEqual(paths(bypass), Array(2).fill([true, false]));
  assert.strictEqual(kernel.bypassedDelta, 0);
  // Two connections, both ends in this process: each counted by both ends.
  assert.strictEqual(bypass.bypassedDelta, 4);
  assert.deepStrictEqual(bypass.fallbackReasons, {});
});
