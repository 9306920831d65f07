// The per-event-loop runtime: one TCP stack and one fabric attachment for each
// Node environment (main thread or worker), driven from that loop's thread.
//
// It owns the libuv side of the wake-up protocol: a uv_poll_t on the fabric's
// doorbell (ref'd while any bypassed socket or server is ref'd), another on
// its control plane (new pairs, hang-ups: never ref'd), a uv_timer_t armed
// for the stack's earliest deadline, and a uv_idle_t that keeps the loop
// turning while work is pending (a busy ring, or data waiting for a socket
// that just resumed reading). Nothing here spins unless SIDESTEP_SPIN_US asks.
#pragma once

#include <napi.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "faults.h"
#include "read_slabs.h"
#include "link/fabric.h"
#include "stack/stack.h"

namespace sidestep::addon {

// Events handed to the JS dispatcher: onEvent(kind, id, arg, arrayBuffer).
enum EventKind : int32_t {
  kConnect = 1,   // arg: 0 or negative errno (connect outcome)
  kData = 2,      // arrayBuffer: bytes read
  kEof = 3,       // peer sent FIN and all data was delivered
  kError = 4,     // arg: negative errno (reset, timeout) on an open connection
  kAccept = 5,    // id: listener, arg: new connection id
  kWritable = 6,  // the send buffer drained below its limit
  kShutdown = 7,  // a shutdown (FIN queued) completed, as uv_shutdown's callback
  kCapture = 9,   // id: the peer's pid, arg: 0 sent / 1 received, arrayBuffer: [u64 µs][IP packet]
  kFallback = 10, // a connect whose pair never came up: use the kernel (before 'connect')
  kClosePhase = 11,  // this loop iteration's close phase came (see ArmClosePhase)
};

struct RuntimeConfig {
  link::FabricConfig fabric;
  stack::Config stack;
  // Before sleeping, watch the rings this long for more frames (SIDESTEP_SPIN_US).
  uint32_t spin_us = 0;
  // The JS sink runs Node's tick queue after each event it is given: the
  // events of one dispatch may then share one callback scope (Runtime::Emit).
  bool ticks_in_js = false;
  // How long a survivor may leave a dead peer's bytes unread before they are
  // dropped and the connection reset (SIDESTEP_ORPHAN_LINGER_MS): Linux
  // keeps an orphaned socket about this long (tcp_fin_timeout).
  uint64_t orphan_linger_us = 60 * 1000 * 1000;
  FaultSpec faults;
};

// Per-socket facts the stack doesn't keep: what the JS side asked for.
struct SocketState {
  stack::SocketId id = 0;
  bool listener = false;
  bool connecting = false;
  bool reading = false;
  bool eof = false;             // PeerClosed seen
  bool eof_delivered = false;
  int error = 0;                // pending failure (negative errno)
  bool error_delivered = false;
  bool write_blocked = false;   // JS waits for kWritable
  // Bytes a write gave us that the stack's lent send memory had no room for
  // yet (libuv keeps the same in its write queue): pushed as ACKs free room,
  // the write completing once they are all in.
  std::vector<uint8_t> overflow;
  size_t overflow_at = 0;
  bool refed = true;
  bool shutdown_pending = false;  // a shutdown waits for kShutdown
  bool counted = false;           // counted in refs_ (see Runtime::Touch)
  bool closed = false;          // the app closed it; the stack finishes it
  uint64_t closed_at = 0;       // when (µs), to bound how long unacked data holds the process
  int port = -1;                // its local port's reservation (link::PortReservations)
  int listener_entry = -1;      // listener: its rendezvous name in the fabric
  uint32_t via = 0;             // the pair it goes through (counted by Fabric::hold)
  // Accepted by an IPv6 listener over IPv4: Node (like the kernel) names
  // both ends as IPv4-mapped IPv6 addresses (::ffff:a.b.c.d).
  bool v4_mapped = false;
};

// Adapts the fabric to the stack's Link interface (both speak LinkAddr):
// packets, payloads by reference into the pair's send arena, send memory
// lent from that arena; and copies packets for `sidestep capture` while a
// capture runs.
class FabricLink final : public stack::Link {
 public:
  link::Fabric* fabric = nullptr;
  // Non-null while capturing: each packet sent, as [u64 µs][packet].
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>>* capture = nullptr;
  // The process is leaving: connections' send memory stays as it is, for
  // the peers to finish the streams from (no release).
  bool leaving = false;
  uint8_t* tx_reserve(stack::LinkAddr to, size_t len) override {
    payload_ = {};
    return reserved_ = fabric->tx_reserve(to, len);
  }
  bool gathers() const override { return true; }
  uint8_t* tx_reserve_headers(stack::LinkAddr to, size_t header_len, const stack::Payload& payload) override;
  void tx_commit(stack::LinkAddr to, size_t len) override;
  bool tx_blocked(stack::LinkAddr to) const override { return fabric->tx_blocked(to); }
  bool peer_idle(stack::LinkAddr to) const override { return fabric->peer_asleep(to); }
  bool send_memory(stack::LinkAddr to, const stack::Endpoint& local, const stack::Endpoint& remote,
                   uint32_t seq_base, stack::SendMemory* out) override;
  void send_memory_release(stack::LinkAddr to, const stack::SendMemory& m) override {
    if (!leaving) fabric->send_memory_release(to, m.cookie);
  }

