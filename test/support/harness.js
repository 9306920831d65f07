// Shared test support: start hooked (or plain) Node processes on a private
// fabric, read what they report, prove which path a connection took, and
// clean up every process and /dev/shm file a test created.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..', '..');
const REGISTER = path.join(ROOT, 'dist', 'register.js');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');

let counter = 0;

// Node can deadlock on its way out (nodejs/node#54918, open): the main thread,
// past every exit handler, joins the platform's worker threads while one of
// them, compiling in the background (Maglev, TurboFan), waits for a
// collection only the main thread could make. Seen here in kernel-mode
// fixtures under Node 24 and 26 (about one exit in ten of a 512 MiB
// receiver under 26.0.0: no report, every thread in futex_wait, the main
// thread in NodePlatform::Shutdown). Fixtures compile on the main thread
// instead; what they test doesn't depend on where V8 compiles.
const NO_CONCURRENT_JIT = ['--no-maglev', '--no-concurrent-recompilation'];

/** A fabric name no other test (or user) shares. */
function uniqueFabric() {
  return `sidestep-test-${process.pid}-${Date.now().toString(36)}-${++counter}`;
}

class Harness {
  constructor(t, { fabric = uniqueFabric() } = {}) {
    this.fabric = fabric;
    this.children = new Set();
    this.t = t;
    this.reports = null; // a directory for hang reports, made on first use
    t.after(() => this.cleanup());
  }

