// Handle passing (child.send(socket), cluster): Node hands the socket's
// handle to C++ to send its file descriptor over the IPC pipe. A bypassed
// connection has no file descriptor — it lives in this process's TCP stack —
// and C++ would crash on our JS handle. So the IPC pipe refuses it up front
// with an error that says so, before anything is written.
import { BypassHandle } from './handle';

export class HandleTransferError extends Error {
  readonly code = 'ERR_SIDESTEP_HANDLE_TRANSFER';
  constructor() {
    super(
      'sidestep: a bypassed socket cannot be sent to another process (its connection lives in this ' +
        "process's user-space TCP stack); keep it in this process, or run with SIDESTEP=0",
    );
    this.name = 'HandleTransferError';
  }
}

/**
 * Node detaches a socket before writing its handle (child_process's
 * handleConversion: `socket._handle = null`, `onread = nop`, and for a
 * server's socket `server._connections--`). Refusing at the write must undo
 * that, or the socket is left without its connection, never to close.
 */
function reattach(handle: BypassHandle, owner: (h: object) => any): void {
  const socket = owner(handle);
  if (!socket || socket._handle) return;
  socket._handle = handle;
  handle.restoreStreamOnread();
  if (socket.server && typeof socket.server._connections === 'number') socket.server._connections++;
}

export function installIpcGuard(owner: (h: object) => any): string | null {
  let Pipe: any;
  try {
    Pipe = (process as any).binding('pipe_wrap').Pipe;
  } catch (err) {
    return `ipc-guard: pipe_wrap unavailable (${(err as Error).message})`;
  }
  const proto = Pipe?.prototype;
  if (!proto) return 'ipc-guard: pipe_wrap has no Pipe';
  // The methods child_process uses to send a message with a handle.
  for (const name of ['writeUtf8String', 'writeBuffer']) {
    const original = proto[name];
    if (typeof original !== 'function') continue;
    proto[name] = function (this: unknown, req: unknown, data: unknown, handle?: unknown, ...rest: unknown[]) {
      if (handle instanceof BypassHandle) {
        reattach(handle, owner);
        throw new HandleTransferError();
      }
      return handle === undefined ? original.call(this, req, data) : original.call(this, req, data, handle, ...rest);
    };
  }
  return null;
}
