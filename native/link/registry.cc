// Listener registry and port table: see registry.h.
#include "link/registry.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace sidestep::link {

using layout::kEntryFree;
using layout::kEntryUsed;
using layout::kRegistryEntries;
using layout::RegistryEntry;

namespace {

// A writer killed between its two sequence stores leaves the counter odd for
// good; readers give up on such an entry after this many tries (the next
// writer repairs it).
constexpr int kReadTries = 64;
constexpr size_t kMaxCandidates = 64;

bool unspecified(const uint8_t addr[16]) {
  for (int i = 0; i < 16; ++i)
    if (addr[i]) return false;
  return true;
}

void normalise(uint8_t family, const uint8_t in[16], uint8_t out[16]) {
  std::memset(out, 0, 16);
  std::memcpy(out, in, family == 4 ? 4 : 16);
}

uint64_t random_u64() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v)) {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    v = (uint64_t(ts.tv_nsec) << 20) ^ uint64_t(ts.tv_sec) ^ (uint64_t(::getpid()) << 40);
  }
  return v;
}

// splitmix64: where an ephemeral port search starts (see PortTable).
uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

// ---- registry ----

bool Registry::lock(bool wait) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = layout::kRegistryLockByte;
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd_, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    return false;
  }
}

void Registry::unlock() {
  struct flock fl = {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = layout::kRegistryLockByte;
  fl.l_len = 1;
  ::fcntl(fd_, F_OFD_SETLK, &fl);
}

uint32_t Registry::high_water() const {
  uint32_t hw = layout::load_acquire(&header_->registry_high_water);
  return hw > kRegistryEntries ? kRegistryEntries : hw;
}

bool Registry::read(uint32_t i, Snapshot* s) const {
  const RegistryEntry& e = entries_[i];
  for (int tries = 0; tries < kReadTries; ++tries) {
    uint32_t seq1 = layout::load_acquire(&e.seq);
    if (seq1 & 1) continue;
    s->state = layout::load_relaxed(&e.state);
    s->slot = layout::load_relaxed(&e.slot);
    s->generation = layout::load_relaxed(&e.generation);
    s->family = layout::load_relaxed(&e.family);
    s->v6only = layout::load_relaxed(&e.v6only);
    s->port = layout::load_relaxed(&e.port);
    s->share_key = layout::load_relaxed(&e.share_key);
    for (int k = 0; k < 16; ++k) s->addr[k] = layout::load_relaxed(&e.addr[k]);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (layout::load_relaxed(&e.seq) == seq1) return true;
  }
  return false;
}

// Under the registry lock.
void Registry::write_entry(uint32_t i, const Snapshot& s) {
  RegistryEntry& e = entries_[i];
  uint32_t seq = layout::load_relaxed(&e.seq);
  if (seq & 1) ++seq;  // a writer died mid-update: this write repairs it
  layout::store_relaxed(&e.seq, seq + 1);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  layout::store_relaxed(&e.state, s.state);
  layout::store_relaxed(&e.slot, s.slot);
  layout::store_relaxed(&e.generation, s.generation);
  layout::store_relaxed(&e.family, s.family);
  layout::store_relaxed(&e.v6only, s.v6only);
  layout::store_relaxed(&e.port, s.port);
  layout::store_relaxed(&e.share_key, s.share_key);
  for (int k = 0; k < 16; ++k) layout::store_relaxed(&e.addr[k], s.addr[k]);
  layout::store_release(&e.seq, seq + 2);
}

void Registry::free_entry(uint32_t i) {
  Snapshot s = {};
  s.state = kEntryFree;
  write_entry(i, s);
}

bool Registry::conflicts(uint8_t family, const uint8_t addr[16], uint16_t port,
                         uint32_t share_key) {
  const uint32_t hw = high_water();
  for (uint32_t i = 0; i < hw; ++i) {
    Snapshot cur;
    if (!read(i, &cur) || cur.state != kEntryUsed || cur.port != port || cur.family != family ||
        std::memcmp(cur.addr, addr, 16) != 0 || cur.slot >= kMaxStacks)
      continue;
    if (share_key != 0 && cur.share_key == share_key) continue;
    // An overlap: it counts only while its owner lives (a syscall, but only
    // for an overlapping entry, on the listen path).
    const LinkAddr a = make_addr(cur.slot, cur.generation);
    if (!live_->may_be_alive(a) || !live_->alive(a)) {
      free_entry(i);
      continue;
    }
    return true;
  }
  return false;
}

int Registry::add(LinkAddr owner, uint8_t family, const uint8_t addr[16], uint16_t port,
                  bool v6only, uint32_t share_key) {
  if (family != 4 && family != 6) return -EAFNOSUPPORT;
  if (!lock(true)) return -errno;
  uint8_t key_addr[16];
  normalise(family, addr, key_addr);
  if (conflicts(family, key_addr, port, share_key)) {
    unlock();
    return -EADDRINUSE;
  }
  int found = -ENOSPC;
  // First pass: free entries. Second: entries of dead owners (a syscall each).
  for (uint32_t n = 0; n < 2 * kRegistryEntries && found < 0; ++n) {
    const uint32_t i = n % kRegistryEntries;
    const bool check_alive = n >= kRegistryEntries;
    Snapshot cur;
    bool ok = read(i, &cur);  // under the lock only a dead writer makes this fail
    bool reusable = !ok || cur.state != kEntryUsed || cur.slot >= kMaxStacks ||
                    !live_->may_be_alive(make_addr(cur.slot, cur.generation)) ||
                    (check_alive && !live_->alive(make_addr(cur.slot, cur.generation)));
    if (!reusable) continue;
    Snapshot s = {};
    s.state = kEntryUsed;
    s.slot = slot_of(owner);
    s.generation = generation_of(owner);
    s.family = family;
    s.v6only = (family == 6 && v6only) ? 1 : 0;
    s.port = port;
    s.share_key = share_key;
    std::memcpy(s.addr, key_addr, 16);
    write_entry(i, s);
    // Readers scan [0, high water). A scribbled value is clamped to the
    // whole table (slower lookups, never missed entries).
    uint32_t hw = high_water();
    if (hw < i + 1) hw = i + 1;
    layout::store_release(&header_->registry_high_water, hw);
    found = static_cast<int>(i);
  }
  unlock();
  return found;
}

void Registry::remove(LinkAddr owner, int entry) {
  if (entry < 0 || static_cast<uint32_t>(entry) >= kRegistryEntries) return;
  if (!lock(true)) return;
  Snapshot cur;
  if (read(entry, &cur) && cur.state == kEntryUsed && cur.slot == slot_of(owner) &&
      cur.generation == generation_of(owner))
    free_entry(entry);
  unlock();
}

void Registry::release_slot(uint32_t slot, LinkAddr keep) {
  if (!lock(true)) return;
  for (uint32_t i = 0; i < kRegistryEntries; ++i) {
    Snapshot cur;
    if (!read(i, &cur)) {
      free_entry(i);  // half-written by a writer that died
      continue;
    }
    if (cur.state == kEntryUsed && cur.slot == slot && make_addr(cur.slot, cur.generation) != keep)
      free_entry(i);
  }
  unlock();
}

// Called without the lock; never blocks: if someone else holds the lock, the
// entry is left for a later lookup.
void Registry::try_free_dead(uint32_t i, const Snapshot& seen) {
  if (!lock(false)) return;
  Snapshot cur;
  if (read(i, &cur) && cur.state == kEntryUsed && cur.slot == seen.slot &&
      cur.generation == seen.generation && !live_->alive(make_addr(cur.slot, cur.generation)))
    free_entry(i);
  unlock();
}

int Registry::lookup(uint8_t family, const uint8_t addr_in[16], uint16_t port, LinkAddr* out) {
  if (family != 4 && family != 6) return -ENOENT;
  uint8_t addr[16];
  normalise(family, addr_in, addr);
  // Ranks: 0 exact address, 1 wildcard of the family, 2 "::" taking IPv4.
  struct Candidate {
    uint32_t index;
    Snapshot s;
  };
  Candidate cands[3][kMaxCandidates];
  size_t counts[3] = {0, 0, 0};
  const uint32_t hw = high_water();
  for (uint32_t i = 0; i < hw; ++i) {
    // Cheap pre-filter on the port before taking a consistent snapshot.
    if (layout::load_relaxed(&entries_[i].port) != port ||
        layout::load_relaxed(&entries_[i].state) != kEntryUsed)
      continue;
    Snapshot s;
    if (!read(i, &s) || s.state != kEntryUsed || s.port != port) continue;
    if (s.slot >= kMaxStacks || s.generation == 0 || (s.family != 4 && s.family != 6)) continue;
    int rank;
    if (s.family == family) {
      if (unspecified(s.addr))
        rank = 1;
      else if (std::memcmp(s.addr, addr, 16) == 0)
        rank = 0;
      else
        continue;
    } else if (family == 4 && s.family == 6 && !s.v6only && unspecified(s.addr)) {
      rank = 2;
    } else {
      continue;
    }
    if (counts[rank] < kMaxCandidates) cands[rank][counts[rank]++] = {i, s};
  }
  for (int rank = 0; rank < 3; ++rank) {
    while (counts[rank] > 0) {
      uint32_t turn = __atomic_fetch_add(&rotors_[port], 1u, __ATOMIC_RELAXED);
      size_t k = turn % counts[rank];
      const Candidate& c = cands[rank][k];
      LinkAddr a = make_addr(c.s.slot, c.s.generation);
      if (live_->alive(a)) {
        *out = a;
        return 0;
      }
      try_free_dead(c.index, c.s);
      cands[rank][k] = cands[rank][--counts[rank]];
    }
  }
  return -ENOENT;
}

// ---- ports ----

PortTable::PortTable(uint32_t* owners, const Liveness* live)
    : owners_(owners), live_(live), search_state_(random_u64()) {}

bool PortTable::take(uint16_t port, LinkAddr self, bool check_alive) {
  uint32_t* w = &owners_[port];
  uint32_t v = layout::load_acquire(w);
  for (int tries = 0; tries < 8; ++tries) {
    if (v == self) return false;
    if (v != 0) {
      if (live_->may_be_alive(v) && (!check_alive || live_->alive(v))) return false;
    }
    if (layout::cas(w, &v, self)) return true;
    // v now holds the competing value: judge it again.
  }
  return false;
}

int PortTable::claim(LinkAddr self, uint16_t want) {
  if (want != 0) return take(want, self, true) ? want : -EADDRINUSE;
  const uint32_t range = kEphemeralLast - kEphemeralFirst + 1;
  const uint32_t start = static_cast<uint32_t>(splitmix64(&search_state_) % range);
  // First pass without syscalls: free ports and ports of re-claimed slots.
  // Only when the range is exhausted, ask the kernel who is really alive.
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t k = 0; k < range; ++k) {
      uint16_t port = static_cast<uint16_t>(kEphemeralFirst + (start + k) % range);
      if (take(port, self, pass == 1)) return port;
    }
  }
  return -EADDRNOTAVAIL;
}

void PortTable::release(LinkAddr self, uint16_t port) {
  uint32_t expected = self;
  layout::cas(&owners_[port], &expected, 0u);
}

void PortTable::release_slot(uint32_t slot, LinkAddr keep) {
  for (uint32_t p = 1; p < layout::kPorts; ++p) {
    uint32_t v = layout::load_relaxed(&owners_[p]);
    if (v != 0 && slot_of(v) == slot && v != keep) layout::cas(&owners_[p], &v, 0u);
  }
}

}  // namespace sidestep::link
