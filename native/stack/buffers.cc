// SendBuffer, ReceiveBuffer and SeqRanges (see tcp.h): circular byte rings
// moved with at most two memcpy calls per operation.
#include <algorithm>

#include "tcp.h"

namespace sidestep::stack {

namespace {
// A first small write or segment (a request, an echo) gets a buffer this
// small, which the stack keeps for the next (SmallBuffers); anything bigger
// starts at 16 KiB. Either doubles from there.
constexpr size_t kFirstSmall = SmallBuffers::kBytes;
}  // namespace

SmallBuffers::~SmallBuffers() {
  for (uint8_t* p : free_) delete[] p;
}

uint8_t* SmallBuffers::take() {
  if (free_.empty()) return new uint8_t[kBytes];
  uint8_t* p = free_.back();
  free_.pop_back();
  return p;
}

void SmallBuffers::give(uint8_t* p) {
  if (free_.size() < kKept)
    free_.push_back(p);
  else
    delete[] p;
}

uint8_t* SendBuffer::allocate(size_t cap) {
  return small_ && cap == SmallBuffers::kBytes ? small_->take() : new uint8_t[cap];
}

void SendBuffer::free_own(uint8_t* p, size_t cap) {
  if (!p) return;
  if (small_ && cap == SmallBuffers::kBytes)
    small_->give(p);
  else
    delete[] p;
}

// The ring position at or after `pos` whose address shares `data`'s offset
// within a cache line. A copy whose source and destination are mutually
// aligned runs at full speed; mutually misaligned, a 64 KiB copy from memory
// into cache takes ~35% longer here (glibc's rep movsb / vector loops split
// every load or every store across two lines). Ring sizes are multiples of
// 64, so a position keeps its alignment as the ring wraps.
static size_t aligned_with(const uint8_t* ring, size_t pos, const uint8_t* data) {
  return pos + ((reinterpret_cast<uintptr_t>(data) - reinterpret_cast<uintptr_t>(ring + pos)) & 63);
}

// Copies `n` bytes into a ring of `cap` bytes from position `at`, wrapping.
static void ring_write(uint8_t* ring, size_t cap, size_t at, const uint8_t* data, size_t n) {
  if (n == 0) return;
  size_t first = std::min(n, cap - at);
  std::memcpy(ring + at, data, first);
  if (first < n) std::memcpy(ring, data + first, n - first);
}

SendBuffer::~SendBuffer() {
  if (!external_) free_own(buf_, cap_);
}

namespace {
// The part of a lent ring a connection starts with (SendMemory): doubled as
// its bytes in flight need.
constexpr size_t kFirstLentRing = 256 * 1024;
}  // namespace

void SendBuffer::lend(const SendMemory& m, uint32_t seq_base) {
  if (size_ != 0 || external_ || !m.ring || m.capacity == 0 || (m.capacity & (m.capacity - 1))) return;
  lent_ring_ = m.ring;
  lent_capacity_ = m.capacity;
  published_ring_ = m.published_ring;
  published_base_ = m.published_base;
  published_end_ = m.published_end;
  published_from_ = m.published_from;
  stagger_ = m.stagger;
  end_seq_ = seq_base;
  base_seq_ = seq_base;  // the byte seq_base would live at offset 0: (seq - seq_base) % cap
  // What a peer that finishes the stream reads: an empty ring of the size
  // it would start with, nothing in it, nothing owed.
  if (published_ring_) __atomic_store_n(published_ring_, uint32_t(std::min(m.capacity, kFirstLentRing)), __ATOMIC_RELAXED);
  if (published_from_) __atomic_store_n(published_from_, seq_base, __ATOMIC_RELAXED);
  if (published_end_) __atomic_store_n(published_end_, end_seq_, __ATOMIC_RELEASE);
}

void SendBuffer::move_to_lent() {
  if (!lent_ring_ || external_) return;
  // The oldest queued byte goes where an empty ring's next one would (the
  // stagger), the base being whatever byte that puts at offset 0.
  size_t cap = std::min(lent_capacity_, kFirstLentRing);
  while (cap < size_ && cap < lent_capacity_) cap *= 2;
  const size_t head = stagger_ & (cap - 1);
  Payload kept;
  pieces(0, size_, &kept);
  ring_write(lent_ring_, cap, head, kept.data[0], kept.len[0]);
  ring_write(lent_ring_, cap, (head + kept.len[0]) & (cap - 1), kept.data[1], kept.len[1]);
  free_own(buf_, cap_);
  buf_ = lent_ring_;
  cap_ = cap;
  max_cap_ = lent_capacity_;
  head_ = head;
  external_ = true;
  const uint32_t first = end_seq_ - uint32_t(size_);
  base_seq_ = first - uint32_t(head);
  if (published_ring_) __atomic_store_n(published_ring_, uint32_t(cap_), __ATOMIC_RELAXED);
  if (published_base_) __atomic_store_n(published_base_, base_seq_, __ATOMIC_RELAXED);
  if (published_from_) __atomic_store_n(published_from_, first, __ATOMIC_RELAXED);
  // After the bytes and the rest: a peer that sees this sees them.
  if (published_end_) __atomic_store_n(published_end_, end_seq_, __ATOMIC_RELEASE);
}

size_t SendBuffer::push(const uint8_t* data, size_t n) {
  if (n == 0) return 0;
  if (to_lent_on_push(n)) move_to_lent();
  if (external_) {
    // Positions follow sequence numbers (the peer finds a byte by its
    // number), so nothing moves: the ring in use doubles only while none of
    // its bytes has wrapped (each then keeps its offset), and what fits,
    // fits. (The new size is stored before the end that covers bytes past
    // the old one.)
    while (size_ + n > cap_ && can_grow()) {
      cap_ *= 2;
      if (published_ring_) __atomic_store_n(published_ring_, uint32_t(cap_), __ATOMIC_RELAXED);
    }
    n = std::min(n, cap_ - size_);
    size_t tail = (head_ + size_) & (cap_ - 1);
    ring_write(buf_, cap_, tail, data, n);
    size_ += n;
    end_seq_ += uint32_t(n);
    // After the bytes: a peer that sees the new end sees them.
    if (published_end_) __atomic_store_n(published_end_, end_seq_, __ATOMIC_RELEASE);
    return n;
  }
  if (size_ + n > cap_) {
    size_t cap = cap_ ? cap_ : (n <= kFirstSmall ? kFirstSmall : 16384);
    while (cap < size_ + n) cap = cap < limit_ ? cap * 2 : (cap + cap / 4 + 63) & ~size_t(63);
    uint8_t* grown = allocate(cap);
    // The kept bytes end where the new ones start: at the position aligned
    // with them, so a stream written from one contiguous region copies
    // aligned from then on.
    size_t head = (aligned_with(grown, 0, data) + cap - size_) % cap;
    Payload kept;
    pieces(0, size_, &kept);
    ring_write(grown, cap, head, kept.data[0], kept.len[0]);
    ring_write(grown, cap, (head + kept.len[0]) % cap, kept.data[1], kept.len[1]);
    free_own(buf_, cap_);
    buf_ = grown;
    cap_ = cap;
    head_ = head;
  } else if (size_ == 0) {
    head_ = aligned_with(buf_, 0, data);  // nothing kept: start where it suits
  }
  size_t tail = head_ + size_;
  if (tail >= cap_) tail -= cap_;
  ring_write(buf_, cap_, tail, data, n);
  size_ += n;
  if (lent_ring_) {
    // Lent, not in use yet: the peer learns how far we wrote (a close over
    // our unread bytes resets), and that none of it is in the ring.
    // (The base follows, so a long-lived connection's end never strays
    // from it.)
    end_seq_ += uint32_t(n);
    base_seq_ = end_seq_;
    if (published_base_) __atomic_store_n(published_base_, base_seq_, __ATOMIC_RELAXED);
    if (published_from_) __atomic_store_n(published_from_, end_seq_, __ATOMIC_RELAXED);
    if (published_end_) __atomic_store_n(published_end_, end_seq_, __ATOMIC_RELEASE);
  }
  return n;
}

namespace {
// Buffers up to this size come from the heap arena (below malloc's mmap
// threshold): cheap to free when idle and to get back for the next message.
constexpr size_t kSmallBuffer = 64 * 1024;
constexpr size_t kFirstReceiveBuffer = 16 * 1024;
}  // namespace

void SendBuffer::pop(size_t n) {
  if (n > size_) n = size_;
  head_ += n;
  const bool wrapped = head_ >= cap_;
  if (wrapped) head_ -= cap_;
  size_ -= n;
  if (external_ && (wrapped || (size_ == 0 && head_ != (stagger_ & (cap_ - 1))))) {
    // Everything acknowledged: the next byte goes to the link's stagger
    // (SendMemory), the base being whatever byte that puts at offset 0. Or
    // the oldest byte wrapped: the base follows, so it never lags the end
    // by more than two rings, however long the stream. Ordered before
    // later bytes by push()'s release of the end.
    if (size_ == 0) {
      head_ = stagger_ & (cap_ - 1);
      base_seq_ = end_seq_ - uint32_t(head_);
    } else {
      base_seq_ += uint32_t(cap_);
    }
    if (published_base_) __atomic_store_n(published_base_, base_seq_, __ATOMIC_RELAXED);
  }
  if (size_ == 0 && !external_ && cap_ <= kSmallBuffer) {
    free_own(buf_, cap_);
    buf_ = nullptr;
    cap_ = 0;
  }
}

bool SendBuffer::frees_on_pop(size_t n) const {
  return !external_ && cap_ > 0 && cap_ <= kSmallBuffer && n >= size_;
}

void SendBuffer::pieces(size_t offset, size_t n, Payload* out) const {
  *out = Payload{};
  if (n == 0) return;
  size_t pos = head_ + offset;
  if (pos >= cap_) pos -= cap_;
  size_t first = std::min(n, cap_ - pos);
  out->data[0] = buf_ + pos;
  out->len[0] = first;
  if (first < n) {
    out->data[1] = buf_;
    out->len[1] = n - first;
  }
}

void SendBuffer::peek(size_t offset, uint8_t* out, size_t n) const {
  Payload p;
  pieces(offset, n, &p);
  if (p.len[0]) std::memcpy(out, p.data[0], p.len[0]);
  if (p.len[1]) std::memcpy(out + p.len[0], p.data[1], p.len[1]);
}

void ReceiveBuffer::reserve(size_t bytes) {
  if (bytes <= phys_) return;
  size_t p = phys_ ? phys_ : (bytes <= kFirstSmall ? kFirstSmall : kFirstReceiveBuffer);
  while (p < bytes) p *= 2;
  p = std::min(p, cap_);
  std::unique_ptr<uint8_t[]> grown(new uint8_t[p]);
  // Unwrap the old ring from head_: in-order bytes and any out-of-order bytes
  // beyond them keep their offsets from head_.
  if (phys_) {
    size_t first = phys_ - head_;
    std::memcpy(grown.get(), buf_.get() + head_, first);
    std::memcpy(grown.get() + first, buf_.get(), head_);
  }
  buf_ = std::move(grown);
  phys_ = p;
  head_ = 0;
}

void ReceiveBuffer::write_at(size_t offset, const uint8_t* data, size_t n) {
  if (n == 0) return;
  reserve(size_ + offset + n);
  ring_write(buf_.get(), phys_, (head_ + size_ + offset) % phys_, data, n);
}

void ReceiveBuffer::release_if_idle() {
  if (size_ != 0 || phys_ > kSmallBuffer) return;
  buf_.reset();
  phys_ = 0;
  head_ = 0;
}

size_t ReceiveBuffer::read(uint8_t* out, size_t cap) {
  size_t n = std::min(cap, size_);
  if (n == 0) return 0;
  size_t first = std::min(n, phys_ - head_);
  std::memcpy(out, buf_.get() + head_, first);
  if (first < n) std::memcpy(out + first, buf_.get(), n - first);
  head_ = (head_ + n) % phys_;
  size_ -= n;  // out-of-order bytes beyond the tail keep their place
  return n;
}

bool SeqRanges::add(uint32_t begin, uint32_t end) {
  if (!seq_lt(begin, end)) return true;
  // Find the first range that ends at or after `begin`.
  size_t i = 0;
  while (i < count_ && seq_lt(ranges_[i].end, begin)) ++i;
  // Merge every range overlapping or touching [begin, end).
  size_t j = i;
  while (j < count_ && seq_le(ranges_[j].begin, end)) {
    if (seq_lt(ranges_[j].begin, begin)) begin = ranges_[j].begin;
    if (seq_gt(ranges_[j].end, end)) end = ranges_[j].end;
    ++j;
  }
  size_t merged = j - i;
  if (merged == 0) {
    if (count_ == kMaxRanges) return false;
    std::memmove(&ranges_[i + 1], &ranges_[i], (count_ - i) * sizeof(Range));
    ++count_;
  } else if (merged > 1) {
    std::memmove(&ranges_[i + 1], &ranges_[j], (count_ - j) * sizeof(Range));
    count_ -= merged - 1;
  }
  ranges_[i] = Range{begin, end};
  last_begin_ = begin;
  return true;
}

uint32_t SeqRanges::advance(uint32_t rcv_nxt) {
  size_t i = 0;
  while (i < count_ && seq_le(ranges_[i].begin, rcv_nxt)) {
    if (seq_gt(ranges_[i].end, rcv_nxt)) rcv_nxt = ranges_[i].end;
    ++i;
  }
  if (i) {
    std::memmove(&ranges_[0], &ranges_[i], (count_ - i) * sizeof(Range));
    count_ -= i;
  }
  return rcv_nxt;
}

void SeqRanges::discard_below(uint32_t seq) {
  size_t i = 0;
  while (i < count_ && seq_le(ranges_[i].end, seq)) ++i;
  if (i) {
    std::memmove(&ranges_[0], &ranges_[i], (count_ - i) * sizeof(Range));
    count_ -= i;
  }
  if (count_ && seq_lt(ranges_[0].begin, seq)) ranges_[0].begin = seq;
}

bool SeqRanges::next_hole(uint32_t from, uint32_t* begin, uint32_t* end) const {
  uint32_t cursor = from;
  for (size_t i = 0; i < count_; ++i) {
    if (seq_le(ranges_[i].end, cursor)) continue;
    if (seq_gt(ranges_[i].begin, cursor)) {
      *begin = cursor;
      *end = ranges_[i].begin;
      return true;
    }
    cursor = ranges_[i].end;
  }
  return false;
}

uint8_t SeqRanges::sack_blocks(wire::SackBlock* out, uint8_t max) const {
  uint8_t n = 0;
  size_t first = count_;
  for (size_t i = 0; i < count_; ++i) {
    if (seq_le(ranges_[i].begin, last_begin_) && seq_gt(ranges_[i].end, last_begin_)) first = i;
  }
  if (first < count_ && n < max) {
    out[n++] = wire::SackBlock{ranges_[first].begin, ranges_[first].end};
  }
  for (size_t i = 0; i < count_ && n < max; ++i) {
    if (i == first) continue;
    out[n++] = wire::SackBlock{ranges_[i].begin, ranges_[i].end};
  }
  return n;
}

}  // namespace sidestep::stack
