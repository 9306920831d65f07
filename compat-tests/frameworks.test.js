// Dual-mode compat: express, fastify, ws, undici (Pool, Client, request) and global fetch;
// AsyncLocalStorage across a request; net diagnostics_channel events. Each run
// proves the path of every client connection by the fabric's counter and the
// kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('express, fastify, ws, undici and fetch behave the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'frameworks.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const { paths: kp, bypassedDelta: kd, fallbackReasons: _kf, ...kernelSeen } = kernel;
  const { paths: bp, bypassedDelta: bd, fallbackReasons: bf, ...bypassSeen } = bypass;
  assert.deepStrictEqual(bypassSeen, kernelSeen);
  assert.deepStrictEqual(kernelSeen.express, { status: 200, body: '{"hello":"world"}' });
  assert.deepStrictEqual(kernelSeen.expressEcho, { n: 42, len: 50000 });
  assert.deepStrictEqual(kernelSeen.ws, ['echo:one', 'echo:two']);
  assert.deepStrictEqual([kernelSeen.undiciClient, kernelSeen.undiciRequest], [[200, 8], [200, 9]]);
  assert.deepStrictEqual(kernelSeen.als, ['req-1', 'req-1']);
  assert.deepStrictEqual(kernelSeen.channels, { client: true, server: true });
  // Paths: the kernel's table has the connections in kernel mode only. At
  // least seven client connections: http.get to express (the ALS request
  // reuses it, kept alive), fetch's to express and to fastify, the Pool's
  // two, the Client's, the ws client's; undici.request shares fetch's
  // dispatcher where Node's fetch and the undici package share one global
  // dispatcher (Node 20-24), else it opens its own (Node 26).
  const pairs = (paths) => paths.map((p) => [p.bypassed, p.kernel]);
  for (const paths of [kp, bp]) assert.ok(paths.length === 7 || paths.length === 8, `${paths.length} connections`);
  assert.deepStrictEqual(pairs(kp), Array(kp.length).fill([false, true]));
  assert.deepStrictEqual(pairs(bp), Array(bp.length).fill([true, false]));
  assert.strictEqual(kd, 0);
  // Both ends of each in this process: each counted by both ends.
  assert.strictEqual(bd, 2 * bp.length);
  assert.deepStrictEqual(bf, {});
});
