// Faults on demand where packets cross the fabric (SIDESTEP_FAULTS): loss,
// duplication, reordering and delay, drawn from a seeded generator so a run
// can be replayed. A FaultyLink wraps the real link below the stack; with no
// faults configured it is not in the path at all.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "stack/stack.h"

namespace sidestep::addon {

struct FaultSpec {
  double loss = 0;       // probability a packet is dropped
  double duplicate = 0;  // probability a packet is sent twice
  double reorder = 0;    // probability a packet is held back behind the next one
  uint32_t delay_us = 0; // each packet is delayed by a uniform 0..delay_us
  uint64_t seed = 1;
  bool enabled() const { return loss > 0 || duplicate > 0 || reorder > 0 || delay_us > 0; }
};

struct FaultCounters {
  uint64_t dropped = 0, duplicated = 0, reordered = 0, delayed = 0;
};

class FaultyLink final : public stack::Link {
 public:
  FaultyLink(stack::Link& inner, const FaultSpec& spec, std::function<stack::Micros()> now);

  uint8_t* tx_reserve(stack::LinkAddr to, size_t len) override;
  void tx_commit(stack::LinkAddr to, size_t len) override;
  // Packets go through whole (a held or duplicated one must own its bytes),
  // but connections still keep their send buffers where the link lends
  // them, so a peer can finish their streams under faults too.
  bool tx_blocked(stack::LinkAddr to) const override { return inner_.tx_blocked(to); }
  bool peer_idle(stack::LinkAddr to) const override { return inner_.peer_idle(to); }
  bool send_memory(stack::LinkAddr to, const stack::Endpoint& local, const stack::Endpoint& remote,
                   uint32_t seq_base, stack::SendMemory* out) override {
    return inner_.send_memory(to, local, remote, seq_base, out);
  }
  void send_memory_release(stack::LinkAddr to, const stack::SendMemory& m) override {
    inner_.send_memory_release(to, m);
  }

  // Send the held packets that are due at `now`.
  void release(stack::Micros now);
  // When release() next has work, or kNever.
  stack::Micros next_release() const;
  const FaultCounters& counters() const { return counters_; }

 private:
  struct Held {
    stack::LinkAddr to;
    std::vector<uint8_t> bytes;
    stack::Micros due;
  };
  double uniform();  // [0, 1)
  void forward(stack::LinkAddr to, const uint8_t* p, size_t len);
  void hold(stack::LinkAddr to, const uint8_t* p, size_t len, stack::Micros due);

  stack::Link& inner_;
  FaultSpec spec_;
  std::function<stack::Micros()> now_;
  uint64_t state_;
  std::vector<uint8_t> scratch_;
  std::deque<Held> held_;  // kept ordered by `due`
  FaultCounters counters_;
};

}  // namespace sidestep::addon
