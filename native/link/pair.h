// A pair region: the memory that carries packets between two stacks, mapped
// by those two processes only. The creator (the connecting side) makes it
// as a memfd, sealed against shrinking and growing (a peer can't truncate it
// under the other: no SIGBUS), and passes it over the control channel; the
// acceptor checks the seals, the size and the header before mapping it. It
// lives in memory (and the cgroup), not in a tmpfs of limited size, and goes
// when both have unmapped it, however they ended. See layout.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "link/layout.h"
#include "link/ring.h"

namespace sidestep::link {

class PairRegion {
 public:
  PairRegion() = default;
  PairRegion(const PairRegion&) = delete;
  PairRegion& operator=(const PairRegion&) = delete;
  ~PairRegion();

  // The creator's side: a new region of this shape. Returns 0 or a negative
  // errno, with *why.
  int create(uint32_t ring_bytes, uint32_t mtu, std::string* why);
  // The acceptor's side: map the memfd a peer sent (we own `fd` from here
  // on, closed on failure too). `ring_bytes`, `mtu` and `bytes` are what
  // its Hello says; the region must agree with them and with layout.h.
  int adopt(int fd, uint32_t ring_bytes, uint32_t mtu, uint64_t bytes, std::string* why);
  // An in-process region (a stack's loopback to itself): private memory.
  int create_private(uint32_t ring_bytes, uint32_t mtu, std::string* why);

  // The memfd, to send to the acceptor (creator's side), or -1.
  int fd() const { return fd_; }
  // Once sent, the memfd itself is no longer needed: the mapping holds it.
  void close_fd();
  const layout::Geometry& geometry() const { return geo_; }
  // Ring 0 carries creator -> acceptor, ring 1 acceptor -> creator.
  RingView ring(int index) const;

 private:
  void unmap();
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  layout::Geometry geo_;
};

}  // namespace sidestep::link
