// The stream TLS runs over when its socket is bypassed. Node's TLSWrap is C++
// and reads and writes a C++ StreamBase; a BypassHandle is JavaScript, so the
// StreamBase TLS gets is a JSStream (Node's js_stream binding) whose calls
// land here and go to the bypassed net.Socket, and whose reads come from it.
//
// Node has such a bridge, JSStreamSocket, made for arbitrary JS streams. We
// don't use it, because it finishes every write a turn of the event loop
// later (setImmediate). TLSWrap writes one thing at a time: while a write is
// unfinished, whatever TLS produces next waits in OpenSSL's buffer, and a
// socket destroyed before the turn comes loses it. Over a kernel socket the
// write finishes at once (libuv's try-write), so an alert written on a
// handshake failure, or `write(x); destroy()`, reaches the peer; over
// JSStreamSocket the alert was lost and the peer saw ECONNRESET. Here a write
// finishes as soon as the net.Socket has taken it (its callback, which the
// stream never calls synchronously), which for a bypassed socket with room in
// its send buffer is the same tick.
//
// The JSStream contract (stable across Node 20-26): the handle calls
// onwrite(req, bufs), onshutdown(req), onreadstart(), onreadstop(),
// isClosing() and close(cb); we answer with finishWrite(req, status),
// finishShutdown(req, status), readBuffer(chunk) and emitEOF(). Statuses are
// libuv's (negative errno on Linux).
import * as net from 'node:net';
import { constants } from 'node:os';
import { BypassHandle } from './handle';

type JSStreamHandle = {
  close?: (cb: () => void) => void;
  isClosing?: () => boolean;
  onreadstart?: () => number;
  onreadstop?: () => number;
  onshutdown?: (req: object) => number;
  onwrite?: (req: object, bufs: Buffer[]) => number;
  readBuffer(chunk: Uint8Array): void;
  emitEOF(): void;
  finishWrite(req: object, status: number): void;
  finishShutdown(req: object, status: number): void;
};
export type JSStreamClass = new () => JSStreamHandle;

const UV_ECANCELED = -constants.errno.ECANCELED;
const UV_EPIPE = -constants.errno.EPIPE;

function uvStatus(err: NodeJS.ErrnoException | null | undefined): number {
  if (!err) return 0;
  const errno = err.code ? (constants.errno as Record<string, number>)[err.code] : undefined;
  return errno ? -errno : UV_EPIPE;
}

function finishLater(bridge: TlsBridge, handle: JSStreamHandle, status: number): void {
  bridge.finishWrite(handle, status);
}

export class TlsBridge extends net.Socket {
  readonly stream: net.Socket;
  private currentWrite: object | null = null;
  private currentShutdown: object | null = null;
  private pendingShutdown: object | null = null;
  private closing = false;
  /**
   * The bypassed handle TLS reads and writes directly, as TLSWrap reads a
   * kernel socket's TCPWrap: not through the raw socket's stream, whose
   * Readable, 'data' events and Writable cost more per record than the
   * record's crypto (HTTPS over the bridge ran at 0.9-0.97x the kernel's
   * requests/s). Null where the raw socket's stream already holds bytes
   * either way, which must go first: then everything goes through it.
   */
  private direct: BypassHandle | null = null;
  /** Whether TLS asked for reads (onreadstart, until onreadstop). */
  private tlsReading = false;
  /** What came while TLS didn't ask, in order; `null` is EOF. */
  private held: (Uint8Array | null)[] = [];

  /**
   * `onError`: what the raw socket's errors do. Over a kernel socket they
   * reach TLS as a failed read, which destroys the TLS socket with them
   * (never the raw socket's own 'error'); a JSStream has no error path, so
   * the caller passes them on.
   */
  constructor(stream: net.Socket, JSStream: JSStreamClass, onError: (err: Error) => void) {
    const handle = new JSStream();
    super({ handle, manualStart: true } as net.SocketConstructorOpts);
    this.stream = stream;
    handle.close = (cb) => this.doClose(cb);
    handle.isClosing = () => !this.readable || !this.writable;
    const raw = (stream as unknown as { _handle: unknown })._handle;
    const readState = (stream as unknown as { _readableState: { ended: boolean } })._readableState;
    if (raw instanceof BypassHandle && stream.readableLength === 0 && !readState.ended && stream.writableLength === 0) {
      this.direct = raw;
      raw.takeReads({ data: (chunk) => this.directRead(chunk), eof: () => this.directRead(null) });
    }
    handle.onreadstart = () => {
      if (!this.direct) return stream.resume(), 0;
      this.tlsReading = true;
      // (Not inside TLSWrap's ReadStart: from the loop, as libuv reads.)
      if (this.held.length) setImmediate(() => this.releaseHeld());
      else this.direct.readStart();
      return 0;
    };
    handle.onreadstop = () => {
      if (!this.direct) return stream.pause(), 0;
      this.tlsReading = false;
      this.direct.readStop();
      return 0;
    };
    handle.onshutdown = (req) => this.doShutdown(req);
    handle.onwrite = (req, bufs) => this.doWrite(req, bufs);

    stream.pause();
    stream.on('error', onError);
    const ondata = (chunk: Buffer | string) => {
      if (typeof chunk === 'string') {
        // Someone set an encoding on the raw socket: TLS needs bytes.
        stream.pause();
        stream.removeListener('data', ondata);
        onError(Object.assign(new Error('Stream has StringDecoder set or is in objectMode'), { code: 'ERR_STREAM_WRAP' }));
        return;
      }
      this.jsHandle?.readBuffer(chunk);
    };
    stream.on('data', ondata);
    stream.once('end', () => {
      // The TLS socket alone decides when to end its side after the peer's
      // EOF (by its own allowHalfOpen), as when it reads a kernel socket
      // directly: the raw socket must not end itself a tick later, before
      // TLS's last words (a reply, close_notify) leave. (Set here, not
      // before: TLSSocket copies the raw socket's allowHalfOpen as its own
      // default when it wraps it; Node checks the flag after 'end'.)
      stream.allowHalfOpen = true;
      this.jsHandle?.emitEOF();
    });
    // (Errors went to onError; don't hand them to destroy() as well.)
    stream.once('close', () => this.destroy());
    const self = this as { readable: boolean; writable: boolean };
    self.readable = stream.readable;
    self.writable = stream.writable;
    this.read(0);
  }