 private:
  uint8_t* reserved_ = nullptr;
  link::Pieces payload_;  // of the frame being built by reference (for capture)
};

// A connection whose peer vanished, being finished from the peer's send
// memory (link::PeerArena): the rest of its stream, then its end.
struct Orphan {
  stack::SocketId id = 0;
  uint32_t via = 0;
  const uint8_t* ring = nullptr;
  uint64_t capacity = 0;
  uint32_t seq_base = 0;
  uint32_t end = 0;        // the peer's written_end: the stream stops here
  bool fin_fed = false;
  uint64_t progress_at = 0;  // µs: when bytes last went in
};

// The Runtime is its stack's Reader (stack::Stack::set_reader): while JS
// reads a socket, in-order bytes go from the fabric's ring straight into a
// read slab, and reach JS at the next dispatch.
class Runtime final : private stack::Reader {
 public:
  explicit Runtime(Napi::Env env);
  ~Runtime();

  // Attach to the fabric and start the stack. Returns 0 or a negative errno
  // with the reason in *why.
  int Attach(const RuntimeConfig& config, Napi::Function on_event, std::string* why);
  void Detach();
  bool attached() const { return stack_ != nullptr; }

  // A connection over the fabric, decided in full before JS swaps anything:
  // local port (reserved in the kernel; `bound_fd` >= 0 is Node's handle
  // already bound to local.port), the stack that holds the destination's
  // listening socket, the pair to it, the SYN. Returns the socket id, or a
  // negative errno with the reason in *why: then the kernel connects.
  int Connect(const stack::Endpoint& local, int bound_fd, const stack::Endpoint& remote, std::string* why);
  // Serve the kernel listening socket `kernel_fd` (-1: a cluster worker's,
  // held by its primary) over the fabric too. Returns the listener's id, or
  // a negative errno with *why (the listener then stays kernel-only).
  int Listen(const stack::Endpoint& local, int backlog, bool v6only, int kernel_fd, std::string* why);
  // Returns 0 (written, synchronous), 1 (accepted but the send buffer is over
  // its limit: wait for kWritable), or a negative errno.
  int Write(stack::SocketId id, const uint8_t* data, size_t len);
  int Writev(stack::SocketId id, const std::vector<std::pair<const uint8_t*, size_t>>& parts);
  int ReadStart(stack::SocketId id);
  int ReadStop(stack::SocketId id);
  int Shutdown(stack::SocketId id);
  void Close(stack::SocketId id);
  // Emit kClosePhase from the close phase of this loop iteration, where libuv
  // runs the callbacks of handles closed during it (after the check phase's
  // setImmediate callbacks): a closed BypassHandle's callback runs there too.
  // One event per call; one uv handle per iteration, however many calls.
  void ArmClosePhase();
  void Reset(stack::SocketId id);
  int SetNoDelay(stack::SocketId id, bool on);
  // Bytes not yet acknowledged, and those a write still has to put in.
  size_t Queued(stack::SocketId id);
  int SetKeepAlive(stack::SocketId id, bool on, uint32_t delay_ms);
  void Ref(stack::SocketId id, bool on);
  bool Endpoints(stack::SocketId id, bool local, stack::Endpoint* out);
  // ---- inspection: sidestep stat / capture ----
  // Copy every packet this stack sends or receives to JS (kCapture).
  void SetCapture(bool on);
  Napi::Value Pairs(Napi::Env env);
  Napi::Value Connections(Napi::Env env);
  Napi::Object Stats(Napi::Env env);

