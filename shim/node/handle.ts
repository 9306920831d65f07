// BypassHandle: the stand-in for libuv's TCP wrap that sits in a Node
// net.Socket's `_handle` when its connection runs over sidestep's stack. It
// implements the contract lib/net.js and internal/stream_base_commons.js
// expect of a TCP handle (see DESIGN.md §1), and delivers reads the way
// Node's own stream handles do: set streamBaseState, then call `onread`
// (looked up on every read: http's Agent swaps it on pooled sockets).
import { AsyncResource } from 'node:async_hooks';
import { EventKind } from '../addon';
import type { Runtime, EventTarget } from '../runtime';
import { ownerOf, reinitializeHandle, type Internals } from './internals';

const UV_EBADF = -9;
const UV_ENOTCONN = -107;

/** Set on a socket when its bypass handle closes: isBypassed() after close. */
export const kWasBypassed = Symbol('sidestep.wasBypassed');
/** On a kernel handle: connect through the kernel, for this reason (hooks.ts). */
export const kKernelOnly = Symbol('sidestep.kernelOnly');

/** What it takes to redo a connect through the kernel. */
export interface KernelRetry {
  address: string;
  port: number;
  /** The local address and port the application bound, if it did. */
  local: LocalBinding | null;
  connect: 'connect' | 'connect6';
}

interface WriteReq {
  oncomplete?: (this: WriteReq, status: number, handle?: unknown, error?: unknown) => void;
  [key: string]: unknown;
}

interface ConnectReq {
  oncomplete: (status: number, handle: unknown, req: unknown, readable: boolean, writable: boolean) => void;
  [key: string]: unknown;
}

export interface LocalBinding {
  address: string;
  port: number;
}

const FAMILY = ['', '', '', '', 'IPv4', '', 'IPv6'];

type OnRead = (this: BypassHandle, ab?: ArrayBuffer) => unknown;

/**
 * Takes a handle's bytes and EOF in place of the net.Socket that owns it:
 * TLS over a bypassed socket (tls-bridge.ts), as TLSWrap reads a kernel
 * socket's TCPWrap directly, never through the socket's own stream.
 */
export interface DirectReader {
  data(chunk: Uint8Array): void;
  eof(): void;
}

export class BypassHandle implements EventTarget {
  id = 0;
  // Set by Node (initSocketHandle / tryReadStart / pause).
  private onreadFn: OnRead | null = null;
  private streamOnread: OnRead | null = null;
  reading = false;
  bytesRead = 0;
  bytesWritten = 0;
  /**
   * libuv's write_queue_size: bytes of writes that have not left yet, which
   * Node watches to hold off a socket's timeout while a slow reader drains
   * them. Ours: while a write waits, what its connection still holds — but
   * never more than the waiting writes' own bytes (what the connection holds
   * of writes that completed is, over a kernel socket, the kernel's).
   */
  get writeQueueSize(): number {
    if (!this.pendingWrites.length || !this.id) return 0;
    return Math.min(this.binding.queued(this.id), this.pendingBytes);
  }
  /** The bytes of the writes in pendingWrites. */
  private pendingBytes = 0;
  readonly fd = -1;
  // Only connections use this class: a listener stays a kernel handle with a
  // bypass registration beside it (hooks.ts).
  private readonly resource = new AsyncResource('TCPWRAP');
  private pendingWrites: WriteReq[] = [];
  private pendingShutdown: WriteReq | null = null;
  private connectReq: ConnectReq | null = null;
  private retry: KernelRetry | null = null;
  /** A fresh kernel handle whose connect hook lets it through (hooks.ts). */
  static kernelRetry: (reason: string) => any = () => null;
  /** The handle Node's connect completion must see (a TLS wrap over us). */
  private connectCompletesAs: unknown = null;
  private connectResource: AsyncResource | null = null;
  private userBuffer: Uint8Array | null = null;
  // The `onread` option: bytes that arrived in one piece but that the
  // reader, pausing in its callback, did not take yet (libuv would have
  // left them in the kernel), and a status (EOF, error) that came after them.
  private userPending: Uint8Array | null = null;
  private userPendingStatus: number | null = null;
  private readStopped = false;
  private direct: DirectReader | null = null;
  private typeOfService = 0;
  private refed = true;
  private closed = false;
  /** Its connect went to the kernel after all: the socket was never bypassed. */
  private fellBack = false;

