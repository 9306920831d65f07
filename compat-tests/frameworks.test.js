// Dual-mode compat: express, fastify, ws, undici (Pool, Client, request) and global fetch;
// AsyncLocalStorage across a request; net diagnostics_channel events. Each run
// proves the path of every client connection by the fabric's counter and the
// kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('express, fastify, ws, undici and fetch behave the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'frameworks.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const { paths: _kp, bypassedDelta: _kd, fallbackReasons: _kf, ...kernelSeen } = kernel;
  const { paths: _bp, bypassedDelta: _bd, fallbackReasons: _bf, ...bypassSeen } = bypass;
  assert.deepStrictEqual(bypassSeen, kernelSeen);
  assert.deepStrictEqual(kernelSeen.express, { status: 200, body: '{"hello":"world"}' });
  assert.deepStrictEqual(kernelSeen.expressEcho, { n: 42, len: 50000 });
  assert.deepStrictEqual(kernelSeen.ws, ['echo:one', 'echo:two']);
  assert.deepStrictEqual([kernelSeen.undiciClient, kernelSeen.undiciRequest], [[200, 8], [200, 9]]);
  assert.deepStrictEqual(kernelSeen.als, ['req-1', 'req-1']);
  assert.deepStrictEqual(kernelSeen.channels, { client: true, server: true });
  // At least seven client connections: http.get to express (the ALS request
  // reuses it, kept alive), fetch's to express and to fastify, the Pool's
  // two, the Client's, the ws client's; undici.request shares fetch's
  // dispatcher where Node's fetch and the undici package share one global
  // dispatcher (Node 20-24), else it opens its own (Node 26). The count
  // depends on the Node release, so it is checked here, not by assertPaths.
  for (const r of [kernel, bypass]) assert.ok(r.paths.length === 7 || r.paths.length === 8, `${r.paths.length} connections`);
  // Both ends of each in this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => r.paths, { delta: 2 * bypass.paths.length });
});
