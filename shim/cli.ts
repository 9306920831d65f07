#!/usr/bin/env node
// The `sidestep` command (what `onload` is to Onload):
//   sidestep [--profile NAME] [--strict] <command> [args...]
//       run a command with the hook in NODE_OPTIONS, so its children inherit it
//   sidestep config     the effective configuration and where each value came from
//   sidestep bench      the kernel-vs-sidestep comparison
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { loadBinding, type Binding } from './addon';
import { ConfigError, explainConfig, type Config } from './config';
import { collectStats, startCapture, type StackReport } from './inspect';

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
       sidestep stat [--json] [--watch]
                                  every stack in this network namespace: process, pairs, listeners,
                                  connections, counters (processes of your uid; root sees all)
       sidestep capture -w FILE.pcap [--pid PID] [--port N] [-c COUNT] [--duration SECONDS]
                                  the packets of processes started with SIDESTEP_CAPTURE=1, as pcap
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

function toolConfig(env: NodeJS.ProcessEnv): Config {
  try {
    return explainConfig(env).config;
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

function toolBinding(): Binding {
  const loaded = loadBinding();
  if ('reason' in loaded) fail(loaded.reason);
  return loaded.binding;
}

const table = (rows: string[][]): string => {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd()).join('\n');
};

function formatStat(reports: StackReport[]): string {
  if (reports.length === 0) return 'no stacks in this network namespace\n';
  const out: string[] = [];
  for (const r of reports) {
    const reply = r.reply;
    out.push(`stack ${r.pid}.${r.thread}  pid ${r.pid}  ${reply ? `${(reply.argv ?? []).join(' ')}  up ${reply.uptimeSeconds}s` : '(no answer)'}`);
    if (!reply) continue;
    const st = reply.stats ?? {};
    out.push(`  fabric: pairs ${st.pairs} (made ${st.pairsCreated}, accepted ${st.pairsAccepted}, refused ${st.pairsRefused}, lost ${st.pairsDown}), ` +
      `frames out ${st.framesOut} in ${st.framesIn}, ring drops ${st.ringDrops}, malformed ${st.fabricMalformed}, ` +
      `doorbells rung ${st.doorbellsRung} suppressed ${st.doorbellsSuppressed}, wakeups ${st.wakeups}`);
    out.push(`  sockets: bypassed ${st.connectionsBypassed}, kernel fallbacks ${st.connectionsFallback}` +
      (Object.keys(st.fallbackReasons ?? {}).length ? ` (${Object.entries(st.fallbackReasons).map(([k, v]) => `${k}: ${v}`).join(', ')})` : '') +
      `, segments out ${st.segmentsOut} in ${st.segmentsIn}, retransmits ${st.retransmits}`);
    const pairs = ((reply.pairs ?? []) as Record<string, any>[]).filter((p) => p.role !== 'loopback');
    for (const p of pairs) {
      out.push(`  pair ${p.role} ${p.up ? 'up' : 'waiting'}: pid ${p.peerPid} uid ${p.peerUid}, ${p.connections} connections, rings hold ${p.ringIn} B in, ${p.ringOut} B out`);
    }
    const conns = (reply.connections ?? []) as Record<string, any>[];
    const listeners = conns.filter((x) => x.listener);
    if (listeners.length) out.push(`  listening: ${listeners.map((l) => `${l.localAddress}:${l.localPort}`).join(', ')}`);
    const open = conns.filter((x) => !x.listener);
    if (open.length) {
      const rows = [['local', 'remote', 'state', 'send-q', 'recv-q', 'snd-wnd', 'rcv-wnd', 'cwnd', 'srtt-us', 'rexmit']];
      for (const x of open) {
        rows.push([`${x.localAddress}:${x.localPort}`, `${x.remoteAddress}:${x.remotePort}`, x.state, String(x.sendQueued),
          String(x.recvQueued), String(x.sendWindow), String(x.recvWindow), String(x.cwnd), String(x.srttUs), String(x.retransmits)]);
      }
      out.push(table(rows).split('\n').map((l) => '    ' + l).join('\n'));
    }
  }
  return out.join('\n') + '\n';
}

async function stat(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const json = args.includes('--json');
  const watch = args.includes('--watch');
  const unknown = args.find((a) => a !== '--json' && a !== '--watch');
  if (unknown) fail(`stat: unknown option ${unknown}`);
  const { fabric } = toolConfig(env);
  const binding = toolBinding();
  const once = async () => {
    const reports = await collectStats(binding, fabric, 1000);
    const text = json ? JSON.stringify(reports) + '\n' : formatStat(reports);
    process.stdout.write(watch && !json ? `\x1b[2J\x1b[H${new Date().toISOString()}\n${text}` : text);
  };
  await once();
  if (!watch) return;
  const timer = setInterval(() => void once(), 2000);
  process.once('SIGINT', () => {
    clearInterval(timer);
    process.exit(0);
  });
}

function capture(args: string[], env: NodeJS.ProcessEnv): void {
  const opts: { file?: string; pid?: number; port?: number; count?: number; duration?: number } = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const num = (name: string) => {
      const v = Number(args[++i]);
      if (!Number.isInteger(v) || v <= 0) fail(`capture: ${name} needs a positive integer`);
      return v;
    };
    if (a === '-w') opts.file = args[++i];
    else if (a === '--pid') opts.pid = num('--pid');
    else if (a === '--port') opts.port = num('--port');
    else if (a === '-c') opts.count = num('-c');
    else if (a === '--duration') opts.duration = num('--duration');
    else fail(`capture: unknown option ${a}`);
  }
  if (!opts.file) fail('capture: -w FILE.pcap is required');
  const { fabric } = toolConfig(env);
  const cap = startCapture(toolBinding(), {
    fabric,
    file: opts.file,
    pid: opts.pid,
    port: opts.port,
    count: opts.count,
    onReady: (accepted, refused) => {
      for (const r of refused) process.stderr.write(`sidestep capture: pid ${r.pid} refused: ${r.why}\n`);
      process.stderr.write(`sidestep capture: writing ${opts.file} (capturing ${accepted.length ? `pids ${accepted.join(', ')}` : 'no process yet'})\n`);
    },
  });
  const finish = async () => {
    const n = await cap.stop();
    process.stderr.write(`sidestep capture: ${n} packets\n`);
    process.exit(0);
  };
  process.once('SIGINT', () => void finish());
  process.once('SIGTERM', () => void finish());
  if (opts.duration) setTimeout(() => void finish(), opts.duration * 1000);
  if (opts.count) void cap.stop().then(() => finish());
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
  if (first === 'stat') return void stat(rest, env);
  if (first === 'capture') return capture(rest, env);
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
