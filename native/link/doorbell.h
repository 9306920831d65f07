// Doorbells: how a producer wakes a consumer sleeping in its event loop.
//
// Each slot's owner has an eventfd, which is what its event loop polls. A
// producer gets its own reference to a peer's eventfd once per peer claim,
// with pidfd_getfd() (the owner publishes the fd number in its slot), and
// rings it with one 8-byte write(): cheaper than a datagram, and the
// consumer's drain is one read(). Measured here in C, a ping-pong of two
// processes sleeping in epoll: 17-19 us per round trip with eventfds against
// 21-25 us with unix datagrams.
//
// Where pidfd_getfd() is not allowed (ptrace restrictions, seccomp, kernels
// before 5.6) producers fall back to the datagram socket below, which every
// owner also binds and polls:
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
  // The eventfd (what a producer normally rings).
  int fd() const { return event_fd_; }
  // The datagram socket (the fallback).
  int fallback_fd() const { return rx_fd_; }
  // Resets the eventfd; returns whether it had been rung.
  bool drain();
  // Reads every pending datagram; returns how many there were.
  size_t drain_fallback();
  // Rings an eventfd obtained from a peer. Returns 0 or a negative errno.
  static int ring_eventfd(int fd);
  // Rings the datagram doorbell of (slot, generation) of the same fabric.
  // Returns 0, or a negative errno when the bell is gone (peer exited).
  int ring(uint32_t slot, uint32_t generation, uint64_t nonce);

 private:
  std::string fabric_;
  uint64_t instance_ = 0;
  int event_fd_ = -1;
  int rx_fd_ = -1;
  int tx_fd_ = -1;
};

}  // namespace sidestep::link
