// Dual-mode compat: options and patches a program puts on a connecting
// socket reach the handle that carries it, and the `onread` option behaves
// as over a kernel socket, down to the bytes each callback call gets (issue
// 15, items 4 and 5). Each run proves the path of both ends of its five
// connections by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

/** What each call gets over a kernel socket: every message cut into pieces of `size` bytes. */
function pieces(messages, size) {
  const out = [];
  for (const hex of messages) {
    const m = Buffer.from(hex, 'hex');
    for (let i = 0; i < m.length; i += size) out.push(m.subarray(i, i + size).toString('hex'));
  }
  return out;
}

test('noDelay/keepAlive, a wrapped _handle method and onread behave the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'handle-options.js');
  const k = kernel.cases;
  assert.deepStrictEqual(k.wrapped, ['setNoDelay(true)', 'setKeepAlive(true, 1)', 'marker mine']);
  // What each onread call got, in order: the kernel's (as it must be, given
  // how the fixture sends) first, then the bypass run's, call by call.
  const sizes = { whole: 64, generator: 4, pause: 8, returnFalse: 8 };
  for (const [mode, size] of Object.entries(sizes)) {
    assert.deepStrictEqual(k[mode].calls, pieces(kernel.messages, size), `kernel mode: ${mode}: bytes per call`);
    assert.deepStrictEqual(k[mode].events, ['end: true'], `kernel mode: ${mode}: events`);
    assert.deepStrictEqual(bypass.cases[mode].calls, k[mode].calls, `bypass mode: ${mode}: bytes per call`);
  }
  assert.strictEqual(k.whole.reads, kernel.messages.length);
  // The generator: called once when the handle is set up and once per read.
  assert.strictEqual(k.generator.generated, k.generator.reads + 1);
  assert.deepStrictEqual(bypass.cases, k);
  // Five connections, both ends in this process: each counted by both ends.
  const names = ['wrapped', 'whole', 'generator', 'pause', 'return-false'];
  assertPaths(kernel, bypass, (r) => names.flatMap((n) => [r.paths[n].server, r.paths[n].client]), {
    delta: 10,
    describe: (r) => JSON.stringify(r.paths),
  });
});
