// Policy: bypass or kernel, decided per connect (DESIGN.md §2). A connection
// is a candidate only when its destination is an address of this host (this
// network namespace); the addon then decides the rest in one call (which
// kernel socket would accept it, whether a sidestep stack that really holds
// it serves it, the pair, the port) and anything else uses the kernel, with
// the reason counted.
import * as net from 'node:net';
import * as os from 'node:os';


let localAddresses: Set<string> | null = null;

function isLoopback(address: string): boolean {
  if (net.isIPv4(address)) return address.startsWith('127.');
  const a = address.toLowerCase();
  return a === '::1' || a.startsWith('::ffff:127.');
}

/** Whether `address` belongs to this host (loopback or an interface's). */
export function isLocalAddress(address: string): boolean {
  if (isLoopback(address)) return true;
  if (!localAddresses) {
    localAddresses = new Set();
    for (const list of Object.values(os.networkInterfaces())) {
      for (const i of list ?? []) localAddresses.add(i.address.toLowerCase());
    }
  }
  return localAddresses.has(address.toLowerCase());
}

/** Why a destination can't be bypassed at all, or null when the fabric may be asked. */
export function notLocal(address: string): string | null {
  return isLocalAddress(address) ? null : `remote: ${address} is not an address of this host`;
}

/** The source address the kernel would pick for a same-host destination. */
export function defaultLocalAddress(address: string): string {
  if (net.isIPv4(address)) return address.startsWith('127.') ? '127.0.0.1' : address;
  return address;
}
