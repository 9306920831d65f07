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
  command: string;
  timeWaitMs: number;
  spinUs: number;
  /** false: ring other stacks with datagrams only (SIDESTEP_DOORBELL=datagram). */
  eventfdDoorbells: boolean;
  faults: FaultSpec | null;
  isnSecret: Buffer;
  why?: string;
}

/** The addon's functions (native/addon/binding.cc). Errors are negative errnos. */
export interface Binding {
  attach(config: AttachConfig, onEvent: EventSink): number;
  detach(): void;
  lookup(address: string, port: number): number;
  connect(localAddress: string, localPort: number, address: string, port: number, via: number): number;
  /** shareKey: 0 exclusive; else shared with live registrations of the same key (a cluster's workers). */
  listen(address: string, port: number, backlog: number, v6only: boolean, shareKey: number): number;
  write(id: number, data: Uint8Array): number;
  writev(id: number, parts: Uint8Array[]): number;
  readStart(id: number): number;
  readStop(id: number): number;
  shutdown(id: number): number;
  close(id: number): void;
  reset(id: number): void;
  setNoDelay(id: number, on: boolean): number;
  setKeepAlive(id: number, on: boolean, delayMs: number): number;
  ref(id: number, on: boolean): void;
  endpoint(id: number, local: boolean): [number, string, number] | undefined;
  stats(): Record<string, number>;
  sendControl(to: number, data: Uint8Array): number;
  setMirror(stack: number, on: boolean): number;
  self(): number;
  stacks(): unknown[];
  connections(): Record<string, unknown>[];
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
  Control = 8,
  Capture = 9,
}

const ROOT = path.resolve(__dirname, '..');

export function loadBinding(): { binding: Binding } | { reason: string } {
  if (process.platform !== 'linux') return { reason: `platform: ${process.platform} has no shared-memory fabric` };
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
