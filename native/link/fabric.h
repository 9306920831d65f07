// The shared-memory fabric: sidestep's NIC between the stacks of one host.
//
// One file under /dev/shm per user (mode 0600) holds:
//   - the stack table: one slot per attached stack (process or worker thread),
//     with its need-wakeup flag, generation and counters; a slot is owned while
//     its owner holds an OFD lock on the slot's byte of the file, so a process
//     that dies (even kill -9) frees its slot without running any code;
//   - the listener registry: (address, port) -> (slot, generation) entries;
//   - the port table: fabric-wide ephemeral port ownership, so two stacks never
//     pick the same local port for loopback connections;
//   - the rings: one single-producer/single-consumer ring per ordered pair of
//     slots, carrying whole IP packets (frames up to the fabric MTU).
// Doorbells are eventfds (shared with pidfd_getfd), with abstract-namespace
// unix datagram sockets as the fallback (no file to leak), rung only when the
// consumer armed its need-wakeup flag (AF_XDP style).
//
// Nothing here knows about TCP or Node. Everything read from the shared file
// is untrusted: indices, lengths and offsets are validated before use, and a
// bad frame is dropped and counted, never followed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace sidestep::link {

// (generation << 8) | slot. The generation changes every time a slot is
// claimed, so packets and registrations of a dead stack never reach the new
// owner of its slot.
using LinkAddr = uint32_t;
inline constexpr uint32_t kMaxStacks = 64;
inline constexpr uint32_t slot_of(LinkAddr a) { return a & 0xff; }

// What a frame carries: the high byte of a frame's kind word. The low byte is
// kind-specific (for Capture: the slot the original frame was sent to).
enum class FrameKind : uint32_t {
  Packet = 0,         // an IP packet, for the stack
  Control = 0x100,    // a message between runtimes or tools (e.g. `sidestep stat`)
  Capture = 0x200,    // [u64 send time in CLOCK_REALTIME µs][a packet this stack sent], for `sidestep capture`
};
inline constexpr FrameKind frame_kind(uint32_t kind) { return static_cast<FrameKind>(kind & 0xff00u); }
inline constexpr uint32_t frame_detail(uint32_t kind) { return kind & 0xffu; }

struct FabricConfig {
  std::string name;          // file name under /dev/shm, e.g. "sidestep-0"
  uint32_t ring_bytes = 4u << 20;  // data bytes per ring, power of two
  uint32_t mtu = 65536;      // largest frame (IP packet) in bytes
  std::string command;       // shown by `sidestep stat` (argv summary)
  // Ring peers' eventfds (taken with pidfd_getfd); false: always use the
  // datagram doorbells (tests of the fallback).
  bool eventfd_doorbells = true;
};

// Counters of one stack's view of the fabric (also mirrored in its slot so
// other processes can read them).
struct FabricCounters {
  uint64_t frames_out = 0, frames_in = 0;
  uint64_t bytes_out = 0, bytes_in = 0;
  uint64_t drops_ring_full = 0;    // tx_reserve found no room
  uint64_t drops_peer_gone = 0;    // destination slot dead or re-claimed
  uint64_t drops_malformed = 0;    // bad frame header / length / generation
  uint64_t doorbells_rung = 0;     // a doorbell syscall issued (write() or sendto())
  uint64_t doorbells_suppressed = 0;  // producer saw the flag clear: no syscall
  uint64_t wakeups = 0;            // doorbell fd became readable
  uint64_t doorbells_fallback = 0;  // of doorbells_rung: over the datagram socket
  uint64_t arms = 0;               // prepare_sleep() armed need-wakeup (a producer rings once per arming at most)
};

// A live stack on the fabric, as `sidestep stat` lists it.
struct StackInfo {
  LinkAddr addr = 0;
  int pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22 (clock ticks after boot)
  std::string command;
  FabricCounters counters;
  // Bytes waiting in its inbound rings (frames not yet taken by the stack).
  uint64_t ring_occupancy = 0;
};

class Fabric {
 public:
  // Attach to (creating if needed) the fabric file and claim a slot. On
  // failure returns a negative errno and says why in *why.
  static int open(const FabricConfig& config, std::unique_ptr<Fabric>* out, std::string* why);
  // Release the slot, its registrations and ports; remove the file when no
  // live stack remains.
  ~Fabric();

  LinkAddr self() const;
  uint32_t mtu() const;

  // ---- transmit (the producer side of ring self -> slot_of(to)) ----
  // Room for one frame of `len` bytes, or nullptr (ring full, peer gone or
  // len > mtu; counted). Sending to self() is allowed (same-process loopback).
  uint8_t* tx_reserve(LinkAddr to, size_t len);
  // Publish the frame; rings the peer's doorbell iff it armed need-wakeup.
  // A Packet is also copied to the capture tool named in our slot, if any.
  void tx_commit(LinkAddr to, size_t len, FrameKind kind = FrameKind::Packet);

