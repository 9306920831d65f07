// Nothing to squat (issue 13, "must hold" 3): whatever another process
// pre-creates, locks or binds — the first fabric's /dev/shm files, every
// stack's inspection name, a listener's rendezvous names, even all 4096 of
// them — a hooked server and client still start at once and talk, bypassed
// or through the kernel with a counted reason; and a process that answers
// the rendezvous for a kernel listener that isn't its own gets no pair: no
// Hello, no memory, and the client talks to the real server.
//
// The squatter and the hijacker are a python helper
// (fixtures/rendezvous-squatter.py): Node can't bind abstract SEQPACKET names.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Harness, boundNames, kernelSockets } = require('../support/harness');
const { otherUid, python, startCommand, sendLine, kernelConnectionsOn, NOBODY } = require('../support/namespaces');

const SERVER = '../fabric/fixtures/server.js';
const CLIENT = '../fabric/fixtures/bulk-client.js';
const TIMED = '../fabric/fixtures/timed-client.js';
const SQUATTER = path.join(__dirname, 'fixtures', 'rendezvous-squatter.py');
const BYTES = 256 * 1024;
const STRACE = '/usr/bin/strace';
const MAX_SHARES = 4096; // names per listening socket (native/link/fabric.cc kMaxShares)

/** A port that is free now (the kernel picked it; we let it go). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Why this file's tests can't run here, or null. */
function missing() {
  const nobody = otherUid();
  if (nobody.skip) return nobody.skip;
  if (!python()) return 'needs /usr/bin/python3 for the squatter (Node cannot bind abstract SEQPACKET names)';
  return null;
}

function squatter(h, args, { as = otherUid().wrapper } = {}) {
  return startCommand(h, [...as, python(), SQUATTER, '--deadline', '60', ...args]);
}

async function squatterReport(h, proc) {
  sendLine(proc, 'report');
  return (await h.nextMatching(proc, (m) => m.report, 5000)).report;
}

async function serverStats(h, proc) {
  h.send(proc, { cmd: 'stats' });
  return (await h.nextMatching(proc, (m) => m.stats, 5000)).stats;
}

/**
 * The client's one connection talked (byte-exact) and took a path that is
 * proven: bypassed (its counters, the server's, and no kernel connection
 * on the port) or the kernel (its table, and a counted reason). Returns
 * which.
 */
function assertTalkedOnAProvenPath(report, port, server) {
  const [r] = report.results;
  assert.ifError(r.error);
  assert.deepStrictEqual([r.recvBytes, r.recvSha], [BYTES, r.sentSha], 'the echo is byte-exact');
  // The kernel's table decides which path it was; the counters must agree.
  if (!r.kernel) {
    assert.strictEqual(r.bypassed, true);
    assert.strictEqual(r.stats.pairsCreated, 1);
    assert.strictEqual(server.pairsAccepted, 1);
    assert.deepStrictEqual(kernelConnectionsOn(kernelSockets(), port), []);
    return 'bypassed';
  }
  assert.strictEqual(r.bypassed, false);
  assert.ok(report.stats.connectionsFallback >= 1 && Object.keys(report.stats.fallbackReasons).length > 0, JSON.stringify(report.stats.fallbackReasons));
  return `kernel (${JSON.stringify(report.stats.fallbackReasons)})`;
}