  /**
   * Start `node [--require register] fixture args...`. Each line the child
   * prints to stdout must be JSON; they are queued for next(). Options:
   * `wrapper` (a command to run node under, e.g. setpriv) and `execArgv`
   * (node flags) are empty by default.
   */
  start(fixture, args = [], { hooked = true, env = {}, register = REGISTER, wrapper = [], execArgv = [] } = {}) {
    // A child that won't exit is asked for Node's diagnostic report (its
    // libuv handles and JS stack) before it is killed: see exit().
    this.reports ??= fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-reports-'));
    const report = ['--report-on-signal', '--report-signal=SIGUSR2', '--report-compact', `--report-directory=${this.reports}`];
    const nodeArgs = [...report, ...NO_CONCURRENT_JIT, ...execArgv, ...(hooked ? ['--require', register] : [])];
    const argv = [process.execPath, ...nodeArgs, path.join(FIXTURES, fixture), ...args.map(String)];
    const command = [...wrapper, ...argv];
    const child = spawn(command[0], command.slice(1), {
      env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: this.fabric, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const proc = { child, fixture: `${fixture}${env.SIDESTEP !== undefined ? ` (SIDESTEP=${env.SIDESTEP})` : ''}`, wrapped: wrapper.length > 0, messages: [], waiters: [], stderr: '', exited: null };
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
        for (const w of proc.waiters.splice(0)) w.reject(new Error(`${fixture} exited (${code ?? signal}) before reporting; stderr:\n${proc.stderr}`));
        resolve(proc.exited);
      });
    });
    this.children.add(proc);
    return proc;
  }

  /** The next JSON line from a child, or an error after `ms`. */
  next(proc, ms = 20000) {
    if (proc.messages.length) return Promise.resolve(proc.messages.shift());
    if (proc.exited) return Promise.reject(new Error(`process exited (${JSON.stringify(proc.exited)}); stderr:\n${proc.stderr}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no report within ${ms} ms; stderr:\n${proc.stderr}`)), ms);
      proc.waiters.push({
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  send(proc, msg) {
    proc.child.stdin.write(JSON.stringify(msg) + '\n');
  }

  /**
   * Wait for a clean exit, killing the child if it takes longer than `ms`.
   * Before it is killed, a child that runs node directly is asked for its
   * diagnostic report, whose live handles (what kept it from exiting) and
   * JS stack go to the test's diagnostics.
   */
  async exit(proc, ms = 10000) {
    let timer;
    const overdue = new Promise((resolve) => (timer = setTimeout(resolve, ms, 'overdue')));
    if ((await Promise.race([proc.exitPromise, overdue])) === 'overdue') {
      if (!proc.wrapped) this.diagnoseHang(proc);
      await Promise.race([proc.exitPromise, new Promise((resolve) => setTimeout(resolve, 2000))]);
      proc.child.kill('SIGKILL');
    }
    clearTimeout(timer);
    return proc.exitPromise;
  }

  /** Ask a child for Node's report and, once written, put its gist in the test's diagnostics. */
  diagnoseHang(proc) {
    const pid = proc.child.pid;
    proc.child.kill('SIGUSR2');
    const started = Date.now();
    const poll = () => {
      let file;
      try {
        file = fs.readdirSync(this.reports).find((f) => f.includes(`.${pid}.`) && f.endsWith('.json'));
      } catch {
        return; // the test ended and cleaned up meanwhile
      }
      if (!file) {
        if (Date.now() - started < 1800) setTimeout(poll, 50);
        else this.t.diagnostic(`${proc.fixture} (pid ${pid}) did not exit, and wrote no report; its threads: ${threadStates(pid)}`);
        return;
      }
      setTimeout(() => {
        try {
          const r = JSON.parse(fs.readFileSync(path.join(this.reports, file), 'utf8'));
          const handles = (r.libuv ?? []).filter((h) => h.is_active).map((h) => `${h.type}${h.is_referenced ? '(ref)' : ''}`);
          const stack = (r.javascriptStack?.stack ?? []).slice(0, 6).join(' | ');
          this.t.diagnostic(`${proc.fixture} (pid ${pid}) did not exit: active handles ${handles.join(', ')}; ` +
            `stack: ${r.javascriptStack?.message ?? ''} ${stack}; stderr: ${proc.stderr.slice(-500)}`);
        } catch (err) {
          this.t.diagnostic(`${proc.fixture} (pid ${pid}) did not exit; its report is unreadable: ${err.message}`);
        }
      }, 100);
    };
    poll();
  }

  /** The next JSON line from a child that satisfies `pred` (earlier lines are dropped). */
  async nextMatching(proc, pred, ms = 20000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching report within ${ms} ms; stderr:\n${proc.stderr}`);
      const msg = await this.next(proc, left);
      if (pred(msg)) return msg;
    }
  }

  /**
   * Start `wrapper... node [--require register] fixture args...` (e.g. under
   * setpriv). Like start(); the wrapper must exec node or pass signals on.
   */
  startWrapped(wrapper, fixture, args = [], opts = {}) {
    return this.start(fixture, args, { ...opts, wrapper });
  }

  /** Kill this (non-fixture) child process too when the test ends. */
  track(child) {
    const proc = { child, exited: child.exitCode !== null ? { code: child.exitCode } : null };
    proc.exitPromise = new Promise((resolve) => {
      if (proc.exited) return resolve(proc.exited);
      child.on('exit', (code, signal) => resolve((proc.exited = { code, signal })));
    });
    this.children.add(proc);
    return proc;
  }

  /**
   * What this test's processes left behind: rendezvous and inspection names
   * of its fabric still bound in this network namespace, and anything of its
   * name in /dev/shm. Fails closed: a table it can't read throws.
   */
  leftovers() {
    return [...boundNames(this.fabric), ...fs.readdirSync('/dev/shm').filter((f) => f.includes(this.fabric)).map((f) => `/dev/shm/${f}`)];
  }

  async cleanup() {
    for (const proc of this.children) {
      if (!proc.exited) {
        proc.child.kill('SIGKILL');
        await proc.exitPromise;
      }
    }
    if (this.reports) fs.rmSync(this.reports, { recursive: true, force: true });
  }
}

/** What each of a process's threads is doing: name, state, kernel wait channel, syscall. */
function threadStates(pid) {
  const read = (f) => {
    try {
      return fs.readFileSync(f, 'utf8').trim();
    } catch {
      return '?';
    }
  };
  let tids;
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    return `unreadable (${err.code})`;
  }
  return tids
    .map((tid) => {
      const dir = `/proc/${pid}/task/${tid}`;
      const state = read(`${dir}/stat`).replace(/^.*\) /, '').split(' ')[0];
      return `${read(`${dir}/comm`)} ${state} ${read(`${dir}/wchan`)} syscall ${read(`${dir}/syscall`).split(' ')[0]}`;
    })
    .join('; ');
}

// ---- the kernel's TCP table ----

const TCP_STATES = { '01': 'ESTABLISHED', '06': 'TIME_WAIT', '0A': 'LISTEN' };

/**
 * Every kernel TCP socket as {localPort, remotePort, state}. Fails closed: a
 * table it can't read throws (a test must not count "no kernel connection"
 * from a file it never saw). /proc/net/tcp6 may be absent only where the
 * kernel has no IPv6, and then no connection can be IPv6.
 */
function kernelSockets() {
  const out = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if (file.endsWith('6') && err.code === 'ENOENT' && !fs.existsSync('/proc/sys/net/ipv6')) continue;
      throw new Error(`cannot read the kernel's TCP table ${file}: ${err.message}`);
    }
    const lines = text.split('\n');
    if (!/^\s*sl\s+local_address\s+rem(ote)?_address\s+st\b/.test(lines[0])) throw new Error(`${file} has an unexpected header: ${lines[0]}`);
    for (const line of lines.slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      const [, la, ra, st] = f;
      const [, lp] = la.split(':');
      const [, rp] = ra.split(':');
      out.push({ localPort: parseInt(lp, 16), remotePort: parseInt(rp, 16), state: TCP_STATES[st] ?? st });
    }
  }
  return out;
}

/**
 * Whether the kernel holds a connection between these two ports (either
 * side), in any state but LISTEN: a connection that already closed its end
 * (CLOSE_WAIT, FIN_WAIT, TIME_WAIT) was still the kernel's.
 */
function kernelHasConnection(portA, portB) {
  return kernelSockets().some(
    (s) => s.state !== 'LISTEN' &&
      ((s.localPort === portA && s.remotePort === portB) || (s.localPort === portB && s.remotePort === portA)),
  );
}

/** Abstract unix names bound under `fabric` in this network namespace (from /proc/net/unix). */
function boundNames(fabric) {
  const lines = fs.readFileSync('/proc/net/unix', 'utf8').split('\n');
  if (!/^Num\s+RefCount\s+Protocol\s+Flags\s+Type\s+St\s+Inode\s+Path/.test(lines[0])) throw new Error(`/proc/net/unix has an unexpected header: ${lines[0]}`);
  return lines.slice(1).map((l) => l.trim().split(/\s+/)[7]).filter((p) => p && p.startsWith(`@${fabric}/`));
}

/** User + system CPU time of a process so far, in clock ticks (/proc/<pid>/stat). */
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
}

module.exports = {
  boundNames, cpuTicks, Harness, uniqueFabric, kernelSockets, kernelHasConnection, ROOT, REGISTER, FIXTURES };
