// Cluster workers, bypassed. A worker's server.listen() asks the primary for
// a handle (lib/internal/cluster/child.js, `cluster._getServer`): under
// SCHED_RR a faux handle (the primary accepts and passes each connection
// over IPC), under SCHED_NONE the primary's bound TCP handle, shared by all
// workers. Either way the kernel side stays exactly as Node's cluster makes
// it, so clients without sidestep still get in. Beside it, each worker serves
// the primary's kernel listening socket over the fabric under its own
// rendezvous name (the next free share of that socket's names); a client
// checks that the worker's parent holds the socket, and spreads its
// connections over the workers without touching the primary.
import clusterModule = require('node:cluster');
import { debug } from '../stats';

/** How a worker's handle is to be served over the fabric. */
export interface ClusterShare {
  v6only: boolean;
}

/** The registration beside a worker's handle, provided by hooks.ts. */
export interface ListenBeside {
  /** After the handle's own listen succeeded. `closeKernel` undoes it (strict mode). */
  listen(handle: any, backlog: number, share: ClusterShare, closeKernel: () => void): void;
  close(handle: any): void;
  ref(handle: any, on: boolean): void;
}

const UV_TCP_IPV6ONLY = 1;

/** Marks a real TCP handle (SCHED_NONE) for hooks.ts's TCP.prototype.listen. */
export const kClusterShare = Symbol('sidestep.clusterShare');

type GetServer = (obj: any, options: any, cb: (err: number, handle: any) => void) => unknown;
const cluster = clusterModule as unknown as { isWorker: boolean; _getServer?: GetServer };

/** The faux handle of SCHED_RR is a plain object: wrap its methods in place. */
function wrapFauxHandle(handle: any, share: ClusterShare, beside: ListenBeside): void {
  const { listen, close, ref, unref } = handle;
  if ([listen, close, ref, unref].some((f) => typeof f !== 'function')) return;
  handle.listen = function (this: any, backlog: number, ...rest: unknown[]) {
    const err = listen.call(this, backlog, ...rest);
    if (err === 0) beside.listen(this, backlog, share, () => close.call(this));
    return err;
  };
  handle.close = function (this: any, ...args: unknown[]) {
    beside.close(this);
    return close.apply(this, args);
  };
  handle.ref = function (this: any) {
    beside.ref(this, true);
    return ref.call(this);
  };
  handle.unref = function (this: any) {
    beside.ref(this, false);
    return unref.call(this);
  };
}

/**
 * In a cluster worker, intercept `cluster._getServer` so every TCP handle the
 * primary answers with gets a bypass listener beside it. Returns why not, or
 * null (also in a process that is not a worker).
 */
export function installClusterWorker(TCP: any, beside: ListenBeside): string | null {
  if (!cluster.isWorker) return null;
  const original = cluster._getServer;
  if (typeof original !== 'function') return 'cluster: this Node has no cluster._getServer; workers use the kernel';
  cluster._getServer = function (this: unknown, obj: any, options: any, cb: (err: number, handle: any) => void) {
    const tcp = options && (options.addressType === 4 || options.addressType === 6) &&
      typeof options.port === 'number' && options.port >= 0 && typeof options.fd !== 'number';
    if (!tcp) return original.call(this, obj, options, cb);
    const share: ClusterShare = { v6only: ((options.flags | 0) & UV_TCP_IPV6ONLY) !== 0 };
    return original.call(this, obj, options, (err: number, handle: any) => {
      if (!err && handle && typeof handle === 'object') {
        if (handle instanceof TCP) handle[kClusterShare] = share;
        else wrapFauxHandle(handle, share, beside);
        debug('cluster worker: %s handle for port %d', handle instanceof TCP ? 'shared' : 'round-robin', options.port);
      }
      return cb(err, handle);
    });
  };
  return null;
}
