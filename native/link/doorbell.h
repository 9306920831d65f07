// Doorbells: how a producer wakes a consumer sleeping in its event loop.
//
// Each slot's owner binds an abstract-namespace unix datagram socket named
// "\0sidestep/<fabric>/<instance>/<slot>/<generation>/<nonce>" (abstract: no
// file to leak, gone with the process; the generation keeps a new owner of
// the slot apart from any straggler; the nonce, random per claim and kept in
// the 0600 fabric file, keeps other users from binding the name first).
// Other users can still send to a live doorbell (abstract sockets have no
// permissions): that costs the owner a spurious wake-up, never a wrong result. Its fd is what libuv polls. Ringing is one sendto() of one
// byte from an unbound datagram socket; a full receive queue (EAGAIN) means
// a wakeup is already pending, which is all a doorbell has to say.
// Abstract names live in the network namespace: stacks sharing a fabric must
// share one.
#pragma once

#include <cstdint>
#include <string>

namespace sidestep::link {

class Doorbell {
 public:
  Doorbell() = default;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;
  ~Doorbell();

  // Binds the receiving socket for (fabric, slot, generation) and opens the
  // sending one. Negative errno and *why on failure.
  int open(const std::string& fabric, uint64_t instance, uint32_t slot, uint32_t generation,
           uint64_t nonce, std::string* why);
  void close();
  int fd() const { return rx_fd_; }
  // Reads every pending datagram; returns how many there were.
  size_t drain();
  // Rings the doorbell of (slot, generation) of the same fabric.
  // Returns 0, or a negative errno when the bell is gone (peer exited).
  int ring(uint32_t slot, uint32_t generation, uint64_t nonce);

 private:
  std::string fabric_;
  uint64_t instance_ = 0;
  int rx_fd_ = -1;
  int tx_fd_ = -1;
};

}  // namespace sidestep::link
