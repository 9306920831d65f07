// Dual-mode compat: TLS. tls.connect({ socket }) over a bypassed connection
// runs TLS over the fabric (the server side wraps it the way Node wraps JS
// streams); https.get (tls.connect without a socket) uses the kernel for now,
// and says so.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('TLS clients and an https server behave the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'tls.js');
  for (const r of [kernel, bypass]) {
    assert.deepStrictEqual([r.get.body, r.get.authorized], ['secure /https-get', true]);
    assert.deepStrictEqual([r.over.body, r.over.authorized], ['secure /over-socket', true]);
    assert.deepStrictEqual(r.serverSaw.map((s) => [s.url, s.encrypted]), [['/https-get', true], ['/over-socket', true]]);
  }
  // Paths: kernel mode never bypasses.
  assert.deepStrictEqual([kernel.get.bypassed, kernel.over.bypassed, kernel.over.kernel], [false, false, true]);
  // Bypass mode: TLS over a given socket rides the fabric, on both sides...
  assert.deepStrictEqual([bypass.over.bypassed, bypass.over.kernel], [true, false]);
  assert.strictEqual(bypass.serverSaw[1].bypassed, true);
  // ...while https.get falls back, counted under 'tls' (docs/compatibility.md).
  assert.strictEqual(bypass.get.bypassed, false);
  assert.strictEqual(bypass.serverSaw[0].bypassed, false);
  assert.strictEqual(bypass.fallbackReasons.tls, 1);
});
