// The first path through every layer: an http server and an http/fetch client
// in two hooked processes talk over sidestep's TCP on the shared-memory
// fabric, and never over kernel TCP.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness, cpuTicks } = require('./support/harness');

test('two hooked processes exchange HTTP over the fabric, not kernel TCP', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js');
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 20, 10, 5]);
  const report = await h.next(client, 60000);
  assert.ifError(report.error);

  // Every request answered, in order, with the body the server computed.
  assert.strictEqual(report.responses.length, 35);
  report.responses.forEach((r) => assert.strictEqual(r.status, 200));
  assert.strictEqual(report.responses[1].body, 'hello POST /ka/1 100000');
  assert.strictEqual(report.responses[25].body, 'hello GET /fresh/5 0');
  assert.strictEqual(report.responses[34].body, 'hello GET /fetch/4 0');
  report.responses.forEach((r) => assert.strictEqual(r.bypassedHeader, 'true'));

  // One keep-alive connection for 20 requests, 10 fresh ones, and fetch's.
  assert.ok(report.sockets.length >= 12, `sockets: ${report.sockets.length}`);
  for (const s of report.sockets) {
    assert.strictEqual(s.bypassed, true, `socket ${s.localPort}->${s.remotePort} bypassed`);
    assert.strictEqual(s.kernel, false, `kernel holds ${s.localPort}->${s.remotePort}`);
    assert.strictEqual(s.remotePort, port);
  }
  const st = report.stats;
  assert.strictEqual(st.enabled, true);
  assert.strictEqual(st.connectionsBypassed, report.sockets.length);
  assert.strictEqual(st.connectionsFallback, 0);
  assert.ok(st.segmentsOut > 35 && st.segmentsIn > 35, `segments ${st.segmentsOut}/${st.segmentsIn}`);
  assert.ok(st.bytesOut > 10 * 100000, `bytesOut ${st.bytesOut}`);
  assert.ok(st.framesOut >= st.segmentsOut, 'every segment crossed the fabric');

  h.send(server, { cmd: 'stats' });
  const s = await h.next(server);
  assert.strictEqual(s.stats.connectionsBypassed, report.sockets.length);
  assert.ok(s.seen.length === 35 && s.seen.every((x) => x.bypassed && !x.kernel));

  // The client exits on its own: nothing bypassed keeps its loop alive.
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });

  // An idle hooked server sleeps in epoll: no busy-polling. (2 s at 100 Hz is
  // 200 ticks of a core; a spinning loop would show ~200.)
  const before = cpuTicks(server.child.pid);
  await new Promise((r) => setTimeout(r, 2000));
  const used = cpuTicks(server.child.pid) - before;
  assert.ok(used <= 2, `idle server used ${used} ticks of CPU in 2 s`);

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
