// Dual-mode compat: the write queue over time (fixtures/write-queue.js) —
// `_handle.writeQueueSize`, `bufferSize` and `writableLength` after each
// write() call, in each write callback, at 'drain' and when a paused server
// resumes, for writes made once connected (1 MB, and 40 MB, more than the
// transport takes while the server doesn't read) and while connecting
// (issue 15, item 2). Each run proves the path of both ends of its three
// connections by the fabric's counter and the kernel's TCP table.
//
// Compared exactly: the events in the order they happened, write()'s return
// values, writableLength, bufferSize and what the stream holds back. Not
// writeQueueSize itself (how much of a pending write the kernel took, or the
// stack, is the transport's business), but what libuv's definition makes
// certain of it at each sample: it equals 0 when nothing is being written,
// and it never exceeds the bytes of the writes handed to the handle and not
// yet completed (writableLength less what the stream holds back).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

const PHASES = ['afterConnect', 'large', 'connecting'];

/** What Node's and libuv's semantics make certain of a sample's writeQueueSize. */
const facts = (samples) => samples.map((s) => ({
  at: s.at,
  bufferSizeIsWritableLength: s.bufferSize === s.writableLength,
  zeroWhenNothingWritten: s.writableLength - s.held > 0 || s.wqs === 0,
  withinWritesInFlight: s.wqs <= s.writableLength - s.held,
  queued: s.wqs > 0,
}));
const withoutWqs = (samples) => samples.map(({ wqs: _w, ...s }) => s);

test('writeQueueSize, bufferSize and writableLength over time are the same in both modes', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'write-queue.js', { ms: 30000 });
  for (const [mode, r] of [['kernel', kernel], ['bypass', bypass]]) {
    for (const p of PHASES) t.diagnostic(`${mode} ${p}: ${JSON.stringify(r.phases[p])}`);
  }
  // Three connections, both ends in this process: each counted by both ends.
  assertPaths(kernel, bypass, (r) => PHASES.flatMap((p) => [r.paths[p].server, r.paths[p].client]), {
    delta: 6,
    describe: (r) => JSON.stringify(r.paths),
  });
  const k = kernel.phases;

  await t.test('kernel mode: as the fixture means it', () => {
    const sizes = { afterConnect: 2e5, large: 8e6, connecting: 2e5 };
    for (const p of PHASES) {
      assert.strictEqual(k[p].received, 5 * sizes[p], `${p}: received`);
      for (const f of facts(k[p].samples)) {
        assert.deepStrictEqual(f, { at: f.at, bufferSizeIsWritableLength: true, zeroWhenNothingWritten: true, withinWritesInFlight: true, queued: f.queued }, p);
      }
    }
    const callbacks = [0, 1, 2, 3, 4].map((i) => `callback ${i}`);
    const writes = (ret) => [0, 1, 2, 3, 4].map((i) => `write ${i}: ${ret}`);
    // 1 MB once connected: loopback's kernel takes it at once; nothing queued, no 'drain'.
    assert.deepStrictEqual(k.afterConnect.events, ['connect', ...writes(true), ...callbacks, 'server resumes']);
    assert.ok(k.afterConnect.samples.every((s) => s.wqs === 0 && s.writableLength === 0), 'afterConnect: all taken at once');
    // 40 MB: the first write waits for the server; the other four go together
    // (writev) when it completes, and 'drain' comes before their callbacks.
    assert.deepStrictEqual(k.large.events, ['connect', ...writes(false), 'server resumes', 'callback 0', 'drain', ...callbacks.slice(1)]);
    assert.deepStrictEqual(k.large.samples.map((s) => [s.at, s.writableLength, s.held, s.wqs > 0]), [
      ['connect', 0, 0, false],
      ...[0, 1, 2, 3, 4].map((i) => [`write ${i}`, (i + 1) * 8e6, i * 8e6, true]),
      ['server resumes', 40e6, 32e6, true],
      ['callback 0', 32e6, 0, true],
      ['drain', 0, 0, false],
      ...callbacks.slice(1).map((c) => [c, 0, 0, false]),
    ]);
    // Queued while connecting: counted in bytes, 'drain' once connected and written.
    assert.deepStrictEqual(k.connecting.events, [...writes(false), 'connect', 'drain', ...callbacks, 'server resumes']);
    assert.deepStrictEqual(k.connecting.samples.slice(0, 6).map((s) => s.writableLength), [2e5, 4e5, 6e5, 8e5, 10e5, 10e5]);
  });

  // The bypass run against the kernel's, phase by phase.
  for (const p of PHASES) {
    await t.test(`bypass mode: ${p}`, () => {
      const b = bypass.phases[p];
      assert.strictEqual(b.received, k[p].received, 'received');
      assert.deepStrictEqual(b.events, k[p].events, 'events');
      assert.deepStrictEqual(withoutWqs(b.samples), withoutWqs(k[p].samples), 'samples');
      assert.deepStrictEqual(facts(b.samples), facts(k[p].samples), `writeQueueSize (samples: ${JSON.stringify(b.samples)})`);
    });
  }
});
