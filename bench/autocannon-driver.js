// Runs autocannon in this process (so the hook, when loaded, carries its
// connections too) and prints one JSON line: the result plus sidestep's stats.
// argv: url connections durationSeconds pipelining [warmupSeconds]
// A warm-up run (not measured; default 0) lets the JIT settle first.
//
// Latency: autocannon's own histogram holds whole milliseconds, too coarse
// here. Its tracker emits every response with the float response time it
// measured (process.hrtime, from the request's write to the end of the
// response), which we keep in microseconds; percentiles come from those.
'use strict';
const autocannon = require('autocannon');
const { send, mark, fail, stats, percentiles, Samples } = require('./lib/child');

const [url, connections, duration, pipelining = 1, warmup = 0] = process.argv.slice(2);

(async () => {
  if (Number(warmup) > 0) {
    await new Promise((resolve, reject) =>
      autocannon({ url, connections: Number(connections), duration: Number(warmup), pipelining: Number(pipelining) }, (err) => (err ? reject(err) : resolve())),
    );
  }
  await mark('begin');
  const samples = new Samples(1 << 20);
  const tracker = autocannon(
    { url, connections: Number(connections), duration: Number(duration), pipelining: Number(pipelining), expectBody: 'hello world' },
    async (err, r) => {
      if (err) return fail(err);
      await mark('end');
      send({
        result: {
          requestsPerSec: r.requests.total / r.duration,
          requestsPerSecAvg: r.requests.average,
          requests: r.requests.total,
          seconds: r.duration,
          errors: r.errors,
          non2xx: r.non2xx,
          timeouts: r.timeouts,
          mismatches: r.mismatches,
          resets: r.resets,
          latencyUs: percentiles(samples.values()),
          autocannonLatencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, p999: r.latency.p99_9 ?? r.latency.p999 },
        },
        connections: Number(connections),
        stats: stats(),
      });
    },
  );
  tracker.on('response', (_client, status, _bytes, ms) => {
    if (status >= 200 && status < 300) samples.push(ms * 1000);
  });
})().catch((e) => fail(e.message));
