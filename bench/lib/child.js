// The side of the benchmark protocol that runs inside each benchmark process
// (client or server). One JSON object per stdout line; commands arrive on
// stdin, one per line:
//   'stats' -> {stats: sidestep.stats() or null}
//   'exit'  -> flush stdout and exit 0
//   'ack'   -> answers the oldest pending mark()
// mark(name) asks the runner to sample CPU time and memory of every process
// in the run (and of the machine) right now, and resolves once it has.
'use strict';
const path = require('node:path');
const readline = require('node:readline');

// The hook is loaded by --require .../dist/register.js in sidestep runs; find
// its index.js next to it rather than loading one (loading it would install).
const register = Object.keys(require.cache).find((k) => k.endsWith(path.join('dist', 'register.js')));
const api = register ? require(path.join(path.dirname(register), 'index.js')) : null;

function stats() {
  return api ? api.stats() : null;
}
function isBypassed(socket) {
  return api ? api.isBypassed(socket) : false;
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const acks = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'stats') send({ stats: stats() });
  else if (line === 'ack') {
    const a = acks.shift();
    if (a) a();
  } else if (line === 'exit') process.stdout.write('', () => process.exit(0));
});
// The runner closes our stdin if it goes away: don't linger.
process.stdin.on('end', () => process.exit(0));

function mark(name) {
  return new Promise((resolve) => {
    acks.push(resolve);
    send({ mark: name });
  });
}

function fail(message) {
  send({ error: String(message) });
  process.stdout.write('', () => process.exit(1));
}

// argv as --key value pairs (and bare --flags) into an object.
function args(argv = process.argv.slice(2)) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const k = argv[i].slice(2);
    if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) o[k] = argv[++i];
    else o[k] = true;
  }
  return o;
}

// Where to connect / listen: {port, host} or {path} (a unix socket).
function target(a) {
  return a.unix ? { path: a.unix } : { port: Number(a.port), host: a.host || '127.0.0.1' };
}

// Percentiles of an array of numbers (any unit), nearest-rank.
function percentiles(values) {
  const s = Float64Array.from(values).sort();
  const n = s.length;
  const at = (p) => (n ? s[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))] : null);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i];
  return { count: n, min: n ? s[0] : null, p50: at(50), p90: at(90), p99: at(99), p999: at(99.9), max: n ? s[n - 1] : null, mean: n ? sum / n : null };
}

// A growable Float64Array of samples.
class Samples {
  constructor(cap = 1 << 16) {
    this.a = new Float64Array(cap);
    this.n = 0;
  }
  push(v) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v;
  }
  values() {
    return this.a.subarray(0, this.n);
  }
}

module.exports = { stats, isBypassed, send, mark, fail, args, target, percentiles, Samples, hooked: !!api };
