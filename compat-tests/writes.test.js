// Dual-mode compat: writes queued while connecting count in bytes and
// complete in order; a writer draining 2 MB to a slow reader for more than
// twice its timeout, with progress all along, gets every callback and no
// 'timeout', and no 'data' chunk over 64 KiB reaches the reader; a 120 KB
// string written and ended at once arrives whole (issue 15, items 2 and 3).
// Each run proves the path of both ends of its three connections by the
// fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('queued, slow and large writes behave the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'writes.js', { ms: 30000 });
  assert.deepStrictEqual(bypass.queued, kernel.queued);
  assert.deepStrictEqual(kernel.queued.order, ['utf8', 'default', 'hex', 'base64', 'buffer', 'latin1', 'end']);
  // The slow reader: the writer's timeout (300 ms) stays armed through the
  // whole drain, which takes far longer than that in both modes; it never
  // fires, as the writer sees progress all along (maxGapMs).
  const slow = (r) => ({ received: r.slow.received, writer: r.slow.writer, reader: r.slow.reader });
  const timing = (r) => `armed ${r.slow.armedMs} ms, longest wait for progress ${r.slow.maxGapMs} ms`;
  assert.deepStrictEqual(slow(kernel), { received: 2e6, writer: ['all flushed', 'finish', 'reader ended'], reader: ['end'] },
    `kernel mode: ${timing(kernel)}`);
  assert.deepStrictEqual(slow(bypass), slow(kernel), `bypass mode: ${timing(bypass)}`);
  for (const [mode, r] of [['kernel', kernel], ['bypass', bypass]]) {
    assert.ok(r.slow.armedMs >= 450, `${mode} mode: the drain must outlast the timeout clearly: ${timing(r)}`);
  }
  assert.deepStrictEqual(bypass.big, kernel.big);
  assert.strictEqual(kernel.big.same, true);
  // Three connections, both ends in this process: each counted by both ends.
  const names = ['queued', 'slow', 'big'];
  assertPaths(kernel, bypass, (r) => names.flatMap((n) => [r.paths[n].server, r.paths[n].client]), {
    delta: 6,
    describe: (r) => JSON.stringify(r.paths),
  });
  // A 'data' event over a kernel socket carries at most 64 KiB (libuv reads
  // into a 64 KiB buffer); the slow reader paces itself by bytes, so the
  // checks above hold whatever the chunks.
  assert.ok(kernel.slow.largestChunk <= 65536, `kernel mode: largest 'data' chunk ${kernel.slow.largestChunk}`);
  assert.ok(bypass.slow.largestChunk <= 65536, `bypass mode: largest 'data' chunk ${bypass.slow.largestChunk} (kernel: ${kernel.slow.largestChunk})`);
});
