// Inspection without stopping anyone: `sidestep stat` asks every stack in
// this network namespace for its state, `sidestep capture` asks stacks that
// consent (SIDESTEP_CAPTURE=1) for a copy of the packets they send and
// receive, written as pcap.
//
// Each hooked event loop serves its inspection socket at the abstract unix
// name "\0<fabric>/S<pid>.<thread>" (gone with the process, nothing in the
// file system). Only its own uid, or root, is answered (SO_PEERCRED). The
// tool finds the names in /proc/net/unix, which lists this namespace's.
// Requests and answers are JSON lines:
//   -> {op:'stat'}     <- {op:'stat', ...describe()}
//   -> {op:'capture'}  <- {op:'capture', ok, why?}, then
//                      <- {op:'packet', us, peerPid, received, data(base64)} ...
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as readline from 'node:readline';
import type { Binding } from './addon';
import type { Runtime } from './runtime';

/** The abstract name of a stack's inspection socket (without the leading NUL). */
export function inspectionName(fabric: string, pid: number, thread: number): string {
  return `${fabric}/S${pid}.${thread}`;
}

/** A capture stops copying (drops) while the tool has this much unread. */
const CAPTURE_BACKLOG = 8 << 20;

/** In every hooked event loop: answer inspection requests. */
export function serveInspection(runtime: Runtime, fabric: string, thread: number, opts: { capture: boolean }, describe: () => object): void {
  const capturers = new Set<net.Socket>();
  const stopCapture = (sock: net.Socket) => {
    capturers.delete(sock);
    if (capturers.size === 0) {
      runtime.binding.setCapture(false);
      runtime.onCapture = null;
    }
  };
  const server = net.createServer((sock) => {
    const fd = (sock as any)._handle?.fd;
    const cred = typeof fd === 'number' ? runtime.binding.peerCred(fd) : undefined;
    const me = typeof process.getuid === 'function' ? process.getuid() : -1;
    if (!cred || (cred[1] !== me && cred[1] !== 0)) {
      sock.destroy();
      return;
    }
    sock.on('error', () => {});
    sock.on('close', () => stopCapture(sock));
    readline.createInterface({ input: sock }).on('line', (line) => {
      let msg: { op?: string };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.op === 'stat') sock.write(JSON.stringify({ op: 'stat', ...describe() }) + '\n');
      if (msg.op === 'capture') {
        if (!opts.capture) {
          sock.write(JSON.stringify({ op: 'capture', ok: false, why: 'this process did not consent (start it with SIDESTEP_CAPTURE=1)' }) + '\n');
          return;
        }
        sock.write(JSON.stringify({ op: 'capture', ok: true }) + '\n');
        capturers.add(sock);
        runtime.onCapture = (peerPid, received, data) => {
          const buf = Buffer.from(data);
          const line = JSON.stringify({
            op: 'packet', us: buf.readBigUInt64LE(0).toString(), peerPid, received, data: buf.subarray(8).toString('base64'),
          }) + '\n';
          for (const c of capturers) {
            // A tool that stops reading loses packets, never stalls us.
            if (c.writableLength <= CAPTURE_BACKLOG) c.write(line);
          }
        };
        runtime.binding.setCapture(true);
      }
    });
  });
  // A name someone else took: no inspection for this process, nothing else changes.
  const fd = runtime.binding.unixListen(inspectionName(fabric, process.pid, thread));
  if (fd < 0) return;
  server.on('error', () => {});
  server.listen({ fd });
  server.unref();
}

/** The inspection sockets in this network namespace: [{name, pid, thread}]. */
export function listStacks(fabric: string): { name: string; pid: number; thread: number }[] {
  const text = fs.readFileSync('/proc/net/unix', 'utf8');
  const prefix = `@${fabric}/S`;
  const out = new Map<string, { name: string; pid: number; thread: number }>();
  for (const line of text.split('\n').slice(1)) {
    const path = line.trim().split(/\s+/)[7];
    if (!path || !path.startsWith(prefix)) continue;
    const m = /^(\d+)\.(\d+)$/.exec(path.slice(prefix.length));
    if (m) out.set(path, { name: path.slice(1), pid: Number(m[1]), thread: Number(m[2]) });
  }
  return [...out.values()].sort((a, b) => a.pid - b.pid || a.thread - b.thread);
}

/** A connected stream socket to a stack's inspection name, or null. */
function open(binding: Binding, name: string): net.Socket | null {
  const fd = binding.unixConnect(name);
  return fd < 0 ? null : new net.Socket({ fd, readable: true, writable: true });
}

/** One request/stream to a stack's inspection socket. */
function ask(binding: Binding, name: string, op: string, onLine: (msg: any) => boolean, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const sock = open(binding, name);
    if (!sock) return resolve();
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    sock.write(JSON.stringify({ op }) + '\n');
    readline.createInterface({ input: sock }).on('line', (line) => {
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (!onLine(msg)) sock.destroy();
    });
  });
}

export interface StackReport {
  pid: number;
  thread: number;
  /** The process's own answer; null if it did not answer in time. */
  reply: Record<string, any> | null;
}

/** Ask every stack in this network namespace for its state. */
export async function collectStats(binding: Binding, fabric: string, timeoutMs = 1000): Promise<StackReport[]> {
  const stacks = listStacks(fabric).filter((s) => s.pid !== process.pid);
  return Promise.all(stacks.map(async (s) => {
    const report: StackReport = { pid: s.pid, thread: s.thread, reply: null };
    await ask(binding, s.name, 'stat', (msg) => {
      if (msg?.op === 'stat') report.reply = msg;
      return false;
    }, timeoutMs);
    return report;
  }));
}

