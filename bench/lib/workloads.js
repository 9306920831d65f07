// The benchmark workloads. Each case names its variants (kernel first: the
// baseline of every ratio), its metrics, and run(run, opts), which starts the
// server and the client (separate processes, bench/procs/ and bench/*.js) and
// returns the client's message plus, per sub-case, its metrics, its operation
// count and the two marks between which CPU time is counted.
'use strict';

const CPU = (op) => [
  { key: 'cpuUsPerOp', label: `CPU µs/${op} (client+server, user+sys)`, better: 'lower' },
  { key: 'machineUsPerOp', label: `machine CPU µs/${op} (all cores)`, better: 'lower' },
];
const PCT = (prefix, label) => [
  { key: `${prefix}p50`, label: `${label} p50 µs`, better: 'lower', chart: true },
  { key: `${prefix}p90`, label: `${label} p90 µs`, better: 'lower' },
  { key: `${prefix}p99`, label: `${label} p99 µs`, better: 'lower', chart: true },
  { key: `${prefix}p999`, label: `${label} p99.9 µs`, better: 'lower' },
];
const pct = (prefix, p) => ({ [`${prefix}p50`]: p.p50, [`${prefix}p90`]: p.p90, [`${prefix}p99`]: p.p99, [`${prefix}p999`]: p.p999 });

async function startServer(run, script) {
  const server = run.spawn('server', script, run.listenArgs());
  const { port } = await server.next((m) => m.ready);
  return { server, target: run.targetArgs(port) };
}

// ---- HTTP ---------------------------------------------------------------------

function httpCase(connections, pipelining, tls = false) {
  const scheme = tls ? 'https' : 'http';
  const id = pipelining > 1 ? `${scheme}-c${connections}-p${pipelining}` : `${scheme}-c${connections}`;
  const name = tls ? 'HTTPS' : 'HTTP';
  return {
    workload: scheme,
    id,
    label: pipelining > 1 ? `${name} ${connections} conns, pipelining ${pipelining}` : `${name} ${connections} conn${connections > 1 ? 's' : ''}`,
    variants: ['kernel', 'sidestep'],
    metrics: [
      { key: 'reqPerSec', label: 'req/s', better: 'higher', chart: true },
      ...PCT('', 'latency'),
      ...CPU('req'),
      // The server's resident memory under load (issue 16's memory goal).
      { key: 'serverRssMiB', label: 'server RSS MiB at the end of the load', better: 'lower' },
    ],
    timeoutMs: (o) => (o.httpSeconds + o.httpWarmup + 60) * 1000,
    async run(run, o) {
      const { port } = await run.spawn('server', 'http-server.js', tls ? ['--tls'] : []).next((m) => m.ready);
      const client = run.spawn('client', 'autocannon-driver.js', [`${scheme}://127.0.0.1:${port}/`, connections, o.httpSeconds, pipelining, o.httpWarmup]);
      const msg = await client.next((m) => m.result);
      const r = msg.result;
      const bad = r.errors + r.non2xx + r.timeouts + (r.mismatches || 0);
      if (bad) throw new Error(`${r.errors} errors, ${r.non2xx} non-2xx, ${r.timeouts} timeouts, ${r.mismatches} body mismatches: the run does not count`);
      if (!r.requests) throw new Error('no request completed');
      const end = run.marks.end && run.marks.end.procs.server;
      const serverRssMiB = end && end.mem ? end.mem.rssKiB / 1024 : null;
      return { client: msg, subs: { '': { metrics: { reqPerSec: r.requestsPerSec, ...pct('', r.latencyUs), serverRssMiB }, ops: r.requests, phase: ['begin', 'end'] } } };
    },
  };
}

// ---- ping-pong ---------------------------------------------------------------

const sizeLabel = (n) => (n >= 1024 ? `${n / 1024} KiB` : `${n} B`);

