#!/usr/bin/env node
// The stack alone (issue 3's benchmark): two stacks in one process, no Node
// and no fabric, bulk throughput and per-segment cost next to memcpy measured
// in the same run. The benchmark itself is C++ (native/bench/stack_bench.cc,
// built with the stack's sources); this builds and runs it.
//
//   npm run bench:stack            # 2 GiB at 64 KiB MTU, then 256 MiB at 1500
//   node bench/stack.js 512        # MiB per 64 KiB-MTU case
//   node bench/stack.js 512 9      # and 9 alternations of the streaming cases
//                                  # with memcpy through memory (default 5)
'use strict';
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const [mib, reps] = process.argv.slice(2);
for (const [what, v] of [['the size (MiB)', mib], ['the repetitions', reps]]) {
  if (v !== undefined && !/^[1-9][0-9]*$/.test(v)) {
    console.error(`bench/stack.js: ${what} must be a whole number, not ${JSON.stringify(v)}`);
    process.exit(2);
  }
}
const args = ['-s', '-C', path.join(__dirname, '..', 'native', 'bench'), 'run'];
if (mib) args.push(`MIB=${mib}`);
if (reps) args.push(`REPS=${reps}`);
const r = spawnSync('make', args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