  constructor(
    private readonly runtime: Runtime,
    private readonly internals: Internals,
    id = 0,
  ) {
    if (id) this.adopt(id);
  }

  get onread(): OnRead | null {
    return this.onreadFn;
  }

  set onread(fn: OnRead | null) {
    // Remember the stream's own reader (Node's onStreamRead, set by
    // initSocketHandle), so a caller that detached it can be undone.
    if (fn && !this.streamOnread) this.streamOnread = fn;
    this.onreadFn = fn;
  }

  /** Put back the reader Node installed first (see ipc.ts). */
  restoreStreamOnread(): void {
    if (this.streamOnread) this.onreadFn = this.streamOnread;
  }

  private adopt(id: number): void {
    this.id = id;
    this.runtime.register(id, this);
  }

  private get binding() {
    return this.runtime.binding;
  }

  getAsyncId(): number {
    return this.resource.asyncId();
  }

  // ---- connect ----
  /** The addon's connection `id` (its SYN already sent) completes `req`. */
  startConnect(id: number, req: ConnectReq, retry: KernelRetry): void {
    this.adopt(id);
    this.connectReq = req;
    this.retry = retry;
    this.connectResource = new AsyncResource('TCPCONNECTWRAP');
  }

  /**
   * The fabric let go of this connect before it completed (its pair never
   * came up): the socket takes a kernel handle and connects there; `req`
   * completes from that connect, so the application sees one connect.
   */
  private fallBack(): void {
    const req = this.connectReq;
    const retry = this.retry;
    const socket = ownerOf(this.internals, this);
    if (!req || !retry || this.closed || !socket) return this.completeConnect(-111 /* ECONNREFUSED */);
    this.runtime.forget(this.id);
    this.id = 0;
    this.fellBack = true;
    const kernel = BypassHandle.kernelRetry('fabric: the peer never took the pair; connected through the kernel');
    let err = 0;
    if (retry.local) {
      err = retry.connect === 'connect6' ? kernel.bind6(retry.local.address, retry.local.port, 0) : kernel.bind(retry.local.address, retry.local.port);
    }
    // The raw socket under a TLS client keeps its place in TLS's stream; a
    // plain socket's own connect request completes as the kernel's.
    // Under a TLS client the socket is the raw one inside TLS's stream: it
    // keeps its place there, and TLS's connect request completes as before.
    const as = this.connectCompletesAs;
    const tls = as !== null;
    reinitializeHandle(this.internals, socket, kernel);
    if (err === 0) {
      const wrap = new this.internals.TCPConnectWrap();
      wrap.oncomplete = (status: number, _h: unknown, _r: unknown, readable: boolean, writable: boolean) => {
        this.connectReq = null;
        const resource = this.connectResource;
        this.connectResource = null;
        const done = () => req.oncomplete(status, tls ? as : kernel, req, readable, writable);
        if (resource) {
          resource.runInAsyncScope(done);
          resource.emitDestroy();
        } else done();
      };
      wrap.address = retry.address;
      wrap.port = retry.port;
      err = kernel[retry.connect](wrap, retry.address, retry.port);
    }
    if (err !== 0) {
      this.connectReq = null;
      const resource = this.connectResource;
      this.connectResource = null;
      const done = () => req.oncomplete(err, tls ? as : kernel, req, false, false);
      setImmediate(() => {
        if (resource) {
          resource.runInAsyncScope(done);
          resource.emitDestroy();
        } else done();
      });
    }
  }

  // ---- reads ----
  readStart(): number {
    this.readStopped = false;
    // Bytes a paused `onread` reader had not taken yet go first, from the
    // loop (reads never arrive inside readStart, as with libuv).
    if (this.userPending) setImmediate(() => this.resource.runInAsyncScope(this.drainUserPending, this));
    return this.id ? this.binding.readStart(this.id) : UV_EBADF;
  }

