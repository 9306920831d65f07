// SIDESTEP_* configuration, validated at start: a bad value stops the program
// with an error that names the variable and what it accepts, never a silent
// default (as Onload does with EF_*). One table (VARIABLES) defines every
// variable: parsing, validation, `sidestep config` and the docs follow it.
export interface Config {
  /** SIDESTEP=0 turns bypass off: every socket uses the kernel. */
  enabled: boolean;
  /** Rendezvous name prefix: processes with different values never pair. */
  fabric: string;
  ringBytes: number;
  mtu: number;
  timeWaitMs: number;
  /** Spin budget before sleeping, in microseconds (0: never spin). */
  spinUs: number;
  /** How long a dead peer's unread bytes are kept for a survivor that doesn't read (ms). */
  orphanLingerMs: number;
  /** Which processes this one pairs with: any that a loopback connection reaches, or only its own uid's. */
  peers: 'any' | 'same-uid';
  /** Whether this process lets `sidestep capture` (of its uid) copy its packets. */
  capture: boolean;
  /** Fail instead of falling back to the kernel. */
  strict: boolean;
  /** Append one JSON line of counters to this file at exit ('' = off). */
  report: string;
  /** Faults injected where this process's packets enter the fabric. */
  faults: FaultSpec | null;
}

export interface FaultSpec {
  loss: number;
  duplicate: number;
  reorder: number;
  delayUs: number;
  seed: number;
}

const FAULTS_ACCEPTED =
  'comma-separated key=value with loss, dup and reorder as probabilities from 0 to 1, ' +
  'delay as a duration (e.g. 500us, 2ms), and seed as an integer; e.g. "loss=0.01,reorder=0.02,seed=7"';

/** Parse SIDESTEP_FAULTS; undefined when malformed. */
export function parseFaults(raw: string): FaultSpec | null | undefined {
  const spec: FaultSpec = { loss: 0, duplicate: 0, reorder: 0, delayUs: 0, seed: 1 };
  if (raw.trim() === '' || raw.trim() === 'none') return null;
  for (const part of raw.split(',')) {
    const m = /^\s*(\w+)\s*=\s*([^\s]+)\s*$/.exec(part);
    if (!m) return undefined;
    const [, key, value] = m;
    const prob = () => (/^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(value) ? Number(value) : NaN);
    switch (key) {
      case 'loss': spec.loss = prob(); break;
      case 'dup': case 'duplicate': spec.duplicate = prob(); break;
      case 'reorder': spec.reorder = prob(); break;
      case 'delay': {
        const d = /^(\d+)(us|ms)?$/.exec(value);
        spec.delayUs = d ? Number(d[1]) * (d[2] === 'ms' ? 1000 : 1) : NaN;
        if (spec.delayUs > 10_000_000) return undefined;
        break;
      }
      case 'seed': spec.seed = /^\d{1,15}$/.test(value) ? Number(value) : NaN; break;
      default: return undefined;
    }
  }
  return Object.values(spec).some((v) => Number.isNaN(v)) ? undefined : spec;
}

