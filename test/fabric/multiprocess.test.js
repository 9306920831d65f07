// Many processes and worker threads in one network namespace: one echo server process,
// three client processes, each with two worker threads (every thread its own
// stack), all transferring a seeded pattern both ways, byte-exact.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const CLIENTS = 3;
const WORKERS = 2;
const BYTES = 4 * 1024 * 1024; // per connection, each way: 12 MiB per client process

test('4 processes + 6 worker threads: every connection bypassed and byte-exact', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['echo']);
  const { port } = await h.next(server);
  const clients = [];
  for (let i = 1; i <= CLIENTS; i++) clients.push(h.start('../fabric/fixtures/bulk-client.js', [port, BYTES, i, WORKERS]));
  const reports = await Promise.all(clients.map((c) => h.next(c, 90000)));

  const stacks = new Set();
  for (const report of reports) {
    assert.strictEqual(report.results.length, WORKERS + 1);
    for (const r of report.results) {
      assert.ifError(r.error);
      const who = `thread ${r.thread} of pid ${report.pid}`;
      const path = `${who}: ${JSON.stringify({ bypassed: r.bypassed, kernel: r.kernel, disabledReason: r.stats.disabledReason, fallbackReasons: r.stats.fallbackReasons })}`;
      assert.strictEqual(r.bypassed, true, path);
      assert.strictEqual(r.kernel, false, path);
      assert.strictEqual(r.recvBytes, BYTES, who);
      assert.strictEqual(r.recvSha, r.sentSha, `${who}: echo differs`);
      assert.ok(r.stats.connectionsBypassed >= 1 && r.stats.framesOut > 0 && r.stats.framesIn > 0);
      // Its own stack: it made its own pair to the server.
      assert.strictEqual(r.stats.pairsCreated, 1, who);
      stacks.add(`${report.pid}.${r.thread}`);
    }
  }
  // Every event loop ran its own stack: 9 client stacks.
  assert.strictEqual(stacks.size, CLIENTS * (WORKERS + 1));
  for (const c of clients) assert.deepStrictEqual(await h.exit(c), { code: 0, signal: null });

  h.send(server, { cmd: 'stats' });
  const events = [];
  let stats;
  for (let m; !(stats = (m = await h.next(server)).stats);) events.push(m);
  // Every accepted connection was bypassed, and none was in the kernel.
  const conns = events.filter((e) => e.event === 'conn');
  assert.strictEqual(conns.length, CLIENTS * (WORKERS + 1));
  assert.ok(conns.every((c) => c.bypassed === true && c.kernel === false), JSON.stringify(conns));
  assert.deepStrictEqual(events.filter((e) => e.event === 'error'), []);
  assert.strictEqual(stats.pairsAccepted, CLIENTS * (WORKERS + 1), 'one pair per client stack');
  assert.strictEqual(stats.connectionsAccepted, CLIENTS * (WORKERS + 1));
  assert.ok(stats.bytesIn >= CLIENTS * (WORKERS + 1) * BYTES);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
