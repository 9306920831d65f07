// Dual-mode compat: pause()/resume() push back on the writer for real
// (fixtures/backpressure.js), both directions: while the reader is paused
// mid-stream the writer's write() returns false and it waits for 'drain',
// Node's read buffer stays bounded, and 16 MB arrive byte-exact after resume.
// Each run proves the path of both connections by the fabric's counter and
// the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

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
  // Two connections, both ends in this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => [r.paths.toClient, r.paths.toServer], { delta: 4 });
});
