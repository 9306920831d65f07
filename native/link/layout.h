// The byte layout of the fabric file, shared by every process that maps it.
//
// All offsets are computed locally from the layout constants and our own
// FabricConfig, never read from the file: the header's copy only lets an
// attacher with a different layout refuse cleanly instead of corrupting.
// Every word another process writes is accessed with the atomics below, and
// every value read from the file is validated before it is used as an index,
// length or offset.
#pragma once

#include <cstddef>
#include <cstdint>

#include <sys/types.h>

#include "link/fabric.h"

namespace sidestep::link::layout {

// ---- atomics on plain shared words (the file is not C++ objects) ----
template <class T>
inline T load_relaxed(const T* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
template <class T>
inline T load_acquire(const T* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
template <class T>
inline void store_relaxed(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
template <class T>
inline void store_release(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
template <class T>
inline bool cas(T* p, T* expected, T desired) {
  return __atomic_compare_exchange_n(p, expected, desired, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}
inline void full_fence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline constexpr uint64_t kMagic = 0x5045545345444953ull;  // "SIDESTEP", little endian
// Bump whenever anything below changes meaning or place.
inline constexpr uint32_t kLayoutVersion = 5;  // 4: RegistryEntry.share_key; 5: Slot.doorbell_eventfd
inline constexpr size_t kPage = 4096;
inline constexpr size_t kCacheLine = 64;
inline constexpr uint32_t kRegistryEntries = 1024;
inline constexpr uint32_t kPorts = 65536;
inline constexpr size_t kCommandBytes = 192;

// OFD lock bytes (locks may lie anywhere; they do not touch the data there).
inline constexpr off_t kSlotLockBase = 0;                 // + slot
inline constexpr off_t kRegistryLockByte = kMaxStacks;    // listener registry mutations

inline constexpr size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

struct FileHeader {
  uint64_t magic;  // written last, with release, once the header is complete
  uint32_t layout_version;
  uint32_t max_stacks;
  uint32_t ring_bytes;
  uint32_t mtu;
  uint32_t slot_bytes;
  uint32_t registry_entries;
  uint32_t registry_entry_bytes;
  uint32_t ring_header_bytes;
  uint64_t total_bytes;
  uint64_t rings_offset;
  // Random, per creation of the file: part of the doorbell names, so the
  // stacks of a file that was removed and created again (generations restart)
  // can never collide with stragglers of the old one.
  uint64_t instance;
  // Registry scan bound: one past the highest entry ever used (only grows,
  // written under the registry lock, clamped by readers).
  alignas(64) uint32_t registry_high_water;
};
static_assert(sizeof(FileHeader) <= kPage);

// Counters mirrored from the owner's FabricCounters (same order).
inline constexpr size_t kCounterWords = sizeof(FabricCounters) / sizeof(uint64_t);
static_assert(sizeof(FabricCounters) == kCounterWords * sizeof(uint64_t));

enum SlotState : uint32_t { kSlotFree = 0, kSlotLive = 1 };

// One per stack. Lines are split by writer: the owner writes line 0 and the
// counters, producers write inbound_mask, both sides write armed.
struct Slot {
  // line 0: identity (owner, under the file flock)
  uint32_t generation;  // 24 bits, nonzero once claimed; bumped on each claim
  // kSlotLive from claim to clean release. A killed owner leaves it live: the
  // slot's OFD lock is the truth, state and generation are what producers
  // check without a syscall on every frame.
  uint32_t state;
  int32_t pid;
  // LinkAddr of a capture tool that wants a copy of every frame this slot
  // sends (0: none). Written by the tool, read by the owner on each send.
  uint32_t mirror;
  uint64_t start_time;  // /proc/<pid>/stat starttime, tells a recycled pid apart
  // Random per claim, part of the doorbell's name. Abstract socket names are
  // visible to every user (/proc/net/unix) and carry no permissions; a name
  // nobody can predict can't be taken in advance by another user to keep
  // our next stack from attaching.
  uint64_t doorbell_nonce;
  // The owner's doorbell eventfd, as a number in the owner's fd table (-1:
  // none): producers take their own reference with pidfd_getfd().
  int32_t doorbell_eventfd;
  uint8_t pad0[kCacheLine - 36];
  // line 1: need-wakeup flag (consumer sets, producer exchanges to 0)
  alignas(64) uint32_t armed;
  // line 2: bit p set = ring[p][this] has been used (producers OR, consumer reads)
  alignas(64) uint64_t inbound_mask;
  // lines 3..: owner's counters, for `sidestep stat`
  alignas(64) uint64_t counters[kCounterWords];
  alignas(64) char command[kCommandBytes];  // NUL-terminated argv summary
};
static_assert(sizeof(Slot) == 512);

enum EntryState : uint32_t { kEntryFree = 0, kEntryUsed = 1 };

// A listener registration. Written under the registry lock with a sequence
// counter (odd while being written) so lookups need no lock.
struct RegistryEntry {
  uint32_t seq;
  uint32_t state;
  uint32_t slot;
  uint32_t generation;
  uint8_t family;  // 4 or 6
  uint8_t v6only;
  uint16_t port;
  // 0: this registration owns (family, addr, port) alone. Nonzero: it shares
  // them with live registrations of the same key only (a cluster's workers,
  // see registry.h); lookups spread connections across them.
  uint32_t share_key;
  uint8_t addr[16];  // IPv4 in the first 4 bytes, rest zero
  uint8_t pad[kCacheLine - 40];
};
static_assert(sizeof(RegistryEntry) == 64);

// A ring's shared header: producer and consumer words on separate lines.
struct RingHeader {
  uint64_t tail;  // bytes ever produced (producer writes)
  uint8_t pad0[kCacheLine - 8];
  uint64_t head;  // bytes ever consumed (consumer writes)
  uint8_t pad1[kCacheLine - 8];
};
inline constexpr size_t kRingHeaderBytes = kPage;  // data starts page aligned

struct FrameHeader {
  uint32_t len;  // packet bytes, or kWrapMarker
  uint32_t src_gen;
  uint32_t dst_gen;
  uint32_t kind;  // FrameKind; for kCapture the low byte also names the original destination slot
};
static_assert(sizeof(FrameHeader) == 16);
inline constexpr uint32_t kWrapMarker = 0xffffffffu;
inline constexpr size_t kFrameAlign = 64;

inline constexpr size_t frame_bytes(size_t len) {
  return align_up(sizeof(FrameHeader) + len, kFrameAlign);
}

// Where everything is, for one (ring_bytes, mtu).
struct Geometry {
  uint32_t ring_bytes = 0;
  uint32_t mtu = 0;
  size_t slots_offset = 0;
  size_t registry_offset = 0;
  size_t ports_offset = 0;      // uint32_t[kPorts]: 0 free, else owner LinkAddr
  size_t rotors_offset = 0;     // uint32_t[kPorts]: lookup spreading counter
  size_t metadata_bytes = 0;    // everything before the rings
  size_t rings_offset = 0;
  size_t ring_stride = 0;       // header page + data
  size_t total_bytes = 0;

  static Geometry for_config(uint32_t ring_bytes, uint32_t mtu) {
    Geometry g;
    g.ring_bytes = ring_bytes;
    g.mtu = mtu;
    g.slots_offset = kPage;
    g.registry_offset = align_up(g.slots_offset + kMaxStacks * sizeof(Slot), kPage);
    g.ports_offset =
        align_up(g.registry_offset + kRegistryEntries * sizeof(RegistryEntry), kPage);
    g.rotors_offset = align_up(g.ports_offset + kPorts * sizeof(uint32_t), kPage);
    g.metadata_bytes = align_up(g.rotors_offset + kPorts * sizeof(uint32_t), kPage);
    g.rings_offset = g.metadata_bytes;
    g.ring_stride = kRingHeaderBytes + ring_bytes;
    g.total_bytes = g.rings_offset + size_t{kMaxStacks} * kMaxStacks * g.ring_stride;
    return g;
  }
  size_t ring_offset(uint32_t producer, uint32_t consumer) const {
    return rings_offset + (size_t{producer} * kMaxStacks + consumer) * ring_stride;
  }
};

}  // namespace sidestep::link::layout
