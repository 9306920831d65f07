// The only place that knows Node's internals (with handle.ts and hooks.ts in
// this folder): where the TCP wrap class, the stream-base shared state and the
// private symbols live, and what differs between Node versions: the majors
// we support in SUPPORTED_NODE below, the write contract detected from Node's
// own source (write-contract.ts), nowhere else.
import * as net from 'node:net';
import { writeContractOf, type WriteContract } from './write-contract';

export interface StreamBaseState {
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kBytesWritten: number;
  /** The `write-wrap` contract's "completes later" flag. */
  kLastWriteWasAsync: number | undefined;
  /** The `returns-request` contract's dispatch error. */
  kLastWriteErr: number | undefined;
}

/**
 * The Node majors whose handle contract is verified, each with the oldest
 * release we claim (CI runs the e2e and compat tests under it and under the
 * newest of the major: scripts/test-versions.js reads this table). What
 * differs inside a major is detected, not listed (write-contract.ts).
 */
export const SUPPORTED_NODE: Record<number, { oldest: string }> = {
  20: { oldest: '20.10.0' },  // (the first 20.x whose test runner runs our suites: --test-concurrency)
  22: { oldest: '22.0.0' },
  24: { oldest: '24.0.0' },
  26: { oldest: '26.0.0' },
};

function older(a: string, b: string): boolean {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number));
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] < y[i];
  return false;
}

export interface Internals {
  TCP: any;
  /** `new TCP(TCPSocketType)`: a client socket handle (tcp_wrap's constants.SOCKET). */
  TCPSocketType: number;
  /** The request object a kernel connect completes through. */
  TCPConnectWrap: any;
  streamBase: StreamBaseState;
  kReinitializeHandle: symbol;
  writeContract: WriteContract;
  /** Discovered lazily from the first handle Node gives us. */
  ownerSymbol: symbol | undefined;
  /** net.Socket's kBufferGen (the `onread` option's buffer generator); null: this Node has none. */
  bufferGenSymbol: symbol | null | undefined;
  UV_EOF: number;
  /**
   * Run the nextTick queue and microtasks, as the end of an outermost
   * callback scope does (process._tickCallback: Node's runNextTicks).
   */
  runTicks: (() => void) | null;
}

/**
 * Reach Node's internals, or say why not. `process.binding` is deprecated:
 * it warns under --pending-deprecation and throws under the permission
 * model, so we don't even try there (the caller then uses the kernel).
 */
export function loadInternals(): Internals | string {
  const version = process.versions.node;
  const supported = SUPPORTED_NODE[Number(version.split('.')[0])];
  if (!supported || older(version, supported.oldest))
    return `node-version: Node ${version} is not yet supported for bypass`;
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if ((process as any).permission || flags.some((f) => f === '--permission' || f === '--experimental-permission'))
    return 'permission-model: process.binding is unavailable under --permission';
  if (flags.includes('--pending-deprecation'))
    return 'pending-deprecation: process.binding would emit a deprecation warning';
  let tcpWrap: any;
  let streamWrap: any;
  let streamCommons: unknown;
  try {
    tcpWrap = (process as any).binding('tcp_wrap');
    streamWrap = (process as any).binding('stream_wrap');
    streamCommons = (process as any).binding('natives')['internal/stream_base_commons'];
  } catch (err) {
    return `node-internals: process.binding failed (${(err as Error).message})`;
  }
  const kReinitializeHandle = Object.getOwnPropertySymbols(net.Socket.prototype).find(
    (s) => s.description === 'kReinitializeHandle',
  );
  if (!kReinitializeHandle) return 'node-internals: net.Socket has no kReinitializeHandle';
  if (!tcpWrap?.TCP?.prototype || typeof tcpWrap.TCPConnectWrap !== 'function' ||
      typeof tcpWrap.constants?.SOCKET !== 'number' || !(streamWrap?.streamBaseState instanceof Int32Array))
    return 'node-internals: tcp_wrap/stream_wrap bindings have an unexpected shape';
  const writeContract = typeof streamCommons === 'string' ? writeContractOf(streamCommons) : undefined;
  if (!writeContract)
    return `node-version: Node ${version} calls its stream handles' write methods in a shape sidestep doesn't know`;
  const flag = writeContract === 'returns-request' ? 'kLastWriteErr' : 'kLastWriteWasAsync';
  if (typeof streamWrap[flag] !== 'number') return `node-internals: stream_wrap has no ${flag}`;
  return {
    TCP: tcpWrap.TCP,
    TCPSocketType: tcpWrap.constants.SOCKET,
    TCPConnectWrap: tcpWrap.TCPConnectWrap,
    streamBase: {
      state: streamWrap.streamBaseState,
      kReadBytesOrError: streamWrap.kReadBytesOrError,
      kArrayBufferOffset: streamWrap.kArrayBufferOffset,
      kBytesWritten: streamWrap.kBytesWritten,
      kLastWriteWasAsync: streamWrap.kLastWriteWasAsync,
      kLastWriteErr: streamWrap.kLastWriteErr,
    },
    kReinitializeHandle,
    writeContract,
    ownerSymbol: undefined,
    bufferGenSymbol: undefined,
    // libuv's UV_EOF; the same value on every platform libuv supports.
    UV_EOF: -4095,
    runTicks: typeof (process as any)._tickCallback === 'function' ? (process as any)._tickCallback : null,
  };
}

