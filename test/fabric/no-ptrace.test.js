// Doorbells and liveness need no ptrace rights (issue 13, "must hold" 6):
// under a seccomp filter that refuses pidfd_getfd, ptrace and
// process_vm_readv/writev (fixtures/no-ptrace.c, what container runtimes'
// default profiles and Yama withhold), server and client still pair, their
// doorbells are the eventfds passed over the control channel (rung, and
// woken by), and kill -9 of a peer is still noticed within 1 s (the control
// channel hangs up).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { Harness, kernelSockets } = require('../support/harness');
const { kernelConnectionsOn } = require('../support/namespaces');

const SERVER = '../fabric/fixtures/server.js';
const BULK = '../fabric/fixtures/bulk-client.js';
const PINGPONG = '../fabric/fixtures/pingpong-client.js';
const EPERM = 1;

/** The launcher, compiled into a temp dir removed after the test; or {skip}. */
function buildLauncher(t) {
  if (spawnSync('gcc', ['--version']).status !== 0) return { skip: 'needs gcc to build the seccomp launcher (fixtures/no-ptrace.c)' };
  if (os.arch() !== 'x64' && os.arch() !== 'arm64') return { skip: `the launcher's filter knows x86_64 and aarch64, not ${os.arch()}` };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-test-no-ptrace-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'no-ptrace');
  execFileSync('gcc', ['-O2', '-Wall', '-o', bin, path.join(__dirname, 'fixtures', 'no-ptrace.c')]);
  return { bin };
}

/** The filter is in force on a running process: seccomp mode 2 and no_new_privs. */
function assertFiltered(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.match(status, /^Seccomp:\s+2$/m, `pid ${pid} runs without a seccomp filter`);
  assert.match(status, /^NoNewPrivs:\s+1$/m);
}

async function serverStats(h, proc) {
  h.send(proc, { cmd: 'stats' });
  return (await h.nextMatching(proc, (m) => m.stats, 5000)).stats;
}

const delta = (after, before, k) => after[k] - before[k];

test('under a seccomp filter refusing pidfd_getfd and ptrace: ping-pong and bulk are bypassed with eventfd doorbells, and kill -9 is noticed within 1 s', async (t) => {
  const launcher = buildLauncher(t);
  if (launcher.skip) return t.skip(launcher.skip);
  // The filter refuses what it should (EPERM), as the peers will see it.
  assert.deepStrictEqual(JSON.parse(execFileSync(launcher.bin, ['--check'], { encoding: 'utf8' })), { pidfd_getfd: EPERM, ptrace: EPERM, process_vm_readv: EPERM });
  const wrapper = [launcher.bin];
  const h = new Harness(t);
  const server = h.start(SERVER, ['echo'], { wrapper });
  const { port, pid: serverPid } = await h.next(server);
  assertFiltered(serverPid);

  // Ping-pong: every round trip sleeps and wakes both sides.
  const ROUNDS = 1000;
  const pp = h.start(PINGPONG, [port, ROUNDS, 64], { wrapper });
  const { pid: ppPid } = await h.nextMatching(pp, (m) => m.ready, 10000);
  assertFiltered(ppPid);
  const s0 = await serverStats(h, server);
  h.send(pp, { go: true });
  const r = await h.nextMatching(pp, (m) => m.rounds, 30000);
  assert.deepStrictEqual(await h.exit(pp), { code: 0, signal: null });
  const s1 = await serverStats(h, server);
  assert.deepStrictEqual([r.rounds, r.bypassed, r.kernel], [ROUNDS, true, false]);
  assert.strictEqual(r.stats.pairsCreated, 1);
  assert.deepStrictEqual(r.stats.fallbackReasons, {});
  // Both directions rang the other's doorbell, and both woke from their own.
  assert.ok(delta(r.stats, r.before, 'doorbellsRung') > 0, `client rang ${delta(r.stats, r.before, 'doorbellsRung')}`);
  assert.ok(delta(r.stats, r.before, 'wakeups') > 0, `client woke ${delta(r.stats, r.before, 'wakeups')}`);
  assert.ok(delta(s1, s0, 'doorbellsRung') > 0 && delta(s1, s0, 'wakeups') > 0, JSON.stringify({ rung: delta(s1, s0, 'doorbellsRung'), woke: delta(s1, s0, 'wakeups') }));
  t.diagnostic(`ping-pong: ${r.usPerRound.toFixed(1)} us per round trip; client rang ${delta(r.stats, r.before, 'doorbellsRung')}, woke ${delta(r.stats, r.before, 'wakeups')}; server rang ${delta(s1, s0, 'doorbellsRung')}, woke ${delta(s1, s0, 'wakeups')}`);

  // Bulk, 64 MiB each way.
  const BYTES = 64 * 1024 * 1024;
  const bulk = h.start(BULK, [port, BYTES, 7, 0], { wrapper });
  const { results: [b] } = await h.next(bulk, 60000);
  assert.deepStrictEqual(await h.exit(bulk), { code: 0, signal: null });
  const s2 = await serverStats(h, server);
  assert.ifError(b.error);
  assert.deepStrictEqual([b.bypassed, b.kernel, b.recvBytes, b.recvSha], [true, false, BYTES, b.sentSha]);
  assert.ok(delta(b.stats, b.before, 'doorbellsRung') > 0 && delta(b.stats, b.before, 'wakeups') > 0, JSON.stringify(b.stats));
  assert.ok(delta(s2, s1, 'doorbellsRung') > 0 && delta(s2, s1, 'wakeups') > 0);
  assert.ok(delta(s2, s1, 'bytesIn') >= BYTES);
  assert.deepStrictEqual(kernelConnectionsOn(kernelSockets(), port), [], 'no kernel connection to the server');

  // kill -9 mid-stream: the server's connection resets within 1 s.
  const victim = h.start(BULK, [port, 1 << 30, 8, 0], { wrapper });
  const conn = await h.nextMatching(server, (m) => m.event === 'conn' && m.id === 3, 10000);
  assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false]);
  await h.nextMatching(server, (m) => m.event === 'streaming' && m.id === 3, 10000);
  const killedAt = Date.now();
  victim.child.kill('SIGKILL');
  const err = await h.nextMatching(server, (m) => m.event === 'error' && m.id === 3, 5000);
  const ms = Date.now() - killedAt;
  assert.strictEqual(err.code, 'ECONNRESET');
  assert.ok(ms < 1000, `reset after ${ms} ms`);
  t.diagnostic(`kill -9 noticed after ${ms} ms`);
  assert.deepStrictEqual(await h.exit(victim), { code: null, signal: 'SIGKILL' });

  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