export class ConfigError extends Error {
  readonly code = 'ERR_SIDESTEP_CONFIG';
  constructor(readonly variable: string, value: string, accepted: string, message?: string) {
    super(message ?? `${variable}=${JSON.stringify(value)} is invalid: expected ${accepted}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

interface Variable<K extends keyof Config> {
  name: string;
  key: K;
  accepted: string;
  describe: string;
  dflt: () => Config[K];
  parse: (raw: string) => Config[K] | undefined;
}

function int(min: number, max: number, check: (n: number) => boolean = () => true) {
  return (raw: string): number | undefined => {
    const t = raw.trim();
    const n = /^\d+$/.test(t) ? Number(t) : NaN;
    return Number.isSafeInteger(n) && n >= min && n <= max && check(n) ? n : undefined;
  };
}

const bool = (raw: string): boolean | undefined => (raw === '1' ? true : raw === '0' ? false : undefined);

/**
 * Variables of earlier versions, refused with what replaced them (a silent
 * no-op would hide that the setting no longer does anything).
 */
const REMOVED: Record<string, string> = {
  SIDESTEP_DOORBELL: 'doorbells are always eventfds, passed over each pair\'s control channel (no ptrace rights needed)',
};

const isPow2 = (n: number) => (n & (n - 1)) === 0;

export const VARIABLES: Variable<keyof Config>[] = [
  { name: 'SIDESTEP', key: 'enabled', accepted: '0 (kernel sockets only) or 1 (bypass where possible)',
    describe: 'bypass on or off', dflt: () => true, parse: bool },
  { name: 'SIDESTEP_FABRIC', key: 'fabric', accepted: '1-64 letters, digits, ".", "_" or "-" (not starting with ".")',
    describe: 'rendezvous name prefix: processes with different values never bypass to each other', dflt: () => 'sidestep',
    parse: (raw) => (/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(raw) ? raw : undefined) },
  { name: 'SIDESTEP_RING_BYTES', key: 'ringBytes', accepted: 'a power of two from 262144 to 268435456',
    describe: 'bytes per ring between two stacks', dflt: () => 4 << 20, parse: int(1 << 18, 1 << 28, isPow2) },
  { name: 'SIDESTEP_MTU', key: 'mtu', accepted: 'an integer from 1280 to 65536',
    describe: 'largest IP packet on the fabric', dflt: () => 65536, parse: int(1280, 65536) },
  { name: 'SIDESTEP_TIME_WAIT_MS', key: 'timeWaitMs', accepted: 'an integer from 0 to 240000',
    describe: 'TIME_WAIT duration on the fabric (ms)', dflt: () => 1000, parse: int(0, 240000) },
  { name: 'SIDESTEP_SPIN_US', key: 'spinUs', accepted: 'an integer from 0 to 1000000',
    describe: 'spin this long for more packets before sleeping (µs; 0 = never spin)', dflt: () => 0, parse: int(0, 1000000) },
  { name: 'SIDESTEP_ORPHAN_LINGER_MS', key: 'orphanLingerMs', accepted: 'an integer from 0 to 600000',
    describe: 'how long the bytes a dead peer still owed wait for a survivor that stops reading (ms), as Linux keeps an orphaned socket',
    dflt: () => 60000, parse: int(0, 600000) },
  { name: 'SIDESTEP_PEERS', key: 'peers', accepted: 'any or same-uid',
    describe: 'pair with any process a loopback connection reaches (its listener verified), or only with processes of this uid',
    dflt: () => 'any', parse: (raw) => (raw === 'any' || raw === 'same-uid' ? raw : undefined) },
  { name: 'SIDESTEP_CAPTURE', key: 'capture', accepted: '0 or 1',
    describe: 'let `sidestep capture` (run by this uid or root) copy this process\'s packets', dflt: () => false, parse: bool },
  { name: 'SIDESTEP_STRICT', key: 'strict', accepted: '0 or 1',
    describe: 'fail connects that would fall back to the kernel', dflt: () => false, parse: bool },
  { name: 'SIDESTEP_REPORT', key: 'report', accepted: 'a file path',
    describe: 'append a JSON line of counters to this file at exit', dflt: () => '', parse: (raw) => raw },
  { name: 'SIDESTEP_FAULTS', key: 'faults', accepted: FAULTS_ACCEPTED,
    describe: 'inject loss/duplication/reordering/delay into outgoing fabric packets (seeded)', dflt: () => null, parse: parseFaults },
];

export interface ConfigSource {
  variable: string;
  value: unknown;
  /** 'default', 'environment', or 'profile NAME' (from the launcher). */
  source: string;
  describe: string;
}

/** The configuration, with where each value came from. */
export function explainConfig(env: Env = process.env, origins: Record<string, string> = {}): { config: Config; sources: ConfigSource[] } {
  const known = new Set(VARIABLES.map((v) => v.name));
  for (const name of Object.keys(env)) {
    if (REMOVED[name] && env[name] !== undefined)
      throw new ConfigError(name, env[name]!, '', `${name} no longer exists: ${REMOVED[name]}; unset it`);
    if (name.startsWith('SIDESTEP_') && !known.has(name) && env[name] !== undefined)
      throw new ConfigError(name, env[name]!, '', `${name} is not a sidestep variable (known: ${[...known].join(', ')})`);
  }
  const config = {} as Record<keyof Config, unknown>;
  const sources: ConfigSource[] = [];
  for (const v of VARIABLES) {
    const raw = env[v.name];
    let value: unknown;
    if (raw === undefined || raw === '') {
      value = v.dflt();
    } else {
      value = v.parse(raw);
      if (value === undefined) throw new ConfigError(v.name, raw, v.accepted);
    }
    config[v.key] = value;
    const source = raw === undefined || raw === '' ? 'default' : origins[v.name] ?? 'environment';
    sources.push({ variable: v.name, value, source, describe: v.describe });
  }
  const c = config as unknown as Config;
  if (c.ringBytes < 4 * c.mtu)
    throw new ConfigError('SIDESTEP_RING_BYTES', String(c.ringBytes), `at least 4 x SIDESTEP_MTU (${4 * c.mtu}) so a ring holds several packets`);
  return { config: c, sources };
}

export function readConfig(env: Env = process.env): Config {
  return explainConfig(env).config;
}