  private directRead(chunk: Uint8Array | null): void {
    if (!this.tlsReading || this.held.length) {
      this.held.push(chunk);
      this.direct?.readStop();
      return;
    }
    this.deliver(chunk);
  }

  private releaseHeld(): void {
    while (this.tlsReading && this.held.length) this.deliver(this.held.shift()!);
    if (this.tlsReading && this.direct && !this.closing) this.direct.readStart();
  }

  private deliver(chunk: Uint8Array | null): void {
    const handle = this.jsHandle;
    if (!handle) return;
    if (chunk) handle.readBuffer(chunk);
    else handle.emitEOF();
  }

  /** Our JSStream while the socket has it (net.Socket sets it to null on close). */
  private get jsHandle(): JSStreamHandle | null {
    return (this as unknown as { _handle: JSStreamHandle | null })._handle;
  }

  private doWrite(req: object, bufs: Buffer[]): number {
    if (this.closing) {
      this.currentWrite = req; // doClose cancels it
      return 0;
    }
    const handle = this.jsHandle;
    if (!handle) return 0;
    const direct = this.direct;
    if (direct && !this.stream.connecting && this.stream.writableLength === 0 && !this.stream.writableEnded) {
      const r = direct.writeDirect(bufs, (status) => this.finishWrite(handle, status));
      this.currentWrite = req;
      // (Taken now or failed: finished from the next tick, never inside DoWrite.)
      if (r !== 1) process.nextTick(finishLater, this, handle, r < 0 ? r : 0);
      return 0;
    }
    let pending = bufs.length;
    let inside = true;
    const done = (err?: Error | null) => {
      if (!err && --pending !== 0) return;
      pending = 0;
      const status = uvStatus(err as NodeJS.ErrnoException);
      // The stream never calls back synchronously, but a write must not
      // finish inside DoWrite whatever the stream does.
      if (inside) process.nextTick(finishLater, this, handle, status);
      else this.finishWrite(handle, status);
    };
    this.stream.cork();
    for (const buf of bufs) this.stream.write(buf, done);
    this.stream.uncork();
    this.currentWrite = req; // only now: write() may throw
    inside = false;
    return 0;
  }

  /** (Public for finishLater only.) */
  finishWrite(handle: JSStreamHandle, status: number): void {
    const req = this.currentWrite;
    if (req === null) return; // cancelled already
    this.currentWrite = null;
    handle.finishWrite(req, status);
    const shutdown = this.pendingShutdown;
    if (shutdown) {
      this.pendingShutdown = null;
      this.doShutdown(shutdown);
    }
  }

  private doShutdown(req: object): number {
    // TLSWrap's own shutdown writes (close_notify) and shuts down at once:
    // the shutdown waits for that write.
    if (this.currentWrite !== null) {
      this.pendingShutdown = req;
      return 0;
    }
    this.currentShutdown = req;
    if (this.closing) return 0; // doClose cancels it
    const handle = this.jsHandle as JSStreamHandle;
    process.nextTick(() => this.stream.end(() => this.finishShutdown(handle, 0)));
    return 0;
  }

  private finishShutdown(handle: JSStreamHandle, status: number): void {
    const req = this.currentShutdown;
    if (req === null) return;
    this.currentShutdown = null;
    handle.finishShutdown(req, status);
  }

  private doClose(cb: () => void): void {
    this.closing = true;
    const handle = this.jsHandle as JSStreamHandle;
    // What the raw socket took is delivered as a closed kernel socket
    // delivers it (then FIN; a reset where unread data was left).
    this.stream.destroy();
    setImmediate(() => {
      this.finishWrite(handle, UV_ECANCELED);
      this.finishShutdown(handle, UV_ECANCELED);
      this.closing = false;
      cb();
    });
  }
}
