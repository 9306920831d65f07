// kill -9 of a peer mid-stream, over and over: the survivor's socket ends as
// it would with kernel sockets within 1 s every time — EOF after the rest of
// the stream when the dead peer had read everything it was sent (a sink's
// client only sends), ECONNRESET when it had not (an echo's client had
// echoed bytes unread) — and nothing leaks — its open sockets
// and file descriptors return to their baseline, and once every process has
// gone nothing of theirs is left (no name, no file).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness } = require('../support/harness');

const ROUNDS = 24;

/** Reads every line a child prints, so a test can wait for one that matches. */
function collector(h, proc) {
  const seen = [];
  const waiters = [];
  (async () => {
    for (;;) {
      let m;
      try {
        m = await h.next(proc, 3600e3);
      } catch {
        return;
      }
      m.at = Date.now();
      seen.push(m);
      for (const w of waiters.slice()) if (w.pred(m)) waiters.splice(waiters.indexOf(w), 1), w.resolve(m);
    }
  })();
  return (pred, ms = 10000) => {
    const hit = seen.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (m) => (clearTimeout(timer), resolve(m)) };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`no matching report within ${ms} ms; stderr:\n${proc.stderr}`));
      }, ms);
      waiters.push(w);
    });
  };
}

const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

async function settle(read, want, ms = 3000) {
  const deadline = Date.now() + ms;
  let v = await read();
  while (v !== want && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    v = await read();
  }
  return v;
}

test(`kill -9 of a client mid-stream, ${ROUNDS} times: the server's connection ends as the kernel's would, within 1 s, nothing leaks`, async (t) => {
  const h = new Harness(t);
  // Two long-lived survivors: one only reading, one echoing (so it is also
  // writing to the peer when it dies).
  const servers = [];
  for (const mode of ['sink', 'echo']) {
    const proc = h.start('../fabric/fixtures/server.js', [mode]);
    const { port, pid } = await h.next(proc);
    const wait = collector(h, proc);
    let statsSeq = 0;
    const stats = async () => {
      const n = ++statsSeq;
      h.send(proc, { cmd: 'stats' });
      const m = await wait((x) => x.stats && !x.used && (x.used = n));
      return m.stats;
    };
    servers.push({ mode, proc, port, pid, wait, stats });
  }
  for (const s of servers) {
    s.baseSockets = (await s.stats()).openSockets;
    s.baseFds = fdCount(s.pid);
  }

  const latencies = [];
  for (let i = 0; i < ROUNDS; i++) {
    const s = servers[i % 2];
    const client = h.start('../fabric/fixtures/bulk-client.js', [s.port, 1 << 30, i + 1, 0]);
    // connection ids count up per server
    const conn = await s.wait((m) => m.event === 'conn' && m.id === (i >> 1) + 1);
    assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false], `round ${i}`);
    await s.wait((m) => m.event === 'streaming' && m.id === conn.id);
    const killedAt = Date.now();
    client.child.kill('SIGKILL');
    // The sink's client had nothing unread: a FIN after what it had written
    // (finished from its send memory). The echo's had echoed bytes unread: RST.
    const end = await s.wait((m) => (m.event === 'error' || m.event === 'close') && m.id === conn.id, 5000);
    latencies.push(end.at - killedAt);
    if (s.mode === 'echo') assert.deepStrictEqual([end.event, end.code], ['error', 'ECONNRESET'], `round ${i} (${s.mode})`);
    else assert.strictEqual(end.event, 'close', `round ${i} (${s.mode}): ${JSON.stringify(end)}`);
    assert.ok(end.at - killedAt < 1000, `round ${i} (${s.mode}): ended after ${end.at - killedAt} ms`);
    await s.wait((m) => m.event === 'close' && m.id === conn.id);
    assert.deepStrictEqual(await h.exit(client), { code: null, signal: 'SIGKILL' });
    assert.strictEqual(await settle(async () => (await s.stats()).openSockets, s.baseSockets), s.baseSockets, `round ${i}: open sockets`);
  }
  for (const s of servers) {
    // No more than before the rounds (Node itself may since have closed one
    // of its own: Node 26 did, now and then).
    const fds = await settle(() => fdCount(s.pid), s.baseFds);
    assert.ok(fds <= s.baseFds, `${s.mode} server: ${fds} file descriptors, ${s.baseFds} before`);
    const st = await s.stats();
    assert.strictEqual(st.openSockets, s.baseSockets);
    assert.strictEqual(st.connectionsAccepted, ROUNDS / 2);
  }
  latencies.sort((a, b) => a - b);
  t.diagnostic(`reset latency ms: min ${latencies[0]}, median ${latencies[latencies.length >> 1]}, max ${latencies.at(-1)}`);

  for (const s of servers) h.send(s.proc, { cmd: 'close' });
  for (const s of servers) assert.deepStrictEqual(await h.exit(s.proc), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});