/** Node sets `handle[owner_symbol] = socket`; find that symbol on a handle. */
export function ownerOf(internals: Internals, handle: object): any {
  if (!internals.ownerSymbol) {
    internals.ownerSymbol = Object.getOwnPropertySymbols(handle).find((s) => s.description === 'owner_symbol');
  }
  return internals.ownerSymbol ? (handle as any)[internals.ownerSymbol] : undefined;
}

/**
 * The stream-state fields `undestroy()` (internal/streams/destroy.js) resets.
 * Node's kReinitializeHandle runs initSocketHandle, which calls it: meant for
 * a socket that is starting over (autoSelectFamily's next attempt), it also
 * forgets an `end()` or a paused read the application already asked for.
 * Read and written by name, and written only where undestroy() changed
 * something: this runs once per bypassed connect, and keyed stores to
 * stream state (accessors on Node 20+) go through V8's runtime, which cost
 * a churned connection ~5 µs.
 */
type ReadableFlags = [unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown];
type WritableFlags = [unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown];

function readableFlags(r: any): ReadableFlags {
  return [r.constructed, r.closed, r.closeEmitted, r.destroyed, r.errored, r.errorEmitted, r.reading, r.ended, r.endEmitted];
}

function restoreReadable(r: any, v: ReadableFlags): void {
  if (r.constructed !== v[0]) r.constructed = v[0];
  if (r.closed !== v[1]) r.closed = v[1];
  if (r.closeEmitted !== v[2]) r.closeEmitted = v[2];
  if (r.destroyed !== v[3]) r.destroyed = v[3];
  if (r.errored !== v[4]) r.errored = v[4];
  if (r.errorEmitted !== v[5]) r.errorEmitted = v[5];
  if (r.reading !== v[6]) r.reading = v[6];
  if (r.ended !== v[7]) r.ended = v[7];
  if (r.endEmitted !== v[8]) r.endEmitted = v[8];
}

function writableFlags(w: any): WritableFlags {
  return [w.constructed, w.destroyed, w.closed, w.closeEmitted, w.errored, w.errorEmitted, w.finalCalled, w.prefinished, w.ended, w.ending, w.finished];
}

function restoreWritable(w: any, v: WritableFlags): void {
  if (w.constructed !== v[0]) w.constructed = v[0];
  if (w.destroyed !== v[1]) w.destroyed = v[1];
  if (w.closed !== v[2]) w.closed = v[2];
  if (w.closeEmitted !== v[3]) w.closeEmitted = v[3];
  if (w.errored !== v[4]) w.errored = v[4];
  if (w.errorEmitted !== v[5]) w.errorEmitted = v[5];
  if (w.finalCalled !== v[6]) w.finalCalled = v[6];
  if (w.prefinished !== v[7]) w.prefinished = v[7];
  if (w.ended !== v[8]) w.ended = v[8];
  if (w.ending !== v[9]) w.ending = v[9];
  if (w.finished !== v[10]) w.finished = v[10];
}

/** net's kBufferGen symbol, found once (every net.Socket has it as an own property). */
function bufferGenSymbol(internals: Internals, socket: object): symbol | null {
  if (internals.bufferGenSymbol === undefined)
    internals.bufferGenSymbol = Object.getOwnPropertySymbols(socket).find((sym) => sym.description === 'kBufferGen') ?? null;
  return internals.bufferGenSymbol;
}

/**
 * Give `socket` a new handle through Node's own kReinitializeHandle, keeping
 * the stream state the application built while it was connecting: a socket
 * ended before it connected must still finish (`net.connect(p).end('x')`).
 */
export function reinitializeHandle(internals: Internals, socket: any, handle: object): void {
  const r = socket._readableState;
  const w = socket._writableState;
  const rv = r ? readableFlags(r) : null;
  const wv = w ? writableFlags(w) : null;
  // The `onread` option's buffer generator: initSocketHandle asks it for a
  // fresh buffer, which a socket that only changes handles must not do (the
  // application counts its calls); the current buffer carries over.
  const gen = bufferGenSymbol(internals, socket);
  const generator = gen ? socket[gen] : null;
  if (gen && generator) socket[gen] = null;
  try {
    socket[internals.kReinitializeHandle](handle);
  } finally {
    if (gen && generator) socket[gen] = generator;
  }
  if (rv) restoreReadable(r, rv);
  if (wv) restoreWritable(w, wv);
}
