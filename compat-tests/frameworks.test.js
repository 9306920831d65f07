// Dual-mode compat: express, fastify, ws, undici (Pool, Client, request) and global fetch;
// AsyncLocalStorage across a request; net diagnostics_channel events.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('express, fastify, ws, undici and fetch behave the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'frameworks.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const { bypassed: kb, ...kernelSeen } = kernel;
  const { bypassed: bb, ...bypassSeen } = bypass;
  assert.deepStrictEqual(bypassSeen, kernelSeen);
  assert.deepStrictEqual(kernelSeen.express, { status: 200, body: '{"hello":"world"}' });
  assert.deepStrictEqual(kernelSeen.expressEcho, { n: 42, len: 50000 });
  assert.deepStrictEqual(kernelSeen.ws, ['echo:one', 'echo:two']);
  assert.deepStrictEqual([kernelSeen.undiciClient, kernelSeen.undiciRequest], [[200, 8], [200, 9]]);
  assert.deepStrictEqual(kernelSeen.als, ['req-1', 'req-1']);
  assert.deepStrictEqual(kernelSeen.channels, { client: true, server: true });
  assert.ok(kb.length >= 5 && kb.every((x) => x === false));
  assert.ok(bb.length === kb.length && bb.every((x) => x === true), JSON.stringify(bb));
});
