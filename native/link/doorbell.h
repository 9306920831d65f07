// Doorbells: how a producer wakes a consumer sleeping in its event loop.
//
// Each stack owns one eventfd, which is what its event loop polls; it passes
// that fd to every peer it pairs with (SCM_RIGHTS over the pair's control
// channel, see control.h), so a producer rings with one 8-byte write() and
// the consumer resets with one read(). No ptrace rights are needed to get a
// peer's fd (no pidfd_getfd), so seccomp profiles and Yama don't matter.
// Measured here in C, a ping-pong of two processes sleeping in epoll: 17-19
// us per round trip with eventfds against 21-25 us with unix datagrams.
// Rung only when the consumer armed its need-wakeup flag (see fabric.cc).
#pragma once

namespace sidestep::link {

class Doorbell {
 public:
  Doorbell() = default;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;
  ~Doorbell();

  // Creates the eventfd. Negative errno on failure.
  int open();
  void close();
  int fd() const { return fd_; }
  // Resets the eventfd; returns whether it had been rung.
  bool drain();
  // Rings a peer's eventfd (ours, from SCM_RIGHTS). Never blocks: a counter
  // a hostile peer pushed to its limit (EAGAIN) already means "awake".
  // Returns 0 or a negative errno.
  static int ring(int fd);
  // Whether `fd` is an eventfd: a peer's doorbell must be one before we
  // ever write to it.
  static bool is_eventfd(int fd);

 private:
  int fd_ = -1;
};

}  // namespace sidestep::link
