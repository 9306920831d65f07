// Eventfd doorbells: see doorbell.h.
#include "link/doorbell.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace sidestep::link {

Doorbell::~Doorbell() { close(); }

int Doorbell::open() {
  close();
  fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd_ < 0 ? -errno : 0;
}

void Doorbell::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Doorbell::drain() {
  uint64_t v = 0;
  for (;;) {
    ssize_t n = ::read(fd_, &v, sizeof v);
    if (n == static_cast<ssize_t>(sizeof v)) return v != 0;
    if (n < 0 && errno == EINTR) continue;
    return false;  // EAGAIN: not rung
  }
}

int Doorbell::ring(int fd) {
  const uint64_t one = 1;
  for (;;) {
    ssize_t n = ::write(fd, &one, sizeof one);
    if (n == static_cast<ssize_t>(sizeof one)) return 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    return n < 0 ? -errno : -EIO;
  }
}

bool Doorbell::is_eventfd(int fd) {
  char path[48], target[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(path, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = 0;
  return std::strcmp(target, "anon_inode:[eventfd]") == 0;
}

}  // namespace sidestep::link
