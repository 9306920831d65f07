// The benchmark's server: http.createServer hello world. Prints {port}, and
// on stdin 'stats' prints sidestep's counters (when hooked), then exits on 'exit'.
'use strict';
const http = require('node:http');
const path = require('node:path');
const readline = require('node:readline');

const register = Object.keys(require.cache).find((k) => k.endsWith(path.join('dist', 'register.js')));
const stats = register ? require(path.join(path.dirname(register), 'index.js')).stats : () => null;

const body = Buffer.from('hello world');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'stats') console.log(JSON.stringify({ stats: stats() }));
  if (line === 'exit') process.exit(0);
});
