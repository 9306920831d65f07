#!/usr/bin/env node
// Node's own net, http and tls tests (../shared/node-tests: v20.11.1's
// test/parallel files, its runner and the baselines of what passes natively)
// under the hook, with every hooked process's counters collected through
// SIDESTEP_REPORT: how many pass of those that pass natively, how many
// connections went over the fabric, and why the others stayed on the kernel.
// Not part of `npm test` (the tree is not part of the project); it runs only
// where that tree exists.
//
//   npm run test:node-suite              # net + http, then tls
//   npm run test:node-suite -- tls       # one of: net-http, tls
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const TREE = process.env.NODE_TESTS || path.resolve(ROOT, '..', 'shared', 'node-tests');
const RUN = path.join(TREE, 'run.sh');
if (!fs.existsSync(RUN)) {
  process.stdout.write(`# skipped: no Node test tree at ${TREE} (set NODE_TESTS)\n`);
  process.exit(0);
}

const SUITES = {
  'net-http': { baseline: 'baseline-net-http.txt', args: [] },
  tls: { baseline: 'baseline-tls.txt', args: ['--pattern', 'test-tls-*.js'] },
};
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(SUITES);
let failed = 0;
for (const name of wanted) {
  const suite = SUITES[name];
  if (!suite) throw new Error(`unknown suite ${name} (${Object.keys(SUITES).join(', ')})`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sidestep-node-suite-${name}-`));
  const report = path.join(dir, 'report.jsonl');
  const out = path.join(dir, 'results.txt');
  const r = spawnSync('bash', [RUN, '--only-baseline', path.join(TREE, suite.baseline), ...suite.args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    env: { ...process.env, HOOK: path.join(ROOT, 'dist', 'register.js'), OUT: out, LOGDIR: path.join(dir, 'logs'), SIDESTEP_REPORT: report },
  });
  const summary = r.stdout.trim().split('\n').filter((l) => /^total:|passed,/.test(l));
  const failures = fs.existsSync(out) ? fs.readFileSync(out, 'utf8').split('\n').filter((l) => / (FAIL|TIMEOUT|MISSING)$/.test(l)) : [];
  // One line per hooked process (a test and any children it started).
  const lines = fs.existsSync(report) ? fs.readFileSync(report, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const sum = { processes: lines.length, bypassed: 0, accepted: 0, fallback: 0 };
  const reasons = {};
  for (const l of lines) {
    sum.bypassed += l.connectionsBypassed || 0;
    sum.accepted += l.connectionsAccepted || 0;
    sum.fallback += l.connectionsFallback || 0;
    for (const [k, v] of Object.entries(l.fallbackReasons || {})) {
      const kind = k.split(':')[0];
      reasons[kind] = (reasons[kind] || 0) + v;
    }
  }
  process.stdout.write(`== ${name}: ${summary.join('; ')}\n`);
  for (const f of failures) process.stdout.write(`   ${f}\n`);
  process.stdout.write(`   hooked processes ${sum.processes}; connection ends over the fabric ${sum.bypassed} (both ends of a connection count), of them accepted ${sum.accepted}; connects and listens left on the kernel ${sum.fallback}: ${JSON.stringify(reasons)}\n`);
  process.stdout.write(`   logs and report: ${dir}\n`);
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
