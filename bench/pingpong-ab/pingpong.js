// The source of bench/pingpong-ab/run.sh. An echo server (argv: server
// net|tls) or a client (argv: client net|tls PORT ROUNDS) that sends 64 B,
// waits for the echo and sends again, over one connection: ROUNDS round
// trips after a 2,000 round trip warm-up. Prints {n, p50, p99 (µs),
// clientCpuUs (per round trip)}. Over TLS each round trip is one record
// each way: what a record costs per side, without HTTP around it. Each echo
// is checked byte-exact, and a hooked client fails unless its connection
// went over the fabric (isBypassed and the fabric's frame counter), as the
// bench harness's runs do.
'use strict';
const net = require('node:net');
const tls = require('node:tls');
const fs = require('node:fs');
const path = require('node:path');

const [role, kind] = process.argv.slice(2, 4);
if (kind !== 'net' && kind !== 'tls') throw new Error('usage: pingpong.js server|client net|tls ...');
const certs = path.join(__dirname, '..', '..', 'test', 'fixtures');
// The hook, when --require loaded it (as bench/lib/child.js finds it).
const register = Object.keys(require.cache).find((k) => k.endsWith(path.join('dist', 'register.js')));
const sidestep = register ? require(path.join(path.dirname(register), 'index.js')) : null;

if (role === 'server') {
  const echo = (c) => {
    c.setNoDelay(true);
    c.on('data', (d) => c.write(d));
    c.on('error', () => {});
  };
  const server =
    kind === 'tls'
      ? tls.createServer({ key: fs.readFileSync(path.join(certs, 'tls-key.pem')), cert: fs.readFileSync(path.join(certs, 'tls-cert.pem')) }, echo)
      : net.createServer(echo);
  server.listen(0, '127.0.0.1', () => console.log(server.address().port));
} else {
  const port = Number(process.argv[4]);
  const rounds = Number(process.argv[5] || 10000);
  const warmup = 2000;
  const msg = Buffer.alloc(64, 1);
  const lat = new Float64Array(rounds);
  let n = 0;
  let cpu0;
  let sent = 0n;
  const c = kind === 'tls' ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(port, '127.0.0.1');
  c.setNoDelay(true);
  c.once(kind === 'tls' ? 'secureConnect' : 'connect', () => {
    let have = 0;
    c.on('data', (d) => {
      for (let i = 0; i < d.length; i++) if (d[i] !== 1) throw new Error('ping-pong: echo corrupted');
      have += d.length;
      if (have < msg.length) return;
      if (have > msg.length) throw new Error(`ping-pong: ${have} bytes echoed for ${msg.length}`);
      have = 0;
      const now = process.hrtime.bigint();
      if (n >= warmup) lat[n - warmup] = Number(now - sent) / 1e3;
      if (++n === warmup) cpu0 = process.cpuUsage();
      if (n === warmup + rounds) {
        const cpu = process.cpuUsage(cpu0);
        if (sidestep && !(sidestep.isBypassed(c) && sidestep.stats().framesIn >= rounds)) {
          console.error('ping-pong: hooked, but the connection did not go over the fabric');
          process.exit(1);
        }
        lat.sort();
        const at = (q) => lat[Math.min(rounds - 1, Math.floor(rounds * q))];
        console.log(JSON.stringify({ n: rounds, p50: at(0.5), p99: at(0.99), clientCpuUs: +((cpu.user + cpu.system) / rounds).toFixed(1) }));
        c.destroy();
        return;
      }
      sent = process.hrtime.bigint();
      c.write(msg);
    });
    sent = process.hrtime.bigint();
    c.write(msg);
  });
}
