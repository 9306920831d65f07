// Dual-mode compat: TLS. https.get (tls.connect without a socket) and
// tls.connect({ socket }) over a bypassed connection both run TLS over the
// fabric; the server side wraps bypassed connections the way Node wraps JS
// streams.
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
    assert.deepStrictEqual([r.direct.data, r.direct.authorized, r.direct.protocol, r.direct.server.map((s) => s.encrypted)], ['echo ping', true, kernel.direct.protocol, [true]]);
  }
  // tls.connect() without a socket to a tls.Server: both ends on the proven path.
  assert.deepStrictEqual([kernel.direct.bypassed, kernel.direct.kernel, kernel.direct.server[0].bypassed, kernel.direct.server[0].kernel], [false, true, false, true]);
  assert.deepStrictEqual([bypass.direct.bypassed, bypass.direct.kernel, bypass.direct.server[0].bypassed, bypass.direct.server[0].kernel], [true, false, true, false]);
  // Paths: kernel mode never bypasses.
  assert.deepStrictEqual([kernel.get.bypassed, kernel.over.bypassed, kernel.over.kernel], [false, false, true]);
  // Bypass mode: both clients ride the fabric, and the server sees it.
  assert.deepStrictEqual([bypass.get.bypassed, bypass.over.bypassed, bypass.over.kernel], [true, true, false]);
  assert.deepStrictEqual(bypass.serverSaw.map((s) => s.bypassed), [true, true]);
  assert.deepStrictEqual(bypass.fallbackReasons, {});
});
