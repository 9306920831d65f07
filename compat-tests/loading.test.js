// Dual-mode compat: the ways an app gets the hook, with an ESM app
// (fixtures/loading-app.mjs) that runs a worker thread and spawns a child
// process. `node --import sidestep/register app.mjs` hooks the app and its
// worker threads (each its own stack) but not a spawned child (Node passes
// command-line flags to workers, not to children); NODE_OPTIONS hooks the
// child too. The application sees the same in both modes; bypass mode
// proves each hooked connection's path.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { runBothModes } = require('./support/dual-mode');
const { ROOT } = require('../test/support/harness');

const REGISTER_MJS = path.join(ROOT, 'dist', 'register.mjs');
const FIXTURE = 'loading-app.mjs';

function sameForTheApp(kernel, bypass) {
  const strip = (r) => ({
    hooked: [r.main.hooked, r.worker.hooked, r.child.hooked],
    data: [r.worker.data, r.toWorker.data, r.child.data],
  });
  assert.deepStrictEqual(strip(bypass), strip(kernel));
  assert.deepStrictEqual(strip(kernel).data, ['from worker', 'to worker', 'from child']);
  assert.deepStrictEqual([kernel.main.enabled, kernel.worker.enabled], [false, false]);
  assert.deepStrictEqual([bypass.main.enabled, bypass.worker.enabled], [true, true]);
  for (const c of [kernel.worker, kernel.toWorker, kernel.child]) assert.deepStrictEqual([c.bypassed, c.kernel], [false, true]);
  // The worker thread has a stack of its own: it counts its own connection.
  assert.deepStrictEqual([bypass.worker.bypassed, bypass.worker.kernel, bypass.worker.ownStack], [true, false, 1]);
  assert.deepStrictEqual([bypass.toWorker.bypassed, bypass.toWorker.kernel], [true, false]);
}

test('node --import sidestep/register: an ESM app and its worker threads, the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, FIXTURE, { hooked: false, execArgv: ['--import', REGISTER_MJS] });
  sameForTheApp(kernel, bypass);
  assert.strictEqual(kernel.child.hooked, false, 'a command-line flag does not reach a spawned child');
  assert.deepStrictEqual([bypass.child.bypassed, bypass.child.kernel], [false, true]);
  assert.deepStrictEqual(bypass.accepted, [true, false]);
});

test('NODE_OPTIONS=--import: the app, its worker threads and its child processes, the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, FIXTURE, { hooked: false, env: { NODE_OPTIONS: `--import ${REGISTER_MJS}` } });
  sameForTheApp(kernel, bypass);
  assert.strictEqual(kernel.child.hooked, true, 'the child inherits the hook');
  assert.deepStrictEqual([bypass.child.bypassed, bypass.child.kernel], [true, false]);
  assert.deepStrictEqual(bypass.accepted, [true, true]);
});

// A program may change what Node's tls and http modules take from their
// internal bindings before it first loads them (Node's own
// test-tls-keyengine-unsupported and test-http-parser-lazy-loaded do): the
// hook must not have loaded them first. It installs their patches at the
// program's first connect() or listen().
test('the hook loads neither tls nor http before the program does, in both modes', () => {
  const { spawnSync } = require('node:child_process');
  const app = `
    const loaded = () => process.moduleLoadList.filter((m) => /^NativeModule (tls|_tls_common|_http_common|http)$/.test(m));
    const before = loaded();
    const { internalBinding } = require('internal/test/binding');
    const binding = internalBinding('crypto');
    const Native = binding.SecureContext;
    binding.SecureContext = function () { const c = new Native(); c.setEngineKey = undefined; return c; };
    let err = null;
    try { require('tls').createSecureContext({ privateKeyEngine: 'e', privateKeyIdentifier: 'k' }); } catch (e) { err = e.code; }
    console.log(JSON.stringify({ before, err }));`;
  for (const mode of ['0', '1']) {
    const r = spawnSync(process.execPath, ['--expose-internals', '--no-warnings', '--require', path.join(ROOT, 'dist', 'register.js'), '-e', app], {
      env: { ...process.env, SIDESTEP: mode },
      encoding: 'utf8',
      timeout: 20000,
    });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.deepStrictEqual(JSON.parse(r.stdout), { before: [], err: 'ERR_CRYPTO_CUSTOM_ENGINE_NOT_SUPPORTED' }, `SIDESTEP=${mode}`);
  }
});
