// A peer that dies without closing (kill -9): the survivor's socket ends as it
// would with kernel sockets — the kernel closes a dead process's sockets, with
// a FIN when it had read everything it was sent (here: the server had read the
// request it never answered), an RST otherwise — and within a second, not
// after timeouts.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('./support/harness');

async function killServer(t, mode) {
  const h = new Harness(t);
  const env = { SIDESTEP: mode === 'kernel' ? '0' : '1' };
  const server = h.start('http-server.js', [], { env });
  const { port } = await h.next(server);
  const client = h.start('hang-client.js', [port], { env });
  const up = await h.next(client);
  // Let the server read the request first (it never answers): killed with
  // nothing unread, its kernel would close with a FIN. (Killed before it
  // read, the kernel resets — in both modes; this test is about the first.)
  await new Promise((r) => setTimeout(r, 200));
  const killedAt = Date.now();
  server.child.kill('SIGKILL');
  const outcome = await h.next(client, 5000);
  const elapsed = Date.now() - killedAt;
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  return { up, outcome, elapsed };
}

test('kill -9 of a server ends the client\'s bypassed connection as the kernel does, within 1 s', async (t) => {
  const kernel = await killServer(t, 'kernel');
  const bypass = await killServer(t, 'bypass');
  assert.deepStrictEqual([kernel.up, bypass.up], [{ connected: true, bypassed: false }, { connected: true, bypassed: true }]);
  assert.deepStrictEqual(bypass.outcome, kernel.outcome);
  assert.deepStrictEqual(bypass.outcome, { code: 'EOF' });
  assert.ok(bypass.elapsed < 1000, `ended after ${bypass.elapsed} ms`);
});
