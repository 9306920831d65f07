// An idle stack sleeps in libuv's poll: a process holding 1,000 idle bypassed
// connections uses under 1% of a core. And the doorbell's libuv handle
// follows ref/unref: a process whose bypassed sockets and servers are all
// unref()'d exits by itself, one with a ref'd idle socket stays alive.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness, cpuTicks } = require('../support/harness');

const CONNECTIONS = 1000;
const WINDOW_MS = 10000;
const TICKS_PER_S = 100; // USER_HZ on Linux
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// V8's memory reducer runs a full GC about 8 s after a process stops
// allocating (3-6 ticks here, with kernel sockets just the same): that is
// Node's idle cost, not the fabric's, and it would land inside the window.
const execArgv = ['--no-memory-reducer'];

test(`1,000 idle bypassed connections: client and server each use < 1% of a core over 10 s`, async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['echo', 'quiet'], { execArgv });
  const { port, pid: serverPid } = await h.next(server);
  const client = h.start('../fabric/fixtures/idle-client.js', [port, CONNECTIONS], { execArgv });
  const r = await h.next(client, 60000);
  assert.ifError(r.error);
  assert.strictEqual(r.bypassed, CONNECTIONS);
  assert.strictEqual(r.kernel, 0);
  assert.strictEqual(r.stats.openSockets, CONNECTIONS);
  assert.ok(r.stats.framesOut >= 2 * CONNECTIONS);
  // Let delayed ACKs and the set-up's garbage settle, then watch both.
  await sleep(1000);
  const clientStats = async () => (h.send(client, { cmd: 'stats' }), (await h.nextMatching(client, (m) => m.stats)).stats);
  const statsBefore = await clientStats();
  const before = [cpuTicks(r.pid), cpuTicks(serverPid)];
  await sleep(WINDOW_MS);
  const used = [cpuTicks(r.pid) - before[0], cpuTicks(serverPid) - before[1]];
  const statsAfter = await clientStats();
  const limit = (WINDOW_MS / 1000) * TICKS_PER_S * 0.01; // 1% of a core: 10 ticks
  const moved = ['framesIn', 'framesOut', 'wakeups'].map((k) => `${k} +${statsAfter[k] - statsBefore[k]}`).join(', ');
  t.diagnostic(`CPU ticks over ${WINDOW_MS} ms with ${CONNECTIONS} idle connections: client ${used[0]}, server ${used[1]} (limit ${limit}); client ${moved}`);
  assert.ok(used[0] <= limit, `client used ${used[0]} ticks`);
  assert.ok(used[1] <= limit, `server used ${used[1]} ticks`);
  h.send(server, { cmd: 'stats' });
  const { stats } = await h.nextMatching(server, (m) => m.stats);
  assert.strictEqual(stats.connectionsAccepted, CONNECTIONS);
  assert.strictEqual(stats.openSockets - 1, CONNECTIONS); // + the listener
  client.child.kill('SIGTERM');
  await h.exit(client);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});

test('ref/unref: all bypassed sockets and servers unref()\'d -> the process exits; one ref\'d socket keeps it alive', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['echo', 'quiet']);
  const { port } = await h.next(server);

  // Kernel sockets first, as the reference behaviour.
  const plain = h.start('../fabric/fixtures/unref.js', [port, 'unref'], { hooked: false });
  assert.deepStrictEqual((await h.next(plain)).bypassed, [false, false, false]);
  assert.deepStrictEqual(await h.exit(plain, 5000), { code: 0, signal: null });

  const unref = h.start('../fabric/fixtures/unref.js', [port, 'unref']);
  assert.deepStrictEqual((await h.next(unref)).bypassed, [true, true, true]);
  assert.deepStrictEqual(await h.exit(unref, 5000), { code: 0, signal: null }, 'exited by itself');

  const ref = h.start('../fabric/fixtures/unref.js', [port, 'ref']);
  assert.deepStrictEqual((await h.next(ref)).bypassed, [true, true, true]);
  await sleep(1000);
  assert.strictEqual(ref.exited, null, 'a ref\'d bypassed socket keeps the process alive');
  ref.child.kill('SIGTERM');
  assert.deepStrictEqual(await h.exit(ref), { code: null, signal: 'SIGTERM' });

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
