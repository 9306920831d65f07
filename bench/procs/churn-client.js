// Connection churn: --concurrency workers each loop connect, send 1 byte,
// wait for its echo, close (client closes first), until --ms elapsed.
// Counts fully closed connections per second; any error fails the run.
'use strict';
const net = require('node:net');
const { send, mark, fail, args, target, stats, isBypassed } = require('../lib/child');

const a = args();
const concurrency = Number(a.concurrency || 8);
const ms = Number(a.ms || 3000);
const warmupMs = Number(a.warmup || 200);
let opened = 0;
let notBypassed = 0;

function once() {
  return new Promise((resolve, reject) => {
    opened++;
    const s = net.connect(target(a));
    s.setNoDelay(true);
    let got = false;
    s.on('connect', () => {
      if (!isBypassed(s) && !a.unix) notBypassed++;
      s.write('x');
    });
    s.on('data', (d) => {
      if (got || d.length !== 1 || d[0] !== 0x78) return reject(new Error(`bad echo ${JSON.stringify(String(d))}`));
      got = true;
      s.end();
    });
    s.on('error', (e) => reject(new Error(`${e.code || ''} ${e.message}`)));
    s.on('close', () => (got ? resolve() : reject(new Error('closed before the echo'))));
  });
}

async function loop(until, counter) {
  while (process.hrtime.bigint() < until) {
    await once();
    counter.n++;
  }
}

async function phase(duration) {
  const counter = { n: 0 };
  const until = process.hrtime.bigint() + BigInt(duration) * 1000000n;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, () => loop(until, counter)));
  return { n: counter.n, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

(async () => {
  await phase(warmupMs);
  await mark('begin');
  const r = await phase(ms);
  await mark('end');
  send({
    result: { connections: r.n, seconds: r.seconds, perSec: r.n / r.seconds, concurrency },
    bypassed: notBypassed === 0,
    connections: opened,
    stats: stats(),
  });
})().catch((e) => fail(e.message));
