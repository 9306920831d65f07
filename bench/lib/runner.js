// The common runner: starts the processes of one benchmark run (kernel, or
// sidestep with both sides hooked on a fabric of their own, or plain node over
// a unix socket), samples CPU time and memory from /proc when a process asks
// (mark), checks that sidestep runs really were bypassed, interleaves the
// variants of a case rep after rep (A B C, C B A, A B C ...), and summarises: medians,
// per-pair ratios against the kernel with their min-max.
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..', '..');
const BENCH = path.resolve(__dirname, '..');

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch {}

// ---- /proc readers --------------------------------------------------------

/** user and system CPU seconds of a process (/proc/<pid>/stat utime, stime). */
function procCpu(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state); utime is field 14, stime 15.
    return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK };
  } catch {
    return null;
  }
}

/** resident memory of a process in KiB (VmRSS, its parts, and its proportional share, PSS). */
function procMem(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (k) => {
      const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s);
      return m ? Number(m[1]) : null;
    };
    // PSS: shared pages (a pair's memory, mapped by both peers) counted once
    // across the processes that map them, as the machine holds them.
    let pssKiB = null;
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      pssKiB = m ? Number(m[1]) : null;
    } catch {}
    return { rssKiB: kib('VmRSS'), anonKiB: kib('RssAnon'), shmemKiB: kib('RssShmem'), fileKiB: kib('RssFile'), pssKiB };
  } catch {
    return null;
  }
}

/** the whole machine's busy and total CPU seconds (/proc/stat). */
function machineCpu() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = v;
  const busy = user + nice + system + irq + softirq + (steal || 0);
  return { busy: busy / CLK_TCK, total: (busy + idle + iowait) / CLK_TCK };
}

/** kernel memory that sockets use, machine-wide: slab and TCP buffer pages. */
function kernelMem() {
  const out = {};
  try {
    const m = /^Slab:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    out.slabKiB = m ? Number(m[1]) : null;
  } catch {}
  try {
    const t = /^TCP: inuse (\d+) orphan (\d+) tw (\d+) alloc (\d+) mem (\d+)/m.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'));
    if (t) Object.assign(out, { tcpInuse: +t[1], tcpTw: +t[3], tcpAlloc: +t[4], tcpMemPages: +t[5] });
  } catch {}
  return out;
}

// ---- variants ---------------------------------------------------------------

const VARIANTS = {
  kernel: { name: 'kernel', hooked: false, label: 'kernel TCP' },
  sidestep: { name: 'sidestep', hooked: true, label: 'sidestep' },
  // SIDESTEP_SPIN_US is passed whether or not this build implements it; the
  // label says which value was asked for, the stats (spinsWon/Lost) what it did.
  'sidestep-spin': { name: 'sidestep-spin', hooked: true, label: 'sidestep + SIDESTEP_SPIN_US', spin: true },
  unix: { name: 'unix', hooked: false, label: 'unix socket (no hook)', unix: true },
  // Another build of sidestep (--baseline-root): this build against an
  // earlier one in the same interleaved run.
  baseline: { name: 'baseline', hooked: true, label: 'sidestep (baseline build)', baseline: true },
};

// ---- processes ----------------------------------------------------------------

const live = new Set(); // every child we started and that has not exited
const fabrics = new Set(); // every fabric name we handed out and not yet removed
let fabricSeq = 0;

