// Scale: one ping-pong connection, then --conns idle connections opened
// (--batch at a time, each proven by a 1-byte echo) and held; marks let the
// runner read RSS and CPU: 'base' (before the idle connections), 'held',
// 'idle-begin'/'idle-end' (--idle-ms of nothing), then 64 B ping-pong on the
// first connection for --ms under that load ('pp-begin'/'pp-end').
'use strict';
const net = require('node:net');
const { send, mark, fail, args, target, percentiles, Samples, stats, isBypassed } = require('../lib/child');

const a = args();
const conns = Number(a.conns || 10000);
const batch = Number(a.batch || 200);
const idleMs = Number(a['idle-ms'] || 10000);
const ms = Number(a.ms || 2000);

function open() {
  return new Promise((resolve, reject) => {
    const s = net.connect(target(a), () => {
      s.setNoDelay(true);
      s.write('x');
    });
    s.once('data', (d) => (d.length === 1 && d[0] === 0x78 ? resolve(s) : reject(new Error('bad echo'))));
    s.on('error', (e) => reject(new Error(`connection ${held.length}: ${e.code || ''} ${e.message}`)));
  });
}

function pingpong(s, until, samples) {
  return new Promise((resolve, reject) => {
    const msg = Buffer.alloc(64, 7);
    let have = 0;
    let n = 0;
    let t0;
    const next = () => {
      if (process.hrtime.bigint() >= until) {
        s.removeListener('data', onData);
        return resolve(n);
      }
      have = 0;
      t0 = process.hrtime.bigint();
      s.write(msg);
    };
    const onData = (d) => {
      for (const b of d) if (b !== 7) return reject(new Error('bad echo byte'));
      have += d.length;
      if (have < 64) return;
      if (have > 64) return reject(new Error('echo overran'));
      if (samples) samples.push(Number(process.hrtime.bigint() - t0) / 1000);
      n++;
      next();
    };
    s.on('data', onData);
    next();
  });
}

const held = [];
(async () => {
  const first = await open();
  await pingpong(first, process.hrtime.bigint() + 200000000n, null); // warm up
  await mark('base');
  const tOpen = process.hrtime.bigint();
  while (held.length < conns) {
    const n = Math.min(batch, conns - held.length);
    held.push(...(await Promise.all(Array.from({ length: n }, open))));
  }
  const openSeconds = Number(process.hrtime.bigint() - tOpen) / 1e9;
  await mark('held');
  await mark('idle-begin');
  await new Promise((r) => setTimeout(r, idleMs));
  await mark('idle-end');
  const samples = new Samples();
  await mark('pp-begin');
  const t0 = process.hrtime.bigint();
  const n = await pingpong(first, t0 + BigInt(ms) * 1000000n, samples);
  await mark('pp-end');
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  send({
    result: { conns: held.length, openSeconds, idleMs, roundTrips: n, seconds, rttUs: percentiles(samples.values()) },
    bypassed: isBypassed(first) && held.every(isBypassed),
    connections: conns + 1,
    stats: stats(),
  });
})().catch((e) => fail(e.message));
