// Bulk sink for bench/bulk-raw/run.sh: counts bytes (no check), answers the
// count when the client half-closes. Prints {"port"} when listening.
'use strict';
const net = require('node:net');
const server = net.createServer({ allowHalfOpen: true }, (c) => {
  let n = 0;
  c.on('data', (d) => { n += d.length; });
  c.on('end', () => c.end(String(n)));
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