class Proc {
  constructor(run, role, script, args, { hooked, env, nodeArgs = [] }) {
    this.run = run;
    this.role = role;
    this.hooked = hooked;
    this.queue = [];
    this.waiters = [];
    this.stderr = '';
    this.exit = null;
    const root = run.variant.baseline ? run.opts.baselineRoot : run.opts.root || ROOT;
    const register = path.join(root, 'dist', 'register.js');
    const node = [...(hooked ? ['--require', register] : []), ...nodeArgs, path.resolve(BENCH, script), ...args.map(String)];
    // Raise the fd limit to the hard limit (kernel-mode scale runs need one fd
    // per connection) and exec node, so the pid we read /proc of is node's.
    this.child = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', process.execPath, ...node], {
      env: { ...process.env, NODE_OPTIONS: '', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    live.add(this);
    this.child.stdin.on('error', () => {});
    this.child.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-8192);
    });
    readline.createInterface({ input: this.child.stdout }).on('line', (l) => this.onLine(l));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        live.delete(this);
        this.exit = { code, signal };
        const err = new Error(`${role} exited (${signal || code})${this.stderr ? ': ' + this.stderr.trim().split('\n').slice(-5).join(' | ') : ''}`);
        for (const w of this.waiters.splice(0)) w.reject(err);
        resolve(this.exit);
      }),
    );
  }
  onLine(line) {
    let m;
    try {
      m = JSON.parse(line);
    } catch {
      return; // not ours (a library printing): ignore
    }
    if (m.mark) {
      this.run.sample(m.mark);
      this.write('ack');
      return;
    }
    if (m.error) {
      const err = new Error(`${this.role}: ${m.error}`);
      for (const w of this.waiters.splice(0)) w.reject(err);
      this.failure = err;
      return;
    }
    const i = this.waiters.findIndex((w) => w.pred(m));
    if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    else this.queue.push(m);
  }
  write(cmd) {
    if (!this.exit) this.child.stdin.write(cmd + '\n');
  }
  /** the next message that satisfies pred. */
  next(pred = () => true) {
    if (this.failure) return Promise.reject(this.failure);
    const i = this.queue.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    if (this.exit) return Promise.reject(new Error(`${this.role} has exited (${this.exit.signal || this.exit.code})`));
    return new Promise((resolve, reject) => this.waiters.push({ pred, resolve, reject }));
  }
  kill() {
    this.killed = true;
    if (!this.exit) this.child.kill('SIGKILL');
  }
}

