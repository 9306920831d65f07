// Kernel-reserved local ports: see ports.h.
#include "link/ports.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidestep::link {

PortReservations::~PortReservations() {
  for (Reservation& r : all_)
    if (r.fd >= 0) ::close(r.fd);
}

int PortReservations::store(Reservation r) {
  ++held_;
  if (r.users == 0 && r.family != 0) ++unused_;
  if (!free_slots_.empty()) {
    int h = free_slots_.back();
    free_slots_.pop_back();
    all_[h] = r;
    return h;
  }
  all_.push_back(r);
  return static_cast<int>(all_.size() - 1);
}

namespace {
// Beyond this many reservations a stack shares ports between connections to
// different peers (and recycles its own TIME-WAIT 4-tuples, as Linux does
// on loopback) instead of asking the kernel for more.
constexpr size_t kSpreadLimit = 256;

int reserve_fresh(uint8_t family, const uint8_t addr[16], uint16_t* port, int* fd_out) {
  int fd = ::socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_storage ss{};
  socklen_t len;
  if (family == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, addr, 4);
    len = sizeof *sin;
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    std::memcpy(&sin6->sin6_addr, addr, 16);
    len = sizeof *sin6;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    const int e = errno;
    ::close(fd);
    return e == EADDRINUSE ? -EADDRNOTAVAIL : -e;
  }
  *port = ntohs(family == 4 ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                            : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  *fd_out = fd;
  return 0;
}
}  // namespace

int PortReservations::take(uint8_t family, const uint8_t addr[16], const std::function<bool(uint16_t)>& usable,
                           uint16_t* port) {
  const size_t alen = family == 4 ? 4 : 16;
  // Round the held ones from where the last take left off: successive
  // connections get different ports, as the kernel's connect() gives them
  // (a 4-tuple that changes is what spreads them over SO_REUSEPORT
  // listeners, whose pick hashes it). A port in use is worth a look only a
  // few times per take: with many connections to one peer, every held port
  // may already carry one to it, and looking at each made a connect cost
  // O(ports held) — the 10,000-connection scale run crawled to a halt at
  // ~1,300.
  constexpr size_t kSharedLooks = 16;
  int unused = -1, shared = -1;
  size_t looks = 0;
  const size_t n = all_.size();
  for (size_t k = 0; k < n && unused < 0; ++k) {
    if (unused_ == 0 && (shared >= 0 || looks >= kSharedLooks)) break;
    const size_t h = (cursor_ + k) % n;
    const Reservation& r = all_[h];
    if (r.fd < 0 || r.family != family || std::memcmp(r.addr, addr, alen) != 0) continue;
    if (r.users == 0) {
      if (usable(r.port)) unused = static_cast<int>(h);
    } else if (shared < 0 && looks < kSharedLooks) {
      ++looks;
      if (usable(r.port)) shared = static_cast<int>(h);
    }
  }
  // Fresh ports until kSpreadLimit are held, then the held ones in turn —
  // one nobody uses, else one in use towards other peers; a fresh one
  // whenever nothing held will do.
  int pick = held_ >= kSpreadLimit ? (unused >= 0 ? unused : shared) : -1;
  if (pick < 0) {
    int err = 0;
    // (A fresh port can still be unusable here: a TIME-WAIT 4-tuple of ours
    // from its earlier life. It stays held, unused, for another peer.)
    for (int tries = 0; tries < 4; ++tries) {
      Reservation r;
      err = reserve_fresh(family, addr, &r.port, &r.fd);
      if (err != 0) break;
      r.family = family;
      std::memcpy(r.addr, addr, alen);
      r.used_since_trim = true;
      const bool ok = usable(r.port);
      r.users = ok ? 1 : 0;
      const int h = store(r);
      if (ok) {
        *port = r.port;
        return h;
      }
    }
    pick = unused >= 0 ? unused : shared;
    if (pick < 0) return err != 0 ? err : -EADDRNOTAVAIL;
  }
  Reservation& r = all_[pick];
  if (r.users++ == 0) --unused_;
  r.used_since_trim = true;
  *port = r.port;
  cursor_ = static_cast<size_t>(pick) + 1;
  return pick;
}

int PortReservations::adopt(int fd, uint16_t port) {
  int mine = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (mine < 0) return -errno;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  Reservation r;
  r.fd = mine;
  r.port = port;
  r.users = 1;
  r.used_since_trim = true;
  if (::getsockname(mine, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET) {
      r.family = 4;
      std::memcpy(r.addr, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, 4);
    } else {
      r.family = 6;
      std::memcpy(r.addr, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, 16);
    }
  }
  // An adopted reservation serves its one connection only: family 0 keeps
  // take() from handing it out again.
  r.family = 0;
  return store(r);
}

void PortReservations::give_back(int handle) {
  if (handle < 0 || static_cast<size_t>(handle) >= all_.size()) return;
  Reservation& r = all_[handle];
  if (r.fd < 0 || r.users == 0) return;
  if (--r.users != 0) return;
  if (r.family != 0) {
    ++unused_;
    return;
  }
  ::close(r.fd);
  r = Reservation{};
  free_slots_.push_back(handle);
  --held_;
}

void PortReservations::close_unused(size_t h) {
  Reservation& r = all_[h];
  if (r.family != 0) --unused_;
  ::close(r.fd);
  r = Reservation{};
  free_slots_.push_back(static_cast<int>(h));
  --held_;
}

void PortReservations::release_unused() {
  if (unused_ == 0) return;
  for (size_t h = 0; h < all_.size(); ++h)
    if (all_[h].fd >= 0 && all_[h].users == 0) close_unused(h);
}

void PortReservations::trim() {
  for (size_t h = 0; h < all_.size(); ++h) {
    Reservation& r = all_[h];
    if (r.fd < 0) continue;
    if (r.users == 0 && !r.used_since_trim) {
      close_unused(h);
      continue;
    }
    r.used_since_trim = false;
  }
}

}  // namespace sidestep::link
