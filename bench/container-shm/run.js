#!/usr/bin/env node
// A container's /dev/shm (issue 13): inside a private mount namespace whose
// /dev/shm is a 64 MiB tmpfs (Docker's default), one echo server and N client
// processes, all started first and then released at once, each echoing 16 MiB
// byte-exact. Kernel sockets and sidestep interleaved, rep after rep; prints
// the wall time from the release to the last client's report, per mode, the
// median and the per-pair ratios. A run whose echo isn't exact, or whose path
// isn't the one asked for, fails the bench instead of counting. Needs root
// (mount namespaces); the test fixtures do the work (test/fabric/fixtures).
//
//   node bench/container-shm/run.js [--procs 24] [--mib 16] [--reps 5] [--shm 64m]
'use strict';
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const { sharedMountNs } = require('../../test/support/namespaces');

const ROOT = path.resolve(__dirname, '..', '..');
const REGISTER = path.join(ROOT, 'dist', 'register.js');
const FIXTURES = path.join(ROOT, 'test', 'fabric', 'fixtures');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const PROCS = Number(option('procs', 24));
const BYTES = Number(option('mib', 16)) * 1024 * 1024;
const REPS = Number(option('reps', 5));
const SHM = option('shm', '64m');

/** A hooked node process inside the namespace; its stdout lines as JSON, one at a time. */
function start(mnt, fixture, args, mode) {
  const child = spawn(mnt.exec[0], [...mnt.exec.slice(1), process.execPath, '--require', REGISTER, path.join(FIXTURES, fixture), ...args.map(String)], {
    env: { ...process.env, SIDESTEP: mode === 'kernel' ? '0' : '1', SIDESTEP_FABRIC: `container-shm-${process.pid}` },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    const m = JSON.parse(l);
    const w = waiters.shift();
    if (w) w(m);
    else lines.push(m);
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const next = (pred = () => true) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${fixture}: no report within 120 s`)), 120000);
      const take = (m) => (pred(m) ? (clearTimeout(timer), resolve(m)) : waiters.push(take));
      if (lines.length) take(lines.shift());
      else waiters.push(take);
    });
  return { child, next, exited };
}

async function once(mnt, mode) {
  const server = start(mnt, 'server.js', ['echo', 'quiet'], mode);
  const { port } = await server.next((m) => m.port);
  const clients = [];
  for (let i = 1; i <= PROCS; i++) clients.push(start(mnt, 'stamped-echo-client.js', [port, BYTES, i, 'wait'], mode));
  await Promise.all(clients.map((c) => c.next((m) => m.ready)));
  const t0 = process.hrtime.bigint();
  for (const c of clients) c.child.stdin.write('go\n');
  const reports = await Promise.all(clients.map((c) => c.next()));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  for (const r of reports) {
    if (r.error || !r.exact || r.recvBytes !== BYTES) throw new Error(`${mode}: echo not exact: ${JSON.stringify(r).slice(0, 300)}`);
    if (r.bypassed !== (mode === 'sidestep') || r.kernel !== (mode === 'kernel'))
      throw new Error(`${mode}: a connection took the other path (bypassed ${r.bypassed}, kernel ${r.kernel})`);
  }
  await Promise.all(clients.map((c) => c.exited));
  server.child.stdin.write('{"cmd":"close"}\n');
  await server.exited;
  return ms;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

(async () => {
  if (process.getuid() !== 0) {
    console.log('container-shm: needs root (a mount namespace with its own /dev/shm); skipped');
    return;
  }
  const cleanups = [];
  const mnt = sharedMountNs({ after: (fn) => cleanups.push(fn) }, SHM);
  try {
    const runs = { kernel: [], sidestep: [] };
    for (let rep = 1; rep <= REPS; rep++) {
      for (const mode of ['kernel', 'sidestep']) {
        const ms = await once(mnt, mode);
        runs[mode].push(ms);
        console.log(`rep ${rep}/${REPS} ${mode.padEnd(8)} ${ms.toFixed(0)} ms`);
      }
    }
    const ratios = runs.sidestep.map((ms, i) => ms / runs.kernel[i]);
    console.log(
      `${PROCS} processes x ${BYTES >> 20} MiB echo under a ${SHM} /dev/shm: wall ms, median of ${REPS}: kernel ${median(runs.kernel).toFixed(0)}, ` +
        `sidestep ${median(runs.sidestep).toFixed(0)}; sidestep / kernel per pair: median ${median(ratios).toFixed(2)}x ` +
        `(${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})`,
    );
  } finally {
    for (const fn of cleanups.reverse()) fn();
  }
})().catch((err) => {
  console.error(err.message);
  process.exitCode = 1;
});
