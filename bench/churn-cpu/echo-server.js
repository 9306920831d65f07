// The echo server of bench/procs/echo-server.js without the bench harness:
// prints {port}.
'use strict';
const net = require('node:net');

const server = net.createServer({ noDelay: true }, (s) => {
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
  s.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
