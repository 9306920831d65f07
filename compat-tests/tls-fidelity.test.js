// Dual-mode compat: TLS as it meets its socket (issue 15, item 7). Handshake
// failures reach each side as the alert, not ECONNRESET; sessions resume; TLS
// wraps a socket that is connected, connecting or still looking up its name,
// and TLS inside TLS; bytes written just before destroy() arrive; a reply
// after the peer's end arrives with allowHalfOpen; a server that fails a
// connection as it makes it resets the client. The bypass run proves its
// path by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

// A case's result without its connections' paths.
const seen = (c) => {
  const { conns: _c, ...rest } = c;
  return rest;
};

test('TLS failures, resumption, wrapping and endings are the same in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'tls-fidelity.js', { ms: 60000 });
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  for (const r of [kernel, bypass]) {
    assert.deepStrictEqual(seen(r.versionServerFinds), { clientErr: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', serverErr: 'ERR_SSL_UNSUPPORTED_PROTOCOL' });
    assert.deepStrictEqual(seen(r.versionClientFinds), { clientErr: 'ERR_SSL_UNSUPPORTED_PROTOCOL', serverErr: 'ERR_SSL_WRONG_VERSION_NUMBER' });
    assert.deepStrictEqual([r.resumption.sessionEvents, r.resumption.reused], [2, true]);
    for (const c of [r.overConnected, r.overConnecting, r.overLookingUp]) assert.strictEqual(c.data, 'Hello');
    assert.deepStrictEqual([r.inception.length, r.inception.intact], [40000, true]);
    assert.deepStrictEqual(r.halfOpen, { data: 'Bye' });
    // Node 24 spelled the code right (IDENTIY before).
    assert.strictEqual(r.serverFailsAtOnce.clientErr, 'ECONNRESET');
    assert.match(r.serverFailsAtOnce.serverErr, /^ERR_TLS_PSK_SET_IDENTI(Y|TY)_HINT_FAILED$/);
  }
  assert.deepStrictEqual(bypass.serverFailsAtOnce, kernel.serverFailsAtOnce);
  assert.deepStrictEqual(kernel.cancelledWrite.slice(0, 2), ['error ECONNRESET', 'write ECANCELED destroyed=false']);
  assert.deepStrictEqual(bypass.cancelledWrite, kernel.cancelledWrite);
  // Bytes written just before destroy(): Node 20 and 22 flush them and end;
  // Node 24 and later destroy the TLS session before the write leaves it, so
  // the client sees a bare end with kernel sockets too. Either way, the same.
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) assert.deepStrictEqual(kernel.writeThenDestroy, { got: 200 * 1024, events: ['end'] });
  assert.deepStrictEqual(bypass.writeThenDestroy, kernel.writeThenDestroy);
  // Every connection of every case went over the fabric, each proven on its
  // own: 13 connections (the proxy's onward one included), each counted by
  // both of its ends.
  // Two servers close the connection as they accept it (serverFailsAtOnce,
  // cancelledWrite): by the client's 'connect' the kernel may have dropped it
  // from its table already, so those two are proven by their flags (and the
  // counter, which counts all 13).
  const atOnce = ['serverFailsAtOnce', 'cancelledWrite'];
  const conns = (r) => [
    ...['versionServerFinds', 'versionClientFinds', 'resumption', 'overConnected', 'overConnecting', 'overLookingUp', 'inception'].flatMap((n) => r[n].conns),
    ...Object.entries(r.caseConns).filter(([n]) => !atOnce.includes(n)).flatMap(([, c]) => c),
  ];
  assert.strictEqual(conns(kernel).length, 11);
  assertPaths(kernel, bypass, conns, { delta: 26, describe: (r) => JSON.stringify(conns(r)) });
  for (const n of atOnce) {
    assert.deepStrictEqual(kernel.caseConns[n].map((c) => c.bypassed), [false], n);
    assert.deepStrictEqual(bypass.caseConns[n], [{ bypassed: true, kernel: false }], n);
  }
});
