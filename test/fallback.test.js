// The four kernel fallbacks of DESIGN.md §2: each still serves HTTP, and each
// proves it used the kernel (a kernel ESTABLISHED entry for the 4-tuple, no
// bypass counted).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Harness, ROOT } = require('./support/harness');

function assertAllKernel(report, n) {
  assert.ifError(report.error);
  assert.strictEqual(report.responses.length, n);
  report.responses.forEach((r) => assert.strictEqual(r.status, 200));
  assert.ok(report.sockets.length >= 2);
  for (const s of report.sockets) {
    assert.strictEqual(s.bypassed, false);
    assert.strictEqual(s.kernel, true, `kernel has ${s.localPort}->${s.remotePort}`);
  }
}

test('SIDESTEP=0: the hook is loaded but every socket uses the kernel', async (t) => {
  const h = new Harness(t);
  const env = { SIDESTEP: '0' };
  const server = h.start('http-server.js', [], { env });
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 3, 2, 1], { env });
  const report = await h.next(client, 30000);
  assertAllKernel(report, 6);
  assert.strictEqual(report.stats.enabled, false);
  assert.match(report.stats.disabledReason, /SIDESTEP=0/);
  assert.strictEqual(report.stats.connectionsBypassed, 0);
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
  h.send(server, { cmd: 'close' });
  await h.exit(server);
  await h.exit(client);
});

test('addon cannot load: kernel sockets, and the reason is logged once', async (t) => {
  // A copy of the package without its build/: exactly what a failed or
  // missing native build leaves.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-noaddon-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  const register = path.join(dir, 'dist', 'register.js');

  const h = new Harness(t);
  const env = { NODE_DEBUG: 'sidestep' };
  const server = h.start('http-server.js', [], { register, env });
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 3, 2, 1], { register, env });
  const report = await h.next(client, 30000);
  assertAllKernel(report, 6);
  assert.strictEqual(report.stats.enabled, false);
  assert.match(report.stats.disabledReason, /cannot load the native addon/);
  await h.exit(client);
  const logged = client.stderr.split('\n').filter((l) => /cannot load the native addon/.test(l));
  assert.strictEqual(logged.length, 1, `logged ${logged.length} times:\n${client.stderr}`);
  assert.match(logged[0], /^SIDESTEP \d+: /);
  h.send(server, { cmd: 'close' });
  await h.exit(server);
});

test('hooked client -> plain server: a kernel connect, counted as a fallback', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js', [], { hooked: false });
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 3, 2, 1], { env: { NODE_DEBUG: 'sidestep' } });
  const report = await h.next(client, 30000);
  assertAllKernel(report, 6);
  assert.strictEqual(report.stats.enabled, true);
  assert.strictEqual(report.stats.connectionsBypassed, 0);
  assert.strictEqual(report.stats.fallbackReasons['no-listener'], report.sockets.length);
  // Counted every time, logged once.
  await h.exit(client);
  const logged = client.stderr.split('\n').filter((l) => /kernel fallback: no-listener/.test(l));
  assert.strictEqual(logged.length, 1, client.stderr);
  h.send(server, { cmd: 'close' });
  await h.exit(server);
  await h.exit(client);
});

test('plain clients (node, curl) -> hooked server: served through its kernel listener', async (t) => {
  const h = new Harness(t);
  const server = h.start('http-server.js');
  const { port } = await h.next(server);
  const client = h.start('http-client.js', [port, '127.0.0.1', 3, 2, 1], { hooked: false });
  const report = await h.next(client, 30000);
  assertAllKernel(report, 6);
  let curled = 0;
  try {
    const out = execFileSync('curl', ['-s', `http://127.0.0.1:${port}/curl`], { timeout: 10000 }).toString();
    assert.strictEqual(out, 'hello GET /curl 0');
    curled = 1;
  } catch (err) {
    if (err.code !== 'ENOENT') throw err; // no curl on this machine: the node client above covers it
  }
  h.send(server, { cmd: 'stats' });
  const s = await h.next(server);
  assert.strictEqual(s.stats.connectionsBypassed, 0);
  assert.strictEqual(s.seen.length, 6 + curled);
  assert.ok(s.seen.every((x) => !x.bypassed && x.kernel));
  h.send(server, { cmd: 'close' });
  await h.exit(server);
  await h.exit(client);
});
