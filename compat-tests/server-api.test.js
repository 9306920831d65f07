// Dual-mode compat: net.Server listen forms, EADDRINUSE, maxConnections and
// 'drop', getConnections, close waiting for connections.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('net.Server behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'server-api.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  assert.ok(kernel.bypassed.every((x) => x === false));
  assert.ok(bypass.bypassed.every((x) => x === true), JSON.stringify(bypass.bypassed));
  const { bypassed: _k, ...k } = kernel;
  const { bypassed: _b, ...b } = bypass;
  assert.deepStrictEqual(b, k);
  assert.deepStrictEqual(k.inUse, ['EADDRINUSE', 'listen', true, -98, '127.0.0.1', 'listen EADDRINUSE: address already in use 127.0.0.1:PORT']);
  assert.strictEqual(k.drop.drops.length, 1);
  assert.strictEqual(k.connections, 1);
  assert.deepStrictEqual([k.closedWhileOpen, k.closedAfter], [false, true]);
});
