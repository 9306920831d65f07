#!/usr/bin/env node
// Kernel sockets vs sidestep on HTTP: an http.createServer hello world driven
// by autocannon in a separate process. Runs are interleaved (kernel,
// sidestep, kernel, sidestep, ...) so that machine noise hits both alike; the
// report gives medians and the per-pair ratio. In sidestep runs both the
// server and the autocannon process are hooked, and a run counts only if its
// connections really were bypassed (the counters say so).
//
//   npm run bench                  # 50 connections, 5 pairs of 5 s runs
//   npm run bench -- --quick       # a smoke run: 1 pair of 2 s runs
//   npm run bench -- --connections 10 --duration 10 --pairs 7
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..');
const REGISTER = path.join(ROOT, 'dist', 'register.js');

function parseArgs(argv) {
  const opts = { connections: 50, duration: 5, pairs: 5, pipelining: 1, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === '--quick') Object.assign(opts, { quick: true, duration: 2, pairs: 1 });
    else if (a === '--connections') opts.connections = val();
    else if (a === '--duration') opts.duration = val();
    else if (a === '--pairs') opts.pairs = val();
    else if (a === '--pipelining') opts.pipelining = val();
    else throw new Error(`unknown option ${a}`);
  }
  return opts;
}

function startNode(script, args, hooked, env) {
  const child = spawn(process.execPath, [...(hooked ? ['--require', REGISTER] : []), path.join(__dirname, script), ...args.map(String)], {
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = [];
  let waiter = null;
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    const m = JSON.parse(l);
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(m);
    } else lines.push(m);
  });
  const exited = new Promise((r) => child.on('exit', r));
  return {
    child,
    exited,
    next: () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => (waiter = r))),
  };
}

async function runOnce(mode, opts, fabric) {
  const hooked = mode === 'sidestep';
  const env = hooked ? { SIDESTEP_FABRIC: fabric } : {};
  const server = startNode('http-server.js', [], hooked, env);
  const { port } = await server.next();
  const driver = startNode('autocannon-driver.js', [`http://127.0.0.1:${port}/`, opts.connections, opts.duration, opts.pipelining], hooked, env);
  const result = await driver.next();
  await driver.exited;
  server.child.stdin.write('stats\n');
  const { stats } = await server.next();
  server.child.stdin.write('exit\n');
  await server.exited;
  if (result.error) throw new Error(`${mode} run failed: ${result.error}`);
  const bad = result.errors + result.non2xx + result.timeouts;
  if (bad) throw new Error(`${mode} run had ${bad} errors/non-2xx/timeouts: it does not count`);
  if (hooked) {
    const c = result.stats;
    if (!c || !c.enabled || c.connectionsBypassed < opts.connections || c.connectionsFallback !== 0)
      throw new Error(`sidestep run was not bypassed: ${JSON.stringify(c)}`);
    if (!stats || stats.connectionsBypassed < opts.connections) throw new Error('server did not accept over the fabric');
  }
  return { mode, requestsPerSec: result.requestsPerSec, latencyMs: result.latencyMs, requests: result.requests };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const fabric = `sidestep-bench-${process.pid}`;
  const runs = [];
  try {
    for (let i = 0; i < opts.pairs; i++) {
      for (const mode of ['kernel', 'sidestep']) {
        const r = await runOnce(mode, opts, fabric);
        runs.push({ pair: i, ...r });
        process.stderr.write(`pair ${i + 1}/${opts.pairs} ${mode.padEnd(8)} ${r.requestsPerSec.toFixed(0)} req/s  p50 ${r.latencyMs.p50} ms  p99 ${r.latencyMs.p99} ms\n`);
      }
    }
  } finally {
    fs.rmSync(`/dev/shm/${fabric}`, { force: true });
  }
  const pick = (mode, f) => runs.filter((r) => r.mode === mode).map(f);
  const ratios = [];
  for (let i = 0; i < opts.pairs; i++) {
    const [k, s] = ['kernel', 'sidestep'].map((m) => runs.find((r) => r.pair === i && r.mode === m));
    ratios.push(s.requestsPerSec / k.requestsPerSec);
  }
  const summary = {};
  for (const mode of ['kernel', 'sidestep']) {
    summary[mode] = {
      requestsPerSec: median(pick(mode, (r) => r.requestsPerSec)),
      p50Ms: median(pick(mode, (r) => r.latencyMs.p50)),
      p90Ms: median(pick(mode, (r) => r.latencyMs.p90)),
      p99Ms: median(pick(mode, (r) => r.latencyMs.p99)),
    };
  }
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    command: `node bench/http.js ${process.argv.slice(2).join(' ')}`.trim(),
    options: opts,
    summary,
    ratio: { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) },
    runs,
  };
  const table = [
    `HTTP hello world, autocannon, ${opts.connections} connections, ${opts.pairs} interleaved pair(s) of ${opts.duration} s`,
    '',
    '| | req/s (median) | p50 ms | p90 ms | p99 ms |',
    '|---|---:|---:|---:|---:|',
    ...['kernel', 'sidestep'].map((m) => `| ${m} | ${summary[m].requestsPerSec.toFixed(0)} | ${summary[m].p50Ms} | ${summary[m].p90Ms} | ${summary[m].p99Ms} |`),
    '',
    `sidestep / kernel req/s: ${result.ratio.median.toFixed(2)}x (pairs: ${result.ratio.min.toFixed(2)}-${result.ratio.max.toFixed(2)})`,
  ].join('\n');
  if (!opts.quick) {
    const file = path.join(__dirname, 'results', `http-${result.date.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(`raw results: ${path.relative(process.cwd(), file)}\n`);
  }
  process.stdout.write(table + '\n');
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(1);
});
