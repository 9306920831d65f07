// Cluster workers, bypassed. A worker's server.listen() asks the primary for
// a handle (lib/internal/cluster/child.js, `cluster._getServer`): under
// SCHED_RR a faux handle (the primary accepts and passes each connection
// over IPC), under SCHED_NONE the primary's bound TCP handle, shared by all
// workers. Either way the kernel side stays exactly as Node's cluster makes
// it, so clients without sidestep still get in. Beside it, each worker
// registers its own bypass listener for the shared port, with the primary's
// pid as the fabric registry's share key: the registry admits several live
// registrations of one (address, port) only when they carry the same key, and
// a connecting sidestep client's lookup rotates across them, so bypassed
// connections are spread over the workers without touching the primary.
import clusterModule = require('node:cluster');
import { debug } from '../stats';

/** How a worker's handle is to be registered in the fabric. */
export interface ClusterShare {
  /** The registry's share key: the primary's pid (workers die with it). */
  key: number;
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
    const share: ClusterShare = { key: process.ppid, v6only: ((options.flags | 0) & UV_TCP_IPV6ONLY) !== 0 };
    return original.call(this, obj, options, (err: number, handle: any) => {
      if (!err && handle && typeof handle === 'object') {
        if (handle instanceof TCP) handle[kClusterShare] = share;
        else wrapFauxHandle(handle, share, beside);
        debug('cluster worker: %s handle for port %d, share key %d', handle instanceof TCP ? 'shared' : 'round-robin', options.port, share.key);
      }
      return cb(err, handle);
    });
  };
  return null;
}