function timeout(ms, what) {
  let t;
  const p = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${(ms / 1000).toFixed(0)} s: ${what}`)), ms);
  });
  p.cancel = () => clearTimeout(t);
  return p;
}

async function race(promise, ms, what) {
  const t = timeout(ms, what);
  try {
    return await Promise.race([promise, t]);
  } finally {
    t.cancel();
  }
}

/** One benchmark run: the processes of one variant, their marks, their end. */
class Run {
  constructor(variant, opts, tag) {
    this.variant = variant;
    this.opts = opts;
    this.tag = tag;
    this.procs = [];
    this.marks = {};
    this.problems = [];
    this.env = {};
    if (variant.hooked) {
      this.fabric = `sidestep-bench-${process.pid}-${++fabricSeq}`;
      fabrics.add(this.fabric);
      this.env.SIDESTEP_FABRIC = this.fabric;
      if (variant.spin) this.env.SIDESTEP_SPIN_US = String(opts.spinUs);
    }
    if (variant.unix) {
      this.unixPath = path.join(os.tmpdir(), `sidestep-bench-${process.pid}-${++fabricSeq}.sock`);
    }
  }
  /** where a client connects: argv for the scripts (--port N or --unix path). */
  targetArgs(port) {
    return this.unixPath ? ['--unix', this.unixPath] : ['--port', port];
  }
  listenArgs() {
    return this.unixPath ? ['--unix', this.unixPath] : [];
  }
  spawn(role, script, args = [], env = {}) {
    const nodeArgs = [];
    if (this.opts.cpuProf && this.tag.rep === 0 && (this.variant.hooked || this.opts.cpuProfAll)) {
      const dir = path.join(this.opts.outDir, 'profiles');
      fs.mkdirSync(dir, { recursive: true });
      const name = `${this.tag.caseId}-${this.variant.name}-${role}.cpuprofile`;
      nodeArgs.push('--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', name);
      (this.profiles ||= []).push({ role, file: path.join(dir, name) });
    }
    const p = new Proc(this, role, script, args, { hooked: this.variant.hooked, env: { ...this.env, ...env }, nodeArgs });
    this.procs.push(p);
    return p;
  }
  sample(name) {
    const procs = {};
    for (const p of this.procs) if (!p.exit) procs[p.role] = { cpu: procCpu(p.pid), mem: procMem(p.pid) };
    this.marks[name] = { t: Number(process.hrtime.bigint()) / 1e9, procs, machine: machineCpu(), kernel: kernelMem() };
  }
  /** CPU seconds between two marks: per role (user, sys), both processes, the machine. */
  cpuBetween(a, b) {
    const A = this.marks[a];
    const B = this.marks[b];
    if (!A || !B) return null;
    const out = { wall: B.t - A.t, roles: {}, procs: 0, machine: B.machine.busy - A.machine.busy };
    for (const role of Object.keys(B.procs)) {
      const x = A.procs[role] && A.procs[role].cpu;
      const y = B.procs[role].cpu;
      if (!x || !y) continue;
      out.roles[role] = { user: y.user - x.user, sys: y.sys - x.sys };
      out.procs += y.user - x.user + (y.sys - x.sys);
    }
    return out;
  }
  /** Ask every live process for its counters, then to exit; kill what won't. */
  async close() {
    const alive = this.procs.filter((p) => !p.exit);
    await Promise.all(
      alive.map(async (p) => {
        if (p.hooked) {
          try {
            p.write('stats');
            p.finalStats = (await race(p.next((m) => 'stats' in m), 5000, `${p.role} stats`)).stats;
          } catch (e) {
            this.problems.push(`${p.role}: no stats at the end (${e.message})`);
          }
        }
        p.write('exit');
        try {
          await race(p.exited, 5000, `${p.role} exit`);
        } catch {
          this.problems.push(`${p.role} (pid ${p.pid}) did not exit when asked: killed`);
          p.kill();
          await p.exited;
        }
      }),
    );
    for (const p of this.procs) {
      if (p.exit && p.exit.code !== 0 && !p.failure && !p.killed) this.problems.push(`${p.role} exited with ${p.exit.signal || p.exit.code}`);
    }
    if (this.fabric) {
      const file = `/dev/shm/${this.fabric}`;
      if (fs.existsSync(file)) {
        this.problems.push(`fabric file ${file} left behind after every process exited: removed`);
        fs.rmSync(file, { force: true });
      }
      fabrics.delete(this.fabric);
    }
    if (this.unixPath) fs.rmSync(this.unixPath, { force: true });
  }
  /**
   * Proof of bypass: in a hooked run, every process is enabled, has no
   * fallback, and carried at least `connections` connections on the fabric.
   */
  checkBypass(clientMsg) {
    if (!this.variant.hooked) return;
    const want = clientMsg.connections || 1;
    const check = (role, s) => {
      if (!s) throw new Error(`${role}: no sidestep stats (not hooked?)`);
      if (!s.enabled) throw new Error(`${role}: sidestep not enabled: ${s.disabledReason}`);
      if (s.connectionsFallback !== 0) throw new Error(`${role}: ${s.connectionsFallback} kernel fallbacks ${JSON.stringify(s.fallbackReasons)}`);
      if (s.connectionsBypassed < want) throw new Error(`${role}: only ${s.connectionsBypassed} of ${want} connections bypassed`);
    };
    check('client', clientMsg.stats);
    if (clientMsg.bypassed === false) throw new Error('client: isBypassed(socket) is false');
    for (const p of this.procs) if (p.role !== 'client') check(p.role, p.finalStats);
  }
}

/**
 * Runs one variant of a case: fn(run) starts the processes and returns
 * {client: the client's result message, subs: {sub: {metrics, ops, phase}}}.
 * Never throws: a failure (error, integrity, not bypassed, stall) is a result.
 */
async function execute(caseDef, variantName, rep, opts) {
  const variant = VARIANTS[variantName];
  const run = new Run(variant, opts, { caseId: caseDef.id, rep });
  const out = { case: caseDef.id, variant: variantName, rep, ok: false };
  if (run.fabric) out.fabric = run.fabric;
  if (variant.spin) out.spinUs = opts.spinUs;
  const started = Date.now();
  try {
    const r = await race(caseDef.run(run, opts), caseDef.timeoutMs(opts), `${caseDef.id} ${variantName}`);
    await run.close();
    run.checkBypass(r.client);
    out.subs = {};
    for (const [sub, s] of Object.entries(r.subs)) {
      const cpu = s.phase ? run.cpuBetween(s.phase[0], s.phase[1]) : null;
      const metrics = { ...s.metrics };
      if (cpu && s.ops) {
        metrics.cpuUsPerOp = (cpu.procs / s.ops) * 1e6;
        metrics.machineUsPerOp = (cpu.machine / s.ops) * 1e6;
      }
      out.subs[sub] = { metrics, ops: s.ops, cpu };
    }
    out.clientStats = r.client.stats || null;
    out.serverStats = (run.procs.find((p) => p.role === 'server') || {}).finalStats || null;
    out.ok = true;
  } catch (e) {
    out.error = e.message;
    for (const p of run.procs) p.kill();
    await Promise.all(run.procs.map((p) => p.exited));
    await run.close().catch(() => {});
    const tails = run.procs.filter((p) => p.stderr.trim()).map((p) => `${p.role} stderr: ${p.stderr.trim().split('\n').slice(-8).join(' | ')}`);
    if (tails.length) out.stderr = tails;
  }
  if (run.problems.length) out.problems = run.problems;
  if (run.profiles) out.profiles = run.profiles.map((p) => ({ ...p, file: path.relative(opts.outDir, p.file) }));
  out.marks = run.marks;
  out.seconds = (Date.now() - started) / 1000;
  return out;
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Medians per variant and per-pair ratios against the kernel, per sub-case and metric. */
function summarise(caseDef, runs) {
  const variants = caseDef.variants;
  const subs = [...new Set(runs.filter((r) => r.ok).flatMap((r) => Object.keys(r.subs)))];
  const rows = [];
  for (const sub of subs) {
    for (const m of caseDef.metrics) {
      const row = { case: caseDef.id, label: caseDef.label + (sub ? ` ${sub}` : ''), sub, metric: m.key, metricLabel: m.label, better: m.better, chart: !!m.chart, variants: {} };
      for (const v of variants) {
        const vals = runs.filter((r) => r.ok && r.variant === v && r.subs[sub]).map((r) => r.subs[sub].metrics[m.key]).filter((x) => typeof x === 'number' && Number.isFinite(x));
        const cell = { median: median(vals), min: vals.length ? Math.min(...vals) : null, max: vals.length ? Math.max(...vals) : null, n: vals.length };
        cell.failed = runs.filter((r) => r.variant === v && !r.ok).length;
        if (v !== 'kernel') {
          const ratios = [];
          for (const r of runs.filter((x) => x.ok && x.variant === v && x.subs[sub])) {
            const k = runs.find((x) => x.ok && x.variant === 'kernel' && x.rep === r.rep && x.subs[sub]);
            const a = r.subs[sub].metrics[m.key];
            const b = k && k.subs[sub].metrics[m.key];
            if (typeof a === 'number' && typeof b === 'number' && b > 0) ratios.push(a / b);
          }
          if (ratios.length) cell.ratio = { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), n: ratios.length };
        }
        row.variants[v] = cell;
      }
      if (Object.values(row.variants).some((c) => c.n)) rows.push(row);
    }
  }
  return rows;
}

function killAll() {
  for (const p of live) p.kill();
  for (const f of fabrics) fs.rmSync(`/dev/shm/${f}`, { force: true });
}

module.exports = { VARIANTS, Run, execute, summarise, median, killAll, procCpu, procMem, machineCpu, kernelMem, race, ROOT, BENCH, live, fabrics };
