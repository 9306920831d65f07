// Where sidestep steps in: small patches on the prototype of Node's own TCP
// wrap, so every net.Socket and net.Server (and so http, https, undici,
// fetch...) keeps its Node class and behaviour while its handle changes.
//
//  - TCP.prototype.connect/connect6: runs after DNS, with the final address.
//    The addon decides in one call whether the fabric takes the connection
//    (and has already sent its SYN when it says yes); only then does the
//    socket take a BypassHandle through Node's own kReinitializeHandle (which
//    closes the unused kernel handle). Otherwise the kernel connect runs
//    unchanged.
//  - TCP.prototype.bind/bind6: remember the requested local address (and the
//    v6only flag of a server) for the above and below.
//  - TCP.prototype.listen: after the kernel listen succeeds (port ownership and
//    EADDRINUSE stay the kernel's; non-sidestep clients still connect), the
//    fabric serves that kernel socket too (its rendezvous name). Bypassed
//    connections enter through the server's own `_handle.onconnection(0,
//    handle)`, so maxConnections, counting and 'connection' stay Node's.
//  - TCP.prototype.close/ref/unref: carry the same to the bypass listener.
//  - cluster workers: each registers its own bypass listener for the shared
//    port (cluster.ts), beside the handle Node's cluster machinery gives it.
import { AsyncResource } from 'node:async_hooks';
import clusterModule = require('node:cluster');
import * as net from 'node:net';
import { EventKind } from '../addon';
import { defaultLocalAddress, notLocal } from '../policy';
import type { Runtime, EventTarget } from '../runtime';
import type { Fallbacks } from '../stats';
import { debug } from '../stats';
import { installClusterWorker, kClusterShare, type ClusterShare } from './cluster';
import { BypassHandle, kKernelOnly, kWasBypassed, type LocalBinding } from './handle';
import { ownerOf, reinitializeHandle, type Internals } from './internals';
import { installIpcGuard } from './ipc';
import { installTlsBridge, isTlsSocket, kTlsOver, tlsReleased, rewrapTls, tlsOverKernelHandle } from './tls';

const kBound = Symbol('sidestep.bound');
const kListener = Symbol('sidestep.listener');
const UV_TCP_IPV6ONLY = 1;

interface Bound extends LocalBinding {
  v6only: boolean;
}

/**
 * TLS client sockets whose connection went through the fabric: their own
 * handle is TLS's wrap. (A plain socket needs no entry: its handle answers
 * while it has one, and the handle marks it when closed, kWasBypassed; a
 * WeakSet entry per connection was GC work, its ephemeron tables.)
 */
const bypassedSockets = new WeakSet<object>();

function bypassedPlain(socket: any): boolean {
  // The handle answers while the socket has one (in the server's 'connection'
  // listener already); the mark remembers it after close.
  return socket._handle instanceof BypassHandle || socket[kWasBypassed] === true || bypassedSockets.has(socket);
}

export function isBypassedSocket(socket: object): boolean {
  if (bypassedPlain(socket)) return true;
  // A TLS socket over a bypassed socket: Node keeps the raw one as _parent.
  const parent = (socket as any)._parent;
  return isTlsSocket(socket) && !!parent && typeof parent === 'object' && bypassedPlain(parent);
}

/**
 * socket.resetAndDestroy() insists on a libuv TCP handle (`instanceof TCP`);
 * for ours, run the same steps Node runs: reset once connected, through
 * Socket.prototype._reset, which makes _destroy call handle.reset().
 */
function installResetAndDestroy(): void {
  const proto = net.Socket.prototype as any;
  const original = proto.resetAndDestroy;
  if (typeof original !== 'function' || typeof proto._reset !== 'function') return;
  proto.resetAndDestroy = function (this: any) {
    if (!(this._handle instanceof BypassHandle)) return original.call(this);
    if (this.connecting) this.once('connect', () => this._reset());
    else this._reset();
    return this;
  };
}

/**
 * The listener a cluster primary opens for round-robin scheduling: Node
 * creates it as net.createServer(assert.fail) in lib/internal/cluster/
 * round_robin_handle.js and never lets it emit 'connection'.
 */