test('another uid holds the first fabric\'s /dev/shm files, every inspection name and a range of rendezvous names, and races the server: both start within 1 s and talk', async (t) => {
  const skip = missing();
  if (skip) return t.skip(skip);
  const h = new Harness(t);
  const port = await freePort();
  // The paths the first fabric used (per-uid file, and this fabric's name).
  const files = [`/dev/shm/sidestep-${process.getuid()}`, `/dev/shm/${h.fabric}`, '/dev/shm/sidestep'];
  const created = [];
  // Ours to remove: whichever of them our squatter (nobody) made, reported or not.
  t.after(() => files.forEach((f) => fs.statSync(f, { throwIfNoEntry: false })?.uid === NOBODY && fs.rmSync(f)));
  // Every pid's inspection name, 16000 names per squatter process (its fd
  // limit allows 20000 here).
  const pidMax = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  const lastPid = Number(fs.readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'));
  const [lo, hi] = pidMax <= 65536 ? [1, pidMax] : [lastPid + 1, lastPid + 32000];
  const squatters = [];
  for (let from = lo; from <= hi; from += 16000) {
    squatters.push(squatter(h, ['--fabric', h.fabric, '--pids', `${from}:${Math.min(hi, from + 15999)}`, '--quiet']));
  }
  const readies = [];
  for (const s of squatters) readies.push(await h.nextMatching(s, (m) => m.ready, 30000));
  // Then the files, L<inode>.0 for the next 8000 socket inodes (binding
  // them uses up inode numbers too, so the server's will be past them: this
  // range is what a blind squatter can do), and the race for the real one.
  const nextInode = Math.max(...fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1).map((l) => Number(l.trim().split(/\s+/)[6]) || 0)) + 1;
  const racer = squatter(h, ['--fabric', h.fabric, '--files', files.join(','), '--inodes', `${nextInode}:${nextInode + 7999}`, '--race', `${port}:4`, '--quiet']);
  squatters.unshift(racer);
  readies.unshift(await h.nextMatching(racer, (m) => m.ready, 30000));
  let pidsBound = 0;
  for (const ready of readies) {
    assert.strictEqual(ready.uid, NOBODY);
    pidsBound += ready.bound.pids;
    created.push(...ready.files.created);
  }
  // The squat is real: the files exist, world-writable and locked by
  // nobody; the names are bound.
  for (const f of created) {
    const st = fs.statSync(f);
    assert.deepStrictEqual([st.uid, st.mode & 0o777], [NOBODY, 0o666], f);
  }
  assert.ok(created.includes(`/dev/shm/${h.fabric}`), JSON.stringify(created));
  assert.ok(pidsBound >= Math.min(hi - lo + 1, 16000), `inspection names bound: ${pidsBound}`);
  assert.ok(boundNames(h.fabric).length >= pidsBound);

  const t0 = Date.now();
  const server = h.start(SERVER, ['echo', '-', port]);
  const up = await h.next(server, 5000);
  const serverStartMs = Date.now() - t0;
  assert.strictEqual(up.port, port);
  // Its inspection name was taken before it started (every pid's is).
  assert.ok(boundNames(h.fabric).includes(`@${h.fabric}/S${up.pid}.0`));
  const raced = await h.nextMatching(squatters[0], (m) => m.raced, 5000);

  const t1 = Date.now();
  const client = h.start(CLIENT, [port, BYTES, 1, 0]);
  const report = await h.next(client, 5000);
  const clientMs = Date.now() - t1;
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const path = assertTalkedOnAProvenPath(report, port, await serverStats(h, server));
  t.diagnostic(`server ready in ${serverStartMs} ms, client done in ${clientMs} ms; squatter won shares ${JSON.stringify(raced.won)} of listener ${raced.inode}; path: ${path}`);
  assert.ok(serverStartMs < 1000, `server started in ${serverStartMs} ms`);
  assert.ok(clientMs < 1000, `client connected and echoed in ${clientMs} ms`);
  // Whatever reached the squatter was refused before any Hello.
  assert.deepStrictEqual((await squatterReport(h, squatters[0])).fds, []);

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  for (const s of squatters) s.child.stdin.end();
  for (const s of squatters) assert.deepStrictEqual(await h.exit(s), { code: 0, signal: null });
  // (the squatter's files stay until t.after removes them)
  assert.deepStrictEqual(h.leftovers().filter((f) => !created.includes(f)), []);
});

/**
 * A server whose rendezvous bind the squatter wins for sure: strace delays
 * that bind (the server's third: its inspection name, the TCP port, then
 * L<inode>.0) by 300 ms, while the squatter, polling /proc/net/tcp, sees
 * the listener and binds its first `shares` names.
 */
async function lostRace(t, shares) {
  const h = new Harness(t);
  const port = await freePort();
  const sq = squatter(h, ['--fabric', h.fabric, '--race', `${port}:${shares}`, '--quiet']);
  await h.nextMatching(sq, (m) => m.ready, 10000);
  const strace = [STRACE, '-qq', '-o', '/dev/null', '-e', 'trace=bind', '-e', 'inject=bind:delay_enter=300000:when=3'];
  const server = h.start(SERVER, ['echo', '-', port], { wrapper: strace });
  const up = await h.next(server, 10000);
  // strace leaves its tracee running when it is killed: kill ours too.
  t.after(() => {
    try {
      process.kill(up.pid, 'SIGKILL');
    } catch {}
  });
  const raced = await h.nextMatching(sq, (m) => m.raced, 5000);
  assert.deepStrictEqual(raced.won.length, shares, `the squatter must win the race for this test to mean anything: ${JSON.stringify(raced).slice(0, 200)}`);
  assert.strictEqual(raced.won[0], 0);
  return { h, port, sq, server };
}

