// Bulk source for bench/bulk-raw/run.sh: MiB of 1 MiB writes, respecting
// backpressure; prints GB/s and the client's CPU per MiB once the server
// has confirmed the count.
'use strict';
const net = require('node:net');
const [port, mib] = process.argv.slice(2).map(Number);
const total = mib * 1048576;
const buf = Buffer.alloc(1 << 20, 0x5a);
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
const sock = net.connect(port, '127.0.0.1', () => {
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      sent += buf.length;
      if (!sock.write(buf)) return sock.once('drain', pump);
    }
    sock.end();
  };
  pump();
});
let reply = '';
sock.on('data', (d) => { reply += d; });
sock.on('end', () => {
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  if (Number(reply) !== total) throw new Error(`server counted ${reply} of ${total} bytes`);
  console.log(JSON.stringify({ GBps: +(total / s / 1e9).toFixed(2), clientCpuUsPerMiB: +((cpu.user + cpu.system) / mib).toFixed(1) }));
});
