// The suite driver behind bench/run.js and bench/http.js: runs the selected
// cases, every variant interleaved rep after rep, then writes
// bench/results/<timestamp>/{results.json,report.md,report.html} and prints
// the Markdown table.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execute, summarise, killAll, BENCH } = require('./runner');
const { cases: makeCases } = require('./workloads');
const report = require('./report');
const profile = require('./profile');

const DEFAULTS = {
  quick: false,
  reps: 5,
  spinUs: 50,
  cpuProf: false,
  cpuProfAll: false,
  httpConnections: [1, 10, 50, 256],
  httpsConnections: [1, 50],
  httpPipelining: { connections: 10, depth: 10 },
  httpSeconds: 5,
  httpWarmup: 1,
  pingpongSizes: [64, 1024, 65536],
  pingpongMs: 2000,
  bulkBytes: 1 << 30,
  bulkStreams: [1, 16],
  bulkSink: true,
  churnMs: 3000,
  churnConcurrency: [8, 64],
  scaleConns: 10000,
  scaleIdleMs: 10000,
  scaleMs: 2000,
};
const QUICK = { reps: 1, httpSeconds: 1, httpWarmup: 0.3, pingpongMs: 300, bulkBytes: 64 << 20, churnMs: 500, scaleConns: 500, scaleIdleMs: 1000, scaleMs: 300 };

function primary(run, caseDef) {
  if (!run.ok) return `FAILED: ${run.error}`;
  const m = caseDef.metrics[0];
  return Object.entries(run.subs)
    .map(([sub, s]) => `${sub ? sub + ': ' : ''}${report.fmt(s.metrics[m.key])} ${m.label}`)
    .join(', ');
}

// Which sidestep the hooked processes loaded: the package root, the git
// commit of this checkout and how many files differ from it, the addon's date.
function buildInfo(root) {
  const { execFileSync } = require('node:child_process');
  const git = (...a) => {
    try {
      return execFileSync('git', ['-C', require('./runner').ROOT, ...a], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      return null;
    }
  };
  let addon = null;
  try {
    addon = fs.statSync(path.join(root, 'build', 'Release', 'sidestep.node')).mtime.toISOString();
  } catch {}
  const status = git('status', '--porcelain', '--', 'shim', 'native');
  return { root, gitHead: git('rev-parse', '--short', 'HEAD'), checkoutChangedFiles: status == null ? null : status.split('\n').filter(Boolean).length, addonBuilt: addon };
}

// A hooked process must be able to bypass at all, or every sidestep run
// would fail the same way: say so once, up front.
function preflight(root) {
  const { execFileSync } = require('node:child_process');
  const out = execFileSync(process.execPath, ['--require', path.join(root, 'dist', 'register.js'), '-e', `console.log(JSON.stringify(require(${JSON.stringify(path.join(root, 'dist', 'index.js'))}).stats()))`], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: `sidestep-bench-${process.pid}-preflight` },
  });
  fs.rmSync(`/dev/shm/sidestep-bench-${process.pid}-preflight`, { force: true });
  const s = JSON.parse(out.toString());
  if (!s.enabled) throw new Error(`sidestep is not enabled in a hooked process: ${s.disabledReason} (is the native addon built? npm install / npm run build)`);
}

async function runSuite(options, command) {
  const o = { ...DEFAULTS, ...(options.quick ? QUICK : {}), ...options };
  o.root = path.resolve(o.root || require('./runner').ROOT);
  preflight(o.root);
  if (o.baselineRoot) preflight(o.baselineRoot);
  const date = new Date().toISOString();
  o.outDir = o.outDir || path.join(BENCH, 'results', date.replace(/[:.]/g, '-'));
  fs.mkdirSync(o.outDir, { recursive: true });
  const cases = makeCases(o);
  const runs = [];
  const onSignal = (sig) => {
    process.stderr.write(`\nbench: ${sig}: stopping every process and removing fabrics\n`);
    killAll();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const loadStart = os.loadavg().map((x) => x.toFixed(2));
  const t0 = Date.now();
  try {
    for (const c of cases) {
      for (let rep = 0; rep < o.reps; rep++) {
        // Odd repetitions run the variants in reverse: on this VM whichever
        // runs later in a repetition tends to do better (a warmer machine),
        // and alternating gives each pair of variants both orders.
        const order = rep % 2 ? [...c.variants].reverse() : c.variants;
        for (const v of order) {
          const r = await execute(c, v, rep, o);
          runs.push(r);
          process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${c.id.padEnd(14)} ${v.padEnd(13)} rep ${rep + 1}/${o.reps}: ${primary(r, c)}${r.problems ? ' [' + r.problems.join('; ') + ']' : ''}\n`);
        }
      }
    }
  } finally {
    killAll();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  const results = {
    date,
    command,
    node: process.version,
    machine: { cpus: os.cpus().length, cpuModel: (os.cpus()[0] || {}).model, kernel: os.release(), loadStart, loadEnd: os.loadavg().map((x) => x.toFixed(2)) },
    options: { ...o, only: [...o.only], variants: o.variants ? [...o.variants] : undefined, outDir: path.relative(process.cwd(), o.outDir) },
    sidestep: buildInfo(o.root),
    baseline: o.baselineRoot ? buildInfo(o.baselineRoot) : undefined,
    seconds: (Date.now() - t0) / 1000,
    cases: cases.map((c) => ({ id: c.id, workload: c.workload, label: c.label, variants: c.variants, metrics: c.metrics })),
    rows: cases.flatMap((c) => summarise(c, runs.filter((r) => r.case === c.id))),
    runs,
  };
  const md = writeReports(results, o.outDir, runs);
  process.stdout.write(md + '\n');
  process.stdout.write(`\nresults: ${path.relative(process.cwd(), o.outDir)}/{results.json,report.md,report.html} (${results.seconds.toFixed(0)} s)\n`);
  return results;
}

/** Writes results.json, report.md and report.html (profiles summarised) into outDir. */
function writeReports(results, outDir, runs = results.runs) {
  let md = report.markdown(results);
  const profs = runs.flatMap((r) => (r.profiles || []).map((p) => ({ ...p, run: r })));
  if (profs.length) {
    results.profiles = [];
    const sections = ['### CPU profiles (--cpu-prof, first repetition)', ''];
    for (const p of profs) {
      const file = path.join(outDir, p.file);
      if (!fs.existsSync(file)) {
        sections.push(`- ${p.file}: not written (the process did not exit normally?)`, '');
        continue;
      }
      const s = profile.summarise(file, 12);
      s.file = p.file;
      results.profiles.push({ case: p.run.case, variant: p.run.variant, role: p.role, ...s });
      sections.push(profile.toMarkdown(s, `${p.run.case} ${p.run.variant} ${p.role}`), '');
    }
    md += '\n' + sections.join('\n');
  }
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 1) + '\n');
  fs.writeFileSync(path.join(outDir, 'report.md'), md + '\n');
  fs.writeFileSync(path.join(outDir, 'report.html'), report.html(results, md));
  return md;
}

module.exports = { runSuite, writeReports, DEFAULTS, QUICK };
