// Send arenas: see arena.h.
#include "link/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "link/layout.h"

namespace sidestep::link {

using layout::kPage;
using layout::load_acquire;
using layout::store_release;

namespace {

uint64_t segment_size(uint32_t slots, uint64_t slot_bytes) { return kPage + uint64_t(slots) * slot_bytes; }

std::string text(const char* what, int e) { return std::string(what) + ": " + std::strerror(e); }

}  // namespace

// ---- ours ----

SendArena::~SendArena() {
  const uint64_t bytes = segment_bytes();
  for (Segment& s : segments_)
    if (s.base) ::munmap(s.base, bytes);
}

uint64_t SendArena::segment_bytes() const { return segment_size(kArenaSlots, slot_bytes_); }

int SendArena::allocate(uint64_t consumed_head, SendSlot* out, int* new_segment_fd, uint32_t* new_segment,
                        std::string* why) {
  *new_segment_fd = -1;
  // Slots whose last frame the peer has consumed are free again.
  for (size_t k = 0; k < quarantine_.size();) {
    if (consumed_head - quarantine_[k].tail < (uint64_t(1) << 62)) {  // head >= tail, wrap-safe
      free_.push_back(quarantine_[k].cookie);
      quarantine_[k] = quarantine_.back();
      quarantine_.pop_back();
    } else {
      ++k;
    }
  }
  if (free_.empty()) {
    const uint64_t bytes = segment_bytes();
    int fd = ::memfd_create("sidestep-send", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
      int e = errno;
      *why = text("send arena memfd_create", e);
      return -e;
    }
    void* p = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) == 0)
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    // After our writable mapping: nobody may make another (the peer maps it
    // read-only), nor resize it.
    if (p == MAP_FAILED ||
        ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
      int e = errno;
      *why = text("send arena segment", e);
      if (p != MAP_FAILED) ::munmap(p, bytes);
      ::close(fd);
      return -e;
    }
    auto* base = static_cast<uint8_t*>(p);
    auto* h = reinterpret_cast<ArenaHeader*>(base);
    h->magic = kArenaMagic;
    h->slots = kArenaSlots;
    h->slot_bytes = slot_bytes_;
    h->total_bytes = bytes;
    const uint32_t index = static_cast<uint32_t>(segments_.size());
    segments_.push_back({base});
    for (uint32_t s = kArenaSlots; s-- > 0;) free_.push_back((uint64_t(index) << 32) | s);
    *new_segment_fd = fd;
    *new_segment = index;
  }
  const uint64_t cookie = free_.back();
  free_.pop_back();
  uint8_t* base = segments_[cookie >> 32].base;
  const uint32_t slot = static_cast<uint32_t>(cookie);
  out->ring = base + kPage + uint64_t(slot) * slot_bytes_;
  out->capacity = slot_bytes_;
  out->descriptor = reinterpret_cast<SlotDescriptor*>(base + sizeof(ArenaHeader)) + slot;
  out->cookie = cookie;
  out->stagger = uint32_t(((cookie >> 32) * kArenaSlots + slot) * (kPage + 64) % (256 * 1024));
  ++in_use_;
  return 0;
}

void SendArena::release(uint64_t cookie, uint64_t tail) {
  const uint64_t segment = cookie >> 32;
  const uint32_t slot = static_cast<uint32_t>(cookie);
  if (segment >= segments_.size() || slot >= kArenaSlots) return;
  auto* d = reinterpret_cast<SlotDescriptor*>(segments_[segment].base + sizeof(ArenaHeader)) + slot;
  const uint32_t g = load_acquire(&d->generation);
  if (g & 1) store_release(&d->generation, g + 1);  // even: not in use
  quarantine_.push_back({cookie, tail});
  if (in_use_ > 0) --in_use_;
}

bool SendArena::locate(const uint8_t* p, size_t n, SlotRef* out) const {
  for (size_t s = 0; s < segments_.size(); ++s) {
    const uint8_t* first = segments_[s].base + kPage;
    const uint8_t* end = first + uint64_t(kArenaSlots) * slot_bytes_;
    if (p < first || p >= end) continue;
    const uint64_t at = static_cast<uint64_t>(p - first);
    const uint64_t slot = at / slot_bytes_;
    const uint64_t offset = at % slot_bytes_;
    if (n > slot_bytes_) return false;
    out->segment = static_cast<uint32_t>(s);
    out->slot = static_cast<uint32_t>(slot);
    out->offset = static_cast<uint32_t>(offset);
    out->len = static_cast<uint32_t>(n);
    return true;
  }
  return false;
}

// ---- the peer's ----

PeerArena::~PeerArena() {
  for (Segment& s : segments_)
    if (s.base) ::munmap(s.base, s.bytes);
}

