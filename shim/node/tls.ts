// TLS over a bypassed socket. Node's TLSWrap is C++ and insists on a C++
// stream underneath (`_wrapHandle` asserts `handle.isStreamBase`); our handle
// is JavaScript. When TLS is about to wrap a net.Socket whose handle is a
// BypassHandle, it wraps a TlsBridge over that socket instead (a JSStream:
// tls-bridge.ts says why not Node's JSStreamSocket). This covers tls.Server /
// https.Server connections that arrived over the fabric, tls.connect() whose
// connect went through the fabric, and `tls.connect({ socket })` /
// `new TLSSocket(socket)` over a bypassed socket, connected or connecting.
//
// Node's tls module is loaded when the bridge is installed, not when this
// module is: a program may change crypto's internal binding before its first
// require('tls') (Node's own test-tls-keyengine-unsupported does), and tls
// takes what it finds there when it loads.
import * as stream from 'node:stream';
import { BypassHandle } from './handle';
import { reinitializeHandle, type Internals } from './internals';
import { TlsBridge, type JSStreamClass } from './tls-bridge';

type TlsModule = typeof import('node:tls');

/** Node's tls module, once the bridge is installed (no TLS socket is bypassed before). */
let tls: TlsModule | null = null;

let jsStream: JSStreamClass | null | undefined;

/**
 * Node's JSStream (the js_stream binding's StreamBase), found under a
 * throwaway TLSSocket over a plain Duplex: the one public path that makes
 * one (TLS wraps such a Duplex in a JSStreamSocket, whose handle it is).
 */
function getJSStream(): JSStreamClass | null {
  if (jsStream !== undefined) return jsStream;
  let found: JSStreamClass | null = null;
  if (!tls) return null;
  const duplex = new stream.Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  let probe: any;
  try {
    probe = new tls.TLSSocket(duplex);
    const parent = probe._handle?._parent;
    if (parent && typeof parent.constructor === 'function' && typeof parent.readBuffer === 'function') found = parent.constructor;
  } catch {
    found = null;
  } finally {
    probe?.destroy();
    duplex.destroy();
  }
  jsStream = found;
  return found;
}

/** Whether a socket is a TLS socket (whose raw handle TLS owns). */
export function isTlsSocket(socket: unknown): boolean {
  return tls !== null && socket instanceof tls.TLSSocket;
}

/**
 * Whether a TLS socket let go of its session: its 'close' came (TLS clears
 * its wrap resources, kRes, then destroys the SSL), though connect() may
 * have undestroyed it since.
 */
export function tlsReleased(socket: any): boolean {
  if (!socket.ssl) return true;
  const kRes = Object.getOwnPropertySymbols(socket).find((sym) => sym.description === 'res');
  return kRes !== undefined && socket[kRes] === null;
}

/**
 * A TLS socket that wraps a socket before that socket connected (its kernel
 * handle, unconnected, or the wrap of a TLS socket still connecting, is what
 * TLS wrapped): if the connect then goes through the fabric, that TLS socket
 * must re-wrap itself around the socket's new handle (see rewrapTls).
 */
export const kTlsOver = Symbol('sidestep.tlsOver');

export function tlsOverKernelHandle(kernel: object): import('node:tls').TLSSocket | null {
  return (kernel as any)[kTlsOver] ?? null;
}

/**
 * A TLS socket wraps itself around a new handle (TLSSocket's own
 * kReinitializeHandle, as after a failed connect attempt), and so does any
 * TLS socket that wrapped this one (TLS inside TLS) around its new wrap.
 * Then what that re-wrap leaves undone: Node sets `ssl` to the old wrap,
 * whose close nulls it; and the callbacks _init enables when a listener is
 * added ('session', 'keylog') were enabled on the old wrap, while listeners
 * added before the re-wrap don't fire newListener again.
 */
export function rewrapTls(internals: Internals, socket: any, handle: object): void {
  const old = socket._handle;
  reinitializeHandle(internals, socket, handle);
  const inner = old?.[kTlsOver];
  if (inner && inner !== socket && !inner.destroyed) rewrapTls(internals, inner, socket._handle);
  // (The inner one's re-wrap closes the old wrap again, which nulls `ssl`.)
  const ssl = socket._handle;
  if (!ssl) return;
  socket.ssl = ssl;
  if (socket.listenerCount('session') > 0 && typeof ssl.enableSessionCallbacks === 'function') ssl.enableSessionCallbacks();
  if (socket.listenerCount('keylog') > 0 && typeof ssl.enableKeylogCallback === 'function') ssl.enableKeylogCallback();
}

let ownerSocket: (handle: object) => any = () => null;

export function installTlsBridge(owner: (handle: object) => any): string | null {
  ownerSocket = owner;
  tls = require('node:tls') as TlsModule;
  const proto = tls.TLSSocket.prototype as any;
  const original = proto._wrapHandle;
  if (typeof original !== 'function') return 'tls: TLSSocket has no _wrapHandle';
  proto._wrapHandle = function (this: any, wrap: any, handle: unknown, ...rest: unknown[]) {
    const wrapped = wrap != null; // a socket the program handed to TLS
    if (handle instanceof BypassHandle && !wrap) {
      // A TLS client re-wrapping itself around a bypassed connection: the
      // net.Socket that owns the handle is the stream TLS reads and writes.
      wrap = ownerSocket(handle);
    }
    if (handle instanceof BypassHandle && wrap) {
      const JSStream = getJSStream();
      if (!JSStream) throw new Error('sidestep: cannot wrap TLS over a bypassed socket (JSStream unavailable)');
      const bridge = new TlsBridge(wrap, JSStream, (err) => this.destroy(err));
      const closeListeners = bridge.listeners('close');
      const res = original.call(this, bridge, (bridge as any)._handle, ...rest);
      if (!wrapped) {
        // TLS destroys itself when the socket it wraps closes; a TLS socket
        // that made its own connection wraps none over the kernel, and is
        // destroyed only by what it reads. The bridge stands where nothing
        // stood, so its 'close' destroys only a TLS socket not destroyed yet:
        // a second destroy would undo an `_undestroy()` in the 'error'
        // handler, and a write the close cancels would finish without
        // ECANCELED (Node's test-tls-writewrap-leak).
        for (const l of bridge.listeners('close')) if (!closeListeners.includes(l)) bridge.removeListener('close', l as () => void);
        bridge.on('close', () => {
          if (this._handle) this.destroy();
        });
      }
      // Over a kernel socket, TLS hears the raw socket's 'close' itself
      // (above, `wrap` is the bridge, which closes later): a TLS socket is
      // destroyed by the time the raw socket's other 'close' listeners run.
      // (Only a socket the program wrapped, as above.)
      if (wrapped) wrap.on('close', () => this.destroy());
      return res;
    }
    if (handle && wrap && wrap._handle === handle) {
      // TLS over a net.Socket's kernel handle. Should that handle connect
      // later (TLS wrapped the socket while its name was being looked up),
      // the connect hook must know who wraps it.
      (handle as any)[kTlsOver] = this;
    }
    return original.call(this, wrap, handle, ...rest);
  };
  return null;
}
