// Data written before a process ends still arrives: the kernel keeps sending
// after the process is gone; sidestep's stack lives in the process, so the
// process stays until its peer has acknowledged everything.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('./support/harness');

for (const mode of ['kernel', 'bypass']) {
  test(`a 16 MB reply written just before the writer exits arrives whole (${mode})`, async (t) => {
    const h = new Harness(t);
    const env = { SIDESTEP: mode === 'kernel' ? '0' : '1' };
    const server = h.start('linger-server.js', [], { env });
    const { port } = await h.next(server);
    const client = h.start('slow-reader.js', [port], { env });
    assert.deepStrictEqual(await h.next(client, 20000), { got: 16 << 20, bypassed: mode === 'bypass' });
    assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
    assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  });
}
