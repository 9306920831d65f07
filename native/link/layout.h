// The byte layout of a pair region: the memory two stacks share, and only
// those two (a memfd one of them creates and passes to the other, see pair.h).
//
//   offset 0          PairHeader: what the creator built (validated by the
//                     acceptor against what it computes itself)
//   kPage             ring 0 (creator -> acceptor): RingHeader page + data
//   kPage + stride    ring 1 (acceptor -> creator): RingHeader page + data
//
// All offsets are computed locally from the layout constants and the two
// settings (ring_bytes, mtu), each checked against bounds; the header only
// lets the acceptor refuse a region of another shape. Every word the other
// process writes is accessed with the atomics below, and every value read
// from the region is validated before it is used as an index, length or
// offset.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sidestep::link::layout {

// ---- atomics on plain shared words (the region is not C++ objects) ----
template <class T>
inline T load_relaxed(const T* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
template <class T>
inline T load_acquire(const T* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
template <class T>
inline void store_relaxed(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
template <class T>
inline void store_release(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
template <class T>
inline T exchange(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
inline void full_fence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline constexpr uint64_t kMagic = 0x5249415044495353ull;  // "SSIDPAIR", little endian
// Bump whenever anything below changes meaning or place (the control
// channel's hello carries it too: stacks of different versions don't pair).
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr size_t kPage = 4096;
inline constexpr size_t kCacheLine = 64;

inline constexpr size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

struct PairHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t ring_bytes;
  uint32_t mtu;
  uint32_t reserved;
  uint64_t total_bytes;
};

// A ring's shared header: each word on its own line, by writer.
struct RingHeader {
  uint64_t tail;  // bytes ever produced (producer writes)
  uint8_t pad0[kCacheLine - 8];
  uint64_t head;  // bytes ever consumed (consumer writes)
  uint8_t pad1[kCacheLine - 8];
  // Need-wakeup: the consumer sets it before sleeping, a producer that finds
  // it set exchanges it back to 0 and rings the consumer's doorbell.
  uint32_t armed;
  uint8_t pad2[kCacheLine - 4];
  // Need-room: a producer that found the ring full sets it; the consumer,
  // having freed room, exchanges it back to 0 and rings the producer.
  uint32_t blocked;
  uint8_t pad3[kCacheLine - 4];
};
inline constexpr size_t kRingHeaderBytes = kPage;  // data starts page aligned
static_assert(sizeof(RingHeader) <= kRingHeaderBytes);

struct FrameHeader {
  uint32_t len;   // packet bytes, or kWrapMarker
  uint32_t kind;  // FrameKind (fabric.h)
  uint32_t reserved[2];
};
static_assert(sizeof(FrameHeader) == 16);
inline constexpr uint32_t kWrapMarker = 0xffffffffu;
inline constexpr size_t kFrameAlign = 64;

inline constexpr size_t frame_bytes(size_t len) {
  return align_up(sizeof(FrameHeader) + len, kFrameAlign);
}

// Bounds on the two settings a creator may choose.
inline constexpr uint32_t kMinMtu = 1280, kMaxMtu = 1u << 20;
inline constexpr uint32_t kMinRingBytes = 1u << 16, kMaxRingBytes = 1u << 28;

// Where everything is, for one (ring_bytes, mtu).
struct Geometry {
  uint32_t ring_bytes = 0;
  uint32_t mtu = 0;
  size_t ring_stride = 0;  // header page + data
  size_t total_bytes = 0;

  static Geometry for_settings(uint32_t ring_bytes, uint32_t mtu) {
    Geometry g;
    g.ring_bytes = ring_bytes;
    g.mtu = mtu;
    g.ring_stride = kRingHeaderBytes + ring_bytes;
    g.total_bytes = kPage + 2 * g.ring_stride;
    return g;
  }
  // Ring 0 carries creator -> acceptor, ring 1 acceptor -> creator.
  size_t ring_offset(int ring) const { return kPage + size_t(ring) * ring_stride; }

  // Whether a creator's settings are ones an acceptor may map.
  static bool valid(uint32_t ring_bytes, uint32_t mtu) {
    return mtu >= kMinMtu && mtu <= kMaxMtu && ring_bytes >= kMinRingBytes &&
           ring_bytes <= kMaxRingBytes && (ring_bytes & (ring_bytes - 1)) == 0 &&
           2 * frame_bytes(mtu) <= ring_bytes;
  }
};

}  // namespace sidestep::link::layout
