#!/usr/bin/env node
// The benchmark suite: kernel TCP vs sidestep (and a unix socket as the
// reference), every workload in separate client and server processes, runs
// interleaved, medians and per-pair ratios, integrity and bypass checked.
//
//   node bench/run.js                       # everything, 5 repetitions
//   node bench/run.js --quick               # every workload briefly (< 2 min)
//   node bench/run.js --only pingpong,bulk --reps 7
//   node bench/run.js --only http --http-connections 50 --no-pipelined
//   node bench/run.js --only pingpong --cpu-prof --reps 1
//
// Options (each also overrides --quick's value):
//   --only LIST              http,https,pingpong,bulk,churn,scale (default: all)
//   --variants LIST          keep only these besides kernel: sidestep,sidestep-spin,unix
//   --reps N                 interleaved repetitions per case (5; quick 1)
//   --spin-us N              SIDESTEP_SPIN_US of the spin variant (50, the latency profile's)
//   --cpu-prof               profile the sidestep processes' first repetition
//   --cpu-prof-all           ... and the kernel ones too
//   --http-connections LIST  (1,10,50,256)   --http-seconds N (5; quick 1)
//   --https-connections LIST (1,50): https.createServer, keep-alive
//   --http-warmup S          unmeasured autocannon run first (1; quick 0.3)
//   --pipelined C,D          the pipelined case: C connections, depth D (10,10)
//   --no-pipelined           skip it
//   --pingpong-sizes LIST    (64,1024,65536) --pingpong-ms N per size (2000; quick 300)
//   --bulk-bytes N[K|M|G]    per case, split over the streams (1G; quick 64M)
//   --bulk-streams LIST      (1,16)
//   --no-bulk-sink           skip the one-stream counting-sink case
//   --churn-concurrency LIST (8,64)          --churn-ms N (3000; quick 500)
//   --scale-conns N (10000; quick 500)  --scale-idle-ms N (10000; quick 1000)  --scale-ms N
//   --out DIR                results directory (bench/results/<timestamp>)
//   --root DIR               the sidestep package to hook with (its dist/ and
//                            build/): default this checkout; a copy keeps a run
//                            steady while the checkout is rebuilt
//   --baseline-root DIR      also run every case hooked with this other build
//                            (variant "baseline"), interleaved with the rest:
//                            this build against an earlier one
'use strict';
const path = require('node:path');
const { runSuite } = require('./lib/main');
const { WORKLOADS } = require('./lib/workloads');

function parse(argv) {
  const o = { only: new Set(WORKLOADS) };
  const list = (s) => String(s).split(',').map((x) => x.trim()).filter(Boolean);
  const num = (a, s) => {
    const m = /^(\d+(?:\.\d+)?)([kmg]?)$/i.exec(String(s));
    if (!m) throw new Error(`${a} needs a number, got ${s}`);
    return Number(m[1]) * { '': 1, k: 1024, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase()];
  };
  const nums = (a, s) => list(s).map((x) => num(a, x));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--only': {
        const w = list(v());
        for (const x of w) if (!WORKLOADS.includes(x)) throw new Error(`--only: unknown workload ${x} (${WORKLOADS.join(', ')})`);
        o.only = new Set(w);
        break;
      }
      case '--variants': o.variants = new Set(list(v())); break;
      case '--reps': o.reps = num(a, v()); break;
      case '--spin-us': o.spinUs = num(a, v()); break;
      case '--cpu-prof': o.cpuProf = true; break;
      case '--cpu-prof-all': o.cpuProf = true; o.cpuProfAll = true; break;
      case '--http-connections': o.httpConnections = nums(a, v()); break;
      case '--https-connections': o.httpsConnections = nums(a, v()); break;
      case '--http-seconds': o.httpSeconds = num(a, v()); break;
      case '--http-warmup': o.httpWarmup = Number(v()); break;
      case '--pipelined': { const [c, d] = nums(a, v()); o.httpPipelining = { connections: c, depth: d }; break; }
      case '--no-pipelined': o.httpPipelining = null; break;
      case '--pingpong-sizes': o.pingpongSizes = nums(a, v()); break;
      case '--pingpong-ms': o.pingpongMs = num(a, v()); break;
      case '--bulk-bytes': o.bulkBytes = num(a, v()); break;
      case '--bulk-streams': o.bulkStreams = nums(a, v()); break;
      case '--no-bulk-sink': o.bulkSink = false; break;
      case '--churn-concurrency': o.churnConcurrency = nums(a, v()); break;
      case '--churn-ms': o.churnMs = num(a, v()); break;
      case '--scale-conns': o.scaleConns = num(a, v()); break;
      case '--scale-idle-ms': o.scaleIdleMs = num(a, v()); break;
      case '--scale-ms': o.scaleMs = num(a, v()); break;
      case '--out': o.outDir = path.resolve(v()); break;
      case '--root': o.root = path.resolve(v()); break;
      case '--baseline-root': o.baselineRoot = path.resolve(v()); break;
      case '-h':
      case '--help':
        process.stdout.write(require('node:fs').readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
        process.exit(0);
      default: throw new Error(`unknown option ${a} (--help)`);
    }
  }
  return o;
}

if (require.main === module) {
  let opts;
  try {
    opts = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(2);
  }
  runSuite(opts, ['node', 'bench/run.js', ...process.argv.slice(2)].join(' '))
    .then((r) => process.exit(r.runs.every((x) => x.ok) ? 0 : 1))
    .catch((e) => {
      process.stderr.write(`bench: ${e.message}\n`);
      process.exit(1);
    });
}

module.exports = { parse };
