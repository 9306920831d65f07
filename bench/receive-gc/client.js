// The source of bench/receive-gc/run.sh: argv port MiB streams; each stream
// writes its share in 1 MiB chunks (respecting backpressure), half-closes and
// checks the count the sink answers. Prints {GBps}.
'use strict';
const net = require('node:net');
const [port, mib, streams] = process.argv.slice(2).map(Number);
const per = (mib * 1048576) / streams;
const buf = Buffer.alloc(1 << 20, 0x5a);
const t0 = process.hrtime.bigint();
let left = streams;
for (let s = 0; s < streams; s++) {
  const sock = net.connect(port, '127.0.0.1', () => {
    let sent = 0;
    const pump = () => { while (sent < per) { sent += buf.length; if (!sock.write(buf)) return sock.once('drain', pump); } sock.end(); };
    pump();
  });
  let reply = '';
  sock.on('data', (d) => { reply += d; });
  sock.on('end', () => {
    if (Number(reply) !== per) throw new Error(`server counted ${reply} of ${per}`);
    if (--left === 0) console.log(JSON.stringify({ GBps: +(mib * 1048576 / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e9).toFixed(2) }));
  });
}