test('a squatter that wins the race for a listener\'s first four names: the server takes the next, the client passes the squatter by and is bypassed', async (t) => {
  const skip = missing() || (fs.existsSync(STRACE) ? null : `needs ${STRACE} to make the squatter win the race`);
  if (skip) return t.skip(skip);
  const { h, port, sq, server } = await lostRace(t, 4);
  assert.ok(boundNames(h.fabric).some((n) => /\/L\d+\.4$/.test(n)), `the server serves share 4: ${boundNames(h.fabric)}`);
  const t1 = Date.now();
  const client = h.start(CLIENT, [port, BYTES, 2, 0]);
  const report = await h.next(client, 5000);
  const clientMs = Date.now() - t1;
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const st = await serverStats(h, server);
  assert.strictEqual(assertTalkedOnAProvenPath(report, port, st), 'bypassed');
  assert.ok(clientMs < 1000, `client connected and echoed in ${clientMs} ms`);
  // The client knocked at the squatter's four names and sent nothing there.
  const seen = await squatterReport(h, sq);
  assert.deepStrictEqual([seen.connections, seen.messages, seen.fds], [4, 0, []]);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
});

test(`a squatter that holds all ${MAX_SHARES} names of a listener: the server listens on the kernel (counted), every client falls back at once (counted) and talks`, async (t) => {
  const skip = missing() || (fs.existsSync(STRACE) ? null : `needs ${STRACE} to make the squatter win the race`);
  if (skip) return t.skip(skip);
  const { h, port, sq, server } = await lostRace(t, MAX_SHARES);
  const st0 = await serverStats(h, server);
  assert.deepStrictEqual(st0.fallbackReasons, { 'listen-register': 1 });
  // Two clients, each its own process: each connect probes the squatter's
  // names (all of them: none answers for the listener).
  for (const seed of [3, 4]) {
    const t1 = Date.now();
    const client = h.start(TIMED, [port, BYTES, seed]);
    const r = await h.next(client, 5000);
    const clientMs = Date.now() - t1;
    assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
    assert.ifError(r.error);
    assert.deepStrictEqual([r.bypassed, r.kernel, r.recvBytes, r.recvSha], [false, true, BYTES, r.sentSha]);
    assert.deepStrictEqual(r.stats.fallbackReasons, { ownership: 1 });
    t.diagnostic(`client ${seed}: kernel (ownership), its connect took ${Math.round(r.connectMs)} ms, the whole client ${clientMs} ms`);
    assert.ok(clientMs < 1000, `client started, connected and echoed in ${clientMs} ms`);
  }
  const seen = await squatterReport(h, sq);
  assert.deepStrictEqual([seen.messages, seen.fds], [0, []]);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
});

/**
 * Hijack: a plain kernel echo server (no sidestep) runs as `serverAs`; a
 * hijacker running as `hijackerAs` binds L<that listener's inode>.0 and
 * accepts whatever comes; a hooked client (as `clientAs`) connects to the
 * port and echoes. `viaShell`: the hijacker runs as a child of a shell of
 * its own uid (else its parent is this test process, root). Returns what
 * the client saw (timed-client: connect time, path, echo) and the hijacker.
 */
async function hijack(t, { serverAs, hijackerAs, clientAs, nondumpable = false, viaShell = false }) {
  const h = new Harness(t);
  const server = h.start(SERVER, ['echo'], { hooked: false, wrapper: serverAs });
  const { port } = await h.next(server);
  const args = ['--fabric', h.fabric, '--hijack', `${port}:0`, ...(nondumpable ? ['--nondumpable'] : [])];
  // (sh forks the helper when a command follows it)
  const hj = viaShell
    ? startCommand(h, [...hijackerAs, 'sh', '-c', '"$@"; exit', 'sh', python(), SQUATTER, '--deadline', '60', ...args])
    : squatter(h, args, { as: hijackerAs });
  const ready = await h.nextMatching(hj, (m) => m.ready, 10000);
  t.after(() => {
    try {
      process.kill(ready.pid, 'SIGKILL');
    } catch {}
  });
  assert.strictEqual(ready.bound, true);
  const client = h.start(TIMED, [port, BYTES, 5], { wrapper: clientAs });
  let r;
  try {
    r = await h.next(client, 5000);
  } catch (err) {
    const seen = await squatterReport(h, hj);
    throw new Error(`the client did not finish within 5 s (hijacker saw ${JSON.stringify(seen)}): ${err.message.split('\n')[0]}`);
  }
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const seen = await squatterReport(h, hj);
  const conn = await h.nextMatching(server, (m) => m.event === 'conn', 2000);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  return { r, seen, conn };
}

