// Send arenas: where a stack keeps its connections' unacknowledged bytes, in
// memory its peer can read but not write (issue 14).
//
// Each side of a pair owns one arena for the bytes it sends: segments, each a
// memfd it creates, maps read-write, then seals against shrinking, growing
// and any further writable mapping (F_SEAL_FUTURE_WRITE) before passing it to
// the peer, which can map it read-only only. A segment holds kSlots slots;
// a connection's send buffer is one slot's ring, the byte with sequence
// number s at (s - seq_base) % slot_bytes, and its descriptor says whose
// connection it is, where its bytes start and end, and how far our
// application read the peer's stream. So:
//  - data frames carry a reference (segment, slot, offset, length) instead of
//    the bytes, and the receiver copies once, straight from our memory into
//    its read buffer;
//  - when we vanish (SIGKILL, OOM, exit), the peer still maps everything it
//    needs to finish each stream, as Linux finishes the streams of a process
//    that died (see the runtime's orphans).
// Bytes are never moved: a slot is reused only after the peer consumed every
// frame that could name it (its position in our transmit ring was passed).
//
//   segment:  page 0  ArenaHeader, SlotDescriptor[kSlots]
//             page 1  slot 0's ring (slot_bytes), slot 1's ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace sidestep::link {

inline constexpr uint32_t kArenaSlots = 16;
inline constexpr uint32_t kArenaMagic = 0x414e4552;  // "RENA"

struct ArenaHeader {
  uint32_t magic;
  uint32_t slots;
  uint64_t slot_bytes;
  uint64_t total_bytes;
};

// One connection's, written by the owner only. `generation` is odd while the
// slot is in use.
struct SlotDescriptor {
  uint32_t generation;
  uint8_t family;  // 4 or 6
  uint8_t pad0;
  uint16_t local_port, remote_port;  // the owner's view of the connection
  uint8_t pad1[2];
  uint8_t local[16], remote[16];
  uint32_t seq_base;     // sequence number of the byte at offset 0
  uint32_t written_end;  // sequence number after the last byte written (release)
  uint32_t consumed;     // how far the owner's application read the peer's stream
  // The part of the slot's ring in use (a power of two): bytes live at
  // (s - seq_base) % ring_bytes (stack::SendMemory).
  uint32_t ring_bytes;
  // The first byte the ring holds: those before it left in frames only (a
  // connection's small writes stay in the owner's own memory until it needs
  // the ring; stack::SendBuffer::lend).
  uint32_t ring_from;
};
static_assert(sizeof(SlotDescriptor) == 64);

// A byte range of a peer's slot, as a frame names it.
struct SlotRef {
  uint32_t segment = 0, slot = 0, offset = 0, len = 0;
};

// Up to two pieces of memory (a ring that wraps).
struct Pieces {
  const uint8_t* data[2] = {nullptr, nullptr};
  size_t len[2] = {0, 0};
};

// A connection's slot, as the owner uses it.
struct SendSlot {
  uint8_t* ring = nullptr;
  size_t capacity = 0;
  SlotDescriptor* descriptor = nullptr;
  uint64_t cookie = 0;  // (segment << 32) | slot
  // Where the connection's bytes start whenever it has none in flight.
  // Slots lie a power of two apart, so their first bytes would share one
  // cache set: 50 request/response connections, each writing its next
  // message at its slot's start, took a miss per copy on both sides.
  // Staggered by a page and a line per slot, they don't.
  uint32_t stagger = 0;
};

// Our arena (what we send on one pair).
class SendArena {
 public:
  explicit SendArena(uint64_t slot_bytes = 8u << 20) : slot_bytes_(slot_bytes) {}
  ~SendArena();
  SendArena(const SendArena&) = delete;
  SendArena& operator=(const SendArena&) = delete;

  // A slot for a new connection. `consumed_head`: how far the peer has
  // consumed our transmit ring (slots released before that are free again).
  // *new_segment_fd >= 0 when a segment had to be made: the caller passes
  // it to the peer (with its index, *new_segment) before any frame names it,
  // then closes it. Returns 0 or a negative errno (*why).
  int allocate(uint64_t consumed_head, SendSlot* out, int* new_segment_fd, uint32_t* new_segment,
               std::string* why);
  // The connection is gone; its slot may be reused once the peer consumed
  // our transmit ring up to `tail` (no frame naming it is left there).
  void release(uint64_t cookie, uint64_t tail);
  // Whether [p, p + n) lies in slot `cookie`'s ring: the reference for it.
  bool locate(const uint8_t* p, size_t n, SlotRef* out) const;
  uint64_t slot_bytes() const { return slot_bytes_; }
  size_t segments() const { return segments_.size(); }
  // Slots allocated and not yet released (connections still pointing here).
  size_t in_use() const { return in_use_; }
  uint64_t segment_bytes() const;

 private:
  struct Segment {
    uint8_t* base = nullptr;
  };
  struct Quarantined {
    uint64_t cookie;
    uint64_t tail;
  };
  uint64_t slot_bytes_;
  std::vector<Segment> segments_;
  std::vector<uint64_t> free_;  // cookies, last released on top (its pages are warm)
  std::vector<Quarantined> quarantine_;
  size_t in_use_ = 0;
};

// The peer's arena, mapped read-only: frames' references resolve here, and
// a dead peer's descriptors say what it still owed.
class PeerArena {
 public:
  PeerArena() = default;
  ~PeerArena();
  PeerArena(const PeerArena&) = delete;
  PeerArena& operator=(const PeerArena&) = delete;

  // Map segment `index` (the peer's fd, ours to close; the header must agree
  // with slots and slot_bytes). 0 or a negative errno (*why).
  int adopt(uint32_t index, int fd, uint32_t slots, uint64_t slot_bytes, uint64_t bytes, std::string* why);
  bool has(uint32_t index) const { return index < segments_.size() && segments_[index].base; }
  // The bytes a reference names, or false if it names nothing of ours to read.
  bool resolve(const SlotRef& ref, Pieces* out) const;
  // Every slot the peer had in use, with its ring (for finishing its streams).
  struct Live {
    SlotDescriptor descriptor;  // a copy: the peer can't change it under us
    const uint8_t* ring;
    uint64_t capacity;
  };
  std::vector<Live> live() const;
  // How far the peer has written the stream of its connection (owner's view:
  // family, local address and port, remote address and port), if a slot in
  // use names it. Untrusted, as everything here.
  bool written_end(uint8_t family, const uint8_t local[16], uint16_t local_port, const uint8_t remote[16],
                   uint16_t remote_port, uint32_t* out) const;

 private:
  struct Segment {
    uint8_t* base = nullptr;
    uint64_t bytes = 0;
    uint32_t slots = 0;
    uint64_t slot_bytes = 0;
  };
  std::vector<Segment> segments_;
  // Where written_end() last found each connection (its ports -> segment
  // << 8 | slot), rebuilt from a scan when an entry no longer names it: a
  // close asks once per connection, and a scan per close cost O(slots).
  mutable std::unordered_map<uint32_t, uint32_t> where_;
  const SlotDescriptor* descriptor(uint32_t segment, uint32_t slot) const;
};

}  // namespace sidestep::link