const pingpong = {
  workload: 'pingpong',
  id: 'pingpong',
  label: 'ping-pong',
  variants: ['kernel', 'sidestep', 'sidestep-spin', 'unix'],
  metrics: [...PCT('', 'RTT'), { key: 'rtPerSec', label: 'round trips/s', better: 'higher' }, ...CPU('round trip')],
  timeoutMs: (o) => (o.pingpongSizes.length * (o.pingpongMs + 5000) + 30000),
  async run(run, o) {
    const { target } = await startServer(run, 'procs/echo-server.js');
    const client = run.spawn('client', 'procs/pingpong-client.js', [...target, '--sizes', o.pingpongSizes.join(','), '--ms', o.pingpongMs, '--warmup', o.quick ? 50 : 500]);
    const msg = await client.next((m) => m.result);
    const subs = {};
    for (const size of o.pingpongSizes) {
      const r = msg.result[size];
      if (!r.roundTrips) throw new Error(`${size} B: no round trip completed`);
      subs[sizeLabel(size)] = { metrics: { ...pct('', r.rttUs), rtPerSec: r.roundTrips / r.seconds }, ops: r.roundTrips, phase: [`begin:${size}`, `end:${size}`] };
    }
    return { client: msg, subs };
  },
};

// ---- bulk ----------------------------------------------------------------------

// A checking reader compares every byte in JS (what an application that
// looks at its data costs); a counting sink only counts (what the socket
// itself costs).
function bulkCase(streams, countOnly = false) {
  return {
    workload: 'bulk',
    id: `bulk-${streams}${countOnly ? '-sink' : ''}`,
    label: `bulk ${streams > 1 ? `${streams} streams` : '1 stream'}${countOnly ? ', counting sink' : ''}`,
    variants: ['kernel', 'sidestep', 'unix'],
    metrics: [{ key: 'gbPerSec', label: 'GB/s (10^9 B/s)', better: 'higher', chart: true }, ...CPU('MiB')],
    timeoutMs: (o) => Math.max(60, o.bulkBytes / 15e6 + 30) * 1000,
    async run(run, o) {
      const server = run.spawn('server', 'procs/bulk-server.js', [...run.listenArgs(), ...(countOnly ? ['--count-only', '1'] : [])]);
      const target = run.targetArgs((await server.next((m) => m.ready)).port);
      const client = run.spawn('client', 'procs/bulk-client.js', [...target, '--bytes', o.bulkBytes, '--streams', streams]);
      const msg = await client.next((m) => m.result);
      const r = msg.result;
      return { client: msg, subs: { '': { metrics: { gbPerSec: r.gbPerSec }, ops: r.bytes / (1 << 20), phase: ['begin', 'end'] } } };
    },
  };
}

// ---- connection churn ----------------------------------------------------------

function churnCase(concurrency) {
  return {
    workload: 'churn',
    id: `churn-c${concurrency}`,
    label: `churn concurrency ${concurrency}`,
    variants: ['kernel', 'sidestep'],
    metrics: [{ key: 'connPerSec', label: 'connections/s', better: 'higher', chart: true }, ...CPU('conn')],
    timeoutMs: (o) => o.churnMs + 60000,
    async run(run, o) {
      const { target } = await startServer(run, 'procs/echo-server.js');
      const client = run.spawn('client', 'procs/churn-client.js', [...target, '--concurrency', concurrency, '--ms', o.churnMs, '--warmup', o.quick ? 100 : 300]);
      const msg = await client.next((m) => m.result);
      const r = msg.result;
      if (!r.connections) throw new Error('no connection completed');
      return { client: msg, subs: { '': { metrics: { connPerSec: r.perSec }, ops: r.connections, phase: ['begin', 'end'] } } };
    },
  };
}

// ---- scale -------------------------------------------------------------------------