// The CommonJS export is the Cluster object (@types/node types it as `default`).
const cluster = clusterModule as unknown as { isPrimary: boolean };

function isClusterRoundRobin(server: any): boolean {
  if (!server || typeof server.listeners !== 'function' || !cluster.isPrimary) return false;
  const listeners = server.listeners('connection');
  return listeners.length === 1 && listeners[0].name === 'fail';
}

/** The bypass side of a listening kernel handle. */
class BypassListener implements EventTarget {
  /**
   * The async context its connections arrive in. Node calls a kernel
   * listener's onconnection in the listening handle's (made where listen()
   * was called): the connection's handle, the http parser's resource and an
   * AsyncLocalStorage store all come from there. Made beside that handle,
   * at listen(), this one carries the same.
   */
  private readonly resource: AsyncResource;

  constructor(
    readonly id: number,
    private readonly kernelHandle: any,
    private readonly runtime: Runtime,
    private readonly internals: Internals,
  ) {
    const trigger = typeof kernelHandle.getAsyncId === 'function' ? kernelHandle.getAsyncId() : undefined;
    this.resource = new AsyncResource('TCPSERVERWRAP', { triggerAsyncId: trigger });
    runtime.register(id, this);
  }

  deliver(kind: number, arg: number): void {
    if (kind !== EventKind.Accept) return;
    this.resource.runInAsyncScope(this.accept, this, arg);
  }

  private accept(id: number): void {
    const client = new BypassHandle(this.runtime, this.internals, id);
    if (typeof this.kernelHandle.onconnection !== 'function') {
      client.close();
      return;
    }
    this.kernelHandle.onconnection(0, client);
  }

  close(): void {
    this.runtime.binding.close(this.id);
    this.runtime.forget(this.id);
  }
}

/**
 * What a program set on `socket._handle` between connect() and the swap
 * (an own property, a wrapped method such as setNoDelay) belongs to the
 * handle that carries the connection: it moves to ours. Node's own marks
 * stay behind: the owner (set again by the swap), and `reading`, the kernel
 * handle's read state, which TLS turns into an accessor of its wrap's when
 * it wraps the socket before it connects; ours start unread. So do ours.
 */
function carryOwnProperties(kernel: any, handle: BypassHandle): void {
  for (const key of Reflect.ownKeys(kernel)) {
    if (key === kBound || key === kKernelOnly || key === 'reading' || key === kTlsOver) continue;
    // What every connecting TCP handle has (no listener callback): nothing
    // to carry, and defining it would give each handle a map of its own.
    if (key === 'onconnection' && kernel.onconnection == null) continue;
    if (typeof key === 'symbol' && key.description === 'owner_symbol') continue;
    const d = Object.getOwnPropertyDescriptor(kernel, key);
    if (d) Object.defineProperty(handle, key, d);
  }
}

/**
 * An HTTP parser that consumes a handle natively (HTTPParser#consume, as
 * Node's http server does with libuv handles, or a program that calls it
 * on `socket._handle` while it connects) reads it in C++: only a libuv
 * handle can be read that way. Such a handle keeps its kernel connection
 * (kKernelOnly, counted `consumed`); ours is refused with an error instead
 * of the abort Node's C++ would give.
 */
function installConsumeGuard(TCP: any): void {
  let HTTPParser: any;
  try {
    HTTPParser = require('_http_common').HTTPParser;
  } catch {
    return;
  }
  const proto = HTTPParser?.prototype;
  const original = proto?.consume;
  if (typeof original !== 'function') return;
  proto.consume = function (this: unknown, handle: any, ...rest: unknown[]) {
    if (handle instanceof BypassHandle)
      throw new TypeError('sidestep: an HTTP parser cannot consume a bypassed socket\'s handle natively');
    if (handle instanceof TCP && !handle[kKernelOnly])
      handle[kKernelOnly] = 'consumed: an HTTP parser reads this socket\'s handle natively (HTTPParser#consume)';
    return original.call(this, handle, ...rest);
  };
}

