// The counting sink of bench/receive-gc/run.sh: takes STREAMS connections,
// counts (CHECK=1: also checks a byte in 64), answers each count at its end,
// and once all are done prints to stderr its peak RSS (anon/file/shmem MiB,
// sampled every 20 ms), the read slabs it made and its CPU. TRACE=1 also
// prints the slab pool (mapped/free) every 20 ms.
'use strict';
const net = require('node:net');
const root = process.env.ROOT;
const ss = root && root !== 'kernel' ? require(root + '/dist/index.js') : null;
let done = 0, peak = 0, peakDetail = "";
const want = Number(process.env.STREAMS || 1);
const check = process.env.CHECK === '1';
const server = net.createServer({ allowHalfOpen: true }, (c) => {
  let n = 0, bad = 0;
  c.on('data', (d) => { n += d.length; if (check) { for (let i = 0; i < d.length; i += 64) if (d[i] !== 0x5a) bad++; } });
  c.on('end', () => { c.end(String(bad ? -1 : n)); if (++done === want) setTimeout(report, 50); });
});
const trace = [];
const iv = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); if (process.memoryUsage().rss >= peak) { const st = require("fs").readFileSync("/proc/self/status", "utf8"); peakDetail = ["RssAnon", "RssFile", "RssShmem"].map((k) => st.match(new RegExp(k + ":\\s+(\\d+)"))[1] / 1024 | 0).join("/"); } if (ss && process.env.TRACE) { const s = ss.stats(); trace.push(`${s.readSlabs}/${s.readSlabsFree}`); } }, 20);
function report() {
  const st = ss ? ss.stats() : {};
  if (trace.length) console.error(trace.join(" "));
  console.error(JSON.stringify({ peakRssMiB: Math.round(peak / 1048576), peakDetail, slabsMade: st.readSlabsMade, cpu: process.cpuUsage() }));
  clearInterval(iv); server.close();
}
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
