// Dual-mode compat: a socket ended before it connected still sends its bytes,
// then EOF, and closes — one of the most common ways to write a client. Both
// ends in one process and in two, plain and TLS; the bypass run proves its
// path by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('a socket ended before it connected delivers, ends and closes, in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'end-before-connect.js');
  assert.strictEqual(bypass.cases.length, 6);
  for (const [k, b] of bypass.cases.map((c, i) => [kernel.cases[i], c])) {
    const name = `${b.kind}, ${b.where}`;
    assert.deepStrictEqual([k.data, b.data], ['hello', 'hello'], name);
    assert.deepStrictEqual(k.server, ['end', 'close'], name);
    assert.deepStrictEqual(b.server, k.server, name);
    assert.ok(k.client.includes('finish') && k.client.at(-1) === 'close:false', `${name}: kernel ${k.client}`);
    assert.deepStrictEqual(b.client, k.client, name);
    assert.deepStrictEqual([k.bypassed, k.kernel], [[false, false], true], name);
    assert.deepStrictEqual([b.bypassed, b.kernel], [[true, true], false], name);
  }
  // Each case's server counts its connection; a same-process case counts the client's too.
  // Not assertPaths: a case reports both ends' paths (the client's maybe from
  // its child process) against one kernel table entry, checked per case above
  // by name. This process's own connects and listens: none on the kernel.
  assert.strictEqual(kernel.bypassedDelta, 0);
  assert.strictEqual(bypass.bypassedDelta, 9);
  assert.deepStrictEqual(bypass.fallbackReasons, {});
});
