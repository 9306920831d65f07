// Fixed-count churn client for run.sh: <count> connections (after 2,000 of
// warm-up), <concurrency> at a time, each: connect, write 1 byte, end on the
// echo, wait for 'close'. Prints {n, perSec, clientUs, serverUs, faults}: CPU
// µs per connection of this process (process.cpuUsage) and of the server
// (/proc/<pid>/stat utime + stime, 10 ms ticks), minor page faults per
// connection of both.
// argv: port count concurrency server-pid
'use strict';
const net = require('node:net');
const fs = require('node:fs');

const [port, total, conc, spid] = process.argv.slice(2).map(Number);
const stat = () => fs.readFileSync(`/proc/${spid}/stat`, 'utf8').split(') ')[1].split(' ');
const serverUs = () => { const f = stat(); return (Number(f[11]) + Number(f[12])) * 10000; };
const serverFaults = () => Number(stat()[7]);
let started = 0;
let n = 0;

function once() {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.setNoDelay(true);
    s.on('connect', () => s.write('x'));
    s.on('data', () => s.end());
    s.on('error', reject);
    s.on('close', resolve);
  });
}

async function worker(count) {
  while (started < count) {
    started++;
    await once();
    n++;
  }
}

(async () => {
  await Promise.all(Array.from({ length: conc }, () => worker(2000))); // warm-up
  started = 0;
  n = 0;
  const f0 = serverFaults() + process.resourceUsage().minorPageFault;
  const s0 = serverUs();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: conc }, () => worker(total)));
  const sUs = (serverUs() - s0) / n;
  const c = process.cpuUsage(c0);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const faults = (serverFaults() + process.resourceUsage().minorPageFault - f0) / n;
  console.log(JSON.stringify({
    n, perSec: Math.round(n / secs), clientUs: +((c.user + c.system) / n).toFixed(1), serverUs: +sUs.toFixed(1),
    totalUs: +((c.user + c.system) / n + sUs).toFixed(1), faults: +faults.toFixed(2),
  }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