// ---- capture ----

const LINKTYPE_RAW = 101; // raw IPv4/IPv6 packets

export interface CaptureOptions {
  fabric: string;
  file: string;
  pid?: number;
  port?: number;
  count?: number;
  /** Called once the stacks present now have answered. */
  onReady?: (accepted: number[], refused: { pid: number; why: string }[]) => void;
}

/** TCP ports of an IP packet, or null when it isn't TCP or is cut short. */
export function tcpPorts(p: Buffer): [number, number] | null {
  if (p.length < 1) return null;
  const version = p[0] >> 4;
  let off: number;
  if (version === 4) {
    if (p.length < 20 || p[9] !== 6) return null;
    off = (p[0] & 0x0f) * 4;
  } else if (version === 6) {
    if (p.length < 40 || p[6] !== 6) return null;
    off = 40;
  } else return null;
  if (p.length < off + 4) return null;
  return [p.readUInt16BE(off), p.readUInt16BE(off + 2)];
}

export class PcapWriter {
  private readonly fd: number;
  packets = 0;

  constructor(file: string) {
    this.fd = fs.openSync(file, 'w');
    const h = Buffer.alloc(24);
    h.writeUInt32LE(0xa1b2c3d4, 0); // microsecond timestamps
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeUInt32LE(262144, 16); // snaplen
    h.writeUInt32LE(LINKTYPE_RAW, 20);
    fs.writeSync(this.fd, h);
  }

  write(packet: Buffer, whenUs: bigint): void {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(Number(whenUs / 1000000n), 0);
    r.writeUInt32LE(Number(whenUs % 1000000n), 4);
    r.writeUInt32LE(packet.length, 8);
    r.writeUInt32LE(packet.length, 12);
    fs.writeSync(this.fd, Buffer.concat([r, packet]));
    this.packets++;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** How long a copy may wait for earlier ones still on their way from another stack. */
const REORDER_WINDOW_US = 50000n;

/**
 * Capture until stop() (or `count` packets). Every consenting stack copies
 * what it sends and receives; a packet between two captured stacks is kept
 * once (as sent), so the file holds each packet exactly once.
 */
export function startCapture(binding: Binding, opts: CaptureOptions): { stop: () => Promise<number> } {
  const writer = new PcapWriter(opts.file);
  const captured = new Set<number>();
  const asked = new Set<string>();
  const refused: { pid: number; why: string }[] = [];
  const streams = new Set<net.Socket>();
  let pending: { us: bigint; packet: Buffer }[] = [];
  const flush = (all: boolean) => {
    if (pending.length === 0) return;
    pending.sort((a, b) => (a.us < b.us ? -1 : a.us > b.us ? 1 : 0));
    const horizon = BigInt(Date.now()) * 1000n - REORDER_WINDOW_US;
    let n = 0;
    while (n < pending.length && (all || pending[n].us <= horizon)) {
      if (opts.count !== undefined && writer.packets >= opts.count) break;
      writer.write(pending[n].packet, pending[n].us);
      n++;
    }
    pending = all ? [] : pending.slice(n);
  };
  let finished: (n: number) => void = () => {};
  const finishedPromise = new Promise<number>((r) => (finished = r));

  const follow = (s: { name: string; pid: number }): Promise<void> => new Promise((answered) => {
    asked.add(s.name);
    const sock = open(binding, s.name);
    if (!sock) return answered();
    streams.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => {
      streams.delete(sock);
      answered();
    });
    sock.write(JSON.stringify({ op: 'capture' }) + '\n');
    readline.createInterface({ input: sock }).on('line', (line) => {
      let msg: any;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.op === 'capture') {
        if (msg.ok) captured.add(s.pid);
        else {
          refused.push({ pid: s.pid, why: String(msg.why) });
          sock.destroy();
        }
        answered();
        return;
      }
      if (msg.op !== 'packet') return;
      // Between two captured stacks, the sender's copy is the one kept.
      if (msg.received && captured.has(msg.peerPid)) return;
      if (opts.pid !== undefined && s.pid !== opts.pid && msg.peerPid !== opts.pid) return;
      const packet = Buffer.from(msg.data, 'base64');
      if (opts.port !== undefined) {
        const ports = tcpPorts(packet);
        if (!ports || (ports[0] !== opts.port && ports[1] !== opts.port)) return;
      }
      pending.push({ us: BigInt(msg.us), packet });
    });
  });
  const refresh = () => Promise.all(listStacks(opts.fabric).filter((s) => !asked.has(s.name) && s.pid !== process.pid).map(follow));
  void refresh().then(() => opts.onReady?.([...captured], refused));
  const rescan = setInterval(() => void refresh(), 200);
  const flusher = setInterval(() => {
    flush(false);
    if (opts.count !== undefined && writer.packets >= opts.count) void stop();
  }, 25);
  let stopped = false;
  const stop = async () => {
    if (!stopped) {
      stopped = true;
      clearInterval(rescan);
      clearInterval(flusher);
      for (const s of streams) s.destroy();
      flush(true);
      writer.close();
      finished(writer.packets);
    }
    return finishedPromise;
  };
  return { stop };
}
