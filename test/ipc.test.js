// A bypassed socket can't be handed to another process (its connection lives
// in this process's stack): child.send() fails with a clear error instead of
// crashing the process, while a kernel socket of a hooked process is sent as
// usual.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('./support/harness');

test('child.send(bypassedSocket) throws ERR_SIDESTEP_HANDLE_TRANSFER; kernel sockets still travel', async (t) => {
  const h = new Harness(t);
  const bypass = h.start('send-socket.js');
  const r = await h.next(bypass);
  assert.strictEqual(r.error, 'ERR_SIDESTEP_HANDLE_TRANSFER');
  assert.strictEqual(r.bypassed, true);
  assert.match(r.message, /cannot be sent to another process/);
  assert.deepStrictEqual(await h.exit(bypass), { code: 0, signal: null });

  const kernel = h.start('send-socket.js', [], { env: { SIDESTEP: '0' } });
  assert.deepStrictEqual(await h.next(kernel), { sent: true, got: 'from child' });
  assert.deepStrictEqual(await h.exit(kernel), { code: 0, signal: null });
});
