// The fabric: sidestep's NIC between the stacks of one network namespace.
//
// A stack reaches another stack through a *pair*: a region of memory only
// those two map (pair.h: two SPSC rings of IP packets), made when first
// needed, and a control channel (control.h: a unix socket over which the
// region and the doorbells were passed, whose hang-up says the peer is
// gone). Pairs are found by rendezvous in the abstract unix namespace, which
// the kernel scopes to the network namespace as it scopes loopback, and a
// pair is made only with the process that holds the kernel's listening
// socket for the destination (sock_diag.h): so two processes bypass exactly
// when a kernel TCP connection between them would stay on this host, in
// this namespace. Nothing is in /dev/shm or any other path; whatever ends a
// process, the kernel removes its names and its half of every pair.
//
// Doorbells are eventfds passed with SCM_RIGHTS, rung only when the consumer
// armed its need-wakeup flag (AF_XDP style): no syscalls under load.
//
// Nothing here knows about TCP or Node. Everything read from a pair region
// or a control channel is untrusted: a bad frame is dropped and counted, a
// bad message ends that pair, never anything else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "link/arena.h"
#include "link/ports.h"

namespace sidestep::link {

// Which pair a packet goes through: (generation << 16) | index, never 0.
// Index 0 is the stack's loopback to itself (connections between two
// sockets of one stack).
using LinkAddr = uint32_t;

// What a frame carries: the high byte of a frame's kind word.
enum class FrameKind : uint32_t {
  Packet = 0,       // an IP packet, for the stack
  Reference = 0x100,  // [SlotRef][IP and TCP headers]: the payload is in the sender's arena
};

struct FabricConfig {
  // Rendezvous names start with it (SIDESTEP_FABRIC): stacks configured
  // with different names never pair.
  std::string name = "sidestep";
  uint32_t ring_bytes = 4u << 20;  // data bytes per ring of a pair we create
  uint32_t mtu = 65536;            // largest frame (IP packet) in bytes
  // SIDESTEP_PEERS=same-uid: pair only with processes of our own uid.
  bool same_uid_only = false;
  // A pair we created that carried no connection this long is closed.
  uint64_t idle_close_us = 5000000;
  // Each connection's send ring in its pair's arena (arena.h): a power of
  // two, at least the stack's send buffer size. Its size is what a process's
  // exit can leave in flight (issue 14): at least what a kernel socket's
  // buffers hold (4 MiB written just before exit arrive over loopback;
  // test/fabric/exit-delivery). A stream uses only the part of it its bytes
  // in flight need (stack::SendMemory), since each page it touches is fresh
  // memory of this pair: a 2 MiB slot would have saved that too, but lost
  // bytes at exit (docs/performance.md, issue 13's container case).
  uint64_t send_slot_bytes = 8u << 20;
};

struct FabricCounters {
  uint64_t frames_out = 0, frames_in = 0;
  uint64_t bytes_out = 0, bytes_in = 0;
  uint64_t drops_ring_full = 0;    // tx_reserve found no room
  uint64_t drops_peer_gone = 0;    // the pair is down
  uint64_t drops_malformed = 0;    // bad frame header / length in a ring
  uint64_t doorbells_rung = 0;     // a doorbell write() issued
  uint64_t doorbells_suppressed = 0;  // producer saw the flag clear: no syscall
  uint64_t wakeups = 0;            // our doorbell had been rung
  uint64_t arms = 0;               // prepare_sleep() armed need-wakeup
  uint64_t pairs_created = 0;      // we connected and sent a region
  uint64_t pairs_accepted = 0;     // a peer connected and we mapped its region
  uint64_t pairs_refused = 0;      // a channel we ended before or at its Hello
  uint64_t pairs_proved = 0;       // pairs whose acceptor had to prove it holds its listener
  uint64_t pairs_down = 0;         // a pair that was up went down (hang-up, error)
  uint64_t pairs_idle_closed = 0;  // pairs we closed after carrying nothing for a while
  uint64_t tx_blocked = 0;         // a frame waited for room (the consumer rang us back)
  uint64_t frames_by_reference = 0;  // data frames whose payload stayed in our arena
  uint64_t send_slots = 0;         // arena slots lent to connections (ever)
  uint64_t send_slots_unavailable = 0;  // a connection that got none (memory limits)
};

// A pair as `sidestep stat` shows it.
struct PairInfo {
  LinkAddr addr = 0;
  bool creator = false;  // we connected (false: we accepted, or the loopback)
  bool up = false;       // false: waiting for the acceptor's Welcome
  int peer_pid = 0;      // as our pid namespace sees it (0: not visible)
  uint32_t peer_uid = 0;
  uint32_t connections = 0;
  uint64_t ring_in_used = 0, ring_out_used = 0;  // bytes waiting in each ring
};

class Fabric {
 public:
  // Make the stack's doorbell, loopback and control plane. On failure
  // returns a negative errno and says why in *why.
  static int open(const FabricConfig& config, std::unique_ptr<Fabric>* out, std::string* why);
  // Closes every pair and name: peers see the hang-up at once.
  ~Fabric();

  LinkAddr loopback() const;
  uint32_t mtu() const;

  // ---- transmit ----
  // Room for one frame of `len` bytes towards `to`, or nullptr (ring full,
  // pair gone or len > mtu; counted).
  uint8_t* tx_reserve(LinkAddr to, size_t len);
  // Room for a packet's `header_len` bytes of headers whose payload is
  // `payload`: named by reference when it lies in a slot of our arena, else
  // copied into the frame right after the headers. Then tx_commit(to,
  // header_len).
  uint8_t* tx_reserve_headers(LinkAddr to, size_t header_len, const Pieces& payload);
  // Publish the frame; rings the peer's doorbell iff it armed need-wakeup.
  void tx_commit(LinkAddr to, size_t len);
  // Whether the last reservation towards `to` failed because its ring was
  // full (the consumer rings us when it frees room), not because it's gone.
  bool tx_blocked(LinkAddr to) const;
  // The peer at `to` is asleep: it armed its ring from us, so our next frame
  // rings its doorbell.
  bool peer_asleep(LinkAddr to) const;

