// SPSC frame ring: see ring.h for the format and the trust model.
#include "link/ring.h"

namespace sidestep::link {

using layout::FrameHeader;
using layout::kFrameAlign;
using layout::kWrapMarker;

namespace {

bool misaligned(uint64_t v) { return (v & (kFrameAlign - 1)) != 0; }

// See ring_reserve: past kRewindFrom, at every kRewindCheck bytes, a ring
// with no more than kRewindWhenUsed bytes unconsumed starts again at 0.
constexpr uint64_t kRewindFrom = 64 * 1024;
constexpr uint64_t kRewindCheck = 16 * 1024;
constexpr uint64_t kRewindWhenUsed = 16 * 1024;

void write_frame_header(uint8_t* at, uint32_t len, uint32_t kind) {
  auto* h = reinterpret_cast<FrameHeader*>(at);
  layout::store_relaxed(&h->len, len);
  layout::store_relaxed(&h->kind, kind);
}

// One copy of the header: the producer may rewrite it while we look, so every
// decision is taken on this snapshot.
FrameHeader read_frame_header(const uint8_t* at) {
  auto* h = reinterpret_cast<const FrameHeader*>(at);
  FrameHeader f;
  f.len = layout::load_relaxed(&h->len);
  f.kind = layout::load_relaxed(&h->kind);
  return f;
}

}  // namespace

ReserveResult ring_reserve(const RingView& ring, size_t len, RingReservation* out,
                           bool* repaired, uint64_t* cached_head) {
  const uint64_t size = ring.ring_bytes;
  const uint64_t need = layout::frame_bytes(len);
  uint64_t tail = layout::load_relaxed(&ring.header->tail);
  *repaired = false;
  auto fits = [&](uint64_t head) {
    const uint64_t used = tail - head;
    const uint64_t pos = tail & (size - 1);
    const uint64_t skip = need > size - pos ? size - pos : 0;
    return used <= size && used + skip + need <= size;
  };
  if (misaligned(tail) || !fits(*cached_head)) {
    uint64_t head = layout::load_acquire(&ring.header->head);
    *cached_head = head;
    if (tail - head > size || misaligned(tail)) {
      // Only we write tail, so an impossible value means a scribbler in the
      // region (the peer). Restart at the consumer's head; the consumer
      // resynchronises on anything between.
      tail = (head + kFrameAlign - 1) & ~uint64_t{kFrameAlign - 1};
      layout::store_release(&ring.header->tail, tail);
      *repaired = true;
    }
    if (!fits(head)) return ReserveResult::kFull;
  }
  const uint64_t pos = tail & (size - 1);
  out->tail = tail;
  out->skip = need > size - pos ? size - pos : 0;
  if (!out->skip && pos >= kRewindFrom && (pos & (kRewindCheck - 1)) < need && size > kRewindFrom) {
    // Crossing a check point: if the consumer is nearly caught up, wrap
    // now (the marker sends it to offset 0), so a ring that carries a few
    // frames at a time keeps using its first pages instead of sweeping all
    // of them, each of which would then stay resident in both processes.
    // A busy ring (a bulk stream) keeps its whole size.
    const uint64_t head = layout::load_acquire(&ring.header->head);
    *cached_head = head;
    const uint64_t used = tail - head;
    if (used <= kRewindWhenUsed && used + need <= pos) out->skip = size - pos;
  }
  out->len = len;
  out->payload = ring.data + ((tail + out->skip) & (size - 1)) + sizeof(FrameHeader);
  return ReserveResult::kOk;
}

void ring_commit(const RingView& ring, const RingReservation& r, size_t len, uint32_t kind) {
  const uint64_t size = ring.ring_bytes;
  if (r.skip)
    write_frame_header(ring.data + (r.tail & (size - 1)), kWrapMarker, 0);
  const uint64_t at = r.tail + r.skip;
  write_frame_header(ring.data + (at & (size - 1)), static_cast<uint32_t>(len), kind);
  // Release: the headers and the packet are visible before the new tail.
  layout::store_release(&ring.header->tail, at + layout::frame_bytes(len));
}

size_t ring_consume(const RingView& ring, size_t budget, FrameSink sink, void* ctx,
                    RingConsumeStats* stats) {
  const uint64_t size = ring.ring_bytes;
  const uint64_t tail = layout::load_acquire(&ring.header->tail);
  uint64_t head = layout::load_relaxed(&ring.header->head);
  if (tail == head) return 0;
  size_t delivered = 0;
  bool resync = tail - head > size || misaligned(tail) || misaligned(head);
  while (!resync && head != tail && delivered < budget) {
    const uint64_t avail = tail - head;  // in (0, size], multiple of 64
    const uint64_t pos = head & (size - 1);
    const uint64_t room = size - pos;  // >= 64: pos is 64-aligned
    const FrameHeader f = read_frame_header(ring.data + pos);
    if (f.len == kWrapMarker) {
      if (room > avail || pos == 0) {
        resync = true;  // a marker must be followed by a frame at 0
        break;
      }
      head += room;
      continue;
    }
    if (f.len > ring.mtu) {
      resync = true;  // cannot know where the next frame starts
      break;
    }
    const uint64_t need = layout::frame_bytes(f.len);
    if (need > room || need > avail) {
      resync = true;
      break;
    }
    if ((f.kind & 0xff00u) > kMaxFrameKind) {
      // A frame of no kind we know.
      ++stats->malformed;
    } else {
      sink(ctx, ring.data + pos + sizeof(FrameHeader), f.len, f.kind);
      ++stats->frames;
      stats->bytes += f.len;
      ++delivered;
    }
    head += need;
  }
  if (resync) {
    ++stats->malformed;
    head = tail;
  }
  // After the callbacks returned: the producer may now overwrite those bytes.
  layout::store_release(&ring.header->head, head);
  return delivered;
}

}  // namespace sidestep::link
