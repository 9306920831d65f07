// Dual-mode compat: http and https Agent keep-alive and pooling
// (fixtures/agent.js): Agent({ keepAlive: true, maxSockets: 2 }) with 12
// requests at once and 4 after them, every connection proven on both ends.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('http and https Agents pool and reuse sockets the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'agent.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const strip = ({ clientPaths, serverPaths, ...rest }) => rest;
  const bodies = Array.from({ length: 16 }, (_, i) => `200 /r${i}`);
  for (const proto of ['http', 'https']) {
    const k = kernel[proto];
    const b = bypass[proto];
    assert.deepStrictEqual(k.bodies, bodies, proto);
    // Two sockets for all 16 requests, on both ends.
    assert.deepStrictEqual([k.accepted, k.clientSockets], [2, 2], proto);
    assert.deepStrictEqual(k.serialReused, [true, true, true, true], proto);
    assert.deepStrictEqual(k.poolAfterBurst, { free: 2, busy: 0 }, proto);
    assert.strictEqual(k.frees, 16, proto);
    assert.ok(k.clientPaths.concat(k.serverPaths).every((p) => !p.bypassed && p.kernel), proto);
    assert.ok(b.clientPaths.concat(b.serverPaths).every((p) => p.bypassed && !p.kernel), proto);
    assert.strictEqual(b.clientPaths.length + b.serverPaths.length, 4, proto);
  }
  // Everything, timing-sensitive pooling included (a TLS write over a
  // bypassed socket completes as soon as the socket took it, as over a
  // kernel socket: tls-bridge.ts).
  assert.deepStrictEqual(strip(bypass.http), strip(kernel.http));
  assert.deepStrictEqual(strip(bypass.https), strip(kernel.https));
});
