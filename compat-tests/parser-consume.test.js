// Dual-mode compat: an HTTP parser that consumes a connecting socket's
// handle natively (fixtures/parser-consume.js, after Node's
// test-http-parser-timeout-reset.js). The parser sees the same in both modes;
// in bypass mode the connection stays on the kernel, counted `consumed`
// (docs/compatibility.md), proven by the kernel's TCP table and the counter.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('a parser that consumes a handle natively sees the same in both modes; that connection stays on the kernel', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'parser-consume.js');
  assert.deepStrictEqual(kernel.calls, ['headersComplete 200', 'body "\\n"', 'body "\\n"']);
  assert.strictEqual(kernel.execute, true, 'kOnExecute once per read, at least 3');
  assert.deepStrictEqual([bypass.calls, bypass.execute], [kernel.calls, kernel.execute]);
  for (const r of [kernel, bypass]) assert.deepStrictEqual(r.conn, { bypassed: false, kernel: true });
  assert.deepStrictEqual([kernel.bypassedDelta, bypass.bypassedDelta], [0, 0]);
  assert.deepStrictEqual(bypass.fallbackReasons, { consumed: 1 });
});
