// Dual-mode compat: worker_threads, each with its own stack
// (fixtures/workers.js): a server in worker A, a client in worker B and a
// main-thread client. Both connections bypassed on both ends in bypass mode,
// each thread's stack counting its own.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('worker threads serve and connect to each other the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'workers.js');
  for (const r of [kernel, bypass]) assert.deepStrictEqual([r.fromB.data, r.fromMain.data], ['A echoes from B', 'A echoes from main']);
  const kernelPath = { bypassed: false, kernel: true };
  const bypassPath = { bypassed: true, kernel: false };
  for (const p of [kernel.fromB, kernel.fromMain]) assert.deepStrictEqual({ bypassed: p.bypassed, kernel: p.kernel }, kernelPath);
  for (const p of [bypass.fromB, bypass.fromMain]) assert.deepStrictEqual({ bypassed: p.bypassed, kernel: p.kernel }, bypassPath);
  assert.deepStrictEqual(kernel.accepted, [kernelPath, kernelPath]);
  assert.deepStrictEqual(bypass.accepted, [bypassPath, bypassPath]);
  assert.deepStrictEqual(kernel.stacks, { a: 0, b: 0, main: 0 });
  // A's stack has both connections, B's and main's one each: three stacks.
  assert.deepStrictEqual(bypass.stacks, { a: 2, b: 1, main: 1 });
});
