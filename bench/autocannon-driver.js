// Runs autocannon in this process (so the hook, when loaded, carries its
// connections too) and prints one JSON line: the result plus sidestep's stats.
// argv: url connections durationSeconds pipelining
'use strict';
const path = require('node:path');
const autocannon = require('autocannon');

const register = Object.keys(require.cache).find((k) => k.endsWith(path.join('dist', 'register.js')));
const stats = register ? require(path.join(path.dirname(register), 'index.js')).stats : () => null;
const [url, connections, duration, pipelining = 1] = process.argv.slice(2);

autocannon({ url, connections: Number(connections), duration: Number(duration), pipelining: Number(pipelining) }, (err, r) => {
  if (err) {
    console.log(JSON.stringify({ error: String(err) }));
    process.exit(1);
  }
  const out = {
    requestsPerSec: r.requests.average,
    requests: r.requests.total,
    errors: r.errors,
    non2xx: r.non2xx,
    timeouts: r.timeouts,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, p999: r.latency.p99_9 ?? r.latency.p999 },
    stats: stats(),
  };
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
});
