// The datagram doorbell: where a process can't take its peers' eventfds
// (pidfd_getfd refused by a seccomp profile or an LSM) it rings their unix
// datagram sockets instead, and the peer's event loop must wake on those just
// as on its eventfd. SIDESTEP_DOORBELL=datagram forces that path, one side
// at a time: the round trips complete (how often a message finds its peer
// asleep, and so rings, depends on the two processes' timing), every ring of
// that side went by datagram and woke its peer, and the path is the fabric
// (no kernel connection).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const delta = (after, before, key) => after[key] - before[key];
const ROUNDS = 300;

for (const side of ['client', 'server']) {
  test(`the ${side} rings by datagram only (SIDESTEP_DOORBELL=datagram): ${ROUNDS} round trips complete`, async (t) => {
    const h = new Harness(t);
    const env = { SIDESTEP_DOORBELL: 'datagram' };
    const server = h.start('../fabric/fixtures/server.js', ['echo', 'quiet'], side === 'server' ? { env } : {});
    const { port } = await h.next(server);
    const client = h.start('../fabric/fixtures/pingpong-client.js', [port, ROUNDS, 64], side === 'client' ? { env } : {});
    await h.next(client, 30000);
    h.send(server, { cmd: 'stats' });
    const { stats: s0 } = await h.nextMatching(server, (m) => m.stats);
    h.send(client, {});
    await h.next(client);
    const r = await h.next(client, 60000);
    assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
    assert.ifError(r.error);
    assert.deepStrictEqual([r.bypassed, r.kernel], [true, false]);
    h.send(server, { cmd: 'stats' });
    const { stats: s1 } = await h.nextMatching(server, (m) => m.stats);
    assert.strictEqual(delta(r.stats, r.before, 'bytesIn'), ROUNDS * 64);
    const rung = { client: delta(r.stats, r.before, 'doorbellsRung'), server: delta(s1, s0, 'doorbellsRung') };
    const fallback = { client: delta(r.stats, r.before, 'doorbellsFallback'), server: delta(s1, s0, 'doorbellsFallback') };
    const other = side === 'client' ? 'server' : 'client';
    t.diagnostic(`rings ${JSON.stringify(rung)}, by datagram ${JSON.stringify(fallback)}; ${r.usPerRound.toFixed(0)} us per round trip`);
    // The side told to use datagrams rang only by datagram, and did ring
    // (its peer slept between messages); the other side used eventfds.
    assert.ok(rung[side] > 0, `${side} never rang`);
    assert.strictEqual(fallback[side], rung[side]);
    assert.strictEqual(fallback[other], 0);
    // The datagrams woke the other side's loop.
    const wakeups = side === 'client' ? delta(s1, s0, 'wakeups') : delta(r.stats, r.before, 'wakeups');
    assert.ok(wakeups > 0);
    h.send(server, { cmd: 'close' });
    assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
    assert.ok(!fs.existsSync(h.fabricPath()));
  });
}
