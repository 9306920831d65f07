// TLS over a bypassed socket. Node's TLSWrap is C++ and insists on a C++
// stream underneath (`_wrapHandle` asserts `handle.isStreamBase`); our handle
// is JavaScript. Node itself solves this for JS streams with its internal
// JSStreamSocket (a native JSStream that calls back into a JS Duplex), and we
// use exactly that: when TLS is about to wrap a net.Socket whose handle is a
// BypassHandle, it wraps a JSStreamSocket over that socket instead. This
// covers tls.Server / https.Server connections that arrived over the fabric
// and `tls.connect({ socket })` over a bypassed socket.
import * as stream from 'node:stream';
import * as tls from 'node:tls';
import { BypassHandle } from './handle';

type JSStreamSocketClass = new (s: stream.Duplex) => { _handle: unknown; on(e: string, f: () => void): void };

let jsStreamSocket: JSStreamSocketClass | null | undefined;

/**
 * Node's JSStreamSocket class, borrowed from a throwaway TLSSocket over a
 * plain Duplex (the one public path that constructs one).
 */
function getJSStreamSocket(): JSStreamSocketClass | null {
  if (jsStreamSocket !== undefined) return jsStreamSocket;
  let found: JSStreamSocketClass | null = null;
  const duplex = new stream.Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  let probe: any;
  try {
    probe = new tls.TLSSocket(duplex);
    const wrap = probe._handle?._parentWrap;
    if (wrap && wrap._handle && typeof wrap.constructor === 'function') found = wrap.constructor;
  } catch {
    found = null;
  } finally {
    probe?.destroy();
    duplex.destroy();
  }
  jsStreamSocket = found;
  return found;
}

/** Whether a socket is a TLS socket (whose raw handle TLS owns). */
export function isTlsSocket(socket: unknown): boolean {
  return socket instanceof tls.TLSSocket;
}

let ownerSocket: (handle: object) => any = () => null;

export function installTlsBridge(owner: (handle: object) => any): string | null {
  ownerSocket = owner;
  const proto = tls.TLSSocket.prototype as any;
  const original = proto._wrapHandle;
  if (typeof original !== 'function') return 'tls: TLSSocket has no _wrapHandle';
  proto._wrapHandle = function (this: unknown, wrap: any, handle: unknown, ...rest: unknown[]) {
    if (handle instanceof BypassHandle && !wrap) {
      // A TLS client re-wrapping itself around a bypassed connection: the
      // net.Socket that owns the handle is the stream TLS reads and writes.
      wrap = ownerSocket(handle);
    }
    if (handle instanceof BypassHandle && wrap) {
      const JSStreamSocket = getJSStreamSocket();
      if (!JSStreamSocket) throw new Error('sidestep: cannot wrap TLS over a bypassed socket (JSStreamSocket unavailable)');
      const bridge = new JSStreamSocket(wrap) as any;
      // The bridge re-emits the raw socket's errors; TLSSocket already hears
      // them from the raw socket itself (its _init listens on `wrap`), so the
      // bridge's copy must not become an unhandled 'error'.
      bridge.on('error', () => {});
      return original.call(this, bridge, bridge._handle, ...rest);
    }
    return original.call(this, wrap, handle, ...rest);
  };
  return null;
}
