// Echo server for ping-pong, connection churn and scale: every byte received
// is written back. Listens on 127.0.0.1:0 or on --unix <path>; prints {port}.
'use strict';
const net = require('node:net');
const fs = require('node:fs');
const { send, args } = require('../lib/child');

const a = args();
let accepted = 0;
const server = net.createServer({ noDelay: true }, (s) => {
  accepted++;
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
  s.on('error', () => {}); // a client that resets is not our failure; the client judges
});
server.maxConnections = 1 << 30;
const ready = () => send({ ready: true, port: a.unix ? null : server.address().port });
if (a.unix) {
  fs.rmSync(a.unix, { force: true });
  server.listen(a.unix, ready);
} else server.listen(0, '127.0.0.1', ready);
process.on('exit', () => {
  if (a.unix) fs.rmSync(a.unix, { force: true });
});