  readStop(): number {
    this.readStopped = true;
    return this.id ? this.binding.readStop(this.id) : UV_EBADF;
  }

  useUserBuffer(buf: Uint8Array): void {
    this.userBuffer = buf;
  }

  /** Bytes and EOF go to `reader` from now on (null: to the owner again); errors still go to the owner. */
  takeReads(reader: DirectReader | null): void {
    this.direct = reader;
  }

  deliver(kind: number, arg: number, data?: ArrayBuffer, offset = 0): void {
    switch (kind) {
      case EventKind.Connect:
        return this.completeConnect(arg);
      case EventKind.Data:
        // A direct reader (TLS) takes bytes as TLSWrap takes them from a
        // kernel socket's TCPWrap: natively, with no callback scope of the
        // raw socket's around them (TLS's own onread opens its own).
        if (this.direct) return this.pushDirect(data!, offset, arg);
        return this.resource.runInAsyncScope(this.pushData, this, data!, offset, arg);
      case EventKind.Eof:
        return this.resource.runInAsyncScope(this.pushStatus, this, this.internals.UV_EOF);
      case EventKind.Error:
        return this.resource.runInAsyncScope(this.pushStatus, this, arg);
      case EventKind.Writable:
        return this.resource.runInAsyncScope(this.completeWrites, this, arg);
      case EventKind.Shutdown:
        return this.resource.runInAsyncScope(this.completeShutdown, this, arg);
      case EventKind.Fallback:
        return this.fallBack();
    }
  }

  /** Report the connect's outcome as if `handle` (TLS's wrap around us) had connected. */
  completeConnectAs(handle: unknown): void {
    this.connectCompletesAs = handle;
  }

  private completeConnect(status: number): void {
    const req = this.connectReq;
    const resource = this.connectResource;
    this.connectReq = null;
    this.connectResource = null;
    if (!req || !resource) return;
    const as = this.connectCompletesAs ?? this;
    this.connectCompletesAs = null;
    resource.runInAsyncScope(() => req.oncomplete(status, as, req, true, true));
    resource.emitDestroy();
  }

  private pushDirect(ab: ArrayBuffer, offset: number, length: number): void {
    this.bytesRead += length;
    this.direct!.data(new Uint8Array(ab, offset, length));
  }

  /** Bytes ab[offset, offset + length) arrived (ab is a shared read slab). */
  private pushData(ab: ArrayBuffer, offset: number, length: number): void {
    const sb = this.internals.streamBase;
    this.bytesRead += length;
    if (this.userBuffer) {
      const src = new Uint8Array(ab, offset, length);
      if (this.userPending) {
        // Behind what the reader has yet to take (slab memory is reused: copy).
        const all = new Uint8Array(this.userPending.length + src.length);
        all.set(this.userPending);
        all.set(src, this.userPending.length);
        this.userPending = all;
        return this.drainUserPending();
      }
      return this.pushToUser(src);
    }
    sb.state[sb.kReadBytesOrError] = length;
    sb.state[sb.kArrayBufferOffset] = offset;
    this.onread?.call(this, ab);
  }

  /**
   * The `onread` socket option: copy into the user's buffer, in pieces when
   * it is smaller than what arrived, one callback per piece (as one libuv
   * read per buffer); a reader that pauses in its callback (pause(), or
   * returning false: readStop) gets no more until it reads again.
   */
  private pushToUser(src: Uint8Array): void {
    const sb = this.internals.streamBase;
    let off = 0;
    while (off < src.length && this.onread && this.userBuffer && !this.readStopped) {
      const n = Math.min(this.userBuffer.length, src.length - off);
      this.userBuffer.set(src.subarray(off, off + n));
      off += n;
      sb.state[sb.kReadBytesOrError] = n;
      const next = this.onread.call(this, undefined);
      if (next instanceof Uint8Array) this.userBuffer = next;
    }
    this.userPending = off < src.length ? src.slice(off) : null;
  }

