// Bulk sink: checks every stream byte-exact against the deterministic pattern
// (lib/pattern.js), or with --count-only just counts the bytes (and reads the
// stream id from the first block's header), so the socket's own cost shows;
// when a client half-closes, answers one JSON line {bytes, stream, error} and
// closes.
'use strict';
const net = require('node:net');
const fs = require('node:fs');
const { send, args } = require('../lib/child');
const { Checker } = require('../lib/pattern');

const a = args();
const server = net.createServer({ allowHalfOpen: true }, (s) => {
  const c = a['count-only'] ? new Counter() : new Checker();
  s.on('data', (d) => c.feed(d));
  s.on('end', () => s.end(JSON.stringify({ bytes: c.pos, stream: c.stream, error: c.error }) + '\n'));
  s.on('error', () => {});
});
class Counter {
  constructor() {
    this.pos = 0;
    this.stream = null;
    this.head = [];
    this.error = null;
  }
  feed(chunk) {
    if (this.pos < 4) {
      this.head.push(chunk.subarray(0, 4 - this.pos));
      const h = Buffer.concat(this.head);
      if (h.length === 4) this.stream = h.readUInt32LE(0);
    }
    this.pos += chunk.length;
  }
}
const ready = () => send({ ready: true, port: a.unix ? null : server.address().port });
if (a.unix) {
  fs.rmSync(a.unix, { force: true });
  server.listen(a.unix, ready);
} else server.listen(0, '127.0.0.1', ready);
process.on('exit', () => {
  if (a.unix) fs.rmSync(a.unix, { force: true });
});
