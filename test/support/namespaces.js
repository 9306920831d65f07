// Confinement for the fabric's reach, squatting, capacity and privacy tests:
// private network namespaces, private mount namespaces (each with its own
// /dev/shm), another uid, and non-Node helper processes. Everything created
// here is named sidestep-test-… and removed when the test ends (t.after).
// Reading the kernel's tables from inside a namespace fails closed, as
// harness.js does in our own: a table that can't be read throws.
'use strict';
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { REGISTER, FIXTURES } = require('./harness');

const NOBODY = 65534;
const SETPRIV = '/usr/bin/setpriv';
const PYTHON = '/usr/bin/python3';
const HARNESS = path.join(__dirname, 'harness.js');

/** Why this test can't run here (not root), or null. */
function needsRoot(what) {
  return process.getuid() === 0 ? null : `needs root: ${what}`;
}

/**
 * The wrapper that runs a command as uid/gid 65534 ({wrapper}), or why not
 * ({skip}): setpriv must exist and that uid must be able to read this
 * checkout (register, fixtures) and run node.
 */
let otherUidAnswer = null;
function otherUid() {
  return (otherUidAnswer ??= findOtherUid());
}

function findOtherUid() {
  const skip = needsRoot(`runs a process as uid ${NOBODY}`);
  if (skip) return { skip };
  if (!fs.existsSync(SETPRIV)) return { skip: `${SETPRIV} is not installed` };
  const wrapper = [SETPRIV, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
  const need = [REGISTER, path.join(FIXTURES, 'hooked.js'), path.join(FIXTURES, '..', 'fabric', 'fixtures', 'server.js'), HARNESS];
  const r = spawnSync(wrapper[0], [...wrapper.slice(1), process.execPath, '-e',
    `for (const f of ${JSON.stringify(need)}) require('fs').accessSync(f, require('fs').constants.R_OK)`], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `uid ${NOBODY} cannot read this checkout: ${(r.stderr.split('\n').find((l) => /Error/.test(l)) || r.status)}` };
  return { wrapper };
}

/** python3 for helpers, runnable by any uid (the pyenv shim on PATH is root's only), or null. */
function python() {
  return fs.existsSync(PYTHON) ? PYTHON : null;
}

/**
 * Start any command (a python helper, a C launcher…) with the harness's
 * protocol: JSON lines on stdout for h.next(), stdin for h.send(), SIGKILLed
 * by h.cleanup(). The command must exec its way to the real process (setpriv,
 * unshare, ip netns exec all do), so that the pid we kill is the one running,
 * and must bound its own life (the python helpers take --deadline and exit
 * when their stdin closes).
 */
function startCommand(h, argv, { env = {} } = {}) {
  const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const proc = { child, messages: [], waiters: [], stderr: '', exited: null };
  child.stderr.on('data', (d) => (proc.stderr += d));
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      msg = { unparsed: line };
    }
    const w = proc.waiters.shift();
    if (w) w.resolve(msg);
    else proc.messages.push(msg);
  });
  proc.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      proc.exited = { code, signal };
      for (const w of proc.waiters.splice(0)) w.reject(new Error(`${argv.join(' ')} exited (${code ?? signal}); stderr:\n${proc.stderr}`));
      resolve(proc.exited);
    });
  });
  h.children.add(proc);
  return proc;
}

/** Send a raw line (not JSON) to a helper's stdin. */
function sendLine(proc, line) {
  proc.child.stdin.write(line + '\n');
}

let counter = 0;
const uniqueName = (kind) => `sidestep-test-${kind}-${process.pid}-${++counter}`;

/**
 * A private network namespace with lo up, deleted when the test ends
 * (after killing whatever we left running in it). `exec` is the wrapper
 * that runs a command inside it.
 */
function netns(t) {
  const name = uniqueName('ns');
  execFileSync('ip', ['netns', 'add', name]);
  t.after(() => {
    // Anything still inside is ours: this test made the namespace.
    for (const pid of execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {}
    }
    execFileSync('ip', ['netns', 'del', name]);
  });
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, exec: ['ip', 'netns', 'exec', name] };
}

/**
 * The kernel's TCP table and `fabric`'s bound abstract names as seen inside
 * namespace `ns` ({tcp, names}), read by harness.js's own readers running
 * there (so the same parsing and the same fail-closed rules apply).
 */
function tablesIn(ns, fabric) {
  const script = `const h = require(${JSON.stringify(HARNESS)});
    console.log(JSON.stringify({ tcp: h.kernelSockets(), names: h.boundNames(${JSON.stringify(fabric)}) }));`;
  const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { encoding: 'utf8', timeout: 10000 });
  if (r.status !== 0) throw new Error(`cannot read the tables inside ${ns.name}: ${r.stderr || r.error}`);
  return JSON.parse(r.stdout);
}

/** Kernel sockets (not listening) with `port` at either end. */
function kernelConnectionsOn(tcp, port) {
  return tcp.filter((s) => s.state !== 'LISTEN' && (s.localPort === port || s.remotePort === port));
}

/**
 * A wrapper that runs its command in a new mount namespace of its own with
 * a fresh, private tmpfs on /dev/shm (`size` e.g. '64m'): nothing another
 * process puts in its /dev/shm is visible to it, and nothing it puts there
 * to anyone else. The shell execs the command (signals reach it).
 */
function privateShm(size = '64m') {
  return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
    `mount -t tmpfs -o size=${size},mode=1777 sidestep-test-shm /dev/shm && exec "$@"`, 'sh'];
}

/**
 * A persistent mount namespace (bound to a file under a private temp dir)
 * whose /dev/shm is a tmpfs of `size`, for many processes to share; `exec`
 * enters it. Unmounted and removed when the test ends.
 */
function sharedMountNs(t, size = '64m') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-test-mnt-'));
  const file = path.join(dir, 'mnt');
  const mounted = [];
  t.after(() => {
    for (const m of mounted.reverse()) spawnSync('umount', [m]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // A namespace file can only be bound on a mount that doesn't propagate.
  execFileSync('mount', ['--bind', dir, dir]);
  mounted.push(dir);
  execFileSync('mount', ['--make-private', dir]);
  fs.writeFileSync(file, '');
  execFileSync('unshare', [`--mount=${file}`, '--propagation', 'private', 'mount', '-t', 'tmpfs', '-o', `size=${size},mode=1777`, 'sidestep-test-shm', '/dev/shm']);
  mounted.push(file);
  const exec = ['nsenter', `--mount=${file}`, '--'];
  return {
    exec,
    /** Run a short command inside; its stdout (throws on failure). */
    run: (argv) => execFileSync(exec[0], [...exec.slice(1), ...argv], { encoding: 'utf8', timeout: 10000 }),
  };
}

/** The kernel's processes whose environment names `fabric` (ours, by construction). */
function processesOf(fabric) {
  const found = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let env;
    try {
      env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone meanwhile (or a kernel thread)
    }
    if (env.split('\0').includes(`SIDESTEP_FABRIC=${fabric}`)) found.push(Number(pid));
  }
  return found;
}

module.exports = {
  NOBODY, needsRoot, otherUid, python, startCommand, sendLine, netns, tablesIn,
  kernelConnectionsOn, privateShm, sharedMountNs, processesOf,
};