  private drainUserPending(): void {
    const pending = this.userPending;
    if (!pending || this.readStopped || this.closed) return;
    this.userPending = null;
    this.pushToUser(pending);
    if (!this.userPending && this.userPendingStatus !== null) {
      const status = this.userPendingStatus;
      this.userPendingStatus = null;
      this.pushStatus(status);
    }
  }

  private pushStatus(status: number): void {
    if (this.direct && status === this.internals.UV_EOF) return this.direct.eof();
    if (this.userPending) {
      this.userPendingStatus = status;  // after the bytes it follows
      return;
    }
    const sb = this.internals.streamBase;
    sb.state[sb.kReadBytesOrError] = status;
    this.onread?.call(this, undefined);
  }

  // ---- writes ----
  /**
   * Report a write to Node in the contract this Node speaks (see
   * write-contract.ts). `r` is the addon's answer: 0 written,
   * 1 accepted but completing later (kWritable), or a negative errno.
   */
  private finishWrite(req: WriteReq | null, bytes: number, r: number): number | WriteReq {
    const sb = this.internals.streamBase;
    // Always set what Node reads back: a stale flag left by a kernel socket's
    // write would otherwise make Node wait for a completion that never comes.
    sb.state[sb.kBytesWritten] = bytes;
    if (this.internals.writeContract === 'returns-request') {
      if (r < 0) return r;
      this.bytesWritten += bytes;
      if (r === 0) return 0;
      sb.state[sb.kLastWriteErr!] = 0;
      const pending: WriteReq = { writeStatus: null };
      this.pendingWrites.push(pending);
      this.pendingBytes += bytes;
      return pending;
    }
    if (r < 0) {
      sb.state[sb.kLastWriteWasAsync!] = 0;
      return r;
    }
    this.bytesWritten += bytes;
    if (r === 0) {
      sb.state[sb.kLastWriteWasAsync!] = 0;
      return 0;
    }
    sb.state[sb.kLastWriteWasAsync!] = 1;
    this.pendingWrites.push(req!);
    this.pendingBytes += bytes;
    return 0;
  }

  writeBuffer(req: WriteReq | null, data: Uint8Array): number | WriteReq {
    if (!this.id) return this.finishWrite(req, 0, UV_EBADF);
    return this.finishWrite(req, data.byteLength, this.binding.write(this.id, data));
  }

  writev(req: WriteReq | null, chunks: any[], allBuffers: boolean): number | WriteReq {
    if (!this.id) return this.finishWrite(req, 0, UV_EBADF);
    let parts: Uint8Array[];
    if (allBuffers) {
      parts = chunks;
    } else {
      parts = [];
      for (let i = 0; i < chunks.length; i += 2) {
        const c = chunks[i];
        parts.push(typeof c === 'string' ? Buffer.from(c, chunks[i + 1]) : c);
      }
    }
    let bytes = 0;
    for (const p of parts) bytes += p.byteLength;
    return this.finishWrite(req, bytes, this.binding.writev(this.id, parts));
  }

  writeUtf8String(req: WriteReq | null, s: string): number | WriteReq {
    return this.writeBuffer(req, Buffer.from(s, 'utf8'));
  }

  writeLatin1String(req: WriteReq | null, s: string): number | WriteReq {
    return this.writeBuffer(req, Buffer.from(s, 'latin1'));
  }

  writeAsciiString(req: WriteReq | null, s: string): number | WriteReq {
    return this.writeBuffer(req, Buffer.from(s, 'ascii'));
  }

  writeUcs2String(req: WriteReq | null, s: string): number | WriteReq {
    return this.writeBuffer(req, Buffer.from(s, 'ucs2'));
  }

  /**
   * A write from a direct reader's side (TLS), outside Node's write
   * contract: 0 taken, 1 taken and `done(status)` follows once it has room,
   * or a negative errno. Never calls `done` synchronously.
   */
  writeDirect(parts: Uint8Array[], done: (status: number) => void): number {
    if (!this.id) return UV_EBADF;
    const r = this.binding.writev(this.id, parts);
    if (r < 0) return r;
    let bytes = 0;
    for (const p of parts) bytes += p.byteLength;
    this.bytesWritten += bytes;
    if (r === 1) {
      this.pendingWrites.push({ oncomplete: (status: number) => done(status) });
      this.pendingBytes += bytes;
    }
    return r;
  }