 private:
  static void OnDoorbell(uv_poll_t* h, int status, int events);
  static void OnControl(uv_poll_t* h, int status, int events);
  static void OnTimer(uv_timer_t* h);
  static void OnHousekeeping(uv_timer_t* h);
  void ScheduleHousekeeping();
  static void OnIdle(uv_idle_t* h);
  static void OnClosePhase(uv_handle_t* h);

  // The control plane: pairs made and lost. Connections through a pair that
  // never came up go to the kernel (kFallback); those whose peer's send
  // memory still holds their stream are finished from it (orphans); the
  // others end as TCP connections end when their peer vanishes.
  void ControlPoll();
  void AdoptOrphans(uint32_t link, stack::Micros now);
  // Feed orphans what their windows take; true if anything went in.
  bool FeedOrphans(stack::Micros now);
  // Push a socket's overflow into the stack's send memory as far as it goes.
  void PushOverflow(stack::SocketId id, SocketState& st);

  stack::Micros Now() const;
  // Watch the rings for up to spin_us_; true if frames arrived.
  bool Spin();
  // Move packets, fire timers, tell JS; sleep only after prepare_sleep().
  void Pump();
  // Collect stack events and pending deliveries into JS calls.
  void Dispatch();
  // A connect's 'connect' event (counted as bypassed).
  void CompleteConnect(stack::SocketId id, SocketState& st);
  // Delivers `id`'s held loopback connect, if it has one (see Dispatch).
  void ReleaseHeldConnect(stack::SocketId id);
  void DeliverReads(stack::SocketId id, SocketState& st);
  void ArmTimer();
  void UpdateRef();
  // Count the socket towards keeping the loop alive exactly when libuv would
  // count a TCP handle: ref'd and active (listening, connecting, reading
  // before EOF, or with a write or shutdown pending). A paused socket, or one
  // that read EOF, doesn't hold the process, as with kernel sockets. One more
  // case: bytes the app wrote that the peer has not acknowledged yet (even
  // after close()). The kernel delivers those after the process is gone; our
  // stack lives in the process, so the process lingers until they're acked.
  void Touch(SocketState& st);
  void AfterUserCall();
  // Write and Writev: the parts in order, no allocation.
  int Send(stack::SocketId id, const std::pair<const uint8_t*, size_t>* parts, size_t count);
  // Outside the pump: make sure ACKs the stack holds get their flush().
  void FlushSoon();
  // Ends the shared callback scope, if one is open: its close runs what the
  // tick queue still holds (after an exception, what the handler queued).
  // Called where a dispatch or a close phase ends.
  void EndSharedScope() { shared_scope_.reset(); }
  void Emit(int32_t kind, uint32_t id, int32_t arg, Napi::Value data, size_t offset = 0);
  SocketState* Find(stack::SocketId id);

  Napi::Env env_;
  uv_loop_t* loop_ = nullptr;
  std::unique_ptr<link::Fabric> fabric_;
  FabricLink link_;
  std::unique_ptr<FaultyLink> faulty_;  // only with SIDESTEP_FAULTS
  std::unique_ptr<stack::Stack> stack_;
  uint32_t spin_us_ = 0;
  uint64_t orphan_linger_us_ = 60 * 1000 * 1000;
  // True when a spin ended because frames arrived (counted in stats()).
  uint64_t spins_won_ = 0, spins_lost_ = 0;
  uint64_t spin_sent_mark_ = 0;  // frames_out at the last spin decision
  uint32_t spin_skip_ = 0;       // chances to spin still to skip (backoff)
  uint32_t spin_losses_ = 0;     // consecutive spins that saw nothing
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  // The callback scope the events of one dispatch (or close phase) share
  // when the sink runs the tick queue after each (see Emit).
  bool ticks_in_js_ = false;
  std::optional<Napi::CallbackScope> shared_scope_;
  std::unique_ptr<ReadSlabs> slabs_;

