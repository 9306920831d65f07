// The JS side of the per-event-loop runtime: attaches the addon to the fabric
// and routes its events to the handles that own each connection id.
import * as crypto from 'node:crypto';
import { EventKind, type Binding, type EventSink } from './addon';
import type { Config } from './config';

/** A handle (connection or listener) that receives the addon's events. */
export interface EventTarget {
  deliver(kind: number, arg: number, data?: ArrayBuffer, offset?: number): void;
}

export class Runtime {
  private readonly targets = new Map<number, EventTarget>();
  private attached = false;
  /** Close callbacks waiting for the loop's close phase (afterClosePhase). */
  private closing: Array<() => void> = [];
  /** Packets this stack sent or received, while a capture runs (inspect.ts). */
  onCapture: ((peerPid: number, received: boolean, data: ArrayBuffer) => void) | null = null;

  private constructor(readonly binding: Binding) {}

  /**
   * Start this event loop's stack on the fabric; returns the runtime or the
   * reason it can't. `runTicks` runs Node's tick queue and microtasks, as
   * the end of an outermost callback scope does: given, it runs after each
   * event, and the addon lets the events of one dispatch share one native
   * callback scope (see Runtime::Emit); null, each event has its own.
   */
  static attach(binding: Binding, config: Config, runTicks: (() => void) | null): Runtime | string {
    const rt = new Runtime(binding);
    const deliver = (kind: number, id: number, arg: number, data?: ArrayBuffer, offset?: number) => {
      if (kind === EventKind.Capture) return rt.onCapture?.(id, arg === 1, data!);
      if (kind === EventKind.ClosePhase) return rt.runClosePhase();
      const target = rt.targets.get(id);
      if (target) target.deliver(kind, arg, data, offset);
    };
    const sink: EventSink = runTicks
      ? (kind, id, arg, data, offset) => {
          deliver(kind, id, arg, data, offset);
          runTicks();
        }
      : deliver;
    const attachConfig = {
      fabric: config.fabric,
      ringBytes: config.ringBytes,
      mtu: config.mtu,
      timeWaitMs: config.timeWaitMs,
      spinUs: config.spinUs,
      ticksInJs: runTicks !== null,
      orphanLingerMs: config.orphanLingerMs,
      sameUidOnly: config.peers === 'same-uid',
      faults: config.faults,
      isnSecret: crypto.randomBytes(16),
      why: undefined as string | undefined,
    };
    const err = binding.attach(attachConfig, sink);
    if (err < 0) return `fabric: cannot start (${attachConfig.why || `errno ${-err}`})`;
    rt.attached = true;
    return rt;
  }

  /**
   * Run `cb` where libuv runs a closed handle's callback: in this loop
   * iteration's close phase, after the setImmediate callbacks of its check
   * phase (a program that destroys a socket and then sets an immediate sees
   * the immediate first, as with a kernel socket).
   */
  afterClosePhase(cb: () => void): void {
    this.closing.push(cb);
    this.binding.armClosePhase();
  }

  /** One ClosePhase event per afterClosePhase call, in order (see ArmClosePhase). */
  private runClosePhase(): void {
    this.closing.shift()?.();
  }

  register(id: number, target: EventTarget): void {
    this.targets.set(id, target);
  }

  forget(id: number): void {
    this.targets.delete(id);
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.targets.clear();
    this.binding.detach();
  }
}
