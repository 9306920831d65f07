// The benchmark's server: http.createServer hello world (https.createServer
// with --tls, the test tree's self-signed certificate). Prints {ready, port};
// answers the runner's 'stats' and 'exit' commands (lib/child.js).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { send, args } = require('./lib/child');

const body = Buffer.from('hello world');
const tls = args().tls;
const certs = path.join(__dirname, '..', 'test', 'fixtures');
const handler = (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
};
const server = tls
  ? require('node:https').createServer({ key: fs.readFileSync(path.join(certs, 'tls-key.pem')), cert: fs.readFileSync(path.join(certs, 'tls-cert.pem')) }, handler)
  : require('node:http').createServer(handler);
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => send({ ready: true, port: server.address().port }));
