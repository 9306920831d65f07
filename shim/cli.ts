#!/usr/bin/env node
// The `sidestep` command: `sidestep node app.js [args...]` runs any command
// with the hook in NODE_OPTIONS, so its child processes inherit it too;
// `sidestep bench` runs the kernel-vs-sidestep comparison.
import { spawn } from 'node:child_process';
import * as path from 'node:path';

const USAGE = `usage: sidestep <command> [args...]   run a command with sidestep's hook (e.g. sidestep node app.js)
       sidestep bench [--quick]         compare kernel sockets and sidestep on HTTP
       sidestep --help`;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): void {
  const child = spawn(cmd, args, { stdio: 'inherit', env });
  child.on('error', (err) => {
    process.stderr.write(`sidestep: cannot run ${cmd}: ${err.message}\n`);
    process.exit(127);
  });
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}

function main(argv: string[]): void {
  const [first, ...rest] = argv;
  if (!first || first === '--help' || first === '-h') {
    process.stdout.write(USAGE + '\n');
    process.exit(first ? 0 : 2);
  }
  if (first === 'bench') {
    run(process.execPath, [path.join(__dirname, '..', 'bench', 'http.js'), ...rest], process.env);
    return;
  }
  const register = path.join(__dirname, 'register.js');
  const quoted = register.includes(' ') ? JSON.stringify(register) : register;
  const nodeOptions = [process.env.NODE_OPTIONS, `--require ${quoted}`].filter(Boolean).join(' ');
  run(first, rest, { ...process.env, NODE_OPTIONS: nodeOptions });
}

main(process.argv.slice(2));
