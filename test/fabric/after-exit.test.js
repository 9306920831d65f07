// Nothing remains after any exit (issue 13, "must hold" 5): when every
// participant — a server and client processes with worker threads, all
// mid-transfer — is ended by SIGTERM or SIGKILL, in any order, no name of
// the fabric is bound, no process of it runs, and nothing named after it
// is in /dev/shm or /tmp: the kernel removed the abstract names and the
// memfds with the last process that held them.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const { Harness } = require('../support/harness');
const { processesOf } = require('../support/namespaces');

const SERVER = '../fabric/fixtures/server.js';
const CLIENT = '../fabric/fixtures/bulk-client.js';
const CLIENTS = 3;
const WORKERS = 1; // each client process: main thread + 1 worker, two stacks

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
      seen.push(m);
      for (const w of waiters.slice()) if (w.pred(m)) waiters.splice(waiters.indexOf(w), 1), w.resolve(m);
    }
  })();
  return (pred, ms = 10000) => {
    const hit = seen.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching report within ${ms} ms; stderr:\n${proc.stderr}`)), ms);
      waiters.push({ pred, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  };
}

/** Shmem (memfds, tmpfs) in KiB, host-wide: a diagnostic (other tests may run). */
const shmemKiB = () => Number(/^Shmem:\s+(\d+)/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]);

/** The inodes of the sidestep memfds that `pid` maps (its pairs' memory). */
function memfdInodes(pid) {
  return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
    .filter((l) => / \/memfd:sidestep-[a-z]+ \(deleted\)$/.test(l))
    .map((l) => l.trim().split(/\s+/)[4]);
}

/** When `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22). */
function startTime(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

/**
 * Every process that still maps, or holds a descriptor of, one of these
 * memfd inodes, host-wide: while none does, the kernel has freed them.
 * A process that vanished meanwhile is skipped; one we may not inspect
 * (init here, even for root) is returned as unreadable, for the caller to
 * judge.
 */
function holdersOf(inodes) {
  const holders = [];
  const unreadable = [];
  const skip = (pid, err) => {
    if (err.code === 'EACCES' || err.code === 'EPERM') unreadable.push(Number(pid));
    else if (err.code !== 'ENOENT' && err.code !== 'ESRCH') throw err;
  };
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let fds;
    try {
      if (memfdInodes(pid).some((i) => inodes.has(i))) holders.push(`${pid} maps`);
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch (err) {
      skip(pid, err);
      continue;
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('/memfd:sidestep') && inodes.has(String(fs.statSync(`/proc/${pid}/fd/${fd}`).ino))) holders.push(`${pid} fd ${fd}`);
      } catch (err) {
        skip(pid, err);
      }
    }
  }
  return { holders, unreadable: [...new Set(unreadable)] };
}

async function endEverything(t, signal, order) {
  const h = new Harness(t);
  const before = shmemKiB();
  const server = h.start(SERVER, ['echo']);
  const { port } = await h.next(server);
  const wait = collector(h, server);
  const clients = [];
  for (let i = 1; i <= CLIENTS; i++) clients.push(h.start(CLIENT, [port, 1 << 30, i, WORKERS]));
  // Mid-transfer: every connection bypassed and streaming.
  const conns = CLIENTS * (WORKERS + 1);
  for (let id = 1; id <= conns; id++) {
    const c = await wait((m) => m.event === 'conn' && m.id === id);
    assert.deepStrictEqual([c.bypassed, c.kernel], [true, false], `connection ${id}`);
    await wait((m) => m.event === 'streaming' && m.id === id);
  }
  assert.ok(h.leftovers().length > 0, 'the live stacks have their names bound');
  const during = shmemKiB();
  // The pairs' memory: every memfd the participants map now.
  const inodes = new Set([server, ...clients].flatMap((p) => memfdInodes(p.child.pid)));
  assert.ok(inodes.size >= conns, `one region per pair at least: ${[...inodes]}`);
  const serverStart = startTime(server.child.pid);

  const everyone = [server, ...clients];
  const pids = everyone.map((p) => p.child.pid);
  const groups = { 'all at once': [everyone], 'server first': [[server], clients], 'clients first': [clients, [server]] }[order];
  for (const group of groups) {
    for (const p of group) if (!p.exited) p.child.kill(signal);
    for (const p of group) await h.exit(p, 5000);
  }
  // Killed by the signal (a client whose server went first may have ended
  // on its own, reporting the reset).
  for (const p of everyone) assert.ok(p.exited.signal === signal || (p !== server && order === 'server first' && p.exited.code === 0), JSON.stringify(p.exited));

  // Right away, nothing remains.
  assert.deepStrictEqual(h.leftovers(), [], 'no name bound, nothing in /dev/shm');
  assert.deepStrictEqual(processesOf(h.fabric), [], 'no process of the fabric runs');
  for (const pid of pids) assert.ok(!fs.existsSync(`/proc/${pid}`), `pid ${pid} is gone`);
  assert.deepStrictEqual(fs.readdirSync(os.tmpdir()).filter((f) => f.includes(h.fabric)), [], 'nothing in /tmp');
  // And the pairs' memory went with them: nobody maps or holds any of it.
  const { holders, unreadable } = holdersOf(inodes);
  assert.deepStrictEqual(holders, [], 'the pairs\' memfds are gone');
  // A process we may not inspect is no participant: it predates them all
  // (and nothing passed it a descriptor: the server accepted only ours).
  for (const pid of unreadable) assert.ok(startTime(pid) < serverStart, `pid ${pid} can't be inspected and started during the test`);
  t.diagnostic(`${signal}, ${order}: Shmem ${before} KiB before, ${during} KiB mid-transfer, ${shmemKiB()} KiB after (host-wide)`);
}

for (const signal of ['SIGTERM', 'SIGKILL']) {
  for (const order of ['all at once', 'server first', 'clients first']) {
    test(`${signal} to every participant (${order}), mid-transfer: nothing remains`, async (t) => {
      await endEverything(t, signal, order);
    });
  }
}
