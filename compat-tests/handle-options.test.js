// Dual-mode compat: options and patches a program puts on a connecting
// socket reach the handle that carries it, and the `onread` option behaves
// as over a kernel socket (issue 15, items 4 and 5). Bypass proven by the
// kernel's table on the server's side of every connection.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('noDelay/keepAlive, a wrapped _handle method and onread behave the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'handle-options.js');
  assert.deepStrictEqual(kernel.cases.wrapped, ['setNoDelay(true)', 'setKeepAlive(true, 1)', 'marker mine']);
  assert.deepStrictEqual(bypass.cases, kernel.cases);
  // Reads of at most 4 (generator) or 8 bytes; the generator called once
  // when the handle is set up and once per read.
  assert.strictEqual(kernel.cases.generator.generated, kernel.cases.generator.reads + 1);
  assert.ok(kernel.paths.every((p) => !p.bypassed && p.kernel));
  assert.strictEqual(bypass.paths.length, 4);
  assert.ok(bypass.paths.every((p) => p.bypassed && !p.kernel), JSON.stringify(bypass.paths));
});
