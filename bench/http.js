#!/usr/bin/env node
// Kernel sockets vs sidestep on HTTP: an http.createServer hello world driven
// by autocannon in a separate process. Runs are interleaved (kernel,
// sidestep, kernel, sidestep, ...) so that machine noise hits both alike; the
// report gives medians and the per-pair ratio. In sidestep runs both the
// server and the autocannon process are hooked, and a run counts only if its
// connections really were bypassed (the counters say so).
//
// The HTTP-only entry of the suite (bench/run.js --only http runs every
// connection count and the pipelined case); results go to
// bench/results/<timestamp>/ like the suite's.
//
//   npm run bench                  # 50 connections, 5 pairs of 5 s runs
//   npm run bench -- --quick       # a smoke run: 1 pair of 2 s runs
//   npm run bench -- --connections 10 --duration 10 --pairs 7
//   npm run bench -- --pipelining 10 --cpu-prof
//   npm run bench -- --root /tmp/snapshot   # hook with another sidestep build
'use strict';
const { runSuite } = require('./lib/main');

function parseArgs(argv) {
  const opts = { connections: 50, duration: 5, pairs: 5, pipelining: 1, quick: false, cpuProf: false };
  const set = new Set();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--connections') (opts.connections = val()), set.add('connections');
    else if (a === '--duration') (opts.duration = val()), set.add('duration');
    else if (a === '--pairs') (opts.pairs = val()), set.add('pairs');
    else if (a === '--pipelining') opts.pipelining = val();
    else if (a === '--cpu-prof') opts.cpuProf = true;
    else if (a === '--root') opts.root = require('node:path').resolve(argv[++i] || '.');
    else throw new Error(`unknown option ${a}`);
  }
  if (opts.quick) {
    if (!set.has('duration')) opts.duration = 2;
    if (!set.has('pairs')) opts.pairs = 1;
  }
  return opts;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const single = o.pipelining > 1 ? [] : [o.connections];
  const results = await runSuite(
    {
      quick: o.quick,
      only: new Set(['http']),
      reps: o.pairs,
      httpSeconds: o.duration,
      httpConnections: single,
      httpPipelining: o.pipelining > 1 ? { connections: o.connections, depth: o.pipelining } : null,
      cpuProf: o.cpuProf,
      root: o.root,
    },
    `node bench/http.js ${process.argv.slice(2).join(' ')}`.trim(),
  );
  process.exit(results.runs.every((r) => r.ok) ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(1);
});