test('kill -9 of a process with worker threads: the connections of all its stacks end within 1 s', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['sink']);
  const { port } = await h.next(server);
  const wait = collector(h, server);
  const h0 = h.start('../fabric/fixtures/bulk-client.js', [port, 1 << 30, 1, 2]); // main thread + 2 workers
  const ids = [1, 2, 3];
  for (const id of ids) {
    const conn = await wait((m) => m.event === 'conn' && m.id === id);
    assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false]);
    await wait((m) => m.event === 'streaming' && m.id === id);
  }
  const killedAt = Date.now();
  h0.child.kill('SIGKILL');
  for (const id of ids) {
    // Senders to a sink, nothing unread: EOF, as the kernel's FIN.
    const end = await wait((m) => (m.event === 'error' || m.event === 'close') && m.id === id, 5000);
    assert.strictEqual(end.event, 'close', JSON.stringify(end));
    assert.ok(end.at - killedAt < 1000, `connection ${id} ended after ${end.at - killedAt} ms`);
  }
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});

test('kill -9 of a server: its client\'s connection ends, and its port can be listened on (and bypassed) again at once', async (t) => {
  const h = new Harness(t);
  const first = h.start('../fabric/fixtures/server.js', ['echo']);
  const { port } = await h.next(first);
  const client = h.start('hang-client.js', [port]);
  assert.deepStrictEqual(await h.next(client), { connected: true, bypassed: true });
  await new Promise((r) => setTimeout(r, 200));  // the server has read (and echoed) the request
  const killedAt = Date.now();
  first.child.kill('SIGKILL');
  // The server had read (and echoed) the request: its kernel would send a FIN.
  assert.deepStrictEqual(await h.next(client, 5000), { code: 'EOF' });
  const elapsed = Date.now() - killedAt;
  assert.ok(elapsed < 1000, `ended after ${elapsed} ms`);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  // Right away, a new process takes over the same port, and new connections
  // go to it, not to the dead one.
  const second = h.start('../fabric/fixtures/server.js', ['echo', '-', port]);
  assert.deepStrictEqual(await h.next(second), { port, pid: second.child.pid });
  const bulk = h.start('../fabric/fixtures/bulk-client.js', [port, 256 * 1024, 5, 0]);
  const { results: [r] } = await h.next(bulk);
  assert.ifError(r.error);
  assert.deepStrictEqual([r.bypassed, r.kernel, r.recvBytes, r.recvSha], [true, false, 256 * 1024, r.sentSha]);
  assert.deepStrictEqual(await h.exit(bulk), { code: 0, signal: null });
  h.send(second, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(second), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});

test('a process killed with -9 leaves nothing behind: its names go with it, and the next server on its port is bypassed', async (t) => {
  const h = new Harness(t);
  const stats = async (proc) => (h.send(proc, { cmd: 'stats' }), (await h.nextMatching(proc, (m) => m.stats)).stats);
  const crashed = h.start('../fabric/fixtures/server.js', ['echo']);
  const { port } = await h.next(crashed);
  assert.ok(h.leftovers().length > 0, 'a live server has its rendezvous and inspection names bound');
  crashed.child.kill('SIGKILL');
  await h.exit(crashed);
  // The kernel removed its names with its sockets: nothing for anyone to reclaim.
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind by a killed process');
  const next = h.start('../fabric/fixtures/server.js', ['echo', '-', port]);
  await h.next(next);
  const client = h.start('../fabric/fixtures/bulk-client.js', [port, 64 * 1024, 7, 0]);
  const report = await h.next(client, 30000);
  assert.deepStrictEqual(report.results.map((r) => [r.bypassed, r.kernel, r.recvBytes]), [[true, false, 64 * 1024]]);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const st = await stats(next);
  assert.strictEqual(st.pairsAccepted, 1);
  h.send(next, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(next), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
