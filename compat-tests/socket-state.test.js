// Dual-mode compat: pending/connecting/readyState through a connection's
// life on both ends, remoteFamily/remotePort/address() on both sides,
// bytesRead/bytesWritten on both sides (queued bytes counted at once,
// multi-byte strings in bytes), and ref/unref letting the process exit
// (fixtures/socket-state.js; the harness fails the run if it doesn't). Each
// run proves the path of both connections by the fabric's counter and the
// kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('socket state, addresses and counters on both ends match in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'socket-state.js');
  const { paths: _kp, bypassedDelta: _kd, fallbackReasons: _kf, ...k } = kernel;
  const { paths: _bp, bypassedDelta: _bd, fallbackReasons: _bf, ...b } = bypass;
  assert.deepStrictEqual(b, k);
  assert.deepStrictEqual(k.client, [
    'sync:opening/pending:true/connecting:true/destroyed:false',
    'connect:open/pending:false/connecting:false/destroyed:false',
    'end:writeOnly/pending:false/connecting:false/destroyed:false:1002',
    'ending:closed/pending:false/connecting:false/destroyed:false',
    'finish:closed/pending:false/connecting:false/destroyed:false',
    'close:false:closed/pending:true/connecting:false/destroyed:true',
  ]);
  assert.deepStrictEqual(k.serverView, { address: { address: '127.0.0.1', family: 'IPv4', port: true }, remoteFamily: 'IPv4', remoteIsClient: true, localIsServer: true });
  assert.deepStrictEqual(k.clientView, { address: { address: '127.0.0.1', family: 'IPv4', port: true }, remoteFamily: 'IPv4', remoteIsServer: true });
  assert.deepStrictEqual([k.bytesWrittenQueued, k.clientBytes, k.serverBytes], [16, [1002, 16], [16, 1002]]);
  assert.deepStrictEqual(k.refs, { before: true, afterUnref: false, afterRef: true });
  // Two connections (the one followed through its life, and the one
  // unref'd), both ends in this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => [r.paths.main, r.paths.unref], { delta: 4 });
});
