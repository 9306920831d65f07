// The process-wide state of sidestep: whether bypass is on (and if not, why),
// the runtime attached to the fabric, and the counters stats() reports.
// install() is idempotent and never throws for environmental reasons (those
// become a fallback reason); only invalid configuration throws.
import * as fs from 'node:fs';
import { threadId } from 'node:worker_threads';
import { loadBinding } from './addon';
import { readConfig, type Config } from './config';
import { installHooks, isBypassedSocket } from './node/hooks';
import { loadInternals } from './node/internals';
import { serveInspection } from './inspect';
import { Runtime } from './runtime';
import { Fallbacks, debug } from './stats';

interface State {
  config: Config;
  runtime: Runtime | null;
  /** Why everything uses the kernel, when it does. */
  disabledReason: string | null;
  fallbacks: Fallbacks;
}

let state: State | null = null;

/** A connect or process that would fall back, under SIDESTEP_STRICT=1. */
export class StrictModeError extends Error {
  readonly code = 'ERR_SIDESTEP_STRICT';
  constructor(readonly reason: string) {
    super(`sidestep strict mode: would use the kernel (${reason})`);
    this.name = 'StrictModeError';
  }
}

function disable(s: State, reason: string): State {
  s.disabledReason = reason;
  debug('bypass disabled, every socket uses the kernel: %s', reason);
  if (s.config.strict && s.config.enabled) throw new StrictModeError(reason);
  return s;
}

/** SIDESTEP_REPORT: one JSON line per process at exit (appended with O_APPEND, one write). */
function writeReport(file: string): void {
  const st = stats();
  const line = JSON.stringify({ pid: process.pid, argv: process.argv.slice(1, 3), ...st }) + '\n';
  try {
    fs.appendFileSync(file, line);
  } catch (err) {
    debug('cannot write SIDESTEP_REPORT %s: %s', file, (err as Error).message);
  }
}

export function install(): State {
  if (state) return state;
  const config = readConfig();
  const s: State = (state = { config, runtime: null, disabledReason: null, fallbacks: new Fallbacks() });
  if (config.report) process.once('exit', () => writeReport(config.report));
  if (!config.enabled) return disable(s, 'disabled: SIDESTEP=0');
  const internals = loadInternals();
  if (typeof internals === 'string') return disable(s, internals);
  const loaded = loadBinding();
  if ('reason' in loaded) return disable(s, loaded.reason);
  const runtime = Runtime.attach(loaded.binding, config, internals.runTicks);
  if (typeof runtime === 'string') return disable(s, runtime);
  s.runtime = runtime;
  serveInspection(runtime, config.fabric, threadId, { capture: config.capture }, () => ({
    pid: process.pid,
    argv: process.argv.slice(1, 3),
    uptimeSeconds: Math.round(process.uptime()),
    stats: stats(),
    pairs: runtime.binding.pairs(),
    connections: runtime.binding.connections(),
  }));
  installHooks(internals, runtime, s.fallbacks, config.strict ? (reason) => new StrictModeError(reason) : null);
  // Leave the fabric on the way out (a worker's environment teardown does
  // the same from the addon).
  process.once('exit', () => runtime.detach());
  debug('bypass enabled on fabric %s', config.fabric);
  return s;
}

export interface Stats {
  /** Whether this process bypasses the kernel at all. */
  enabled: boolean;
  /** Why not, when it doesn't. */
  disabledReason: string | null;
  /** Connections carried by the fabric (opened by us or accepted). */
  connectionsBypassed: number;
  /** Connects and listens that went to the kernel instead. */
  connectionsFallback: number;
  fallbackReasons: Record<string, number>;
  segmentsIn: number;
  segmentsOut: number;
  bytesIn: number;
  bytesOut: number;
  retransmits: number;
  ringDrops: number;
  malformed: number;
  [counter: string]: unknown;
}

export function stats(): Stats {
  const s = install();
  const native: Record<string, number> = s.runtime ? s.runtime.binding.stats() : {};
  const n = (k: string) => native[k] ?? 0;
  return {
    ...native,
    enabled: !!s.runtime,
    disabledReason: s.disabledReason,
    connectionsBypassed: n('connectionsBypassed') + n('connectionsAccepted'),
    connectionsFallback: s.fallbacks.total(),
    fallbackReasons: s.fallbacks.byReason(),
    segmentsIn: n('segmentsIn'),
    segmentsOut: n('segmentsOut'),
    bytesIn: n('bytesIn'),
    bytesOut: n('bytesOut'),
    retransmits: n('retransmits'),
    ringDrops: n('ringDrops'),
    malformed: n('malformed') + n('fabricMalformed'),
  };
}

/** Whether this socket's connection is carried by sidestep (not the kernel). */
export function isBypassed(socket: object): boolean {
  return isBypassedSocket(socket);
}
