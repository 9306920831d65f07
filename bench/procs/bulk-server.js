// Bulk sink: checks every stream byte-exact against the deterministic pattern
// (lib/pattern.js); when a client half-closes, answers one JSON line
// {bytes, error} and closes.
'use strict';
const net = require('node:net');
const fs = require('node:fs');
const { send, args } = require('../lib/child');
const { Checker } = require('../lib/pattern');

const a = args();
const server = net.createServer({ allowHalfOpen: true }, (s) => {
  const c = new Checker();
  s.on('data', (d) => c.feed(d));
  s.on('end', () => s.end(JSON.stringify({ bytes: c.pos, stream: c.stream, error: c.error }) + '\n'));
  s.on('error', () => {});
});
const ready = () => send({ ready: true, port: a.unix ? null : server.address().port });
if (a.unix) {
  fs.rmSync(a.unix, { force: true });
  server.listen(a.unix, ready);
} else server.listen(0, '127.0.0.1', ready);
process.on('exit', () => {
  if (a.unix) fs.rmSync(a.unix, { force: true });
});