  private completeWrites(status: number): void {
    const reqs = this.pendingWrites;
    this.pendingWrites = [];
    this.pendingBytes = 0;
    for (const req of reqs) {
      // Under `returns-request`, Node may not have attached oncomplete yet: it
      // then reads writeStatus.
      if (req.oncomplete) req.oncomplete.call(req, status, this, undefined);
      else req.writeStatus = status;
    }
  }

  shutdown(req: WriteReq): number {
    if (!this.id) return UV_EBADF;
    const r = this.binding.shutdown(this.id);
    if (r < 0) return r;
    // Completed by the runtime's next pump (kShutdown), as libuv completes it
    // at its next poll phase.
    this.pendingShutdown = req;
    return 0;
  }

  private completeShutdown(status: number): void {
    const req = this.pendingShutdown;
    this.pendingShutdown = null;
    req?.oncomplete?.call(req, status, this, undefined);
  }

  // ---- lifetime ----
  close(cb?: () => void): void {
    if (this.closed) return;
    this.closed = true;
    const owner = ownerOf(this.internals, this);
    if (owner && typeof owner === 'object' && !this.fellBack) owner[kWasBypassed] = true;
    if (this.id) {
      this.binding.close(this.id);
      this.runtime.forget(this.id);
      // The stack reuses an id once the connection is gone: a late call on
      // this handle (a readStop, a write) must find EBADF, as on a closed
      // libuv handle, not the socket or listener that has the id by then.
      this.id = 0;
    }
    // Writes still waiting for room complete as cancelled, as libuv does.
    if (this.pendingWrites.length) this.completeWrites(-125 /* UV_ECANCELED */);
    if (this.connectResource) this.connectResource.emitDestroy();
    this.connectReq = null;
    // The close callback in the handle's async context, then its destroy,
    // as Node's HandleWrap::OnClose (MakeCallback) and the wrap's deletion:
    // a socket's 'close' handler sees the store its connect or accept had.
    this.runtime.afterClosePhase(() => {
      try {
        if (typeof cb === 'function') this.resource.runInAsyncScope(cb);
      } finally {
        this.resource.emitDestroy();
      }
    });
  }

  reset(cb?: () => void): number {
    if (this.id && !this.closed) this.binding.reset(this.id);
    this.close(cb);
    return 0;
  }

  ref(): void {
    this.refed = true;
    if (this.id && !this.closed) this.binding.ref(this.id, true);
  }

  unref(): void {
    this.refed = false;
    if (this.id && !this.closed) this.binding.ref(this.id, false);
  }

  hasRef(): boolean {
    return this.refed && !this.closed;
  }

  // ---- options and names ----
  setNoDelay(on: boolean): number {
    return this.id ? this.binding.setNoDelay(this.id, on) : 0;
  }

  /**
   * IP_TOS (Node 25.6+ calls these where the handle has them). The fabric
   * carries no IP header to mark, so the value is kept and read back, as the
   * kernel reads back what was set on a loopback socket.
   */
  setTypeOfService(tos: number): number {
    this.typeOfService = tos & 0xff;
    return 0;
  }

  getTypeOfService(): number {
    return this.typeOfService;
  }

  setKeepAlive(on: boolean, delaySeconds: number): number {
    return this.id ? this.binding.setKeepAlive(this.id, on, Math.max(0, delaySeconds | 0) * 1000) : 0;
  }

  private endpoint(local: boolean, out: Record<string, unknown>): number {
    if (!this.id) return UV_EBADF;
    const ep = this.binding.endpoint(this.id, local);
    // No peer: still connecting, or the connection is gone (as Linux says).
    if (!ep) return local ? UV_EBADF : UV_ENOTCONN;
    out.address = ep[1];
    out.family = FAMILY[ep[0]];
    out.port = ep[2];
    return 0;
  }

  getsockname(out: Record<string, unknown>): number {
    return this.endpoint(true, out);
  }

  getpeername(out: Record<string, unknown>): number {
    return this.endpoint(false, out);
  }
}
