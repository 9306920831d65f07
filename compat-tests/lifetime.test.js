// Dual-mode compat: a half-open socket that read EOF doesn't keep the
// process alive (both runs must exit on their own; runBothModes checks).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes } = require('./support/dual-mode');

test('a half-open socket after EOF does not hold the event loop, in either mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'lifetime.js');
  assert.deepStrictEqual([kernel.bypassed, bypass.bypassed], [false, true]);
  assert.deepStrictEqual(bypass.events, kernel.events);
});
