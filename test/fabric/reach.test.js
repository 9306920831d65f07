// The fabric reaches exactly as far as loopback TCP: a network namespace.
// A server in a private namespace can't be reached from outside (nor one
// outside from inside) — ECONNREFUSED with and without sidestep, because the
// rendezvous names live in the abstract unix namespace, which the kernel
// scopes to the network namespace. Two processes that share a namespace but
// neither a mount namespace, a /dev/shm nor a uid (a pod's containers, a
// sidecar) do meet; SIDESTEP_PEERS=same-uid opts out of that.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness, boundNames, kernelSockets } = require('../support/harness');
const { needsRoot, otherUid, netns, tablesIn, kernelConnectionsOn, privateShm, NOBODY } = require('../support/namespaces');

const SERVER = '../fabric/fixtures/server.js';
const CLIENT = '../fabric/fixtures/bulk-client.js';
const BYTES = 4 * 1024 * 1024;
const modeEnv = (mode) => ({ SIDESTEP: mode === 'kernel' ? '0' : '1' });

async function stats(h, proc) {
  h.send(proc, { cmd: 'stats' });
  return (await h.nextMatching(proc, (m) => m.stats, 10000)).stats;
}

/**
 * A server on one side of a namespace boundary, a client on the other:
 * returns what the client saw. Also proves the port really is free on the
 * client's side (else ECONNREFUSED would prove nothing) and that the
 * server's rendezvous names are visible on its side only.
 */
async function across(t, mode, { serverIn, clientIn }) {
  const h = new Harness(t);
  const ns = netns(t);
  const where = (inside) => (inside ? ns.exec : []);
  const tables = (inside) => (inside ? tablesIn(ns, h.fabric) : { tcp: kernelSockets(), names: boundNames(h.fabric) });
  const server = h.start(SERVER, ['echo'], { env: modeEnv(mode), wrapper: where(serverIn) });
  const { port } = await h.next(server);
  const serverSide = tables(serverIn);
  const clientSide = tables(clientIn);
  assert.ok(serverSide.tcp.some((s) => s.state === 'LISTEN' && s.localPort === port), `the server listens on ${port} in its namespace`);
  assert.ok(!clientSide.tcp.some((s) => s.localPort === port), `port ${port} must be unused on the client's side for this test to prove anything`);
  if (mode === 'bypass') {
    assert.ok(serverSide.names.some((n) => n.startsWith(`@${h.fabric}/L`)), `rendezvous name bound beside the server: ${serverSide.names}`);
    assert.deepStrictEqual(clientSide.names, [], 'no name of the fabric is visible across the boundary');
  }
  const client = h.start(CLIENT, [port, 1024, 1, 0], { env: modeEnv(mode), wrapper: where(clientIn) });
  const report = await h.next(client, 10000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const st = await stats(h, server);
  assert.strictEqual(st.connectionsBypassed, 0);
  assert.strictEqual(st.pairsAccepted ?? 0, 0, 'nobody reached the server over the fabric');
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  return report;
}

for (const [label, sides] of [
  ['a server in a private network namespace is out of reach from the host', { serverIn: true, clientIn: false }],
  ['a server in the host is out of reach from a private network namespace', { serverIn: false, clientIn: true }],
]) {
  test(`${label}: ECONNREFUSED in kernel mode and in bypass mode alike`, async (t) => {
    const skip = needsRoot('creates a network namespace');
    if (skip) return t.skip(skip);
    const outcome = {};
    for (const mode of ['kernel', 'bypass']) {
      const report = await across(t, mode, sides);
      const [r] = report.results;
      outcome[mode] = r.error;
      if (mode === 'bypass') {
        assert.strictEqual(report.stats.enabled, true, report.stats.disabledReason);
        // The kernel's lookup, in the client's namespace, finds no listener.
        assert.deepStrictEqual(report.stats.fallbackReasons, { 'no-listener': 1 });
        assert.strictEqual(report.stats.pairsCreated, 0);
        assert.strictEqual(report.stats.connectionsBypassed, 0);
      } else {
        assert.strictEqual(report.stats.enabled, false);
      }
    }
    assert.deepStrictEqual(outcome, { kernel: 'ECONNREFUSED', bypass: 'ECONNREFUSED' });
  });
}

/**
 * Two processes in one new network namespace, each in a mount namespace of
 * its own with a private /dev/shm, the server as root, the client as
 * nobody. Returns what both saw and the namespace's TCP table afterwards.
 */
async function sharedNamespace(t, clientEnv) {
  const h = new Harness(t);
  const ns = netns(t);
  const nobody = otherUid();
  const server = h.start(SERVER, ['echo'], { wrapper: [...ns.exec, ...privateShm()] });
  const { port, pid: serverPid } = await h.next(server);
  const client = h.start(CLIENT, [port, BYTES, 3, 0, 'wait'], { env: clientEnv, wrapper: [...ns.exec, ...privateShm(), ...nobody.wrapper] });
  const { pid: clientPid } = await h.nextMatching(client, (m) => m.ready, 10000);

  // What the two share and don't: the network namespace, nothing else.
  const nsOf = (pid, kind) => fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
  assert.strictEqual(nsOf(serverPid, 'net'), nsOf(clientPid, 'net'));
  assert.notStrictEqual(nsOf(serverPid, 'net'), nsOf(process.pid, 'net'));
  assert.notStrictEqual(nsOf(serverPid, 'mnt'), nsOf(clientPid, 'mnt'));
  const uidOf = (pid) => Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  assert.deepStrictEqual([uidOf(serverPid), uidOf(clientPid)], [0, NOBODY]);
  // Each /dev/shm is its own: a file put in the server's is not in the client's.
  fs.writeFileSync(`/proc/${serverPid}/root/dev/shm/sidestep-test-marker`, '');
  assert.deepStrictEqual(fs.readdirSync(`/proc/${clientPid}/root/dev/shm`), []);
  assert.ok(!fs.existsSync('/dev/shm/sidestep-test-marker'));

  h.send(client, { go: true });
  const report = await h.nextMatching(client, (m) => m.results, 30000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const conn = await h.nextMatching(server, (m) => m.event === 'conn', 5000);
  const serverStats = await stats(h, server);
  const { tcp } = tablesIn(ns, h.fabric);
  // Nothing of the fabric in either /dev/shm but our marker.
  assert.deepStrictEqual(fs.readdirSync(`/proc/${serverPid}/root/dev/shm`), ['sidestep-test-marker']);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(tablesIn(ns, h.fabric).names, [], 'nothing left bound in the namespace');
  return { port, report, conn, serverStats, tcp };
}

test('processes sharing only a network namespace (own mount namespace, own /dev/shm, other uid) are bypassed', async (t) => {
  const nobody = otherUid();
  if (nobody.skip) return t.skip(nobody.skip);
  const { port, report, conn, serverStats, tcp } = await sharedNamespace(t, {});
  const [r] = report.results;
  assert.ifError(r.error);
  const path = JSON.stringify({ bypassed: r.bypassed, kernel: r.kernel, fallbackReasons: r.stats.fallbackReasons, disabledReason: r.stats.disabledReason });
  assert.deepStrictEqual([r.bypassed, r.kernel], [true, false], path);
  assert.deepStrictEqual([r.recvBytes, r.recvSha], [BYTES, r.sentSha], 'the echo is byte-exact');
  assert.strictEqual(r.stats.connectionsBypassed, 1);
  assert.strictEqual(r.stats.pairsCreated, 1);
  assert.deepStrictEqual(r.stats.fallbackReasons, {});
  assert.ok(r.stats.framesOut > 0 && r.stats.framesIn > 0);
  assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false]);
  assert.strictEqual(serverStats.pairsAccepted, 1);
  assert.strictEqual(serverStats.connectionsBypassed, 1);
  // The kernel of that namespace never carried a connection to the port.
  assert.deepStrictEqual(kernelConnectionsOn(tcp, port), []);
});