int PeerArena::adopt(uint32_t index, int fd, uint32_t slots, uint64_t slot_bytes, uint64_t bytes, std::string* why) {
  auto fail = [&](const std::string& w, int e) {
    *why = "peer arena segment " + std::to_string(index) + ": " + w;
    ::close(fd);
    return -e;
  };
  if (index > 4096 || has(index)) return fail("an index out of order", EPROTO);
  if (slots != kArenaSlots || slot_bytes < kPage || slot_bytes > (uint64_t(1) << 30) ||
      (slot_bytes & (slot_bytes - 1)) || bytes != segment_size(slots, slot_bytes))
    return fail("a shape out of bounds", EPROTO);
  struct stat st;
  const int seals = ::fcntl(fd, F_GET_SEALS);
  const unsigned need = F_SEAL_SHRINK | F_SEAL_GROW;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || seals < 0 || (static_cast<unsigned>(seals) & need) != need ||
      static_cast<uint64_t>(st.st_size) != bytes)
    return fail("not a memfd of that size sealed against shrinking and growing", EPROTO);
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) return fail(text("mmap", errno), errno);
  ::close(fd);
  if (segments_.size() <= index) segments_.resize(index + 1);
  segments_[index] = {static_cast<uint8_t*>(p), bytes, slots, slot_bytes};
  return 0;
}

bool PeerArena::resolve(const SlotRef& ref, Pieces* out) const {
  if (!has(ref.segment)) return false;
  const Segment& s = segments_[ref.segment];
  if (ref.slot >= s.slots || ref.offset >= s.slot_bytes || ref.len > s.slot_bytes) return false;
  const uint8_t* ring = s.base + kPage + uint64_t(ref.slot) * s.slot_bytes;
  const uint64_t first = std::min<uint64_t>(ref.len, s.slot_bytes - ref.offset);
  *out = Pieces{};
  out->data[0] = ring + ref.offset;
  out->len[0] = first;
  if (first < ref.len) {
    out->data[1] = ring;
    out->len[1] = ref.len - first;
  }
  return true;
}

std::vector<PeerArena::Live> PeerArena::live() const {
  std::vector<Live> out;
  for (const Segment& s : segments_) {
    if (!s.base) continue;
    const auto* d = reinterpret_cast<const SlotDescriptor*>(s.base + sizeof(ArenaHeader));
    for (uint32_t k = 0; k < s.slots; ++k) {
      Live l;
      std::memcpy(&l.descriptor, &d[k], sizeof l.descriptor);
      if (!(l.descriptor.generation & 1)) continue;
      l.ring = s.base + kPage + uint64_t(k) * s.slot_bytes;
      l.capacity = s.slot_bytes;
      out.push_back(l);
    }
  }
  return out;
}

const SlotDescriptor* PeerArena::descriptor(uint32_t segment, uint32_t slot) const {
  if (segment >= segments_.size() || !segments_[segment].base || slot >= segments_[segment].slots) return nullptr;
  return reinterpret_cast<const SlotDescriptor*>(segments_[segment].base + sizeof(ArenaHeader)) + slot;
}

bool PeerArena::written_end(uint8_t family, const uint8_t local[16], uint16_t local_port, const uint8_t remote[16],
                            uint16_t remote_port, uint32_t* out) const {
  const uint32_t key = uint32_t(local_port) << 16 | remote_port;
  // Whether the slot at `at` is in use for this connection; a copy of its
  // descriptor, as the peer may rewrite it.
  auto names = [&](uint32_t at, SlotDescriptor* c) {
    const SlotDescriptor* d = descriptor(at >> 8, at & 0xff);
    if (!d) return false;
    std::memcpy(c, d, sizeof *c);
    return (c->generation & 1) && c->family == family && c->local_port == local_port &&
           c->remote_port == remote_port && std::memcmp(c->local, local, 16) == 0 &&
           std::memcmp(c->remote, remote, 16) == 0;
  };
  SlotDescriptor c;
  auto it = where_.find(key);
  if (it == where_.end() || !names(it->second, &c)) {
    // One pass over every slot: index those in use (entries of connections
    // gone are overwritten as their ports come back, and dropped past a few
    // times the slots) and look for ours among them (two connections with
    // the same ports and other addresses share a key).
    size_t slots = 0;
    for (const Segment& seg : segments_) slots += seg.slots;
    if (where_.size() > 4 * slots + 64) where_.clear();
    bool found = false;
    for (uint32_t seg = 0; seg < segments_.size(); ++seg) {
      for (uint32_t k = 0; k < segments_[seg].slots && k < kArenaSlots; ++k) {
        SlotDescriptor e{};  // (stays zero for a segment not mapped)
        if (names(seg << 8 | k, &e) && !found) {
          c = e;
          found = true;
        }
        if (e.generation & 1) where_[uint32_t(e.local_port) << 16 | e.remote_port] = seg << 8 | k;
      }
    }
    if (!found) return false;
  }
  *out = c.written_end;
  return true;
}

}  // namespace sidestep::link
