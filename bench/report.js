#!/usr/bin/env node
// Rebuilds report.md and report.html (and the profile summaries) of a results
// directory from its results.json, and prints the Markdown:
//   node bench/report.js bench/results/<timestamp>
'use strict';
const path = require('node:path');
const { writeReports } = require('./lib/main');

const dir = path.resolve(process.argv[2] || '.');
const results = require(path.join(dir, 'results.json'));
process.stdout.write(writeReports(results, dir) + '\n');
