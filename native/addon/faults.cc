// FaultyLink (see faults.h).
#include "faults.h"

#include <algorithm>
#include <cstring>

namespace sidestep::addon {

namespace {
// A packet held back for reordering goes out after the next packet, or after
// this long if no other packet comes (so a lone packet is late, not lost).
constexpr stack::Micros kReorderHold = 1000;
}  // namespace

FaultyLink::FaultyLink(stack::Link& inner, const FaultSpec& spec, std::function<stack::Micros()> now)
    : inner_(inner), spec_(spec), now_(std::move(now)), state_(spec.seed ? spec.seed : 1) {}

double FaultyLink::uniform() {
  // xorshift64*: small, fast, and the same sequence for the same seed.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  uint64_t r = state_ * 0x2545F4914F6CDD1Dull;
  return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0);
}

uint8_t* FaultyLink::tx_reserve(stack::LinkAddr, size_t len) {
  scratch_.resize(len);
  return scratch_.data();
}

void FaultyLink::forward(stack::LinkAddr to, const uint8_t* p, size_t len) {
  uint8_t* dst = inner_.tx_reserve(to, len);
  if (!dst) return;  // a full ring: lost, as it would have been anyway
  std::memcpy(dst, p, len);
  inner_.tx_commit(to, len);
}

void FaultyLink::hold(stack::LinkAddr to, const uint8_t* p, size_t len, stack::Micros due) {
  Held h{to, std::vector<uint8_t>(p, p + len), due};
  auto at = std::upper_bound(held_.begin(), held_.end(), due, [](stack::Micros d, const Held& x) { return d < x.due; });
  held_.insert(at, std::move(h));
}

void FaultyLink::tx_commit(stack::LinkAddr to, size_t len) {
  const uint8_t* p = scratch_.data();
  len = std::min(len, scratch_.size());
  stack::Micros now = now_();
  if (uniform() < spec_.loss) {
    ++counters_.dropped;
    return;
  }
  int copies = 1;
  if (uniform() < spec_.duplicate) {
    ++counters_.duplicated;
    copies = 2;
  }
  for (int i = 0; i < copies; ++i) {
    if (uniform() < spec_.reorder) {
      ++counters_.reordered;
      hold(to, p, len, now + kReorderHold);
    } else if (spec_.delay_us > 0) {
      ++counters_.delayed;
      hold(to, p, len, now + static_cast<stack::Micros>(uniform() * spec_.delay_us));
    } else {
      forward(to, p, len);
      // Whatever was held back for reordering now goes out behind it.
      while (!held_.empty() && held_.front().due <= now + kReorderHold && spec_.delay_us == 0) {
        Held h = std::move(held_.front());
        held_.pop_front();
        forward(h.to, h.bytes.data(), h.bytes.size());
      }
    }
  }
}

void FaultyLink::release(stack::Micros now) {
  while (!held_.empty() && held_.front().due <= now) {
    Held h = std::move(held_.front());
    held_.pop_front();
    forward(h.to, h.bytes.data(), h.bytes.size());
  }
}

stack::Micros FaultyLink::next_release() const { return held_.empty() ? stack::kNever : held_.front().due; }

}  // namespace sidestep::addon
