// Dual-mode compat: a half-open socket that read EOF doesn't keep the
// process alive (both runs must exit on their own; runBothModes checks).
// Each run proves its path by the fabric's counter and the kernel's TCP table.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { runBothModes, assertPaths } = require('./support/dual-mode');

test('a half-open socket after EOF does not hold the event loop, in either mode', async (t) => {
  const [kernel, bypass] = await runBothModes(t, 'lifetime.js');
  // Each socket's own events, in the order it saw them.
  assert.deepStrictEqual(kernel.events, { client: ['connect', 'close'], server: ['end'] });
  assert.deepStrictEqual(bypass.events, kernel.events);
  // One connection (the report is its path), both ends in this process:
  // counted by both ends.
  assertPaths(kernel, bypass, (r) => [r], { delta: 2 });
});
