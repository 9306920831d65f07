// The fabric belongs to the user who created it: mode 0600, owned by that
// uid; a process of another uid on the same SIDESTEP_FABRIC can neither open
// the file nor attach — its hooked process falls back to the kernel and says
// why, and its connections still work (through the kernel).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Harness, FIXTURES, REGISTER } = require('../support/harness');

const NOBODY = 65534;

/** How to run a command as uid/gid 65534, or why we can't. */
function otherUid() {
  if (process.getuid() !== 0) return { skip: 'needs root to run a process as another uid' };
  for (const [tool, wrapper] of [
    ['/usr/bin/setpriv', ['/usr/bin/setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups']],
    ['/usr/sbin/runuser', ['/usr/sbin/runuser', '-u', 'nobody', '--']],
  ]) {
    if (!fs.existsSync(tool)) continue;
    // The other uid must be able to read this checkout to run the probe.
    const probe = path.join(FIXTURES, '..', 'fabric', 'fixtures', 'isolation-probe.js');
    const r = spawnSync(wrapper[0], [...wrapper.slice(1), process.execPath, '-e',
      `for (const f of ${JSON.stringify([REGISTER, probe])}) require('fs').accessSync(f, require('fs').constants.R_OK)`]);
    if (r.status !== 0) return { skip: `uid ${NOBODY} cannot read this checkout: ${String(r.stderr).split('\n').find((l) => l.includes('Error')) || r.status}` };
    return { wrapper };
  }
  return { skip: 'neither setpriv nor runuser is installed' };
}

test('the fabric file is 0600 and owned by its creator', async (t) => {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['echo']);
  await h.next(server);
  const st = fs.statSync(h.fabricPath());
  assert.strictEqual(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
  assert.strictEqual(st.uid, process.getuid());
  assert.strictEqual(st.gid, process.getgid());
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.ok(!fs.existsSync(h.fabricPath()));
});

test('another uid can neither open the fabric nor attach: its process uses the kernel', async (t) => {
  const how = otherUid();
  if (how.skip) return t.skip(how.skip);
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/server.js', ['echo']);
  const { port } = await h.next(server);
  const probe = h.startWrapped(how.wrapper, '../fabric/fixtures/isolation-probe.js', [h.fabricPath(), port]);
  const r = await h.next(probe);
  assert.strictEqual(r.uid, NOBODY);
  assert.deepStrictEqual(r.open, { r: 'EACCES', rw: 'EACCES' });
  assert.strictEqual(r.hooked, true);
  assert.strictEqual(r.enabled, false);
  assert.match(r.disabledReason, /fabric/);
  assert.ok(r.disabledReason.includes(h.fabric), r.disabledReason);
  // Its connection to the (bypass-capable) server went through the kernel.
  assert.deepStrictEqual([r.connected, r.bypassed, r.kernel], [true, false, true]);
  assert.deepStrictEqual(await h.exit(probe), { code: 0, signal: null });
  // The file is untouched: same owner and mode, and the creator still uses it.
  const st = fs.statSync(h.fabricPath());
  assert.deepStrictEqual([st.mode & 0o777, st.uid], [0o600, process.getuid()]);
  h.send(server, { cmd: 'stats' });
  const { stats } = await h.nextMatching(server, (m) => m.stats);
  assert.strictEqual(stats.enabled, true);
  assert.strictEqual(stats.connectionsBypassed, 0);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.ok(!fs.existsSync(h.fabricPath()));
});
