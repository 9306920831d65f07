// A peer that dies without closing (kill -9) resets its connections: the
// survivor's socket errors with ECONNRESET within a second instead of hanging.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('./support/harness');

test('kill -9 of a server resets the client\'s bypassed connection within 1 s', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js');
  const { port } = await h.next(server);
  const client = h.start('hang-client.js', [port]);
  assert.deepStrictEqual(await h.next(client), { connected: true, bypassed: true });
  const killedAt = Date.now();
  server.child.kill('SIGKILL');
  const outcome = await h.next(client, 5000);
  const elapsed = Date.now() - killedAt;
  assert.deepStrictEqual(outcome, { code: 'ECONNRESET', syscall: 'read' });
  assert.ok(elapsed < 1000, `reset after ${elapsed} ms`);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
});
