// Dual-mode compat: net.Server listen forms, EADDRINUSE, maxConnections and
// 'drop', getConnections, close waiting for connections. Each run proves the
// path of its connections by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('net.Server behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'server-api.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const { paths: _kp, bypassedDelta: _kd, fallbackReasons: _kf, ...k } = kernel;
  const { paths: _bp, bypassedDelta: _bd, fallbackReasons: _bf, ...b } = bypass;
  assert.deepStrictEqual(b, k);
  assert.deepStrictEqual(k.inUse, ['EADDRINUSE', 'listen', true, -98, '127.0.0.1', 'listen EADDRINUSE: address already in use 127.0.0.1:PORT']);
  assert.strictEqual(k.drop.drops.length, 1);
  assert.strictEqual(k.connections, 1);
  assert.deepStrictEqual([k.closedWhileOpen, k.closedAfter], [false, true]);
  // Seven connections: one per listen form, then the one held and the one
  // dropped. Both ends of each in this process: each counted by both ends
  // (the dropped one too: the server's end was made, then closed).
  assert.strictEqual(kernel.paths.length, 7);
  assertPaths(kernel, bypass, (r) => r.paths, { delta: 14 });
});
