// Control channel sockets and messages: see control.h.
#include "link/control.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace sidestep::link {

namespace {

socklen_t abstract_address(const std::string& name, sockaddr_un* sa) {
  std::memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof sa->sun_path) return 0;
  // sun_path[0] stays 0: the abstract namespace. The name's length is the
  // address length's, not a terminator's.
  std::memcpy(sa->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

}  // namespace

std::string listener_name(const std::string& fabric, uint64_t inode, uint32_t k) {
  return fabric + "/L" + std::to_string(inode) + "." + std::to_string(k);
}

int control_listen(const std::string& name, int type) {
  sockaddr_un sa;
  socklen_t len = abstract_address(name, &sa);
  if (len == 0) return -ENAMETOOLONG;
  int fd = ::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd, 512) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  return fd;
}

int control_connect(const std::string& name, int type) {
  sockaddr_un sa;
  socklen_t len = abstract_address(name, &sa);
  if (len == 0) return -ENAMETOOLONG;
  int fd = ::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  for (;;) {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) == 0) return fd;
    if (errno == EINTR) continue;
    int e = errno;
    ::close(fd);
    return -e;
  }
}

int control_accept(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno == EINTR) continue;
    return -errno;
  }
}

int peer_cred(int fd, PeerCred* out) {
  ucred c{};
  socklen_t len = sizeof c;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return -errno;
  out->pid = c.pid;
  out->uid = c.uid;
  out->gid = c.gid;
  return 0;
}

int control_send(int fd, const ControlMessage& m, const int* fds, size_t nfds) {
  if (nfds > kMaxFds) return -EINVAL;
  iovec iov{const_cast<ControlMessage*>(&m), sizeof m};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  for (;;) {
    ssize_t n = ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(sizeof m)) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? -errno : -EIO;
  }
}

int control_recv(int fd, ControlMessage* m, int* fds, size_t* nfds) {
  *nfds = 0;
  iovec iov{m, sizeof *m};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * (kMaxFds + 2))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  for (;;) {
    n = ::recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0 || errno != EINTR) break;
  }
  if (n < 0) return errno == EAGAIN ? 0 : (errno == ECONNRESET ? -EPIPE : -errno);
  if (n == 0) return -EPIPE;  // SEQPACKET: orderly hang-up
  // Take every descriptor that came, whatever else is wrong, so none leaks.
  int got[kMaxFds + 2];
  size_t count = 0;
  bool too_many = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int d;
      std::memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof d);
      if (count < kMaxFds + 2) got[count++] = d; else { ::close(d); too_many = true; }
    }
  }
  const bool bad = n != static_cast<ssize_t>(sizeof *m) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
                   m->magic != kControlMagic || count > kMaxFds || too_many;
  if (bad) {
    for (size_t i = 0; i < count; ++i) ::close(got[i]);
    return -EPROTO;
  }
  m->text[sizeof m->text - 1] = 0;
  std::memcpy(fds, got, sizeof(int) * count);
  *nfds = count;
  return 1;
}

}  // namespace sidestep::link
