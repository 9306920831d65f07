// Runs a compat fixture once in kernel mode (hook loaded, SIDESTEP=0) or
// bypass mode, and returns the one JSON report it prints. Every compat test
// compares the two.
'use strict';
const assert = require('node:assert');
const path = require('node:path');
const { Harness } = require('../../test/support/harness');

async function runMode(t, fixture, mode) {
  const h = new Harness(t);
  const p = h.start(path.join('..', '..', 'compat-tests', 'fixtures', fixture), [], {
    env: { SIDESTEP: mode === 'kernel' ? '0' : '1' },
  });
  const report = await h.next(p, 20000);
  assert.deepStrictEqual(await h.exit(p), { code: 0, signal: null });
  return report;
}

/** [kernel report, bypass report] of one fixture. */
async function runBothModes(t, fixture) {
  return [await runMode(t, fixture, 'kernel'), await runMode(t, fixture, 'bypass')];
}

module.exports = { runBothModes };
