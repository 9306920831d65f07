// Loss recovery with SACK (RFC 6675): the sender's scoreboard, and the
// NextSeg rule that resends what it holds lost while the pipe leaves room in
// the congestion window. Recovery without SACK (NewReno, RFC 6582) and the
// ACK processing that feeds the scoreboard are in tcp.cc.
#include <algorithm>

#include "stack_impl.h"

namespace sidestep::stack {

using namespace wire;

// --- Scoreboard ---

uint32_t Scoreboard::contribution(const Record& r) {
  if (r.flags & kSacked) return 0;
  uint32_t len = r.end - r.begin;
  return ((r.flags & kLost) ? 0 : len) + ((r.flags & kRetrans) ? len : 0);
}

void Scoreboard::account(const Record& r) {
  pipe_ += contribution(r);
  if (r.flags & kSacked) sacked_ += r.end - r.begin;
  if (pending(r.flags)) {
    if (lost_pending_++ == 0 || seq_lt(r.begin, pending_from_)) pending_from_ = r.begin;
  }
}

void Scoreboard::unaccount(const Record& r) {
  pipe_ -= contribution(r);
  if (r.flags & kSacked) sacked_ -= r.end - r.begin;
  if (pending(r.flags)) --lost_pending_;
}

void Scoreboard::set_flags(Record& r, uint8_t flags) {
  unaccount(r);
  r.flags = flags;
  account(r);
}

size_t Scoreboard::find(uint32_t seq) const {
  size_t lo = 0, hi = count_;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (seq_gt(at(mid).end, seq)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

void Scoreboard::reserve_one() {
  if (count_ < cap_) return;
  size_t cap = cap_ ? cap_ * 2 : 16;
  auto ring = std::make_unique<Record[]>(cap);
  for (size_t i = 0; i < count_; ++i) ring[i] = at(i);
  ring_ = std::move(ring);
  cap_ = cap;
  head_ = 0;
}

void Scoreboard::push_back(const Record& r) {
  reserve_one();
  at(count_++) = r;
  account(r);
}

bool Scoreboard::split(size_t i, uint32_t seq, size_t limit) {
  if (count_ >= limit) return false;
  reserve_one();
  Record tail = at(i);
  tail.begin = seq;
  at(i).end = seq;  // contributions are proportional to length: the sums hold
  for (size_t k = count_; k > i + 1; --k) at(k) = at(k - 1);
  at(i + 1) = tail;
  ++count_;
  if (pending(tail.flags)) ++lost_pending_;
  return true;
}

void Scoreboard::delivered(uint64_t order) {
  if (order <= latest_[kDupThresh - 1]) return;
  size_t k = kDupThresh - 1;
  while (k > 0 && latest_[k - 1] < order) {
    latest_[k] = latest_[k - 1];
    --k;
  }
  latest_[k] = order;
}

void Scoreboard::on_transmit(uint32_t begin, uint32_t end) {
  if (!seq_lt(begin, end)) return;
  uint64_t order = ++next_order_;
  if (count_) {
    uint32_t top = this->end();
    uint32_t stop = seq_lt(end, top) ? end : top;
    if (seq_lt(begin, stop)) {
      // A retransmission of the records it covers (our own cuts may split
      // a record beyond kMaxRecords, up to twice that).
      size_t i = find(begin);
      if (i < count_ && seq_lt(at(i).begin, begin) && split(i, begin, 2 * kMaxRecords)) ++i;
      for (; i < count_ && seq_lt(at(i).begin, stop); ++i) {
        if (seq_gt(at(i).end, stop)) split(i, stop, 2 * kMaxRecords);
        Record& r = at(i);
        if (r.flags & kSacked) continue;
        r.order = order;
        set_flags(r, uint8_t((r.flags & kLost) | kRetrans | kEverRetrans));
      }
    }
    if (!seq_lt(top, end)) return;
    if (seq_lt(begin, top)) begin = top;
    if (count_ >= kMaxRecords) {
      Record& last = at(count_ - 1);
      if (last.flags == 0 && last.end == begin) {  // grow the last one instead
        pipe_ += end - begin;
        last.end = end;
        last.order = order;
      }
      return;  // else untracked: Tcb::pipe() still counts it
    }
  }
  push_back(Record{begin, end, order, 0});
}

void Scoreboard::on_ack(uint32_t ack) {
  while (count_ && seq_le(at(0).end, ack)) {
    Record& r = at(0);
    if (!(r.flags & kSacked)) delivered(r.order);
    unaccount(r);
    head_ = (head_ + 1) & (cap_ - 1);
    --count_;
  }
  if (count_ && seq_lt(at(0).begin, ack)) {
    Record& r = at(0);
    unaccount(r);
    r.begin = ack;
    account(r);
  }
  if (count_ == 0) {
    head_ = 0;
    if (cap_ <= 64) {  // as SendBuffer: a small ring goes, a busy stream's stays
      ring_.reset();
      cap_ = 0;
    }
  }
}

bool Scoreboard::on_sack(uint32_t left, uint32_t right) {
  bool news = false;
  size_t i = find(left);
  if (i < count_ && seq_lt(at(i).begin, left)) {
    split(i, left);  // refused at the limit: the partly covered record stays unSACKed
    ++i;
  }
  for (; i < count_ && seq_lt(at(i).begin, right); ++i) {
    if (seq_gt(at(i).end, right) && !split(i, right)) break;
    Record& r = at(i);
    if (r.flags & kSacked) continue;
    delivered(r.order);
    set_flags(r, uint8_t(kSacked | (r.flags & kEverRetrans)));
    news = true;
  }
  return news;
}

uint32_t Scoreboard::detect_losses() {
  uint64_t threshold = latest_[kDupThresh - 1];
  if (threshold == 0) return 0;
  uint32_t marked = 0;
  for (size_t i = 0; i < count_; ++i) {
    Record& r = at(i);
    if (r.flags & kSacked) continue;
    if (r.order >= threshold) {
      // Segments sent once go out in sequence order, and anything above
      // one of them was first sent after it: nothing further can be lost.
      if (!(r.flags & kEverRetrans)) break;
      continue;
    }
    if ((r.flags & kLost) && !(r.flags & kRetrans)) continue;  // already waiting
    set_flags(r, uint8_t(kLost | (r.flags & kEverRetrans)));   // a lost retransmission too
    ++marked;
  }
  return marked;
}

bool Scoreboard::mark_first_lost() {
  if (!count_) return false;
  Record& r = at(0);
  if (r.flags & (kSacked | kLost | kEverRetrans)) return false;
  set_flags(r, kLost);
  return true;
}

void Scoreboard::mark_all_lost(bool forget_sacks) {
  for (size_t i = 0; i < count_; ++i) {
    Record& r = at(i);
    if ((r.flags & kSacked) && !forget_sacks) continue;
    set_flags(r, uint8_t(kLost | (r.flags & kEverRetrans)));
  }
  if (forget_sacks) std::fill(std::begin(latest_), std::end(latest_), 0);
}

bool Scoreboard::next_seg(bool holes, uint32_t max_len, uint32_t data_end, uint32_t* begin,
                          uint32_t* end) {
  if (max_len == 0 || (!holes && !lost_pending_) || (holes && !sacked_)) return false;
  size_t last_sacked = count_;
  if (holes) {
    while (last_sacked > 0 && !(at(last_sacked - 1).flags & kSacked)) --last_sacked;
  }
  // Rule 1 starts where the first pending record may be (a rescan from the
  // front for each of many losses after a timeout would be quadratic).
  for (size_t i = holes ? 0 : find(pending_from_); i < (holes ? last_sacked : count_); ++i) {
    Record r = at(i);  // a copy: split() may move the ring
    if (holes ? (r.flags & (kSacked | kEverRetrans)) != 0 : !pending(r.flags)) continue;
    uint32_t data_stop = seq_gt(r.end, data_end) ? data_end : r.end;
    uint32_t stop = r.end;
    if (seq_gt(data_stop, r.begin) && data_stop - r.begin > max_len) {
      stop = r.begin + max_len;
      split(i, stop, 2 * kMaxRecords);
    }
    if (!holes) pending_from_ = r.begin;
    *begin = r.begin;
    *end = stop;
    return true;
  }
  return false;
}

void Scoreboard::clear() {
  count_ = head_ = 0;
  pipe_ = sacked_ = 0;
  lost_pending_ = 0;
  std::fill(std::begin(latest_), std::end(latest_), 0);
}

bool Scoreboard::consistent(uint32_t snd_una, uint32_t snd_max) const {
  uint64_t pipe = 0, sacked = 0;
  size_t pending_count = 0;
  for (size_t i = 0; i < count_; ++i) {
    const Record& r = at(i);
    if (!seq_lt(r.begin, r.end) || seq_lt(r.begin, snd_una) || seq_gt(r.end, snd_max)) {
      return false;
    }
    if (i > 0 && seq_lt(r.begin, at(i - 1).end)) return false;
    if ((r.flags & kSacked) && (r.flags & (kLost | kRetrans))) return false;
    if (r.order == 0 || r.order > next_order_) return false;
    pipe += contribution(r);
    if (r.flags & kSacked) sacked += r.end - r.begin;
    if (pending(r.flags)) {
      ++pending_count;
      if (seq_lt(r.begin, pending_from_)) return false;
    }
  }
  return pipe == pipe_ && sacked == sacked_ && pending_count == lost_pending_ &&
         count_ <= 2 * kMaxRecords && (cap_ == 0 || (cap_ & (cap_ - 1)) == 0);
}

// --- recovery ---

void Stack::Impl::retransmit_lost(Tcb& t, Micros now, bool force, bool holes) {
  for (;;) {
    if (!force) {
      // RFC 6675 5 (C): only while cwnd - pipe >= 1 SMSS.
      uint32_t pipe = t.pipe(), cwnd = t.cc.window();
      if (pipe >= cwnd || cwnd - pipe < t.mss) break;
    }
    uint32_t data_end = t.data_end();
    uint32_t begin, end;
    if (!t.score.next_seg(holes, data_room(t), data_end, &begin, &end)) break;
    if (seq_lt(begin, t.sndbuf_seq)) break;  // below snd_una: can't be (records are dropped)
    bool fin = t.fin_queued && seq_gt(end, data_end);
    uint32_t len = (fin ? data_end : end) - begin;
    uint8_t flags = kAck | (fin ? kFin : 0) | (len && begin + len == data_end ? kPsh : 0);
    if (!transmit(t, begin, flags, len, now)) {  // the link is full: the timer retries
      if (t.rtx_at == kNever) t.rtx_at = now + t.rto;
      break;
    }
    ++counters.segments_retransmitted;
    ++t.retransmits;
    force = false;
  }
}

void Stack::Impl::enter_sack_recovery(Tcb& t, Micros now) {
  t.in_recovery = true;
  t.recover = t.snd_max;
  t.cc.on_sack_recovery(t.snd_max - t.snd_una, t.mss);
  t.rtt_timing = false;
  // RFC 6675 (4.3): the first loss goes at once, whatever the pipe says.
  retransmit_lost(t, now, true, false);
  t.rtx_at = now + t.rto;
}

}  // namespace sidestep::stack
