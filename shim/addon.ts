// Loads the native binding (build/Release/sidestep.node or a prebuild) and
// describes its surface. Loading never throws: a failure becomes the reason
// the shim reports for using the kernel.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FaultSpec } from './config';

/** data/offset: for reads, the bytes are data[offset, offset + arg). */
export type EventSink = (kind: number, id: number, arg: number, data?: ArrayBuffer, offset?: number) => void;

export interface AttachConfig {
  fabric: string;
  ringBytes: number;
  mtu: number;
  timeWaitMs: number;
  spinUs: number;
  orphanLingerMs: number;
  /** SIDESTEP_PEERS=same-uid. */
  sameUidOnly: boolean;
  faults: FaultSpec | null;
  isnSecret: Buffer;
  why?: string;
}

/** The addon's functions (native/addon/binding.cc). Errors are negative errnos. */
export interface Binding {
  attach(config: AttachConfig, onEvent: EventSink): number;
  detach(): void;
  /**
   * A connection over the fabric, decided in full (kernel listener, its
   * owner, the pair, the port) before anything is swapped: the socket id,
   * or a negative errno with `out.why`, the reason to use the kernel.
   * `boundFd`: Node's handle already bound to localPort, or -1.
   */
  connect(localAddress: string, localPort: number, boundFd: number, address: string, port: number, out: { why?: string }): number;
  /** Serve kernel listener `kernelFd` (-1: a cluster worker's) over the fabric: an id, or -errno and `out.why`. */
  listen(address: string, port: number, backlog: number, v6only: boolean, kernelFd: number, out: { why?: string }): number;
  write(id: number, data: Uint8Array): number;
  writev(id: number, parts: Uint8Array[]): number;
  readStart(id: number): number;
  readStop(id: number): number;
  shutdown(id: number): number;
  close(id: number): void;
  reset(id: number): void;
  /** One EventKind.ClosePhase from this loop iteration's close phase (where libuv runs close callbacks) per call. */
  armClosePhase(): void;
  setNoDelay(id: number, on: boolean): number;
  /** Bytes a connection holds that have not been acknowledged, with those still waiting to go in. */
  queued(id: number): number;
  setKeepAlive(id: number, on: boolean, delayMs: number): number;
  ref(id: number, on: boolean): void;
  endpoint(id: number, local: boolean): [number, string, number] | undefined;
  stats(): Record<string, number>;
  /** Copy every packet this stack sends or receives to the event sink (EventKind.Capture). */
  setCapture(on: boolean): void;
  pairs(): Record<string, unknown>[];
  connections(): Record<string, unknown>[];
  /** [pid, uid] of the process at the other end of unix socket `fd`. */
  peerCred(fd: number): [number, number] | undefined;
  /** A listening / connected stream socket at an abstract unix name: an fd, or -errno. */
  unixListen(name: string): number;
  unixConnect(name: string): number;
}

/** Event kinds, as native/addon/runtime.h numbers them. */
export const enum EventKind {
  Connect = 1,
  Data = 2,
  Eof = 3,
  Error = 4,
  Accept = 5,
  Writable = 6,
  Shutdown = 7,
  /** id: the peer's pid, arg: 0 sent / 1 received, data: [u64 µs][IP packet]. */
  Capture = 9,
  /** A connect whose pair never came up: reconnect through the kernel. */
  Fallback = 10,
  /** The loop iteration's close phase, asked for by armClosePhase. */
  ClosePhase = 11,
}

const ROOT = path.resolve(__dirname, '..');

export function loadBinding(): { binding: Binding } | { reason: string } {
  if (process.platform !== 'linux') return { reason: `platform: ${process.platform} has no fabric` };
  const candidates = [
    path.join(ROOT, 'build', 'Release', 'sidestep.node'),
    path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`, 'sidestep.node'),
  ];
  const errors: string[] = [];
  for (const file of candidates) {
    if (!fs.existsSync(file)) {
      errors.push(`${file}: not found`);
      continue;
    }
    try {
      return { binding: require(file) as Binding };
    } catch (err) {
      errors.push(`${file}: ${(err as Error).message}`);
    }
  }
  return { reason: `addon: cannot load the native addon (${errors.join('; ')})` };
}
