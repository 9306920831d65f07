// Runs a compat fixture once in kernel mode (hook loaded, SIDESTEP=0) or
// bypass mode, and returns the one JSON report it prints. Every compat test
// compares the two.
'use strict';
const assert = require('node:assert');
const path = require('node:path');
const { Harness } = require('../../test/support/harness');

async function runMode(t, fixture, mode, { args = [], env = {}, wrapper = [], execArgv = [], hooked = true, ms = 20000 } = {}) {
  const h = new Harness(t);
  const p = h.start(path.join('..', '..', 'compat-tests', 'fixtures', fixture), args, {
    env: { ...env, SIDESTEP: mode === 'kernel' ? '0' : '1' },
    wrapper,
    execArgv,
    hooked,
  });
  const report = await h.next(p, ms);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  return report;
}

/**
 * [kernel report, bypass report] of one fixture. Options: `args` for the
 * fixture, extra `env`, a `wrapper` command, node `execArgv`, `hooked`
 * (false: no --require; the hook comes from execArgv or env), the report
 * deadline `ms`, and `parallel` (run both modes at once, for slow fixtures).
 */
async function runBothModes(t, fixture, opts = {}) {
  if (opts.parallel) return Promise.all([runMode(t, fixture, 'kernel', opts), runMode(t, fixture, 'bypass', opts)]);
  return [await runMode(t, fixture, 'kernel', opts), await runMode(t, fixture, 'bypass', opts)];
}

/**
 * The path proof every dual-mode test makes: each connection `pick(report)`
 * lists ({bypassed, kernel}) is in the kernel's TCP table in kernel mode only
 * and bypassed in bypass mode only; the fabric's counter moved by nothing in
 * kernel mode and by exactly `delta` in bypass mode, with these fallback
 * `reasons`. `describe(report)`, if given, adds what a failed path check
 * should show (which connection of which case went the wrong way).
 */
function assertPaths(kernel, bypass, pick, { delta, reasons = {}, describe }) {
  const pairs = (r) => pick(r).map((p) => [p.bypassed, p.kernel]);
  const about = (what, r) => (describe ? `${what}: ${describe(r)}` : what);
  const n = pick(kernel).length;
  assert.ok(n > 0, 'no connection to prove');
  assert.deepStrictEqual(pairs(kernel), Array(n).fill([false, true]), about('kernel mode: paths', kernel));
  assert.deepStrictEqual(pairs(bypass), Array(n).fill([true, false]), about('bypass mode: paths', bypass));
  assert.strictEqual(kernel.bypassedDelta, 0, 'kernel mode: connections bypassed');
  assert.strictEqual(bypass.bypassedDelta, delta, 'bypass mode: connections bypassed');
  assert.deepStrictEqual(bypass.fallbackReasons, reasons, 'bypass mode: fallbacks');
}

module.exports = { runBothModes, runMode, assertPaths };
