// Dual-mode compat: setKeepAlive(true, initialDelay) and a peer that goes
// silent. The client and its peer run in a private network namespace (root,
// `unshare -n`; skipped otherwise). Keepalive on an idle connection: the
// connection survives, and the probes are observable (bypass: the stack's
// segment counter moves while nothing else is sent; kernel: the keepalive
// timer is the one armed on the socket). Then the peer goes silent — its
// process is stopped (SIGSTOP: the bypass stack lives in it) and lo goes down
// (the kernel's TCP would answer for a stopped process) — and the client's
// socket must end with the same ETIMEDOUT as the kernel's (code, errno,
// syscall, message), after initialDelay + 10 probes at 1 s, as libuv sets.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Harness } = require('../test/support/harness');

const fixture = (name) => path.join('..', '..', 'compat-tests', 'fixtures', name);

function cannotUnshare() {
  if (process.getuid?.() !== 0) return 'needs root for a private network namespace';
  const r = spawnSync('unshare', ['-n', 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
  return r.status === 0 ? null : 'unshare -n / ip unavailable';
}

async function runMode(t, mode) {
  const h = new Harness(t);
  const env = { SIDESTEP: mode === 'kernel' ? '0' : '1' };
  const client = h.start(fixture('keepalive-client.js'), [], { env, wrapper: ['unshare', '-n'] });
  h.send(client, { start: true });
  assert.deepStrictEqual(await h.next(client, 10000), { ready: true });
  // The peer joins the client's namespace (nsenter execs node: its pid is the child's).
  const peer = h.start(fixture('keepalive-peer.js'), [], { env, wrapper: ['nsenter', '-t', String(client.child.pid), '-n'] });
  const { port } = await h.next(peer, 10000);
  h.send(client, { port });
  const { idle } = await h.next(client, 10000);
  peer.child.kill('SIGSTOP');
  h.send(client, { silence: true });
  const { timedOut } = await h.next(client, 20000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  peer.child.kill('SIGKILL');
  return { idle, timedOut };
}

test('setKeepAlive probes an idle connection and a silent peer ends it with ETIMEDOUT, in both modes', async (t) => {
  const why = cannotUnshare();
  if (why) return t.skip(why);
  // Each mode takes ~14 s of keepalive time: run them side by side.
  const [kernel, bypass] = await Promise.all([runMode(t, 'kernel'), runMode(t, 'bypass')]);
  t.diagnostic(`ETIMEDOUT after ${kernel.timedOut.elapsedMs} ms (kernel), ${bypass.timedOut.elapsedMs} ms (bypass); ${bypass.idle.probes} probes while idle`);

  for (const r of [kernel, bypass]) {
    assert.deepStrictEqual(r.idle.echoes, ['hello', 'again'], 'the idle connection survives its probes');
    assert.deepStrictEqual(r.idle.events, []);
    assert.strictEqual(r.idle.chained, true);
    assert.deepStrictEqual(r.timedOut.error, {
      code: 'ETIMEDOUT', errno: -110, syscall: 'read', message: 'read ETIMEDOUT', keys: ['code', 'errno', 'syscall'],
    });
    assert.deepStrictEqual(r.timedOut.events, ['error:ETIMEDOUT', 'close:true']);
    // 1 s idle (partly spent) + 10 probes 1 s apart.
    assert.ok(r.timedOut.elapsedMs > 8000 && r.timedOut.elapsedMs < 14000, `timed out after ${r.timedOut.elapsedMs} ms`);
  }
  assert.deepStrictEqual([kernel.idle.bypassed, kernel.idle.kernel], [false, true]);
  assert.strictEqual(kernel.idle.kernelTimerArmed, true, 'the kernel armed its keepalive timer');
  assert.deepStrictEqual([bypass.idle.bypassed, bypass.idle.kernel], [true, false]);
  assert.ok(bypass.idle.probes >= 2, `${bypass.idle.probes} keepalive probes in 3.4 s of idle (one a second)`);
});
