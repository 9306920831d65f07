// A Link over a Linux TUN device (IFF_TUN | IFF_NO_PI: whole IP packets, no
// Ethernet, no ARP), plus a "test pump" that moves packets between the device
// fd and a Stack, with an optional seeded fault injector (loss, reordering)
// applied in both directions.
//
// This is test equipment for native/interop/test (the Linux kernel as the TCP
// peer of sidestep's stack, inside a private network namespace); it is not part
// of the addon. TUN rather than TAP: the stack speaks IP, and TUN spares us ARP
// and Ethernet framing without changing anything TCP sees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stack/stack.h"

namespace sidestep::interop {

using stack::Micros;

// CLOCK_MONOTONIC in microseconds.
Micros monotonic_micros();

struct FaultConfig {
  double loss = 0.0;     // probability a packet is dropped
  double reorder = 0.0;  // probability a (surviving) packet is held back...
  Micros hold_min = 300;   // ...for a delay drawn uniformly from [hold_min, hold_max]
  Micros hold_max = 3000;  //    while later packets overtake it
  uint64_t seed = 1;
};

// Decides the fate of each packet from a seeded PRNG: the sequence of
// decisions (drop / hold for how long / pass) is a pure function of the seed
// and the packet's index in its direction, so a run's fault pattern can be
// replayed. (Which packet lands on which index still depends on real-time
// interleaving with the kernel, as with any live peer.)
class FaultInjector {
 public:
  FaultInjector() = default;
  explicit FaultInjector(const FaultConfig& c) : c_(c), rng_(c.seed ? c.seed : 1) {}
  bool active() const { return c_.loss > 0 || c_.reorder > 0; }

  // true: deliver `p` now. false: it was dropped or copied into the hold queue.
  bool admit(const uint8_t* p, size_t len, Micros now);
  // Delivers every held packet whose time has come, in release order.
  void release(Micros now, const std::function<void(const uint8_t*, size_t)>& deliver);
  // Earliest release time of a held packet, or kNever.
  Micros next_release() const;

  uint64_t seen = 0, dropped = 0, held = 0;

 private:
  double uniform();
  struct Held {
    Micros at;
    uint64_t order;
    std::vector<uint8_t> bytes;
  };
  FaultConfig c_;
  uint64_t rng_ = 1;
  std::vector<Held> queue_;  // small; kept unsorted
};

// Opens /dev/net/tun and creates the device (in the caller's network
// namespace). The fd is non-blocking; the Link writes each committed packet
// to it (through the outbound fault injector).
class TunLink : public stack::Link {
 public:
  TunLink() = default;
  ~TunLink() override;
  TunLink(const TunLink&) = delete;
  TunLink& operator=(const TunLink&) = delete;

  // Returns 0 or a negative errno. `name` may be a template like "sstun%d".
  int open(const char* name);
  int fd() const { return fd_; }
  const std::string& name() const { return name_; }

  // Faults for packets stack -> kernel (out) and kernel -> stack (in).
  void set_faults(const FaultConfig& out, const FaultConfig& in);
  const FaultInjector& faults_out() const { return out_; }
  const FaultInjector& faults_in() const { return in_; }

  uint8_t* tx_reserve(stack::LinkAddr to, size_t len) override;
  void tx_commit(stack::LinkAddr to, size_t len) override;

  // One round of the pump: waits (poll) until the device is readable, the
  // stack's poll_at() or a held packet is due, or `max_wait` passes; then
  // feeds every readable packet to `st`, releases due held packets, and runs
  // st.poll() when its deadline has passed.
  void pump_once(stack::Stack& st, Micros max_wait);
  // Calls `step(now)` (the application's turn: send/recv/accept, kernel
  // socket checks...) and pump_once() alternately until step returns true
  // (-> true) or `timeout` microseconds pass (-> false).
  bool run_until(stack::Stack& st, const std::function<bool(Micros)>& step, Micros timeout,
                 Micros max_wait = 5000);

  // Optional observer of every packet as it crosses the device (after fault
  // injection): to_kernel says which way. For tests that inspect the wire.
  std::function<void(bool to_kernel, const uint8_t*, size_t)> observe;

  // The stack's clock: monotonic_micros() + clock_offset. A test may move the
  // offset forward to make the stack believe time passed (an idle period).
  Micros clock_offset = 0;
  Micros now() const { return monotonic_micros() + clock_offset; }

  uint64_t packets_to_kernel = 0, packets_from_kernel = 0, write_errors = 0;

 private:
  void write_packet(const uint8_t* p, size_t len);
  void deliver(stack::Stack& st, const uint8_t* p, size_t len, Micros now);
  int fd_ = -1;
  std::string name_;
  std::vector<uint8_t> tx_buf_ = std::vector<uint8_t>(65536);
  std::vector<uint8_t> rx_buf_ = std::vector<uint8_t>(65536);
  FaultInjector out_, in_;
};

// Interface configuration in the caller's namespace, by ioctl (no ip(8)).
// Each returns 0 or a negative errno.
int interface_up(const char* ifname);
int interface_set_ipv4(const char* ifname, uint32_t addr_be, int prefix_len);
// Adds an IPv6 address, usable at once (IFA_F_NODAD: no duplicate address
// detection, never tentative).
int interface_add_ipv6(const char* ifname, const uint8_t addr[16], int prefix_len);
int interface_set_mtu(const char* ifname, int mtu);
int interface_set_txqueuelen(const char* ifname, int qlen);

}  // namespace sidestep::interop
