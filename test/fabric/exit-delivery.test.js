// Bytes written just before a process ends are delivered (issue 14): a
// server answers with 200 B, 64 KiB, 1 MiB or 4 MiB, end()s, and at once ends its
// process — naturally, process.exit(), an uncaught exception, SIGTERM,
// SIGINT, SIGHUP or SIGKILL. With kernel sockets the kernel finishes the
// stream; bypassed, the reader's stack finishes it from the writer's send
// memory. The reader must get at least as many bytes as kernel sockets
// deliver, byte-exact, with the same ending, and the writer must be gone as
// soon as with kernel sockets.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const { Harness } = require('../support/harness');
const { chunk } = require('./fixtures/pattern');

const SIZES = [200, 64 * 1024, 1 << 20, 4 << 20];
const ENDINGS = ['natural', 'exit', 'throw', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGKILL'];

/** sha256 of the first `n` bytes of the pattern for `seed`. */
function patternSha(seed, n) {
  const h = crypto.createHash('sha256');
  for (let i = 0, left = n; left > 0; i++, left -= 65536) h.update(chunk(seed, i).subarray(0, Math.min(65536, left)));
  return h.digest('hex');
}

async function run(t, mode, bytes, how, seed) {
  const h = new Harness(t);
  const env = { SIDESTEP: mode === 'kernel' ? '0' : '1' };
  const writer = h.start('exit-writer.js', [bytes, how, seed], { env });
  const { port } = await h.next(writer);
  const reader = h.start('exit-reader.js', [port], { env });
  const said = await h.next(writer);
  const endingAt = Date.now();
  const exited = await h.exit(writer, 20000);
  const writerGoneMs = Date.now() - endingAt;
  const got = await h.next(reader, 20000);
  assert.deepStrictEqual(await h.exit(reader), { code: 0, signal: null });
  return { ...got, writer: said, exited, writerGoneMs };
}

for (const how of ENDINGS) {
  test(`${how}: what was written just before it is delivered, byte-exact, as with kernel sockets`, async (t) => {
    for (const bytes of SIZES) {
      const seed = bytes + how.length;
      const kernel = await run(t, 'kernel', bytes, how, seed);
      const bypass = await run(t, 'bypass', bytes, how, seed);
      const name = `${how}, ${bytes} B`;
      // The paths: the kernel's, and the fabric's (counters and the kernel's table).
      assert.deepStrictEqual([kernel.bypassed, kernel.kernel], [false, true], name);
      assert.deepStrictEqual([bypass.bypassed, bypass.kernel], [true, false], name);
      assert.strictEqual(bypass.writer.stats.connectionsAccepted, 1, name);
      assert.ok(bypass.stats.framesIn > 0 && bypass.stats.connectionsBypassed === 1, name);
      // At least as much, byte-exact, the same ending.
      assert.ok(bypass.bytes >= kernel.bytes, `${name}: bypass ${bypass.bytes} < kernel ${kernel.bytes}`);
      assert.strictEqual(bypass.sha, patternSha(seed, bypass.bytes), `${name}: bytes differ`);
      assert.strictEqual(kernel.sha, patternSha(seed, kernel.bytes), `${name}: kernel bytes differ`);
      assert.strictEqual(bypass.ending, kernel.ending, name);
      // The same end for the writer, no later than with kernel sockets (the
      // slack is the machine's noise; the old behaviour held it for up to 30 s).
      assert.deepStrictEqual(bypass.exited, kernel.exited, name);
      assert.ok(bypass.writerGoneMs <= kernel.writerGoneMs + 1000, `${name}: writer gone after ${bypass.writerGoneMs} ms (kernel ${kernel.writerGoneMs} ms)`);
      t.diagnostic(`${name}: kernel ${kernel.bytes} B ${kernel.ending} (writer gone in ${kernel.writerGoneMs} ms), ` +
        `bypass ${bypass.bytes} B ${bypass.ending} (${bypass.writerGoneMs} ms, ${bypass.stats.orphanBytes} B finished from the dead writer's memory)`);
    }
  });
}

test('a survivor that stops reading a dead writer\'s stream holds its memory only until it closes', async (t) => {
  const h = new Harness(t);
  const seed = 77;
  const writer = h.start('exit-writer.js', [4 << 20, 'SIGKILL', seed]);
  const { port } = await h.next(writer);
  // The reader pauses after its first chunk for long enough that the writer
  // is dead with most of its 4 MiB still owed, then reads on.
  const reader = h.start('exit-reader.js', [port, 1500]);
  await h.next(writer);
  assert.deepStrictEqual(await h.exit(writer), { code: null, signal: 'SIGKILL' });
  const got = await h.next(reader, 20000);
  assert.strictEqual(got.bytes, 4 << 20);
  assert.strictEqual(got.sha, patternSha(seed, 4 << 20));
  assert.strictEqual(got.ending, 'EOF');
  assert.ok(got.stats.orphanBytes > 0, 'part of the stream came from the dead writer\'s memory');
  assert.strictEqual(got.stats.orphansFinished, 1);
  assert.strictEqual(got.stats.deadArenas, 0, 'the dead writer\'s memory was let go once its stream was finished');
  assert.deepStrictEqual(await h.exit(reader), { code: 0, signal: null });
});

test('a survivor that leaves a dead writer\'s bytes unread longer than SIDESTEP_ORPHAN_LINGER_MS is reset, and the memory let go', async (t) => {
  const h = new Harness(t);
  const seed = 78;
  const writer = h.start('exit-writer.js', [4 << 20, 'SIGKILL', seed]);
  const { port } = await h.next(writer);
  // Linux drops an orphaned socket's unsent data after tcp_fin_timeout; here
  // 500 ms, and the reader pauses 2 s.
  const reader = h.start('exit-reader.js', [port, 2000], { env: { SIDESTEP_ORPHAN_LINGER_MS: '500' } });
  await h.next(writer);
  await h.exit(writer);
  const got = await h.next(reader, 20000);
  assert.strictEqual(got.ending, 'ECONNRESET');
  assert.ok(got.bytes < 4 << 20, `${got.bytes} bytes`);
  assert.strictEqual(got.sha, patternSha(seed, got.bytes), 'what did arrive is exact');
  assert.strictEqual(got.stats.orphansReset, 1);
  assert.strictEqual(got.stats.deadArenas, 0);
  assert.deepStrictEqual(await h.exit(reader), { code: 0, signal: null });
});
