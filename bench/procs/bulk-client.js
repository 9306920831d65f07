// Bulk source: --streams connections each send --bytes/--streams bytes of the
// deterministic pattern (1 MiB writes, respecting backpressure), half-close,
// and wait for the server's verdict. Throughput counts from "all connected"
// to "all verdicts received".
'use strict';
const net = require('node:net');
const { send, mark, fail, args, target, stats, isBypassed } = require('../lib/child');
const { BLOCK, makeChunk, restamp } = require('../lib/pattern');

const a = args();
const streams = Number(a.streams || 1);
const total = Number(a.bytes || 1 << 30);
const perStream = Math.ceil(total / streams / BLOCK) * BLOCK;
const CHUNK_BLOCKS = 16; // 1 MiB writes

function connect(i) {
  return new Promise((resolve, reject) => {
    const s = net.connect(target(a), () => resolve(s));
    s.once('error', reject);
  });
}

function pump(s, id) {
  return new Promise((resolve, reject) => {
    let block = 0;
    const blocks = perStream / BLOCK;
    let reply = '';
    s.on('data', (d) => (reply += d));
    s.on('end', () => {
      try {
        resolve(JSON.parse(reply));
      } catch {
        reject(new Error(`stream ${id}: bad verdict ${JSON.stringify(reply)}`));
      }
    });
    s.on('error', (e) => reject(new Error(`stream ${id}: ${e.code || ''} ${e.message}`)));
    // At most POOL buffers of the pattern exist; each is reused once its
    // write has completed (only the block headers change), so the sender
    // costs little more than the socket itself.
    const POOL = 8;
    const free = [];
    let made = 0;
    let starved = false;
    const release = (buf) => {
      free.push(buf);
      if (starved) {
        starved = false;
        write();
      }
    };
    const write = () => {
      while (block < blocks) {
        const n = Math.min(CHUNK_BLOCKS, blocks - block);
        let buf;
        if (n !== CHUNK_BLOCKS) buf = makeChunk(id, block, n);
        else if (free.length) buf = restamp(free.pop(), id, block);
        else if (made < POOL) {
          made++;
          buf = makeChunk(id, block, n);
        } else {
          starved = true;
          return;
        }
        const ok = s.write(buf, () => n === CHUNK_BLOCKS && release(buf));
        block += n;
        if (!ok) return s.once('drain', write);
      }
      s.end();
    };
    write();
  });
}

(async () => {
  const socks = [];
  for (let i = 0; i < streams; i++) socks.push(await connect(i));
  await mark('begin');
  const t0 = process.hrtime.bigint();
  const verdicts = await Promise.all(socks.map((s, i) => pump(s, i)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await mark('end');
  verdicts.forEach((v, i) => {
    if (v.error) throw new Error(`stream ${i}: ${v.error}`);
    if (v.bytes !== perStream) throw new Error(`stream ${i}: server got ${v.bytes} bytes, sent ${perStream}`);
    if (v.stream !== i) throw new Error(`stream ${i}: server saw stream id ${v.stream}`);
  });
  send({
    result: { bytes: perStream * streams, streams, seconds, gbPerSec: (perStream * streams) / seconds / 1e9 },
    bypassed: socks.every(isBypassed),
    connections: streams,
    stats: stats(),
  });
})().catch((e) => fail(e.message));
