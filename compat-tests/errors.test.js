// Dual-mode compat: ECONNRESET and EPIPE with their code, errno, syscall and
// message, and the order of events around them (fixtures/errors.js): a peer
// that resets while we read or while we don't read and then write; a peer
// that closed while we keep writing (the first write draws its RST, the next
// fails with EPIPE); a peer process that exits with the connection open.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

const EPIPE = 'EPIPE:-32:write:write EPIPE';
const PEER_EXITS_FIN = 'peer process exits (fin)';

test('ECONNRESET and EPIPE reach the application the same way in kernel and bypass mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'errors.js');
  assert.ifError(kernel.error);
  assert.ifError(bypass.error);
  const k = kernel.cases;
  const b = bypass.cases;
  assert.deepStrictEqual(Object.keys(b), Object.keys(k));
  for (const name of Object.keys(k)) if (name !== PEER_EXITS_FIN) assert.deepStrictEqual(b[name], k[name], name);

  // What the kernel does, checked once.
  assert.deepStrictEqual(k['reset while reading'], ['error:ECONNRESET:-104:read:read ECONNRESET', 'close:true', 'after:cb:ERR_STREAM_DESTROYED']);
  assert.deepStrictEqual(k['reset while not reading, then writes'], [
    'write0:returned:false', 'write0:cb:ECONNRESET:-104:write:write ECONNRESET', 'error:ECONNRESET:-104:write:write ECONNRESET',
    'close:true', 'late:cb:ERR_STREAM_DESTROYED']);
  const epipe = ['end', 'write0:returned:true', 'write0:cb:ok', 'write1:returned:false', `write1:cb:${EPIPE}`, `error:${EPIPE}`, 'close:true', 'late:cb:ERR_STREAM_DESTROYED'];
  assert.deepStrictEqual(k['peer closed, then writes'], epipe);
  assert.deepStrictEqual(k['peer closed while paused, then writes'], epipe);
  assert.deepStrictEqual(k[PEER_EXITS_FIN], epipe);
  assert.deepStrictEqual(k['peer process exits (unread)'], ['error:ECONNRESET:-104:read:read ECONNRESET', 'close:true']);

  // A peer process that exited after its FIN: the same EPIPE, but bypass
  // knows at once that the process is gone (pidfd), so the first write fails
  // rather than the second (docs/compatibility.md, known differences).
  assert.deepStrictEqual(b[PEER_EXITS_FIN], ['end', 'write0:returned:false', `write0:cb:${EPIPE}`, `error:${EPIPE}`, 'close:true', 'late:cb:ERR_STREAM_DESTROYED']);

  for (const name of Object.keys(kernel.paths)) {
    assert.deepStrictEqual(kernel.paths[name], { bypassed: false, kernel: true }, name);
    assert.deepStrictEqual(bypass.paths[name], { bypassed: true, kernel: false }, name);
  }
});
