// Policy: bypass or kernel, decided per connect (DESIGN.md §2). A connection
// is bypassed only when its destination is an address of this host and a live
// sidestep listener owns it in the fabric's registry; anything else uses the
// kernel, with the reason counted.
import * as net from 'node:net';
import * as os from 'node:os';

export type Decision = { bypass: true; via: number } | { bypass: false; reason: string };

export interface ListenerLookup {
  lookup(address: string, port: number): number;
}

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

export function decideConnect(registry: ListenerLookup, address: string, port: number): Decision {
  if (!isLocalAddress(address)) return { bypass: false, reason: `remote: ${address} is not an address of this host` };
  const via = registry.lookup(address, port);
  if (via < 0) return { bypass: false, reason: `no-listener: no sidestep listener on ${address}:${port}` };
  return { bypass: true, via };
}

/** The source address the kernel would pick for a same-host destination. */
export function defaultLocalAddress(address: string): string {
  if (net.isIPv4(address)) return address.startsWith('127.') ? '127.0.0.1' : address;
  return address;
}
