#!/usr/bin/env node
// Builds the native addon at `npm install` time, offline: a prebuild under
// prebuilds/<platform>-<arch>/ wins when it loads; otherwise compile from
// source with the node-gyp that npm ships, against the headers of the very
// Node that runs this script (never a download). On a platform sidestep can't
// bypass on (not Linux), the build is skipped: the shim then uses the kernel
// and says why under NODE_DEBUG=sidestep.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const rebuild = process.argv.includes('--rebuild');

function log(msg) {
  process.stderr.write(`sidestep install: ${msg}\n`);
}

if (process.platform !== 'linux') {
  log(`platform ${process.platform} has no bypass; skipping the native build (kernel sockets will be used)`);
  process.exit(0);
}

const prebuild = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'sidestep.node');
if (!rebuild && fs.existsSync(prebuild)) {
  try {
    require(prebuild);
    log(`using prebuild ${path.relative(root, prebuild)}`);
    process.exit(0);
  } catch (err) {
    log(`prebuild does not load (${err.message}); building from source`);
  }
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  // npm's own copy, next to the npm that ships with this node.
  const prefix = path.dirname(path.dirname(process.execPath));
  candidates.push(path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {}
  return candidates.find((p) => fs.existsSync(p));
}

// Headers of the running node: <prefix>/include/node/node_api.h. Pointing
// node-gyp at them avoids any download.
function findNodeDir() {
  const prefix = path.dirname(path.dirname(process.execPath));
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return null;
}

const gyp = findNodeGyp();
if (!gyp) {
  log('node-gyp not found (it ships with npm); cannot build the addon');
  process.exit(1);
}
const args = [gyp, 'rebuild', '--release'];
const nodedir = findNodeDir();
if (nodedir) args.push(`--nodedir=${nodedir}`);
const jobs = Math.max(1, require('os').availableParallelism?.() ?? 2);
args.push(`--jobs=${jobs}`);
log(`building the addon: node ${args.map((a) => path.basename(a) === 'node-gyp.js' ? 'node-gyp' : a).join(' ')}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  log(`native build failed (exit ${r.status}); see the compiler output above`);
  process.exit(r.status || 1);
}
