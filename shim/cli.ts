#!/usr/bin/env node
// The `sidestep` command (what `onload` is to Onload):
//   sidestep [--profile NAME] [--strict] <command> [args...]
//       run a command with the hook in NODE_OPTIONS, so its children inherit it
//   sidestep config     the effective configuration and where each value came from
//   sidestep bench      the kernel-vs-sidestep comparison
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { ConfigError, explainConfig } from './config';

/** Named sets of SIDESTEP_* values; explicit environment variables win. */
export const PROFILES: Record<string, Record<string, string>> = {
  default: {},
  // Spin briefly before sleeping: a reply that is microseconds away is taken
  // without a sleep/wake round trip, at the cost of up to 50 µs of CPU per wait.
  latency: { SIDESTEP_SPIN_US: '50' },
  // Bigger rings: more data in flight between two stacks before a drop.
  throughput: { SIDESTEP_RING_BYTES: String(16 << 20) },
};

const USAGE = `usage: sidestep [--profile ${Object.keys(PROFILES).join('|')}] [--strict] <command> [args...]
           run a command with sidestep's hook (e.g. sidestep node app.js); children inherit it
       sidestep config            print the effective configuration and where each value came from
       sidestep bench [--quick]   compare kernel sockets and sidestep
       sidestep --help`;

function fail(msg: string): never {
  process.stderr.write(`sidestep: ${msg}\n`);
  process.exit(2);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): void {
  const child = spawn(cmd, args, { stdio: 'inherit', env });
  child.on('error', (err) => fail(`cannot run ${cmd}: ${err.message}`));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}

function printConfig(env: NodeJS.ProcessEnv, origins: Record<string, string>): void {
  try {
    const { sources } = explainConfig(env, origins);
    const rows = sources.map((s) => [s.variable, JSON.stringify(s.value), s.source, s.describe]);
    const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) process.stdout.write(`${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${r[2].padEnd(widths[2])}  ${r[3]}\n`);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

function main(argv: string[]): void {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const origins: Record<string, string> = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else if (a === '--strict') {
      env.SIDESTEP_STRICT = '1';
      origins.SIDESTEP_STRICT = '--strict';
    } else if (a === '--profile' || a.startsWith('--profile=')) {
      const name = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const profile = name !== undefined ? PROFILES[name] : undefined;
      if (!profile) fail(`unknown profile ${JSON.stringify(name)}: expected one of ${Object.keys(PROFILES).join(', ')}`);
      for (const [k, v] of Object.entries(profile)) {
        if (env[k] !== undefined) continue;
        env[k] = v;
        origins[k] = `profile ${name}`;
      }
    } else if (a.startsWith('-')) {
      fail(`unknown option ${a}\n${USAGE}`);
    } else break;
  }
  const [first, ...rest] = argv.slice(i);
  if (!first) fail(USAGE);
  if (first === 'config') return printConfig(env, origins);
  if (first === 'bench') return run(process.execPath, [path.join(__dirname, '..', 'bench', 'http.js'), ...rest], env);
  // Validate before starting anything: a bad value is reported once, here.
  try {
    explainConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const register = path.join(__dirname, 'register.js');
  const quoted = register.includes(' ') ? JSON.stringify(register) : register;
  env.NODE_OPTIONS = [env.NODE_OPTIONS, `--require ${quoted}`].filter(Boolean).join(' ');
  run(first, rest, env);
}

main(process.argv.slice(2));
