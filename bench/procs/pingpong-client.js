// Ping-pong client: one connection; for each message size, echo round trips
// for --ms milliseconds (after --warmup round trips), each checked byte-exact
// against what was sent (the first 8 bytes carry the round trip's number).
// RTT from process.hrtime.bigint(), in microseconds.
'use strict';
const net = require('node:net');
const { send, mark, fail, args, target, percentiles, Samples, stats, isBypassed } = require('../lib/child');

const a = args();
const sizes = String(a.sizes || '64,1024,65536').split(',').map(Number);
const ms = Number(a.ms || 2000);
const warmup = Number(a.warmup || 200);
const maxIters = Number(a.max || 1e7);

function session(sock, size, iters, deadlineNs, samples) {
  return new Promise((resolve, reject) => {
    const msg = Buffer.alloc(size);
    for (let i = 0; i < size; i++) msg[i] = (i * 131 + size) & 0xff;
    const got = Buffer.alloc(size);
    let have = 0;
    let n = 0;
    let t0 = 0n;
    const next = () => {
      if (n >= iters || (deadlineNs && process.hrtime.bigint() >= deadlineNs)) {
        sock.removeListener('data', onData);
        return resolve(n);
      }
      msg.writeUInt32LE(n, 0);
      msg.writeUInt32LE(size, 4);
      have = 0;
      t0 = process.hrtime.bigint();
      // The kernel or the stack may keep a reference until the write is done:
      // copy when the message is large enough for that to matter.
      sock.write(size > 4096 ? Buffer.from(msg) : msg);
    };
    const onData = (d) => {
      if (have + d.length > size) return reject(new Error(`echo overran: ${have + d.length} > ${size} bytes`));
      d.copy(got, have);
      have += d.length;
      if (have < size) return;
      const t1 = process.hrtime.bigint();
      if (!got.equals(msg)) return reject(new Error(`echo of round trip ${n} (${size} B) differs from what was sent`));
      if (samples) samples.push(Number(t1 - t0) / 1000);
      n++;
      next();
    };
    sock.on('data', onData);
    next();
  });
}

const sock = net.connect(target(a), async () => {
  try {
    sock.setNoDelay(true);
    const results = {};
    for (const size of sizes) {
      await session(sock, size, warmup, 0n, null);
      const samples = new Samples();
      await mark(`begin:${size}`);
      const t0 = process.hrtime.bigint();
      const n = await session(sock, size, maxIters, t0 + BigInt(ms) * 1000000n, samples);
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      await mark(`end:${size}`);
      results[size] = { roundTrips: n, seconds: elapsed, rttUs: percentiles(samples.values()) };
    }
    send({ result: results, bypassed: isBypassed(sock), connections: 1, stats: stats() });
    sock.end();
  } catch (e) {
    fail(e.message);
  }
});
sock.on('error', (e) => fail(`socket error: ${e.code || ''} ${e.message}`));
