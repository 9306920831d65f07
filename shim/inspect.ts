// Inspection over the fabric itself, without stopping anyone: `sidestep stat`
// asks every stack for its state with a Control frame and each hooked process
// answers from its event loop; `sidestep capture` asks stacks to copy the
// packets they send to it (Capture frames) and writes them as pcap.
//
// Control messages are JSON, split into chunks that fit a frame:
//   [u32 message id][u16 chunk index][u16 chunk count][JSON bytes...]
import * as fs from 'node:fs';
import type { Runtime } from './runtime';

const HEADER = 8;
const CHUNK = 60000;

export interface StackEntry {
  link: number;
  slot: number;
  pid: number;
  startTime: number;
  command: string;
  counters: Record<string, number>;
}

let nextMessageId = 1;

export function sendMessage(runtime: Runtime, to: number, message: object): number {
  const body = Buffer.from(JSON.stringify(message));
  const count = Math.max(1, Math.ceil(body.length / CHUNK));
  const id = nextMessageId++ >>> 0;
  for (let i = 0; i < count; i++) {
    const part = body.subarray(i * CHUNK, (i + 1) * CHUNK);
    const frame = Buffer.allocUnsafe(HEADER + part.length);
    frame.writeUInt32LE(id, 0);
    frame.writeUInt16LE(i, 4);
    frame.writeUInt16LE(count, 6);
    part.copy(frame, HEADER);
    const r = runtime.binding.sendControl(to, frame);
    if (r < 0) return r;
  }
  return 0;
}

/** Reassembles chunked messages per sender; malformed input is dropped. */
export class MessageAssembler {
  private readonly partial = new Map<string, { parts: Buffer[]; got: number; count: number }>();

  push(from: number, data: ArrayBuffer): unknown | undefined {
    const buf = Buffer.from(data);
    if (buf.length < HEADER) return undefined;
    const id = buf.readUInt32LE(0);
    const index = buf.readUInt16LE(4);
    const count = buf.readUInt16LE(6);
    if (count === 0 || index >= count) return undefined;
    const key = `${from}:${id}`;
    let p = this.partial.get(key);
    if (!p) {
      if (this.partial.size > 256) this.partial.clear(); // a sender that never finishes
      p = { parts: new Array(count), got: 0, count };
      this.partial.set(key, p);
    }
    if (p.count !== count || p.parts[index]) return undefined;
    p.parts[index] = buf.subarray(HEADER);
    if (++p.got < count) return undefined;
    this.partial.delete(key);
    try {
      return JSON.parse(Buffer.concat(p.parts).toString('utf8'));
    } catch {
      return undefined;
    }
  }
}

/** In every hooked process: answer `stat` requests with `describe()`. */
export function serveInspection(runtime: Runtime, describe: () => object): void {
  const assembler = new MessageAssembler();
  runtime.onControl = (from, data) => {
    const msg = assembler.push(from, data) as { op?: string; id?: number } | undefined;
    if (msg?.op === 'stat') sendMessage(runtime, from, { op: 'stat-reply', id: msg.id, ...describe() });
  };
}

export interface StackReport extends StackEntry {
  /** The process's own answer; null if it did not answer in time. */
  reply: Record<string, any> | null;
}

/** Ask every other stack on the fabric for its state. */
export function collectStats(runtime: Runtime, timeoutMs = 1000): Promise<StackReport[]> {
  const self = runtime.binding.self();
  const stacks = (runtime.binding.stacks() as StackEntry[]).filter((s) => s.link !== self);
  const reports = new Map<number, StackReport>(stacks.map((s) => [s.link, { ...s, reply: null }]));
  const assembler = new MessageAssembler();
  return new Promise((resolve) => {
    let waiting = stacks.length;
    const done = () => {
      clearTimeout(timer);
      runtime.onControl = null;
      resolve([...reports.values()].sort((a, b) => a.slot - b.slot));
    };
    const timer = setTimeout(done, timeoutMs);
    runtime.onControl = (from, data) => {
      const msg = assembler.push(from, data) as Record<string, any> | undefined;
      const report = reports.get(from);
      if (!msg || msg.op !== 'stat-reply' || !report || report.reply) return;
      report.reply = msg;
      if (--waiting === 0) done();
    };
    if (waiting === 0) return done();
    for (const s of stacks) sendMessage(runtime, s.link, { op: 'stat', id: 1 });
  });
}

// ---- capture ----

const LINKTYPE_RAW = 101; // raw IPv4/IPv6 packets

export interface CaptureOptions {
  file: string;
  pid?: number;
  port?: number;
  count?: number;
  /** Called once mirrors are set on the stacks present now. */
  onReady?: () => void;
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

/**
 * Capture the fabric's packets until stop() (or `count` packets). Every stack
 * (or those of `pid`) copies what it sends to us; since every packet is sent
 * by some stack, that is every packet, each exactly once.
 */
/** How long a copy may wait for earlier-sent copies still in another ring. */
const REORDER_WINDOW_US = 50000n;

export function startCapture(runtime: Runtime, opts: CaptureOptions): { stop: () => Promise<number> } {
  const self = runtime.binding.self();
  const writer = new PcapWriter(opts.file);
  const mirrored = new Set<number>();
  const pidSlots = new Set<number>();
  // Copies arrive per sender ring; sort by the sender's timestamp over a
  // short window so the file is in the order packets were sent.
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

  const refresh = () => {
    pidSlots.clear();
    for (const s of runtime.binding.stacks() as StackEntry[]) {
      if (s.link === self) continue;
      if (opts.pid !== undefined && s.pid === opts.pid) pidSlots.add(s.slot);
      // With --pid we still mirror everyone: packets *to* that pid are sent by its peers.
      if (!mirrored.has(s.link) && runtime.binding.setMirror(s.link, true) === 0) mirrored.add(s.link);
    }
  };
  refresh();
  const rescan = setInterval(refresh, 200);
  const flusher = setInterval(() => {
    flush(false);
    if (opts.count !== undefined && writer.packets >= opts.count) void stop();
  }, 25);
  runtime.onCapture = (from, dstSlot, data) => {
    if (data.byteLength < 8) return;
    const sentUs = Buffer.from(data, 0, 8).readBigUInt64LE(0);
    const packet = Buffer.from(data, 8);
    if (opts.pid !== undefined && !pidSlots.has(from & 0xff) && !pidSlots.has(dstSlot)) return;
    if (opts.port !== undefined) {
      const ports = tcpPorts(packet);
      if (!ports || (ports[0] !== opts.port && ports[1] !== opts.port)) return;
    }
    pending.push({ us: sentUs, packet });
  };
  let stopped = false;
  const stop = async () => {
    if (!stopped) {
      stopped = true;
      clearInterval(rescan);
      clearInterval(flusher);
      flush(true);
      for (const link of mirrored) runtime.binding.setMirror(link, false);
      runtime.onCapture = null;
      writer.close();
      finished(writer.packets);
    }
    return finishedPromise;
  };
  opts.onReady?.();
  return { stop };
}
