// Dual-mode compat: http server behaviours that hang on when Node's parser
// runs its callbacks and what it sees in one read — a request paused in its
// first 'data' event is not dumped when the response finishes; 20 requests
// pipelined by a client that ended its side at once are all answered, in
// order; a request whose headers trickle in past headersTimeout gets 408; a
// handler's nextTick runs after the body that came in its headers' read,
// where Node's natively fed parser runs the tick queue (async hook enabled);
// an AsyncLocalStorage store entered around listen() reaches 'connection',
// the request handler and 'clientError', and one entered around a client's
// connect reaches its 'connect', 'data' and 'close'.
// Each connection's path proven by the kernel's TCP table and the fabric's
// counter (server and client in one process: both ends count).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('http server: a paused request is not dumped, pipelined requests after end are answered, a slow header times out, a handler\'s ticks run after the body of its read, a listen-time async store reaches the handlers — as over the kernel', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'http-server.js');
  for (const r of [kernel, bypass]) {
    const { pauseNoDump, pipelinedAfterEnd, headerTimeout, ticksAroundBody, asyncStore } = r.cases;
    assert.deepStrictEqual([pauseNoDump.status, pauseNoDump.dumped], [200, false]);
    assert.deepStrictEqual(pipelinedAfterEnd.answered, Array.from({ length: 20 }, (_, i) => `200 /${i}`));
    assert.deepStrictEqual([headerTimeout.status, headerTimeout.beforeTheLastPiece], ['408', true]);
    assert.deepStrictEqual(ticksAroundBody.order.slice(0, 3), ['handler', 'push(body)', 'tick']);
    assert.strictEqual(ticksAroundBody.resource, 'HTTPServerAsyncResource');
    assert.deepStrictEqual([asyncStore.connection, asyncStore.request, asyncStore.clientError], ['listen-store', 'listen-store', 'listen-store']);
    assert.deepStrictEqual([asyncStore.clientConnect, asyncStore.clientData, asyncStore.clientClose], ['client-store', 'client-store', 'client-store']);
  }
  const strip = (r) => Object.fromEntries(Object.entries(r.cases).map(([k, v]) => [k, { ...v, conns: undefined }]));
  assert.deepStrictEqual(strip(bypass), strip(kernel));
  const conns = (r) => Object.values(r.cases).flatMap((c) => c.conns);
  assertPaths(kernel, bypass, conns, { delta: 12, describe: (r) => JSON.stringify(r.cases) });
});