const scale = {
  workload: 'scale',
  id: 'scale',
  label: 'scale',
  variants: ['kernel', 'sidestep'],
  metrics: [
    { key: 'memPerConnKiB', label: 'memory KiB/idle conn (PSS of both + kernel slab)', better: 'lower', chart: true },
    { key: 'rssPerConnKiB', label: 'RSS KiB/idle conn (client+server; shared pages twice)', better: 'lower' },
    { key: 'clientRssPerConnKiB', label: 'client RSS KiB/conn', better: 'lower' },
    { key: 'serverRssPerConnKiB', label: 'server RSS KiB/conn', better: 'lower' },
    { key: 'slabPerConnKiB', label: 'kernel slab KiB/conn (machine-wide, noisy)', better: 'lower' },
    { key: 'idleCpuPct', label: 'idle CPU % of a core (both processes)', better: 'lower', chart: true },
    { key: 'openPerSec', label: 'connections opened/s', better: 'higher' },
    ...PCT('pp', 'ping-pong 64 B under load'),
  ],
  timeoutMs: (o) => (o.scaleConns / 50 + o.scaleIdleMs / 1000 + 90) * 1000,
  async run(run, o) {
    const { target } = await startServer(run, 'procs/echo-server.js');
    const client = run.spawn('client', 'procs/scale-client.js', [...target, '--conns', o.scaleConns, '--idle-ms', o.scaleIdleMs, '--ms', o.scaleMs]);
    const msg = await client.next((m) => m.result);
    const r = msg.result;
    if (r.conns !== o.scaleConns) throw new Error(`held ${r.conns} of ${o.scaleConns} connections`);
    const { base, held } = run.marks;
    const rss = (mk, role) => mk.procs[role].mem.rssKiB;
    const per = (role) => (rss(held, role) - rss(base, role)) / r.conns;
    const idle = run.cpuBetween('idle-begin', 'idle-end');
    const pss = (mk, role) => mk.procs[role].mem.pssKiB;
    const pssPer = ['client', 'server'].every((role) => pss(held, role) != null && pss(base, role) != null)
      ? ['client', 'server'].reduce((a, role) => a + (pss(held, role) - pss(base, role)) / r.conns, 0)
      : null;
    const slabPer = held.kernel.slabKiB != null ? (held.kernel.slabKiB - base.kernel.slabKiB) / r.conns : null;
    const metrics = {
      memPerConnKiB: pssPer != null && slabPer != null ? pssPer + slabPer : null,
      rssPerConnKiB: per('client') + per('server'),
      clientRssPerConnKiB: per('client'),
      serverRssPerConnKiB: per('server'),
      slabPerConnKiB: slabPer,
      idleCpuPct: (idle.procs / idle.wall) * 100,
      openPerSec: r.conns / r.openSeconds,
      ...pct('pp', r.rttUs),
    };
    return { client: msg, subs: { '': { metrics, ops: 0, phase: null } } };
  },
};

function cases(o) {
  const all = [];
  if (o.only.has('http')) {
    for (const c of o.httpConnections) all.push(httpCase(c, 1));
    if (o.httpPipelining) all.push(httpCase(o.httpPipelining.connections, o.httpPipelining.depth));
  }
  if (o.only.has('https')) for (const c of o.httpsConnections) all.push(httpCase(c, 1, true));
  if (o.only.has('pingpong')) all.push(pingpong);
  if (o.only.has('bulk')) {
    for (const s of o.bulkStreams) all.push(bulkCase(s));
    if (o.bulkSink) all.push(bulkCase(1, true));
  }
  if (o.only.has('churn')) for (const c of o.churnConcurrency) all.push(churnCase(c));
  if (o.only.has('scale')) all.push(scale);
  // --variants narrows every case (kernel always stays: it is the baseline).
  // An earlier build beside this one, right after it (--baseline-root).
  if (o.baselineRoot) for (const c of all) c.variants.splice(c.variants.indexOf('sidestep') + 1, 0, 'baseline');
  if (o.variants) for (const c of all) c.variants = c.variants.filter((v) => v === 'kernel' || o.variants.has(v));
  return all;
}

const WORKLOADS = ['http', 'https', 'pingpong', 'bulk', 'churn', 'scale'];

module.exports = { cases, WORKLOADS, httpCase };