/**
 * An http server consumes a kernel socket's handle (above): libuv feeds its
 * parser natively, outside any callback scope, so the parser's own scopes
 * are the outermost. Node's body callback is a MakeCallback, whose end runs
 * the nextTicks and microtasks queued so far; headers complete and message
 * complete skip the task queues (kSkipTaskQueues), and the end of the read
 * (kOnExecute) runs them again. So a request handler's ticks run after the
 * body that came in its headers' read, before the request's end: a request
 * paused in its first 'data' event is not dumped on finish.
 * Over a bypassed socket the parser runs inside the socket's 'data' event,
 * whose callback scope (ours, and the socket's async context, which an
 * AsyncLocalStorage store rides on) ends with the read: that end is
 * kOnExecute's. Only the body callback needs the queue run after it: the
 * server parser of such a socket gets a wrapper there. It counts as
 * consumed until Node unconsumes it (a 'data' listener, an upgrade, the
 * parser's release), which puts its own callback back. (Reads outside any
 * scope, as libuv's, would make the parser's scopes outermost by
 * themselves, but then nothing of the socket's async context surrounds the
 * rest of the read: an 'upgrade' or 'clientError' handler lost its store.)
 */
const kOwnOnBody = Symbol('sidestep.ownOnBody');

function installParserTicks(): void {
  let HTTPParser: any;
  try {
    HTTPParser = require('_http_common').HTTPParser;
  } catch {
    return;
  }
  const proto = HTTPParser?.prototype;
  const tick = (process as any)._tickCallback;
  const kOnBody = HTTPParser?.kOnBody;
  if (typeof proto?.initialize !== 'function' || typeof proto.unconsume !== 'function' || typeof tick !== 'function' ||
      typeof kOnBody !== 'number')
    return;
  const restore = (parser: any) => {
    if (!parser[kOwnOnBody]) return;
    parser[kOnBody] = parser[kOwnOnBody];
    parser[kOwnOnBody] = null;
  };
  // One wrapper, shared by every such parser: the parser's own callback,
  // then the queued ticks, as the end of Node's MakeCallback for it.
  // (One argument, the chunk, as Node's parserOnBody: no rest array per chunk.)
  const onBody = function (this: any, chunk: unknown) {
    const r = this[kOwnOnBody].call(this, chunk);
    tick(); // (not after a throw: that goes to 'uncaughtException' first)
    return r;
  };
  const initialize = proto.initialize;
  proto.initialize = function (this: any, type: number, resource: any, ...rest: unknown[]) {
    restore(this); // (parsers are reused)
    const r = initialize.call(this, type, resource, ...rest);
    if (type === HTTPParser.REQUEST && resource?.socket?._handle instanceof BypassHandle) {
      if (typeof this[kOnBody] === 'function') {
        this[kOwnOnBody] = this[kOnBody];
        this[kOnBody] = onBody;
      }
      this._consumed = true;
    }
    return r;
  };
  const unconsume = proto.unconsume;
  proto.unconsume = function (this: any, ...args: unknown[]) {
    restore(this);
    // (Natively a no-op for a parser that consumed no handle.)
    return unconsume.apply(this, args);
  };
}

/** TCP wrap methods our handle implements, reached through libuv's prototype too. */
const DELEGATED = [
  'setNoDelay', 'setKeepAlive', 'getsockname', 'getpeername', 'hasRef', 'readStart', 'readStop',
  'useUserBuffer', 'getAsyncId', 'shutdown', 'writeBuffer', 'writev', 'writeUtf8String', 'writeLatin1String',
  'writeAsciiString', 'writeUcs2String', 'reset', 'setTypeOfService', 'getTypeOfService',
] as const;

/** Under strict mode, the error a would-be fallback fails with instead. */
export type StrictError = ((reason: string) => Error) | null;

/**
 * TLS's and http's patches are installed at the program's first connect()
 * or listen(), not at startup: loading tls or http takes what their internal
 * bindings hold at that moment, and a program may change those first (Node's
 * test-http-parser-lazy-loaded and test-tls-keyengine-unsupported do). None
 * is needed earlier: a socket is bypassed only by a connect or by a listener,
 * TLS wraps a connecting socket only after its connect() began, and an http
 * server parses a bypassed socket only after its listen().
 */
