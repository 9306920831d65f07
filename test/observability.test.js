// Strict mode and SIDESTEP_REPORT: acceleration that silently doesn't happen
// can be made loud, and every process can leave its counters behind.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Harness } = require('./support/harness');

test('SIDESTEP_STRICT=1: a connect that would use the kernel fails, naming the reason', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js', [], { hooked: false });
  const { port } = await h.next(server);
  const strict = h.start('connect.js', [port], { env: { SIDESTEP_STRICT: '1' } });
  const r = await h.next(strict);
  assert.strictEqual(r.error, 'ERR_SIDESTEP_STRICT');
  assert.match(r.message, /would use the kernel \(no-listener: the listening socket there is not served by a sidestep process\)/);
  // The same client without strict mode just uses the kernel.
  const relaxed = h.start('connect.js', [port]);
  assert.deepStrictEqual(await h.next(relaxed), { connected: true, bypassed: false });
  h.send(server, { cmd: 'close' });
  await h.exit(server);
});

test('SIDESTEP_STRICT=1 with a hooked server: bypassed, no error', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js');
  const { port } = await h.next(server);
  const strict = h.start('connect.js', [port], { env: { SIDESTEP_STRICT: '1' } });
  assert.deepStrictEqual(await h.next(strict), { connected: true, bypassed: true });
  h.send(server, { cmd: 'close' });
  await h.exit(server);
});

test('SIDESTEP_REPORT: every hooked process appends one line of counters at exit', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-report-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const report = path.join(dir, 'report.jsonl');
  const h = new Harness(t);
  const env = { SIDESTEP_REPORT: report };
  const server = h.start('http-server.js', [], { env });
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 2, 2, 0], { env });
  const out = await h.next(client, 30000);
  assert.ifError(out.error);
  await h.exit(client);
  h.send(server, { cmd: 'close' });
  await h.exit(server);
  const lines = fs.readFileSync(report, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.strictEqual(lines.length, 2);
  const byPid = Object.fromEntries(lines.map((l) => [l.pid, l]));
  for (const p of [server, client]) {
    const l = byPid[p.child.pid];
    assert.ok(l, `a line for pid ${p.child.pid}`);
    assert.strictEqual(l.connectionsBypassed, 3); // one keep-alive + two fresh
    assert.strictEqual(l.connectionsFallback, 0);
    assert.deepStrictEqual(l.fallbackReasons, {});
  }
});

test('SIDESTEP_STRICT=1: a listen that would be kernel-only fails, naming the reason', async (t) => {
  const h = new Harness(t);
  const relaxed = h.start('listen-fd.js');
  assert.deepStrictEqual(await h.next(relaxed), { listening: true });
  const strict = h.start('listen-fd.js', [], { env: { SIDESTEP_STRICT: '1' } });
  const r = await h.next(strict);
  assert.strictEqual(r.error, 'ERR_SIDESTEP_STRICT');
  assert.match(r.message, /would use the kernel \(listen-fd: a server listening on an inherited fd or handle\)/);
});
