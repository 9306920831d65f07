// SIDESTEP_* configuration, validated at start: a bad value stops the program
// with an error that names the variable and what it accepts, never a silent
// default (as Onload does with EF_*).
import * as os from 'node:os';

export interface Config {
  /** SIDESTEP=0 turns bypass off: every socket uses the kernel. */
  enabled: boolean;
  /** File name of the fabric under /dev/shm. */
  fabric: string;
  ringBytes: number;
  mtu: number;
  timeWaitMs: number;
}

export class ConfigError extends Error {
  readonly code = 'ERR_SIDESTEP_CONFIG';
  constructor(readonly variable: string, value: string, accepted: string) {
    super(`${variable}=${JSON.stringify(value)} is invalid: expected ${accepted}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, dflt: number, min: number, max: number, check?: (n: number) => boolean, accepted?: string): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max || (check && !check(n)))
    throw new ConfigError(name, raw, accepted ?? `an integer from ${min} to ${max}`);
  return n;
}

export function defaultFabricName(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : os.userInfo().uid;
  return `sidestep-${uid}`;
}

export function readConfig(env: Env = process.env): Config {
  const on = env.SIDESTEP;
  if (on !== undefined && on !== '' && on !== '0' && on !== '1')
    throw new ConfigError('SIDESTEP', on, '0 (kernel sockets only) or 1 (bypass where possible)');
  const fabric = env.SIDESTEP_FABRIC || defaultFabricName();
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(fabric) || fabric.startsWith('.'))
    throw new ConfigError('SIDESTEP_FABRIC', fabric, 'a file name of letters, digits, ".", "_" or "-" (not starting with ".")');
  const pow2 = (n: number) => (n & (n - 1)) === 0;
  return {
    enabled: on !== '0',
    fabric,
    ringBytes: integer(env, 'SIDESTEP_RING_BYTES', 4 << 20, 1 << 17, 1 << 28, pow2, 'a power of two from 131072 to 268435456'),
    mtu: integer(env, 'SIDESTEP_MTU', 65536, 1280, 65536),
    timeWaitMs: integer(env, 'SIDESTEP_TIME_WAIT_MS', 1000, 0, 240000),
  };
}
