// Dual-mode compat: every documented form of net.connect / createConnection /
// socket.connect (fixtures/connect-forms.js) gives the application the same
// events, data, addresses and errors with and without bypass; TCP forms are
// bypassed (and proven: no kernel connection for the 4-tuple), unix paths
// stay the kernel's in both modes.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

const UNIX = ['connect(path)', 'connect({ path })'];

test('net.connect in every documented form behaves the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'connect-forms.js');
  assert.deepStrictEqual(Object.keys(bypass.cases), Object.keys(kernel.cases));
  for (const name of Object.keys(kernel.cases)) assert.deepStrictEqual(bypass.cases[name], kernel.cases[name], name);

  // What the forms must do (the same in both modes, checked once).
  const c = kernel.cases;
  for (const name of ['connect(port)', 'connect(port, host)', '{ lookup }', 'socket.connect() again after close', ...UNIX])
    assert.strictEqual(c[name].data, 'ping', name);
  assert.strictEqual(c['createConnection(port, host, cb)'].callbacks, 1);
  assert.strictEqual(c['{ lookup }'].lookedUp, 'sidestep.invalid');
  assert.deepStrictEqual(c['{ host, port }'].remote, ['::1', 'IPv6']);
  assert.deepStrictEqual(c['{ family: 4 }'].remote, ['127.0.0.1', 'IPv4']);
  // ('connectionAttempt*' events came in 20.12 / 21.6; before, neither mode has them.)
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major > 21 || (major === 21 && minor >= 6) || (major === 20 && minor >= 12))
    assert.deepStrictEqual(c['{ autoSelectFamily } falling over to IPv4'].attempts, ['failed:6:ECONNREFUSED', 'attempt:4']);
  assert.deepStrictEqual(c['{ timeout }'].events, ['connect', 'timeout', 'end', 'close:false']);
  assert.deepStrictEqual(c['{ signal } aborted while connecting'].error, { name: 'AbortError', code: 'ABORT_ERR' });
  assert.deepStrictEqual(c['{ signal } already aborted'].error, { name: 'AbortError', code: 'ABORT_ERR' });

  // The path each connection took.
  assert.deepStrictEqual(Object.keys(bypass.paths), Object.keys(kernel.paths));
  for (const name of Object.keys(kernel.paths)) {
    if (UNIX.includes(name)) {
      assert.deepStrictEqual(kernel.paths[name], { bypassed: false, kernel: false }, name);
      assert.deepStrictEqual(bypass.paths[name], { bypassed: false, kernel: false }, name);
    } else {
      assert.deepStrictEqual(kernel.paths[name], { bypassed: false, kernel: true }, name);
      assert.deepStrictEqual(bypass.paths[name], { bypassed: true, kernel: false }, name);
    }
  }
});
