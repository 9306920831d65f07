#include "interop/tap_link.h"

#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace sidestep::interop {

Micros monotonic_micros() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Micros(ts.tv_sec) * 1000000u + Micros(ts.tv_nsec) / 1000u;
}

// ---- FaultInjector --------------------------------------------------------

double FaultInjector::uniform() {
  // xorshift64*
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  uint64_t r = rng_ * 0x2545F4914F6CDD1Dull;
  return double(r >> 11) / double(1ull << 53);
}

bool FaultInjector::admit(const uint8_t* p, size_t len, Micros now) {
  ++seen;
  if (!active()) return true;
  // Always draw the same number of values per packet, so decisions stay
  // aligned with packet indices whatever the outcome.
  double l = uniform(), r = uniform(), d = uniform();
  if (l < c_.loss) {
    ++dropped;
    return false;
  }
  if (r < c_.reorder) {
    ++held;
    Micros span = c_.hold_max > c_.hold_min ? c_.hold_max - c_.hold_min : 0;
    queue_.push_back(Held{now + c_.hold_min + Micros(d * double(span)), seen,
                          std::vector<uint8_t>(p, p + len)});
    return false;
  }
  return true;
}

void FaultInjector::release(Micros now,
                            const std::function<void(const uint8_t*, size_t)>& deliver) {
  if (queue_.empty()) return;
  std::vector<Held> due;
  for (size_t i = 0; i < queue_.size();) {
    if (queue_[i].at <= now) {
      due.push_back(std::move(queue_[i]));
      queue_[i] = std::move(queue_.back());
      queue_.pop_back();
    } else {
      ++i;
    }
  }
  std::sort(due.begin(), due.end(), [](const Held& a, const Held& b) {
    return a.at != b.at ? a.at < b.at : a.order < b.order;
  });
  for (auto& h : due) deliver(h.bytes.data(), h.bytes.size());
}

Micros FaultInjector::next_release() const {
  Micros t = stack::kNever;
  for (auto& h : queue_) t = std::min(t, h.at);
  return t;
}

// ---- TunLink --------------------------------------------------------------

TunLink::~TunLink() {
  if (fd_ >= 0) ::close(fd_);
}

int TunLink::open(const char* name) {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return -errno;
  ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  fd_ = fd;
  name_ = ifr.ifr_name;
  return 0;
}

void TunLink::set_faults(const FaultConfig& out, const FaultConfig& in) {
  out_ = FaultInjector(out);
  in_ = FaultInjector(in);
}

uint8_t* TunLink::tx_reserve(stack::LinkAddr, size_t len) {
  if (fd_ < 0 || len > tx_buf_.size()) return nullptr;
  return tx_buf_.data();
}

void TunLink::write_packet(const uint8_t* p, size_t len) {
  if (observe) observe(true, p, len);
  ssize_t n = ::write(fd_, p, len);
  if (n == ssize_t(len)) {
    ++packets_to_kernel;
  } else {
    ++write_errors;  // the kernel's backlog was full: a lost packet, TCP recovers
  }
}

void TunLink::tx_commit(stack::LinkAddr, size_t len) {
  if (fd_ < 0) return;
  if (!out_.admit(tx_buf_.data(), len, now())) return;
  write_packet(tx_buf_.data(), len);
}

void TunLink::deliver(stack::Stack& st, const uint8_t* p, size_t len, Micros now) {
  if (observe) observe(false, p, len);
  st.input(0, p, len, now);
}

void TunLink::pump_once(stack::Stack& st, Micros max_wait) {
  Micros now = this->now();
  Micros wake = std::min({st.poll_at(), out_.next_release(), in_.next_release()});
  Micros wait = wake <= now ? 0 : std::min(wake - now, max_wait);
  pollfd pfd{fd_, POLLIN, 0};
  timespec ts{time_t(wait / 1000000), long(wait % 1000000) * 1000};
  ppoll(&pfd, 1, &ts, nullptr);
  now = this->now();
  // Bounded batch so the application gets its turn under load.
  for (int i = 0; i < 256; ++i) {
    ssize_t n = ::read(fd_, rx_buf_.data(), rx_buf_.size());
    if (n <= 0) break;
    ++packets_from_kernel;
    if (in_.admit(rx_buf_.data(), size_t(n), now)) deliver(st, rx_buf_.data(), size_t(n), now);
  }
  now = this->now();
  in_.release(now, [&](const uint8_t* p, size_t len) { deliver(st, p, len, now); });
  out_.release(now, [&](const uint8_t* p, size_t len) { write_packet(p, len); });
  if (st.poll_at() <= now) st.poll(now);
}

