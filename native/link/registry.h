// The listener registry and the port table of the fabric file.
//
// Registry: (family, address, port) -> (slot, generation) entries. Mutations
// take an OFD write lock on a dedicated byte of the file (listen/unlisten
// only, never the data path); lookups are lock-free, reading each entry under
// its sequence counter. Entries of dead owners are skipped and freed lazily.
//
// Sharing (SO_REUSEPORT style): a registration with share key 0 is exclusive;
// one with a nonzero key may sit beside live registrations of the same
// (family, address, port) that carry the same key, and lookups rotate across
// them (a fabric-wide counter per port), so connections are spread. Any other
// overlap is -EADDRINUSE. The shim gives a cluster's workers their primary's
// pid as the key (shim/node/cluster.ts) and listeners bound with SO_REUSEPORT
// one key of their own (0x80000000); the kernel has already refused any other
// second listener, so the registry's check only keeps a stray or stale
// registration from stealing connections.
//
// Port table: one word per port, 0 = free, else the owner's LinkAddr (whose
// generation is never 0). Claims are a CAS; the full LinkAddr, not just the
// slot, is stored so that reclaiming a dead owner's port cannot steal it from
// a new owner of the same slot (ABA).
#pragma once

#include <cstddef>
#include <cstdint>

#include "link/fabric.h"
#include "link/layout.h"

namespace sidestep::link {

// Who is alive, as the fabric sees it.
class Liveness {
 public:
  // Cheap, no syscall: false when the slot's generation moved on.
  virtual bool may_be_alive(LinkAddr a) const = 0;
  // Authoritative (may make a syscall).
  virtual bool alive(LinkAddr a) const = 0;

 protected:
  ~Liveness() = default;
};

inline LinkAddr make_addr(uint32_t slot, uint32_t generation) {
  return (generation << 8) | (slot & 0xff);
}
inline uint32_t generation_of(LinkAddr a) { return a >> 8; }

class Registry {
 public:
  Registry(layout::FileHeader* header, layout::RegistryEntry* entries, uint32_t* rotors, int fd,
           const Liveness* live)
      : header_(header), entries_(entries), rotors_(rotors), fd_(fd), live_(live) {}

  // Returns the entry, -EADDRINUSE when a live registration of the same
  // (family, addr, port) is exclusive or has another share key, -ENOSPC.
  int add(LinkAddr owner, uint8_t family, const uint8_t addr[16], uint16_t port, bool v6only,
          uint32_t share_key = 0);
  void remove(LinkAddr owner, int entry);
  int lookup(uint8_t family, const uint8_t addr[16], uint16_t port, LinkAddr* out);
  // Frees every entry of `slot` whose owner is not `keep` (a slot's previous
  // owners on claim; pass keep = 0 to free all of the slot's entries).
  void release_slot(uint32_t slot, LinkAddr keep);

 private:
  struct Snapshot {
    uint32_t state, slot, generation;
    uint8_t family, v6only;
    uint16_t port;
    uint32_t share_key;
    uint8_t addr[16];
  };
  bool read(uint32_t i, Snapshot* s) const;
  void write_entry(uint32_t i, const Snapshot& s);
  void free_entry(uint32_t i);
  bool lock(bool wait);
  void unlock();
  uint32_t high_water() const;
  void try_free_dead(uint32_t i, const Snapshot& seen);
  // Under the lock: whether a live entry forbids adding this registration.
  bool conflicts(uint8_t family, const uint8_t addr[16], uint16_t port, uint32_t share_key);

  layout::FileHeader* header_;
  layout::RegistryEntry* entries_;
  uint32_t* rotors_;
  int fd_;
  const Liveness* live_;
};

class PortTable {
 public:
  PortTable(uint32_t* owners, const Liveness* live);

  int claim(LinkAddr self, uint16_t want);
  void release(LinkAddr self, uint16_t port);
  // Frees every port of `slot` whose owner is not `keep`.
  void release_slot(uint32_t slot, LinkAddr keep);

  static constexpr uint16_t kEphemeralFirst = 32768;
  static constexpr uint16_t kEphemeralLast = 60999;

 private:
  bool take(uint16_t port, LinkAddr self, bool check_alive);

  uint32_t* owners_;
  const Liveness* live_;
  // Seeded from getrandom once: a syscall per connect cost more than the
  // rest of the claim. Spreading the search is all it is for (a port is
  // taken by CAS, whoever else guesses the same start).
  uint64_t search_state_;
};

}  // namespace sidestep::link