  // ---- receive ----
  // Deliver up to `budget` frames from all inbound rings, round-robin, as
  // deliver(LinkAddr from, const uint8_t* packet, size_t len) — IP packets
  // only, anything else is skipped — or, when `deliver` takes a fourth
  // argument, deliver(from, packet, len, uint32_t kind) for every frame. The
  // packet pointer is into shared memory and valid only during the call.
  // Returns the number of frames delivered.
  template <class Deliver>
  size_t rx_poll(Deliver&& deliver, size_t budget);
  // Whether any inbound ring holds a frame.
  bool rx_pending() const;

  // ---- sleeping and waking (the need-wakeup protocol) ----
  // The fds to poll for readability (libuv uv_poll_t): the eventfd, and the
  // datagram socket that producers without pidfd_getfd() ring.
  int doorbell_fd() const;
  int doorbell_fallback_fd() const;
  // Reset the doorbell after its fd polled readable.
  void doorbell_drain();
  void doorbell_fallback_drain();
  // About to sleep: arm the need-wakeup flag, fence, re-check the rings.
  // Returns true when it is safe to sleep (flag armed, rings empty); false
  // when frames arrived meanwhile (flag cleared again; poll again).
  bool prepare_sleep();
  // Awake and polling: producers need not ring.
  void disarm();

  // ---- listener registry ----
  // Register this stack as a listener of (addr, port). Several stacks may
  // register the same (addr, port) when they all pass the same nonzero
  // share_key (a cluster's workers); lookups spread across them. Returns an
  // entry id >= 0 or a negative errno (-EADDRINUSE when a live registration
  // of the same (addr, port) is exclusive or has another key, -ENOSPC when
  // the registry is full).
  // addr: family 4 or 6 with 4 or 16 bytes; an unspecified address is a
  // wildcard for its family, and IPv6 "::" also takes IPv4 unless v6only.
  int listener_add(uint8_t family, const uint8_t addr[16], uint16_t port, bool v6only,
                   uint32_t share_key = 0);
  void listener_remove(int entry);
  // Find a live listener for a connection to (addr, port). Returns 0 and the
  // listener's LinkAddr, or -ENOENT. Exact address matches win over
  // wildcards; among equals the choice rotates (connections are spread).
  int listener_lookup(uint8_t family, const uint8_t addr[16], uint16_t port, LinkAddr* out);

  // ---- fabric-wide local ports ----
  // Claim a free ephemeral port (range 32768..60999, random start), or a
  // specific port when `want` != 0. Returns the port or a negative errno
  // (-EADDRINUSE / -EADDRNOTAVAIL).
  int port_claim(uint16_t want);
  void port_release(uint16_t port);

  // ---- peers ----
  // Whether the stack behind `peer` is still the live owner of its slot.
  bool peer_alive(LinkAddr peer) const;
  // Its process id (for pidfd-based death notification), or -1.
  int peer_pid(LinkAddr peer) const;
  // The caller watches `peer`'s process (a pidfd) and will say when it dies
  // (watched = false): until then liveness checks of `peer` trust the watch
  // instead of asking the kernel for the slot's lock (a syscall per connect).
  void vouch(LinkAddr peer, bool watched);

  const FabricCounters& counters() const;

  // ---- inspection (sidestep stat / capture) ----
  // Every live stack on the fabric, ourselves included.
  std::vector<StackInfo> stacks() const;
  // Ask `stack` to copy every packet it sends to `target` as Capture frames
  // (target 0: stop). Returns 0 or -ESRCH when `stack` is not alive.
  int set_mirror(LinkAddr stack, LinkAddr target);

 private:
  Fabric();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  size_t rx_poll_impl(void (*fn)(void*, LinkAddr, const uint8_t*, size_t, uint32_t), void* ctx,
                      size_t budget);
};

template <class Deliver>
size_t Fabric::rx_poll(Deliver&& deliver, size_t budget) {
  using D = std::remove_reference_t<Deliver>;
  return rx_poll_impl(
      [](void* ctx, LinkAddr from, const uint8_t* p, size_t n, uint32_t kind) {
        D& d = *static_cast<D*>(ctx);
        if constexpr (std::is_invocable_v<D&, LinkAddr, const uint8_t*, size_t, uint32_t>) {
          d(from, p, n, kind);
        } else if (frame_kind(kind) == FrameKind::Packet) {
          d(from, p, n);
        }
      },
      const_cast<void*>(static_cast<const void*>(&deliver)), budget);
}

}  // namespace sidestep::link
