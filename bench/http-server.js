// The benchmark's server: http.createServer hello world. Prints {ready, port};
// answers the runner's 'stats' and 'exit' commands (lib/child.js).
'use strict';
const http = require('node:http');
const { send } = require('./lib/child');

const body = Buffer.from('hello world');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => send({ ready: true, port: server.address().port }));
