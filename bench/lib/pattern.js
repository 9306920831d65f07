// The deterministic byte stream of the bulk benchmark, and its checker.
// The stream is a sequence of 64 KiB blocks: block k of stream s is a fixed
// pseudo-random template whose first 8 bytes are replaced by (s, k) as two
// little-endian uint32s. The checker compares every byte received against
// that expectation (template bytes with Buffer.equals, i.e. memcmp), so a lost,
// duplicated, reordered or corrupted byte anywhere fails the run.
'use strict';
const BLOCK = 64 * 1024;

const template = Buffer.alloc(BLOCK);
{
  let x = 0x9e3779b9;
  for (let i = 0; i < BLOCK; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    template[i] = x & 0xff;
  }
}

// `blocks` consecutive blocks of stream `stream`, starting at block `first`.
function makeChunk(stream, first, blocks) {
  const buf = Buffer.allocUnsafe(blocks * BLOCK);
  for (let i = 0; i < blocks; i++) {
    template.copy(buf, i * BLOCK);
    buf.writeUInt32LE(stream >>> 0, i * BLOCK);
    buf.writeUInt32LE((first + i) >>> 0, i * BLOCK + 4);
  }
  return buf;
}

class Checker {
  constructor() {
    this.pos = 0; // bytes checked so far
    this.stream = null; // learnt from block 0's header
    this.header = Buffer.alloc(8);
    this.error = null;
  }
  feed(chunk) {
    if (this.error) return;
    let off = 0;
    while (off < chunk.length) {
      const inBlock = this.pos % BLOCK;
      const k = Math.floor(this.pos / BLOCK);
      const n = Math.min(chunk.length - off, BLOCK - inBlock);
      let o = inBlock;
      let p = off;
      if (o < 8) {
        const h = Math.min(8 - o, n);
        chunk.copy(this.header, o, p, p + h);
        o += h;
        p += h;
        if (o === 8) {
          const s = this.header.readUInt32LE(0);
          const kk = this.header.readUInt32LE(4);
          if (this.stream === null && k === 0) this.stream = s;
          if (s !== this.stream || kk !== k >>> 0) {
            this.error = `block header at byte ${this.pos - inBlock}: stream ${s} block ${kk}, expected stream ${this.stream} block ${k}`;
            return;
          }
        }
      }
      const rest = n - (p - off);
      if (rest > 0 && !chunk.subarray(p, p + rest).equals(template.subarray(o, o + rest))) {
        this.error = `data differs within bytes ${this.pos - inBlock + o}..${this.pos - inBlock + o + rest}`;
        return;
      }
      off += n;
      this.pos += n;
    }
  }
}

// Rewrites the block headers of a chunk made by makeChunk (the template bytes
// are the same in every block): a sender can reuse its buffers once written.
function restamp(buf, stream, first) {
  for (let i = 0, o = 0; o < buf.length; i++, o += BLOCK) {
    buf.writeUInt32LE(stream >>> 0, o);
    buf.writeUInt32LE((first + i) >>> 0, o + 4);
  }
  return buf;
}

module.exports = { BLOCK, makeChunk, restamp, Checker };
