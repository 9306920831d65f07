// Doorbells over abstract unix datagram sockets: see doorbell.h.
#include "link/doorbell.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace sidestep::link {

namespace {

socklen_t bell_address(const std::string& fabric, uint64_t instance, uint32_t slot,
                       uint32_t generation, uint64_t nonce, sockaddr_un* sa) {
  std::memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  // sun_path[0] stays 0: abstract namespace. The name is not NUL-terminated;
  // its length is carried by the address length.
  int n = std::snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1,
                        "sidestep/%s/%016llx/%u/%u/%016llx", fabric.c_str(),
                        static_cast<unsigned long long>(instance), slot, generation,
                        static_cast<unsigned long long>(nonce));
  if (n < 0 || static_cast<size_t>(n) >= sizeof(sa->sun_path) - 1) return 0;
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

}  // namespace

Doorbell::~Doorbell() { close(); }

void Doorbell::close() {
  if (event_fd_ >= 0) ::close(event_fd_);
  if (rx_fd_ >= 0) ::close(rx_fd_);
  if (tx_fd_ >= 0) ::close(tx_fd_);
  event_fd_ = rx_fd_ = tx_fd_ = -1;
}

int Doorbell::open(const std::string& fabric, uint64_t instance, uint32_t slot,
                   uint32_t generation, uint64_t nonce, std::string* why) {
  close();
  fabric_ = fabric;
  instance_ = instance;
  sockaddr_un sa;
  socklen_t len = bell_address(fabric, instance, slot, generation, nonce, &sa);
  if (len == 0) {
    *why = "fabric name too long for a doorbell socket address";
    return -ENAMETOOLONG;
  }
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    int e = errno;
    *why = std::string("doorbell eventfd(): ") + std::strerror(e);
    return -e;
  }
  rx_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  tx_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (rx_fd_ < 0 || tx_fd_ < 0) {
    int e = errno;
    *why = std::string("doorbell socket(): ") + std::strerror(e);
    return -e;
  }
  if (::bind(rx_fd_, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    int e = errno;
    *why = "doorbell bind(@" + std::string(sa.sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1) +
           "): " + std::strerror(e);
    return -e;
  }
  return 0;
}

bool Doorbell::drain() {
  uint64_t count = 0;
  for (;;) {
    if (::read(event_fd_, &count, sizeof count) == sizeof count) return true;
    if (errno != EINTR) return false;  // EAGAIN: not rung
  }
}

int Doorbell::ring_eventfd(int fd) {
  const uint64_t one = 1;
  for (;;) {
    if (::write(fd, &one, sizeof one) == sizeof one) return 0;
    if (errno == EINTR) continue;
    // EAGAIN: the counter is at its maximum, so a wakeup is pending anyway.
    return errno == EAGAIN ? 0 : -errno;
  }
}

size_t Doorbell::drain_fallback() {
  size_t n = 0;
  char buf[64];
  for (;;) {
    ssize_t r = ::recv(rx_fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (r >= 0) {
      ++n;
      continue;
    }
    if (errno == EINTR) continue;
    break;  // EAGAIN: empty (anything else: nothing we could do here)
  }
  return n;
}

int Doorbell::ring(uint32_t slot, uint32_t generation, uint64_t nonce) {
  sockaddr_un sa;
  socklen_t len = bell_address(fabric_, instance_, slot, generation, nonce, &sa);
  if (len == 0) return -ENAMETOOLONG;
  const char one = 1;
  for (;;) {
    ssize_t r = ::sendto(tx_fd_, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
                         reinterpret_cast<sockaddr*>(&sa), len);
    if (r >= 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;  // a wakeup is already queued
    return -errno;  // ECONNREFUSED: the consumer's socket is gone
  }
}

}  // namespace sidestep::link