  // uv handles live in heap blocks freed in their close callbacks, so a
  // Runtime torn down with the environment never leaves libuv a dangling
  // pointer.
  uv_poll_t* doorbell_ = nullptr;  // our eventfd
  // It was rung and not read yet: read once JS has answered what it
  // brought (see OnDoorbell), and always before arming.
  bool doorbell_unread_ = false;
  uv_poll_t* control_ = nullptr;   // the fabric's control plane (an epoll fd)
  uv_timer_t* timer_ = nullptr;
  uv_timer_t* housekeeping_ = nullptr;  // unanswered and idle pairs, unused ports (unref'd)
  uint64_t housekeeping_at_ = 0;        // uv_now() it is set for (0: not set)
  uv_idle_t* idle_ = nullptr;
  uv_idle_t* close_phase_ = nullptr;  // closing (never started); frees itself
  size_t close_callbacks_ = 0;        // kClosePhase events it owes
  stack::Micros timer_deadline_ = stack::kNever;

  std::unordered_map<stack::SocketId, SocketState> sockets_;
  std::vector<stack::SocketId> draining_;  // counted only for unacked data: re-check after pumps
  std::vector<stack::SocketId> ready_;  // sockets with deliveries to make
  std::vector<stack::SocketId> shutdowns_;  // shutdowns to complete on the next pump
  std::vector<stack::SocketId> fallbacks_;  // connects to hand to the kernel (kFallback)
  std::vector<Orphan> orphans_;
  uint64_t orphans_finished_ = 0, orphan_bytes_ = 0, orphans_reset_ = 0;
  // Packets captured (sidestep capture), delivered to JS at the next
  // dispatch: (peer pid, 0 sent / 1 received) and [u64 µs][packet].
  struct Captured {
    int32_t peer_pid;
    int32_t received;
    std::vector<uint8_t> bytes;
  };
  std::vector<Captured> captured_;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> captured_out_;  // FabricLink's (link, bytes)
  bool capturing_ = false;
  // A packet of `len` bytes at `p`, or its headers there and its payload in
  // `payload`.
  void Capture(uint32_t link, int32_t received, const uint8_t* p, size_t len, const link::Pieces* payload);
  int32_t PeerPid(uint32_t link) const;
  // Bytes the stack handed over directly (take()), to emit as reads at the
  // next dispatch; consecutive pieces of one socket in one slab coalesce.
  struct DirectRead {
    stack::SocketId id;
    napi_ref slab;  // pinned by ReadSlabs until the dispatch's unpin()
    size_t offset;
    size_t len;
    size_t events_before;  // stack events queued before these bytes came
  };
  std::vector<DirectRead> direct_reads_;
  size_t direct_reads_emitted_ = 0;
  // Data for socket `id` a kernel would hold in its receive queue (Close()):
  // direct reads not emitted yet, or bytes the peer's application wrote
  // that have not reached our stack.
  bool UndeliveredReads(stack::SocketId id) const;
  bool ArrivedUnread(stack::SocketId id) const;
  // Loopback connects completed, delivered at the end of the next dispatch
  // (the kernel's order: the listener's accept first).
  struct HeldConnect {
    stack::SocketId id;
    uint64_t held_at;  // the dispatch that held it
  };
  std::vector<HeldConnect> held_connects_;
  uint64_t dispatches_ = 0;
  size_t take(stack::SocketId id, const uint8_t* data, size_t len) override;
  // Emit the direct reads that came before stack event number `events_before`
  // (SIZE_MAX: all of them), in order.
  void EmitDirectReads(size_t events_before);
  int refs_ = 0;
  void DrainDoorbell();
  bool in_pump_ = false;
  bool in_dispatch_ = false;

  // Counters the shim reports in stats().
  uint64_t connections_bypassed_ = 0;
  uint64_t connections_accepted_ = 0;
  uint64_t connections_fallback_late_ = 0;  // kFallback: their pair never came up
};

}  // namespace sidestep::addon