bool TunLink::run_until(stack::Stack& st, const std::function<bool(Micros)>& step,
                        Micros timeout, Micros max_wait) {
  Micros deadline = monotonic_micros() + timeout;
  for (;;) {
    if (step(now())) return true;
    if (monotonic_micros() >= deadline) return false;
    pump_once(st, max_wait);
  }
}

// ---- interface configuration ---------------------------------------------

namespace {

int with_ifreq(const char* ifname, const std::function<int(int, ifreq&)>& fn) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  int r = fn(s, ifr);
  ::close(s);
  return r;
}

void set_sin(sockaddr* sa, uint32_t addr_be) {
  sockaddr_in sin;
  std::memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = addr_be;
  std::memcpy(sa, &sin, sizeof sin);
}

}  // namespace

int interface_up(const char* ifname) {
  return with_ifreq(ifname, [](int s, ifreq& ifr) {
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -errno;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) return -errno;
    return 0;
  });
}

int interface_set_ipv4(const char* ifname, uint32_t addr_be, int prefix_len) {
  return with_ifreq(ifname, [&](int s, ifreq& ifr) {
    set_sin(&ifr.ifr_addr, addr_be);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) return -errno;
    uint32_t mask = prefix_len == 0 ? 0 : htonl(~uint32_t(0) << (32 - prefix_len));
    set_sin(&ifr.ifr_netmask, mask);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) return -errno;
    return 0;
  });
}

int interface_add_ipv6(const char* ifname, const uint8_t addr[16], int prefix_len) {
  // By netlink, for IFA_F_NODAD: an address added by ioctl starts tentative
  // until the kernel's DAD work has run (even when DAD is off or skipped),
  // and binding to it fails with EADDRNOTAVAIL meanwhile.
  int index = int(if_nametoindex(ifname));
  if (index <= 0) return -ENODEV;
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) return -errno;
  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
    char attrs[2 * RTA_SPACE(16)];
  } req;
  std::memset(&req, 0, sizeof req);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof req.ifa);
  req.nh.nlmsg_type = RTM_NEWADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = AF_INET6;
  req.ifa.ifa_prefixlen = uint8_t(prefix_len);
  req.ifa.ifa_flags = IFA_F_NODAD;
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = uint32_t(index);
  for (unsigned short type : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) +
                                          NLMSG_ALIGN(req.nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(16);
    std::memcpy(RTA_DATA(rta), addr, 16);
    req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  }
  sockaddr_nl kernel;
  std::memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  int r = 0;
  if (sendto(s, &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0) {
    r = -errno;
  } else {
    char buf[512];
    ssize_t n = recv(s, buf, sizeof buf, 0);
    auto* nh = reinterpret_cast<nlmsghdr*>(buf);
    if (n < 0) {
      r = -errno;
    } else if (size_t(n) < NLMSG_LENGTH(sizeof(nlmsgerr)) || nh->nlmsg_type != NLMSG_ERROR) {
      r = -EPROTO;
    } else {
      r = reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;  // 0 or -errno
    }
  }
  ::close(s);
  return r;
}

int interface_set_mtu(const char* ifname, int mtu) {
  return with_ifreq(ifname, [&](int s, ifreq& ifr) {
    ifr.ifr_mtu = mtu;
    return ioctl(s, SIOCSIFMTU, &ifr) < 0 ? -errno : 0;
  });
}

int interface_set_txqueuelen(const char* ifname, int qlen) {
  return with_ifreq(ifname, [&](int s, ifreq& ifr) {
    ifr.ifr_qlen = qlen;
    return ioctl(s, SIOCSIFTXQLEN, &ifr) < 0 ? -errno : 0;
  });
}

}  // namespace sidestep::interop
