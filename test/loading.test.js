// The ways an app gets the hook: --import for ESM, and the sidestep launcher
// (NODE_OPTIONS, so the app's own children inherit it).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const { ROOT, uniqueFabric } = require('./support/harness');

function run(args, env) {
  const fabric = uniqueFabric();
  const r = spawnSync(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: fabric, ...env },
    timeout: 20000,
    encoding: 'utf8',
  });
  assert.strictEqual(r.status, 0, r.stderr);
  return { out: JSON.parse(r.stdout.trim().split('\n').pop()) };
}

test('node --import sidestep/register: an ESM app is bypassed', () => {
  const { out } = run(['--import', 'sidestep/register', path.join('test', 'fixtures', 'esm-echo.mjs')]);
  assert.strictEqual(out.data, 'ping');
  assert.strictEqual(out.bypassed, true);
  assert.strictEqual(out.stats.connectionsBypassed, 2);
});

test('sidestep node app.js: the launcher hooks the app through NODE_OPTIONS', () => {
  const { out } = run([path.join('dist', 'cli.js'), process.execPath, path.join('test', 'fixtures', 'in-process.js')]);
  assert.strictEqual(out.echoedIntact, true);
  assert.deepStrictEqual(out.bypassed, [true, true]);
  assert.strictEqual(out.kernel, false);
});

test('an invalid SIDESTEP_* value stops the program, naming the variable', () => {
  const r = spawnSync(process.execPath, ['--require', path.join(ROOT, 'dist', 'register.js'), '-e', '0'], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_RING_BYTES: 'lots' },
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.notStrictEqual(r.status, 0);
  assert.match(r.stderr, /SIDESTEP_RING_BYTES="lots" is invalid: expected a power of two/);
});

test('sidestep config shows each value and where it came from; a bad profile is refused', () => {
  const cli = path.join(ROOT, 'dist', 'cli.js');
  const env = { ...process.env, NODE_OPTIONS: '', SIDESTEP_MTU: '9000' };
  const r = spawnSync(process.execPath, [cli, '--profile', 'latency', 'config'], { env, encoding: 'utf8', timeout: 10000 });
  assert.strictEqual(r.status, 0, r.stderr);
  assert.match(r.stdout, /^SIDESTEP_MTU\s+9000\s+environment\s/m);
  assert.match(r.stdout, /^SIDESTEP_SPIN_US\s+50\s+profile latency\s/m);
  assert.match(r.stdout, /^SIDESTEP_RING_BYTES\s+4194304\s+default\s/m);
  const bad = spawnSync(process.execPath, [cli, '--profile', 'fastest', 'node', '-e', '0'], { env, encoding: 'utf8', timeout: 10000 });
  assert.strictEqual(bad.status, 2);
  assert.match(bad.stderr, /unknown profile "fastest": expected one of default, latency, throughput/);
});

test('--permission and --pending-deprecation: the kernel, with the reason', () => {
  // The flag's name changed inside 22.x (--experimental-permission before
  // 22.13): ask this Node which one it takes.
  const takes = (flag) => spawnSync(process.execPath, [flag, '--allow-fs-read=*', '-e', '0']).status === 0;
  const permission = takes('--permission') ? '--permission' : '--experimental-permission';
  const probe = "const s = require(process.argv[1]).stats(); console.log(JSON.stringify([s.enabled, s.disabledReason]))";
  const index = path.join(ROOT, 'dist', 'index.js');
  for (const [flags, reason] of [
    [[permission, '--allow-fs-read=*'], /^permission-model: /],
    [['--pending-deprecation'], /^pending-deprecation: /],
  ]) {
    const r = spawnSync(process.execPath, [...flags, '--require', path.join(ROOT, 'dist', 'register.js'), '-e', probe, index], {
      env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: uniqueFabric() }, encoding: 'utf8', timeout: 10000,
    });
    assert.strictEqual(r.status, 0, r.stderr);
    const [enabled, why] = JSON.parse(r.stdout.trim());
    assert.strictEqual(enabled, false);
    assert.match(why, reason);
  }
});