test('SIDESTEP_PEERS=same-uid: a client of another uid than the server uses the kernel, reason "peers"', async (t) => {
  const nobody = otherUid();
  if (nobody.skip) return t.skip(nobody.skip);
  const { port, report, conn, serverStats, tcp } = await sharedNamespace(t, { SIDESTEP_PEERS: 'same-uid' });
  const [r] = report.results;
  assert.ifError(r.error);
  assert.deepStrictEqual([r.bypassed, r.kernel], [false, true]);
  assert.deepStrictEqual([r.recvBytes, r.recvSha], [BYTES, r.sentSha], 'the echo is byte-exact');
  assert.deepStrictEqual(r.stats.fallbackReasons, { peers: 1 });
  assert.strictEqual(r.stats.pairsCreated, 0);
  assert.deepStrictEqual([conn.bypassed, conn.kernel], [false, true]);
  assert.strictEqual(serverStats.pairsAccepted, 0);
  // The namespace's kernel holds that connection (TIME_WAIT at one end by now).
  assert.ok(kernelConnectionsOn(tcp, port).length > 0, JSON.stringify(tcp));
});

// A client that may not read the server's /proc/<pid>/fd (another uid) asks
// it to prove that it holds the listening socket (control.h: Prove); a
// listening socket proves to one asker at a time, and the others fall back.
test('24 clients of another uid connect at once: each talks within 1 s, bypassed or on the kernel with the reason counted', async (t) => {
  const nobody = otherUid();
  if (nobody.skip) return t.skip(nobody.skip);
  const N = 24;
  const SMALL = 64 * 1024;
  const h = new Harness(t);
  const server = h.start(SERVER, ['echo', 'quiet']);
  const { port } = await h.next(server);
  const clients = [];
  for (let i = 1; i <= N; i++) clients.push(h.start('../fabric/fixtures/timed-client.js', [port, SMALL, i], { wrapper: nobody.wrapper }));
  const reports = await Promise.all(clients.map((c) => h.next(c, 20000)));
  for (const c of clients) assert.deepStrictEqual(await h.exit(c), { code: 0, signal: null });
  const st = await stats(h, server);
  const tcp = kernelSockets();
  let bypassed = 0;
  for (const r of reports) {
    assert.ifError(r.error);
    assert.deepStrictEqual([r.recvBytes, r.recvSha], [SMALL, r.sentSha]);
    assert.ok(r.connectMs < 1000, `connect took ${r.connectMs} ms`);
    if (r.kernel) assert.ok(r.stats.connectionsFallback >= 1, JSON.stringify(r.stats.fallbackReasons));
    else (assert.strictEqual(r.bypassed, true), bypassed++);
  }
  // The kernel's table agrees with the clients: one connection per fallback.
  const kernelClients = new Set(kernelConnectionsOn(tcp, port).map((s) => (s.localPort === port ? s.remotePort : s.localPort)));
  assert.strictEqual(kernelClients.size, N - bypassed);
  assert.strictEqual(st.pairsAccepted, bypassed);
  t.diagnostic(`${bypassed} of ${N} bypassed; reasons: ${JSON.stringify(reports.filter((r) => r.kernel).map((r) => r.stats.fallbackReasons))}`);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });

  // Proofs of one listening socket go one after the other; none is refused.
  assert.strictEqual(bypassed, N);
});