/**
 * The client talked to the real server through the kernel, with the reason
 * counted, within `withinMs`; and no descriptor ever reached the hijacker
 * (no region, no doorbell) — at most `messages` messages without any.
 */
function assertNotHijacked({ r, seen, conn }, { reason = 'ownership', messages = 0, withinMs = 1000 } = {}) {
  assert.ifError(r.error);
  // The echo is the real server's: it accepted the connection (through
  // the kernel) and sent the bytes back; the hijacker never sends any.
  assert.deepStrictEqual([r.kernel, r.recvBytes, r.recvSha], [true, BYTES, r.sentSha]);
  assert.deepStrictEqual([conn.bypassed, conn.kernel], [false, true]);
  assert.ok((r.stats.fallbackReasons[reason] ?? 0) >= 1, `reason ${reason} counted: ${JSON.stringify(r.stats.fallbackReasons)}`);
  assert.ok(seen.connections <= 1, JSON.stringify(seen));
  assert.deepStrictEqual(seen.fds, [], 'no descriptor reached the hijacker');
  assert.ok(seen.messages <= messages, JSON.stringify(seen));
  assert.ok(r.connectMs < withinMs, `the connect took ${r.connectMs} ms`);
}

const describe = ({ r, seen }) => `client ${Math.round(r.connectMs)} ms, reasons ${JSON.stringify(r.stats.fallbackReasons)}; hijacker saw ${JSON.stringify(seen)}`;

test('hijack by a process of the listener\'s own uid that the client can inspect: it holds no such socket, the client uses the kernel at once (ownership), no message reaches the hijacker', async (t) => {
  const skip = missing();
  if (skip) return t.skip(skip);
  // Everyone root: the client reads the hijacker's /proc/<pid>/fd (and its parent's).
  const root = await hijack(t, { serverAs: [], hijackerAs: [], clientAs: [] });
  assertNotHijacked(root);
  t.diagnostic(`root: ${describe(root)}`);
  // Everyone nobody, the hijacker a child of a nobody shell: all readable.
  const nobody = otherUid().wrapper;
  const same = await hijack(t, { serverAs: nobody, hijackerAs: nobody, clientAs: nobody, viaShell: true });
  assertNotHijacked(same);
  t.diagnostic(`uid ${NOBODY}: ${describe(same)}`);
});

test('hijack by a process of another uid: the credentials don\'t match the listener\'s owner, the client uses the kernel at once (ownership)', async (t) => {
  const skip = missing();
  if (skip) return t.skip(skip);
  const seen = await hijack(t, { serverAs: [], hijackerAs: otherUid().wrapper, clientAs: [] });
  assertNotHijacked(seen);
  t.diagnostic(`uid ${NOBODY} hijacker of a root listener: ${describe(seen)}`);
});

// Where the client may not read the answering process's /proc/<pid>/fd (or
// its parent's) — a client of another uid than the listener's, a same-uid
// hijacker that made itself non-dumpable, one whose parent is root's — the
// uid can't decide: the client asks for proof (control.h: Prove) before any
// memory leaves it. A hijacker can't give it; the pair is given up when the
// proof times out (1 s) and the connect goes to the kernel.
const PROOF_TIMEOUT_MS = 1000;

test('hijack by a process of the listener\'s uid that the client can\'t inspect: it is asked for proof, gets no descriptor, and the client reaches the real server when the proof times out', async (t) => {
  const skip = missing();
  if (skip) return t.skip(skip);
  const nobody = otherUid().wrapper;
  const cases = {
    'client of another uid': { serverAs: [], hijackerAs: [], clientAs: nobody },
    'same uid, non-dumpable hijacker': { serverAs: nobody, hijackerAs: nobody, clientAs: nobody, nondumpable: true },
    'same uid, hijacker\'s parent is root\'s': { serverAs: nobody, hijackerAs: nobody, clientAs: nobody },
  };
  for (const [label, how] of Object.entries(cases)) {
    const seen = await hijack(t, how);
    t.diagnostic(`${label}: ${describe(seen)}`);
    // At most the request for proof reached it; the connect waited for the
    // proof's timeout, and not much longer.
    assertNotHijacked(seen, { reason: 'fabric', messages: 1, withinMs: PROOF_TIMEOUT_MS + 500 });
  }
});
