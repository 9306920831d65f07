// The single-producer/single-consumer frame ring between two stacks.
//
// A ring is a RingHeader (tail and head byte counters on their own cache
// lines) followed by ring_bytes of data. Frames are a FrameHeader plus the
// packet, padded to 64 bytes; a frame that would straddle the end is preceded
// by a wrap marker that sends the consumer back to offset 0. The producer
// publishes with a release store of tail, the consumer frees space with a
// release store of head after its callback returned (zero-copy receive).
//
// The consumer trusts nothing in the ring: any inconsistency drops the frame,
// or, when the ring state itself is insane, resynchronises (head = tail).
// Each step advances by at least 64 bytes inside a window of at most
// ring_bytes, so a consume call is bounded whatever the memory holds.
#pragma once

#include <cstddef>
#include <cstdint>

#include "link/layout.h"

namespace sidestep::link {

struct RingView {
  layout::RingHeader* header = nullptr;
  uint8_t* data = nullptr;
  uint32_t ring_bytes = 0;  // power of two, multiple of 64
  uint32_t mtu = 0;
};

// A frame slot handed out by ring_reserve and published by ring_commit.
struct RingReservation {
  uint64_t tail = 0;  // tail when reserved
  uint64_t skip = 0;  // bytes left before the wrap point (marker), or 0
  size_t len = 0;     // reserved packet bytes
  uint8_t* payload = nullptr;
};

enum class ReserveResult { kOk, kFull };

// Producer side. `len` must already be <= mtu. Repairs a tail it finds
// inconsistent with head (and reports it via *repaired) so that a ring
// corrupted by a crash does not stay stuck forever.
// *cached_head is the producer's private copy of head: the consumer's line is
// read only when the copy says the frame does not fit (head only grows, so a
// stale copy under-reports room, never over-reports). Start it at 0.
// (`repaired`: a tail inconsistent with head can only come from a scribbler
// in the region, since only we write tail.)
ReserveResult ring_reserve(const RingView& ring, size_t len, RingReservation* out,
                           bool* repaired, uint64_t* cached_head);
// Publishes the reserved frame with `len` <= reservation.len bytes.
// `kind`: what the frame carries (FrameKind, see fabric.h), opaque here
// beyond its bound.
void ring_commit(const RingView& ring, const RingReservation& r, size_t len, uint32_t kind = 0);
// Largest valid kind value (kind's high byte; the low byte is kind data).
inline constexpr uint32_t kMaxFrameKind = 0x0100;

struct RingConsumeStats {
  uint64_t frames = 0;
  uint64_t bytes = 0;
  uint64_t malformed = 0;  // frames dropped plus resynchronisations
};

using FrameSink = void (*)(void* ctx, const uint8_t* packet, size_t len, uint32_t kind);

// Consumer side: delivers up to `budget` frames. Returns the number delivered.
size_t ring_consume(const RingView& ring, size_t budget, FrameSink sink, void* ctx,
                    RingConsumeStats* stats);

// Bytes between head and tail (what the consumer has yet to take), as the
// consumer's own view; an impossible value reads as a full ring.
inline uint64_t ring_used(const RingView& ring) {
  const uint64_t used = layout::load_acquire(&ring.header->tail) - layout::load_relaxed(&ring.header->head);
  return used <= ring.ring_bytes ? used : ring.ring_bytes;
}

// Whether the ring holds unconsumed bytes (valid or not).
inline bool ring_nonempty(const RingView& ring) {
  return layout::load_acquire(&ring.header->tail) != layout::load_relaxed(&ring.header->head);
}

// Drops everything in the ring (consumer side).
inline void ring_discard(const RingView& ring) {
  layout::store_release(&ring.header->head, layout::load_acquire(&ring.header->tail));
}

}  // namespace sidestep::link