function installOnFirstUse(install: () => void): void {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    install();
  };
  const socketProto = net.Socket.prototype as any;
  const serverProto = net.Server.prototype as any;
  const connect = socketProto.connect;
  const listen = serverProto.listen;
  socketProto.connect = function (this: unknown, ...args: unknown[]) {
    once();
    return connect.apply(this, args);
  };
  serverProto.listen = function (this: unknown, ...args: unknown[]) {
    once();
    return listen.apply(this, args);
  };
}

export function installHooks(internals: Internals, runtime: Runtime, fallbacks: Fallbacks, strict: StrictError): void {
  installOnFirstUse(() => {
    const tlsProblem = installTlsBridge((h) => ownerOf(internals, h));
    if (tlsProblem) fallbacks.record(tlsProblem);
    installConsumeGuard(internals.TCP);
    installParserTicks();
  });
  const ipcProblem = installIpcGuard((h) => ownerOf(internals, h));
  if (ipcProblem) debug('%s', ipcProblem);
  installResetAndDestroy();
  const proto = internals.TCP.prototype;
  // A program that kept a handle's own method (`const f = sock._handle.
  // setNoDelay; sock._handle.setNoDelay = function (on) { ...; return
  // f.call(this, on) }`) calls libuv's method with our handle as `this`: the
  // method hands such calls to our handle instead of failing with "Illegal
  // invocation". (A program that replaces the prototype's method itself is
  // not served: our handle doesn't inherit from it.)
  // IP_TOS came to libuv's handle in Node 25.6: before, a program that
  // looks for the methods on `socket._handle` finds neither on ours.
  for (const name of ['setTypeOfService', 'getTypeOfService'] as const)
    if (typeof proto[name] !== 'function') delete (BypassHandle.prototype as any)[name];
  for (const name of DELEGATED) {
    const original = proto[name];
    if (typeof original !== 'function') continue;
    proto[name] = function (this: any, ...args: unknown[]) {
      // (Our class's own method: the handle may carry the program's wrapper,
      // which is what called us.)
      if (this instanceof BypassHandle) return (BypassHandle.prototype as any)[name].apply(this, args);
      return original.apply(this, args);
    };
  }
  const orig = {
    connect: proto.connect,
    connect6: proto.connect6,
    bind: proto.bind,
    bind6: proto.bind6,
    listen: proto.listen,
    close: proto.close,
    ref: proto.ref,
    unref: proto.unref,
  };

  function kernelConnect(kernel: any, req: any, address: string, port: number, original: Function, reason: string): number {
    fallbacks.record(reason);
    const socket = ownerOf(internals, kernel);
    if (strict && socket && typeof socket.destroy === 'function') {
      // Fail the connect with the reason instead of quietly using the kernel.
      const err = strict(reason);
      process.nextTick(() => socket.destroy(err));
      return 0;
    }
    return original.call(kernel, req, address, port);
  }

  function bypassConnect(kernel: any, req: any, address: string, port: number, original: Function): number {
    const forced: string | undefined = kernel[kKernelOnly];
    if (forced) return kernelConnect(kernel, req, address, port, original, forced);
    const remote = notLocal(address);
    if (remote) return kernelConnect(kernel, req, address, port, original, remote);
    const socket = ownerOf(internals, kernel);
    // A socket destroyed while its name was looked up (an AbortSignal, a
    // destroy() right after tls.connect): Node may still issue the connect
    // on its closed handle, which fails there; over the fabric it would make
    // a connection nobody owns.
    if (socket?.destroyed === true) {
      fallbacks.record('destroyed: a socket destroyed before its connect (Node connects it still; nobody reads it)');
      return original.call(kernel, req, address, port);
    }
    if (!socket || typeof socket[internals.kReinitializeHandle] !== 'function')
      return kernelConnect(kernel, req, address, port, original, 'unowned-handle: a TCP handle without a net.Socket owner');
    const tlsClient = socket._handle !== kernel;
    // A TLS socket closed before it connected (an AbortSignal already
    // aborted): connect() undestroys it, but its TLS session was let go, and
    // on the kernel path its first read fails and destroys it again. A
    // re-wrap here would give it a new session: a life the kernel doesn't.
    if (tlsClient && isTlsSocket(socket) && tlsReleased(socket)) {
      fallbacks.record('destroyed: a TLS socket closed before its connect (its session let go)');
      return original.call(kernel, req, address, port);
    }
    if (tlsClient && !isTlsSocket(socket))
      return kernelConnect(kernel, req, address, port, original, 'wrapped-handle: a TCP handle wrapped by something other than TLS');
    const bound: Bound | undefined = kernel[kBound];
    const local: LocalBinding = {
      address: bound && bound.address !== '0.0.0.0' && bound.address !== '::' ? bound.address : defaultLocalAddress(address),
      port: bound?.port ?? 0,
    };
    // A port the application bound is held by Node's handle: the addon keeps
    // a duplicate of it as the reservation before that handle is closed.
    const boundFd = bound && bound.port && typeof kernel.fd === 'number' ? kernel.fd : -1;
    const out: { why?: string } = {};
    const id = runtime.binding.connect(local.address, local.port, boundFd, address, port, out);
    if (id < 0) return kernelConnect(kernel, req, address, port, original, out.why || `fabric: errno ${-id}`);
    // Decided: the SYN is on its way. Only now does the socket change handle.
    const handle = new BypassHandle(runtime, internals);
    carryOwnProperties(kernel, handle);
    const retry = { address, port, local: bound ? local : null, connect: original === orig.connect6 ? 'connect6' : 'connect' } as const;
    if (!tlsClient) {
      reinitializeHandle(internals, socket, handle);
      handle.startConnect(id, req, retry);
      // TLS wrapped this socket before its connect (a name being looked up):
      // its wrap sits on the kernel handle just closed. It wraps itself
      // around the new handle instead, as TLS's own re-wrap after a failed
      // attempt does; the handshake starts only on 'connect', so nothing
      // went through the old wrap yet.
      const tlsOver: any = tlsOverKernelHandle(kernel);
      if (tlsOver && !tlsOver.destroyed) {
        rewrapTls(internals, tlsOver, handle);
        bypassedSockets.add(tlsOver);
      }
    } else {
      // tls.connect() without a socket: its raw handle sits inside TLS's C++
      // wrap. Connect a plain net.Socket over the fabric and let the TLS
      // socket re-wrap itself around it (TLSSocket's own kReinitializeHandle,
      // which tls.ts bridges through a TlsBridge). The connect completes
      // on the TLS socket, as Node's own would.
      handle.startConnect(id, req, retry);
      const raw = new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts);
      raw.on('error', () => {}); // errors reach the TLS socket through the bridge
      rewrapTls(internals, socket, handle);
      handle.completeConnectAs(socket._handle);
      bypassedSockets.add(raw);
      bypassedSockets.add(socket);
    }
    // (debuglog's wrapper allocates for its arguments even when disabled.)
    if (debug.enabled) debug('connect %s:%d via fabric%s', address, port, tlsClient ? ' (TLS)' : '');
    return 0;
  }

  /**
   * The fabric gave up on a connect before it completed (its pair never came
   * up): the socket gets a fresh kernel handle, marked so the connect hook
   * lets it through, and connects there. The application sees one connect.
   */
  function kernelRetry(reason: string): any {
    // (Counted once, when its connect comes through bypassConnect.)
    const kernel = new internals.TCP(internals.TCPSocketType);
    kernel[kKernelOnly] = reason;
    return kernel;
  }
  BypassHandle.kernelRetry = kernelRetry;

  proto.connect = function (this: any, req: any, address: string, port: number) {
    return bypassConnect(this, req, address, port, orig.connect);
  };
  proto.connect6 = function (this: any, req: any, address: string, port: number) {
    return bypassConnect(this, req, address, port, orig.connect6);
  };

  proto.bind = function (this: any, address: string, port: number, ...rest: unknown[]) {
    const err = orig.bind.call(this, address, port, ...rest);
    if (err === 0) this[kBound] = { address, port, v6only: false } satisfies Bound;
    return err;
  };
  proto.bind6 = function (this: any, address: string, port: number, flags: number, ...rest: unknown[]) {
    const err = orig.bind6.call(this, address, port, flags, ...rest);
    if (err === 0) this[kBound] = { address, port, v6only: ((flags | 0) & UV_TCP_IPV6ONLY) !== 0 } satisfies Bound;
    return err;
  };

  /**
   * A listen that gets no bypass listener: counted; under strict mode the
   * kernel listener is closed again and listen() throws the reason.
   */
  function kernelOnlyListen(closeKernel: () => void, reason: string): void {
    fallbacks.record(reason);
    if (!strict) return;
    closeKernel();
    throw strict(reason);
  }

  /**
   * Serve a listening kernel handle (or a cluster worker's handle) over the
   * fabric too, for the address and port the handle reports. The fabric
   * finds the kernel socket by the handle's fd (a worker's faux handle has
   * none: its primary's socket is found by address).
   */
  function listenBeside(kernel: any, backlog: number, v6only: boolean, closeKernel: () => void): void {
    const name: Record<string, any> = {};
    if (typeof kernel.getsockname !== 'function' || kernel.getsockname(name) !== 0 || !name.port) {
      kernelOnlyListen(closeKernel, 'listen-fd: a server listening on a handle without a TCP address');
      return;
    }
    const fd = typeof kernel.fd === 'number' && kernel.fd >= 0 ? kernel.fd : -1;
    const out: { why?: string } = {};
    const id = runtime.binding.listen(name.address, name.port, backlog | 0 || 511, v6only, fd, out);
    if (id < 0) {
      kernelOnlyListen(closeKernel, `listen-register: cannot serve ${name.address}:${name.port} over the fabric (${out.why || `errno ${-id}`})`);
      return;
    }
    const listener = new BypassListener(id, kernel, runtime, internals);
    kernel[kListener] = listener;
    if (typeof kernel.hasRef === 'function' && !kernel.hasRef()) runtime.binding.ref(id, false);
    debug('listen %s:%d: served over the fabric too', name.address, name.port);
  }

  function closeBeside(kernel: any): void {
    const listener: BypassListener | undefined = kernel[kListener];
    if (listener) {
      kernel[kListener] = undefined;
      listener.close();
    }
  }

  function refBeside(kernel: any, on: boolean): void {
    const listener: BypassListener | undefined = kernel[kListener];
    if (listener) runtime.binding.ref(listener.id, on);
  }

  proto.listen = function (this: any, backlog: number, ...rest: unknown[]) {
    const err = orig.listen.call(this, backlog, ...rest);
    if (err !== 0) return err;
    const closeKernel = () => orig.close.call(this);
    const bound: Bound | undefined = this[kBound];
    const share: ClusterShare | undefined = this[kClusterShare];
    if (share) {
      // A cluster worker on the primary's shared handle (SCHED_NONE).
      listenBeside(this, backlog, share.v6only, closeKernel);
      return err;
    }
    if (!bound) {
      kernelOnlyListen(closeKernel, 'listen-fd: a server listening on an inherited fd or handle');
      return err;
    }
    if (isClusterRoundRobin(ownerOf(internals, this))) {
      // The cluster primary's round-robin listener hands every connection to
      // a worker over IPC; a bypassed connection can't travel (see ipc.ts).
      // The workers register their own bypass listeners (cluster.ts), so
      // this one only serves clients without sidestep, like the kernel
      // listener beside every bypass listener: counted, but strict mode has
      // nothing to refuse here.
      fallbacks.record('cluster: the primary distributes connections to workers; the workers are bypassed');
      return err;
    }
    listenBeside(this, backlog, bound.v6only, closeKernel);
    return err;
  };

  const clusterProblem = installClusterWorker(internals.TCP, {
    listen: (handle, backlog, share, closeKernel) => listenBeside(handle, backlog, share.v6only, closeKernel),
    close: closeBeside,
    ref: refBeside,
  });
  if (clusterProblem) fallbacks.record(clusterProblem);

  proto.close = function (this: any, ...args: unknown[]) {
    if (this instanceof BypassHandle) return BypassHandle.prototype.close.apply(this, args as [() => void]);
    closeBeside(this);
    return orig.close.apply(this, args);
  };
  proto.ref = function (this: any) {
    if (this instanceof BypassHandle) return BypassHandle.prototype.ref.call(this);
    refBeside(this, true);
    return orig.ref.call(this);
  };
  proto.unref = function (this: any) {
    if (this instanceof BypassHandle) return BypassHandle.prototype.unref.call(this);
    refBeside(this, false);
    return orig.unref.call(this);
  };
}