  // ---- send memory (arena.h) ----
  // A slot of our arena on the pair to `to` for a new connection (the
  // descriptor filled: its 4-tuple as we see it and its first data byte's
  // sequence number). false: none (the loopback, or no memory).
  bool send_memory(LinkAddr to, uint8_t family, const uint8_t local[16], uint16_t local_port,
                   const uint8_t remote[16], uint16_t remote_port, uint32_t seq_base, SendSlot* out);
  void send_memory_release(LinkAddr to, uint64_t cookie);

  // ---- receive ----
  // Deliver up to `budget` frames from all pairs, round-robin, as
  // deliver(LinkAddr from, const uint8_t* packet, size_t len, const Pieces*
  // payload): a whole packet (payload null), or its headers and, by
  // reference, its payload in the sender's arena. Pointers are into shared
  // memory and valid only during the call. Returns the number of frames
  // delivered.
  template <class Deliver>
  size_t rx_poll(Deliver&& deliver, size_t budget);
  bool rx_pending() const;
  // How far the peer at `from` has written its connection's stream (its
  // view: local and remote address and port), from its send arena's slot.
  bool peer_written_end(LinkAddr from, uint8_t family, const uint8_t local[16], uint16_t local_port,
                        const uint8_t remote[16], uint16_t remote_port, uint32_t* out) const;

  // ---- sleeping and waking (the need-wakeup protocol) ----
  int doorbell_fd() const;
  void doorbell_drain();
  // About to sleep: unless frames are waiting already, arm every pair's
  // flag, fence, re-check the rings. True when it is safe to sleep; false
  // when frames are there (or arrived meanwhile).
  bool prepare_sleep();
  void disarm();

  // ---- the control plane ----
  // Readable (an epoll fd) when a listener has a new channel, or a channel
  // has a message or hung up. control_poll() handles all of it without
  // blocking, and appends the pairs that went down to *down (the caller
  // ends their connections).
  int control_fd() const;
  void control_poll(std::vector<LinkAddr>* down);

  // ---- listeners ----
  // Serve the kernel listening socket `kernel_fd` (or, with -1, the one the
  // kernel has on (family, addr, port): a cluster worker's, held by its
  // primary) under its rendezvous name. Returns an entry >= 0, or a
  // negative errno and *why.
  int listener_add(int kernel_fd, uint8_t family, const uint8_t addr[16], uint16_t port, std::string* why);
  void listener_remove(int entry);

  // ---- connecting ----
  // Where a connection from (local, local_port) to (remote, remote_port)
  // goes, deciding everything the kernel would: the stack that holds the
  // kernel socket that would accept it, reached over a pair (made now if
  // needed) or our loopback. 0 and *via, or a negative errno and *why: then
  // the caller uses the kernel.
  int route(uint8_t family, const uint8_t local[16], uint16_t local_port, const uint8_t remote[16],
            uint16_t remote_port, LinkAddr* via, std::string* why);
  // The caller's connections through a pair, counted: a pair we created
  // that carried none for a while is closed by trim().
  void hold(LinkAddr via, bool on);
  // Housekeeping: pairs whose acceptor never answered (they go down, so
  // their connects move to the kernel), idle pairs we created, unused ports.
  void trim();
  // Microseconds until trim() has something to do (UINT64_MAX: nothing; an
  // idle stack sets no timer).
  uint64_t trim_in() const;
  // Whether control_poll() has work that no fd will signal (a pair that
  // failed inside the data path).
  bool control_pending() const;
  PortReservations& ports();

  const FabricCounters& counters() const;
  std::vector<PairInfo> pairs() const;
  // Whether a pair is waiting for its acceptor's Welcome (never answered:
  // the caller may still give its connections to the kernel).
  bool awaiting_welcome(LinkAddr addr) const;

  // ---- a peer that vanished ----
  // The slots a pair that went down still had in use: what its peer had
  // written for each connection, readable until release_orphans(addr).
  std::vector<PeerArena::Live> orphans(LinkAddr addr) const;
  void release_orphans(LinkAddr addr);
  size_t dead_arenas() const;

 private:
  Fabric();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  size_t rx_poll_impl(void (*fn)(void*, LinkAddr, const uint8_t*, size_t, const Pieces*), void* ctx,
                      size_t budget);
};

template <class Deliver>
size_t Fabric::rx_poll(Deliver&& deliver, size_t budget) {
  using D = std::remove_reference_t<Deliver>;
  return rx_poll_impl(
      [](void* ctx, LinkAddr from, const uint8_t* p, size_t n, const Pieces* payload) {
        D& d = *static_cast<D*>(ctx);
        if constexpr (std::is_invocable_v<D&, LinkAddr, const uint8_t*, size_t, const Pieces*>) {
          d(from, p, n, payload);
        } else {
          // A caller that takes whole packets only gets a referenced payload
          // copied behind its headers.
          if (!payload) return d(from, p, n);
          thread_local std::vector<uint8_t> whole;
          whole.assign(p, p + n);
          for (int k = 0; k < 2; ++k) whole.insert(whole.end(), payload->data[k], payload->data[k] + payload->len[k]);
          d(from, whole.data(), whole.size());
        }
      },
      const_cast<void*>(static_cast<const void*>(&deliver)), budget);
}

}  // namespace sidestep::link
