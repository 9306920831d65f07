// The only place that knows Node's internals (with handle.ts and hooks.ts in
// this folder): where the TCP wrap class, the stream-base shared state and the
// private symbols live, and what differs between Node versions. Every
// version difference goes into VERSION_TABLE below, nowhere else.
import * as net from 'node:net';

export interface StreamBaseState {
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kBytesWritten: number;
  kLastWriteWasAsync: number;
  /** Node 26+: where an asynchronous write reports a dispatch error. */
  kLastWriteErr: number | undefined;
}

/** Per-major differences in the handle contract. */
export interface VersionTraits {
  /**
   * Node 26 changed the write contract (lib/internal/stream_base_commons.js):
   * write methods get `req === null` and return either a number (the write
   * completed, or failed, synchronously) or a request object the handle
   * creates, with `writeStatus: null`, whose `oncomplete(status)` Node
   * attaches afterwards; a dispatch error goes into kLastWriteErr. Before 26,
   * Node passes a WriteWrap, the handle returns 0 or an error and says
   * whether the write is asynchronous in kLastWriteWasAsync.
   */
  writeReturnsRequest: boolean;
}

const VERSION_TABLE: Record<number, VersionTraits> = {
  20: { writeReturnsRequest: false },
  22: { writeReturnsRequest: false },
  24: { writeReturnsRequest: false },
  26: { writeReturnsRequest: true },
};

export interface Internals {
  TCP: any;
  streamBase: StreamBaseState;
  kReinitializeHandle: symbol;
  traits: VersionTraits;
  /** Discovered lazily from the first handle Node gives us. */
  ownerSymbol: symbol | undefined;
  UV_EOF: number;
}

/**
 * Reach Node's internals, or say why not. `process.binding` is deprecated:
 * it warns under --pending-deprecation and throws under the permission
 * model, so we don't even try there (the caller then uses the kernel).
 */
export function loadInternals(): Internals | string {
  const major = Number(process.versions.node.split('.')[0]);
  const traits = VERSION_TABLE[major];
  if (!traits) return `node-version: Node ${process.versions.node} is not yet supported for bypass`;
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if ((process as any).permission || flags.some((f) => f === '--permission' || f === '--experimental-permission'))
    return 'permission-model: process.binding is unavailable under --permission';
  if (flags.includes('--pending-deprecation'))
    return 'pending-deprecation: process.binding would emit a deprecation warning';
  let tcpWrap: any;
  let streamWrap: any;
  try {
    tcpWrap = (process as any).binding('tcp_wrap');
    streamWrap = (process as any).binding('stream_wrap');
  } catch (err) {
    return `node-internals: process.binding failed (${(err as Error).message})`;
  }
  const kReinitializeHandle = Object.getOwnPropertySymbols(net.Socket.prototype).find(
    (s) => s.description === 'kReinitializeHandle',
  );
  if (!kReinitializeHandle) return 'node-internals: net.Socket has no kReinitializeHandle';
  if (!tcpWrap?.TCP?.prototype || !(streamWrap?.streamBaseState instanceof Int32Array))
    return 'node-internals: tcp_wrap/stream_wrap bindings have an unexpected shape';
  if (traits.writeReturnsRequest && typeof streamWrap.kLastWriteErr !== 'number')
    return 'node-internals: stream_wrap has no kLastWriteErr';
  return {
    TCP: tcpWrap.TCP,
    streamBase: {
      state: streamWrap.streamBaseState,
      kReadBytesOrError: streamWrap.kReadBytesOrError,
      kArrayBufferOffset: streamWrap.kArrayBufferOffset,
      kBytesWritten: streamWrap.kBytesWritten,
      kLastWriteWasAsync: streamWrap.kLastWriteWasAsync,
      kLastWriteErr: streamWrap.kLastWriteErr,
    },
    kReinitializeHandle,
    traits,
    ownerSymbol: undefined,
    // libuv's UV_EOF; the same value on every platform libuv supports.
    UV_EOF: -4095,
  };
}

/** Node sets `handle[owner_symbol] = socket`; find that symbol on a handle. */
export function ownerOf(internals: Internals, handle: object): any {
  if (!internals.ownerSymbol) {
    internals.ownerSymbol = Object.getOwnPropertySymbols(handle).find((s) => s.description === 'owner_symbol');
  }
  return internals.ownerSymbol ? (handle as any)[internals.ownerSymbol] : undefined;
}
