// What the shim decided and why: fallbacks by reason, logged once each under
// NODE_DEBUG=sidestep, counted always.
import { debuglog } from 'node:util';

export const debug = debuglog('sidestep');

export class Fallbacks {
  private readonly counts = new Map<string, number>();

  /** A connection or listener went to the kernel for `reason` ("kind: detail"). */
  record(reason: string): void {
    const kind = reason.split(':')[0];
    const n = this.counts.get(kind) ?? 0;
    if (n === 0) debug('kernel fallback: %s', reason);
    this.counts.set(kind, n + 1);
  }

  total(): number {
    let n = 0;
    for (const v of this.counts.values()) n += v;
    return n;
  }

  byReason(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}
