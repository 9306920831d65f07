// Interop with the Linux kernel's TCP (issue 3, point 3), over IPv4 and IPv6.
//
// Every test runs in a forked child that unshares a fresh network namespace,
// brings up lo and a TUN device there (kernel 10.77.0.1/24 and fd00:77::1/64,
// sidestep's stack 10.77.0.2 and fd00:77::2), and uses the kernel's own
// sockets from the same child as the peer. The namespace, the device and
// every fd vanish when the child exits; the test binary's own namespace is
// never touched. The parent only waits (with a deadline, SIGKILL past it) and
// collects the child's verdict.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "check.h"
#include "interop/tap_link.h"
#include "stack/stack.h"

using namespace sidestep::stack;
using sidestep::interop::FaultConfig;
using sidestep::interop::monotonic_micros;
using sidestep::interop::TunLink;

namespace {

constexpr Micros kSecond = 1000000;

double seconds_since(Micros t0) { return double(monotonic_micros() - t0) / 1e6; }

// One address family of the namespace's network: both ends' addresses, and
// the payload of a full segment on the TUN's 1500-byte MTU with timestamps
// (MTU - IP header - TCP header - 12): what the kernel must see as our MSS.
struct Family {
  const char* name;
  IpAddr stack, kernel;
  int prefix_len;
  uint32_t full_payload;
};

IpAddr v6(uint8_t last) {
  IpAddr a;
  a.family = 6;
  const uint8_t prefix[4] = {0xfd, 0x00, 0x00, 0x77};  // fd00:77::/64
  std::memcpy(a.bytes, prefix, 4);
  a.bytes[15] = last;
  return a;
}

const Family kIPv4{"IPv4", IpAddr::v4(10, 77, 0, 2), IpAddr::v4(10, 77, 0, 1), 24, 1500 - 20 - 20 - 12};
const Family kIPv6{"IPv6", v6(2), v6(1), 64, 1500 - 40 - 20 - 12};

// ---- isolation ------------------------------------------------------------

// Runs `body` in a forked child inside a new network namespace; a failure or
// timeout there fails the calling TEST.
void run_isolated(const char* name, void (*body)(), int timeout_s) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "  %s: fork: %s\n", name, std::strerror(errno));
    ++sidestep::testing::failures_in_current();
    return;
  }
  if (pid == 0) {
    // Die with the parent, whatever happens to it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    if (unshare(CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "  %s: unshare(CLONE_NEWNET): %s\n", name, std::strerror(errno));
      _exit(1);
    }
    sidestep::testing::failures_in_current() = 0;
    body();
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(sidestep::testing::failures_in_current() ? 1 : 0);
  }
  Micros deadline = monotonic_micros() + Micros(timeout_s) * kSecond;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (monotonic_micros() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      std::fprintf(stderr, "  %s: timed out after %d s (child killed)\n", name, timeout_s);
      ++sidestep::testing::failures_in_current();
      return;
    }
    usleep(5000);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFSIGNALED(status))
      std::fprintf(stderr, "  %s: child died with signal %d\n", name, WTERMSIG(status));
    ++sidestep::testing::failures_in_current();
  }
}

#define NETNS_TEST(name, timeout_s)                       \
  static void name##_in_netns();                          \
  TEST(name) { run_isolated(#name, &name##_in_netns, timeout_s); } \
  static void name##_in_netns()

// ---- data and hashing -----------------------------------------------------

constexpr uint64_t kFnvInit = 0xcbf29ce484222325ull;
uint64_t fnv(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A seeded byte stream: byte i is a function of (seed, i).
struct Stream {
  uint64_t seed;
  uint64_t pos = 0;
  void fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i, ++pos) p[i] = uint8_t(mix(seed ^ (pos >> 3)) >> ((pos & 7) * 8));
  }
};

// ---- the namespace's network and the stack ----------------------------------

Config interop_config() {
  Config c;
  c.mtu = 1500;
  c.checksums = true;
  c.accept_any_address = false;
  if (getrandom(c.isn_secret, sizeof c.isn_secret, 0) != sizeof c.isn_secret) {
    for (int i = 0; i < 16; ++i) c.isn_secret[i] = uint8_t(i * 29 + 3);
  }
  return c;
}

struct SockFlags {
  bool connected = false, acceptable = false, peer_closed = false, closed = false;
  int error = 0;
};

struct Net {
  TunLink link;
  Config config;
  std::unique_ptr<Stack> stack;
  std::unordered_map<SocketId, SockFlags> flags;
  bool ok = false;

  explicit Net(const Config& c = interop_config()) : config(c) {
    using namespace sidestep::interop;
    int r;
    if ((r = interface_up("lo")) < 0) { fail("lo up", r); return; }
    if ((r = link.open("sstun0")) < 0) { fail("open tun", r); return; }
    const char* dev = link.name().c_str();
    if ((r = interface_set_mtu(dev, int(config.mtu))) < 0) { fail("mtu", r); return; }
    if ((r = interface_set_txqueuelen(dev, 4096)) < 0) { fail("txqlen", r); return; }
    uint32_t v4_be;
    std::memcpy(&v4_be, kIPv4.kernel.bytes, 4);
    if ((r = interface_set_ipv4(dev, v4_be, kIPv4.prefix_len)) < 0) { fail("addr", r); return; }
    if ((r = interface_up(dev)) < 0) { fail("tun up", r); return; }
    if ((r = interface_add_ipv6(dev, kIPv6.kernel.bytes, kIPv6.prefix_len)) < 0) {
      fail("IPv6 addr", r);
      return;
    }
    stack = std::make_unique<Stack>(config, link);
    stack->add_address(kIPv4.stack);
    stack->add_address(kIPv6.stack);
    ok = true;
  }
  void fail(const char* what, int r) {
    std::fprintf(stderr, "  namespace setup: %s: %s\n", what, std::strerror(-r));
  }
  Stack& st() { return *stack; }
  void drain() {
    Event e;
    while (stack->next_event(&e)) {
      SockFlags& f = flags[e.socket];
      switch (e.type) {
        case EventType::Connected: f.connected = true; break;
        case EventType::Acceptable: f.acceptable = true; break;
        case EventType::PeerClosed: f.peer_closed = true; break;
        case EventType::Error: f.error = e.error; break;
        case EventType::Closed: f.closed = true; break;
        default: break;
      }
    }
  }
  bool run_until(const std::function<bool(Micros)>& step, Micros timeout) {
    return link.run_until(*stack, [&](Micros now) {
      drain();
      return step(now);
    }, timeout);
  }
  // Keep the pump running for `d` (the application still gets its turns).
  void run_for(Micros d, const std::function<void(Micros)>& step = nullptr) {
    run_until([&](Micros now) {
      if (step) step(now);
      return false;
    }, d);
  }
};

socklen_t sockaddr_of(const IpAddr& a, uint16_t port, sockaddr_storage* ss) {
  std::memset(ss, 0, sizeof *ss);
  if (a.family == 4) {
    auto* s = reinterpret_cast<sockaddr_in*>(ss);
    s->sin_family = AF_INET;
    std::memcpy(&s->sin_addr, a.bytes, 4);
    s->sin_port = htons(port);
    return sizeof *s;
  }
  auto* s = reinterpret_cast<sockaddr_in6*>(ss);
  s->sin6_family = AF_INET6;
  std::memcpy(&s->sin6_addr, a.bytes, 16);
  s->sin6_port = htons(port);
  return sizeof *s;
}

// The address and port of a kernel sockaddr, as the stack would write them.
Endpoint endpoint_of(const sockaddr_storage& ss) {
  Endpoint e;
  if (ss.ss_family == AF_INET) {
    auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    e.addr.family = 4;
    std::memcpy(e.addr.bytes, &s->sin_addr, 4);
    e.port = ntohs(s->sin_port);
  } else {
    auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    e.addr.family = 6;
    std::memcpy(e.addr.bytes, &s->sin6_addr, 16);
    e.port = ntohs(s->sin6_port);
  }
  return e;
}

void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

int kernel_socket(const Family& f) {
  return socket(f.kernel.family == 4 ? AF_INET : AF_INET6,
                SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

// A kernel listener on the kernel's address (non-blocking; accept from the pump).
int kernel_listen(const Family& f, uint16_t port, int rcvbuf = 0) {
  int s = kernel_socket(f);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (rcvbuf) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_storage a;
  socklen_t len = sockaddr_of(f.kernel, port, &a);
  if (bind(s, (sockaddr*)&a, len) < 0 || listen(s, 16) < 0) {
    std::fprintf(stderr, "  kernel listen (%s): %s\n", f.name, std::strerror(errno));
    close(s);
    return -1;
  }
  return s;
}

// A non-blocking kernel connect towards the stack; completion seen by poll.
int kernel_connect_start(const Family& f, uint16_t port, int sndbuf = 0) {
  int s = kernel_socket(f);
  if (sndbuf) setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  sockaddr_storage a;
  socklen_t len = sockaddr_of(f.stack, port, &a);
  int r = connect(s, (sockaddr*)&a, len);
  if (r < 0 && errno != EINPROGRESS) {
    std::fprintf(stderr, "  kernel connect (%s): %s\n", f.name, std::strerror(errno));
    close(s);
    return -1;
  }
  return s;
}

// 0 while pending, 1 when connected, -errno when it failed.
int kernel_connect_result(int s) {
  pollfd p{s, POLLOUT, 0};
  if (poll(&p, 1, 0) <= 0) return 0;
  int err = 0;
  socklen_t l = sizeof err;
  getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
  return err ? -err : 1;
}

// Blocking write/read of a small message on a kernel socket.
bool kernel_write_all(int fd, const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (w <= 0) return false;
    b += w;
    n -= size_t(w);
  }
  return true;
}

// ---- the two ends of a transfer -------------------------------------------

// The kernel's end: a writer thread and a reader thread on one blocking socket.
struct KernelSide {
  int fd = -1;
  size_t to_send = 0;
  uint64_t seed = 0;
  std::atomic<bool> pause_reading{false};
  std::atomic<size_t> sent{0}, received{0};
  std::atomic<bool> write_done{false}, read_done{false};
  std::atomic<int> error{0};
  uint64_t hash_sent = kFnvInit, hash_recv = kFnvInit;
  std::thread writer, reader;

  void start(int s) {
    fd = s;
    set_nonblocking(fd, false);
    writer = std::thread([this] {
      std::vector<uint8_t> buf(256 * 1024);
      Stream g{seed};
      while (sent < to_send) {
        size_t n = std::min(buf.size(), to_send - sent);
        g.fill(buf.data(), n);
        if (!kernel_write_all(fd, buf.data(), n)) {
          error = errno;
          break;
        }
        hash_sent = fnv(hash_sent, buf.data(), n);
        sent += n;
      }
      shutdown(fd, SHUT_WR);
      write_done = true;
    });
    reader = std::thread([this] {
      std::vector<uint8_t> buf(256 * 1024);
      for (;;) {
        if (pause_reading) {
          usleep(1000);
          continue;
        }
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n > 0) {
          hash_recv = fnv(hash_recv, buf.data(), size_t(n));
          received += size_t(n);
        } else if (n == 0) {
          break;
        } else if (errno != EINTR && errno != EAGAIN) {
          error = errno;
          break;
        }
      }
      read_done = true;
    });
  }
  bool done() const { return write_done && read_done; }
  ~KernelSide() {
    if (fd >= 0) {
      if (!done()) {
        pause_reading = false;
        shutdown(fd, SHUT_RDWR);
      }
      if (writer.joinable()) writer.join();
      if (reader.joinable()) reader.join();
      close(fd);
    }
  }
};

// The stack's end, driven from the pump's application turn.
struct StackSide {
  SocketId id = 0;
  size_t to_send = 0;
  uint64_t seed = 0;
  bool pause_reading = false;
  size_t sent = 0, received = 0;
  uint64_t hash_sent = kFnvInit, hash_recv = kFnvInit;
  bool shut = false;
  std::vector<uint8_t> buf = std::vector<uint8_t>(256 * 1024);
  Stream g{0};

  void step(Net& net, Micros now) {
    Stack& st = net.st();
    g.seed = seed;
    while (sent < to_send && st.send_queued(id) < net.config.send_buffer) {
      size_t n = std::min<size_t>(64 * 1024, to_send - sent);
      g.fill(buf.data(), n);
      long r = st.send(id, buf.data(), n, now);
      if (r != long(n)) {
        std::fprintf(stderr, "  stack send returned %ld\n", r);
        break;
      }
      hash_sent = fnv(hash_sent, buf.data(), n);
      sent += n;
    }
    if (sent == to_send && !shut) {
      st.shutdown_write(id, now);
      shut = true;
    }
    if (!pause_reading) {
      for (;;) {
        size_t n = st.recv(id, buf.data(), buf.size(), now);
        if (!n) break;
        hash_recv = fnv(hash_recv, buf.data(), n);
        received += n;
      }
    }
  }
  bool eof(Net& net) { return net.flags[id].peer_closed; }
};

// ---- connections ----------------------------------------------------------------

// An established pair: the stack's socket and the kernel's fd.
struct Conn {
  SocketId sid = 0;
  int kfd = -1;
};

enum class Opener { Stack, Kernel };

// Who connects to whom: the stack connects from port + 30000 to a kernel
// listener on `port`, or the kernel connects to a stack listener on `port`.
// `kernel_buf` sizes the kernel's receive buffer (as the listener) or its
// send buffer (as the client).
Conn open_connection(Net& net, Opener opener, const Family& f, uint16_t port,
                     int kernel_buf = 0) {
  Conn c;
  if (opener == Opener::Stack) {
    int l = kernel_listen(f, port, kernel_buf);
    if (l < 0) return c;
    int id = net.st().connect(Endpoint{f.stack, uint16_t(port + 30000)}, Endpoint{f.kernel, port},
                              0, net.link.now());
    if (id <= 0) {
      std::fprintf(stderr, "  stack connect: %d\n", id);
      close(l);
      return c;
    }
    int k = -1;
    bool done = net.run_until([&](Micros) {
      if (k < 0) k = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      return k >= 0 && net.flags[SocketId(id)].connected;
    }, 5 * kSecond);
    close(l);
    if (!done) {
      if (k >= 0) close(k);
      std::fprintf(stderr, "  stack->kernel handshake (%s) did not complete\n", f.name);
      return c;
    }
    c.sid = SocketId(id);
    c.kfd = k;
    return c;
  }
  int l = net.st().listen(Endpoint{f.stack, port}, 16, false);
  if (l <= 0) return c;
  int k = kernel_connect_start(f, port, kernel_buf);
  if (k < 0) return c;
  int sid = -1, kr = 0;
  bool done = net.run_until([&](Micros) {
    if (kr == 0) kr = kernel_connect_result(k);
    if (sid <= 0 && net.flags[SocketId(l)].acceptable) sid = net.st().accept(SocketId(l));
    return kr != 0 && sid > 0;
  }, 5 * kSecond);
  if (!done || kr != 1) {
    std::fprintf(stderr, "  kernel->stack handshake (%s) did not complete (kernel: %d)\n",
                 f.name, kr);
    close(k);
    return c;
  }
  c.sid = SocketId(sid);
  c.kfd = k;
  return c;
}

tcp_info kernel_tcp_info(int fd) {
  tcp_info ti;
  std::memset(&ti, 0, sizeof ti);
  socklen_t l = sizeof ti;
  getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l);
  return ti;
}

// What the kernel negotiated with our SYN / SYN-ACK.
void check_negotiated_options(int kfd, const Family& f) {
  tcp_info ti = kernel_tcp_info(kfd);
  CHECK(ti.tcpi_state == TCP_ESTABLISHED);
  CHECK(ti.tcpi_options & TCPI_OPT_TIMESTAMPS);
  CHECK(ti.tcpi_options & TCPI_OPT_SACK);
  CHECK(ti.tcpi_options & TCPI_OPT_WSCALE);
  // Our MSS option (MTU less the IP and TCP headers), less 12 for timestamps.
  CHECK_EQ(ti.tcpi_snd_mss, f.full_payload);
  std::printf("  kernel sees (%s): snd_mss %u, snd_wscale %u, rcv_wscale %u, options 0x%x\n",
              f.name, ti.tcpi_snd_mss, ti.tcpi_snd_wscale, ti.tcpi_rcv_wscale, ti.tcpi_options);
}

// Exchanges a message each way on an established pair.
void check_ping_pong(Net& net, Conn c) {
  const char ping[] = "ping from kernel";
  REQUIRE(kernel_write_all(c.kfd, ping, sizeof ping));
  uint8_t buf[64];
  size_t got = 0;
  net.run_until([&](Micros now) {
    got += net.st().recv(c.sid, buf + got, sizeof buf - got, now);
    return got >= sizeof ping;
  }, 2 * kSecond);
  REQUIRE(got == sizeof ping);
  CHECK(std::memcmp(buf, ping, sizeof ping) == 0);
  const char pong[] = "pong from sidestep";
  CHECK_EQ(net.st().send(c.sid, (const uint8_t*)pong, sizeof pong, net.link.now()),
           long(sizeof pong));
  set_nonblocking(c.kfd, true);
  char kbuf[64];
  size_t kgot = 0;
  net.run_until([&](Micros) {
    ssize_t n = recv(c.kfd, kbuf + kgot, sizeof kbuf - kgot, 0);
    if (n > 0) kgot += size_t(n);
    return kgot >= sizeof pong;
  }, 2 * kSecond);
  REQUIRE(kgot == sizeof pong);
  CHECK(std::memcmp(kbuf, pong, sizeof pong) == 0);
}

// A transfer on an established pair: `stack_sends` bytes from the stack and
// `kernel_sends` from the kernel at the same time, each end shutting its
// write side when done, both byte streams hashed.
struct Transfer {
  StackSide s;
  KernelSide k;
  Transfer(Conn c, size_t stack_sends, size_t kernel_sends) {
    s.id = c.sid;
    s.to_send = stack_sends;
    s.seed = 0x5715;
    k.to_send = kernel_sends;
    k.seed = 0xcafe;
  }
  void start(Conn c) { k.start(c.kfd); }
  // Runs it to completion (both ends sent everything and saw EOF).
  bool run(Net& net, Micros timeout) {
    return net.run_until([&](Micros now) {
      s.step(net, now);
      if (net.flags[s.id].error) return true;
      return s.sent == s.to_send && s.eof(net) && k.done();
    }, timeout);
  }
  void check(Net& net) {
    CHECK_EQ(net.flags[s.id].error, 0);
    CHECK_EQ(k.error.load(), 0);
    CHECK_EQ(s.sent, s.to_send);
    CHECK_EQ(k.sent.load(), k.to_send);
    CHECK_EQ(k.received.load(), s.to_send);
    CHECK_EQ(s.received, k.to_send);
    CHECK(k.hash_recv == s.hash_sent);
    CHECK(s.hash_recv == k.hash_sent);
  }
  void report_stall(Net& net, const char* what) {
    SocketInfo info{};
    net.st().info(s.id, &info);
    std::fprintf(stderr,
                 "  %s: stalled: stack sent %zu/%zu recv %zu/%zu; kernel sent %zu recv %zu; "
                 "state %s send_queued %u snd_wnd %u rcv_wnd %u cwnd %u\n",
                 what, s.sent, s.to_send, s.received, k.to_send, k.sent.load(),
                 k.received.load(), tcp_state_name(TcpState(info.state)), info.send_queued,
                 info.send_window, info.recv_window, info.cwnd);
  }
};

// The namespace's kernel TCP counters (/proc/net is per network namespace):
// segments the kernel rejected as bad, bad checksums, PAWS drops.
struct KernelTcpErrors {
  long in_errs = -1, in_csum_errors = -1, paws_estab = -1;
};

long proc_net_field(const char* file, const char* prefix, const char* field) {
  FILE* f = std::fopen(file, "r");
  if (!f) return -1;
  char head[4096], vals[4096];
  long result = -1;
  size_t plen = std::strlen(prefix);
  while (std::fgets(head, sizeof head, f) && std::fgets(vals, sizeof vals, f)) {
    if (std::strncmp(head, prefix, plen) != 0 || std::strncmp(vals, prefix, plen) != 0) continue;
    char *hs, *vs;
    char* h = strtok_r(head + plen, " \n", &hs);
    char* v = strtok_r(vals + plen, " \n", &vs);
    while (h && v) {
      if (std::strcmp(h, field) == 0) result = std::atol(v);
      h = strtok_r(nullptr, " \n", &hs);
      v = strtok_r(nullptr, " \n", &vs);
    }
  }
  std::fclose(f);
  return result;
}

KernelTcpErrors kernel_tcp_errors() {
  KernelTcpErrors e;
  e.in_errs = proc_net_field("/proc/net/snmp", "Tcp:", "InErrs");
  e.in_csum_errors = proc_net_field("/proc/net/snmp", "Tcp:", "InCsumErrors");
  e.paws_estab = proc_net_field("/proc/net/netstat", "TcpExt:", "PAWSEstab");
  return e;
}

// The kernel accepted every segment we sent: no checksum, header or PAWS
// rejections in this namespace.
void check_kernel_accepted_everything() {
  KernelTcpErrors e = kernel_tcp_errors();
  CHECK_EQ(e.in_errs, 0);
  CHECK_EQ(e.in_csum_errors, 0);
  CHECK_EQ(e.paws_estab, 0);
}

struct BulkResult {
  double seconds = 0;
  Counters counters;
};

// A transfer each way at once on a fresh pair, checked byte-exact, with the
// kernel's error counters checked after. Every packet we send must fit the
// MTU, and a full one must fill it exactly (the MSS accounts for the IP
// header of the family).
BulkResult bulk(Net& net, Conn c, const Family& f, size_t stack_sends, size_t kernel_sends,
                const char* what, Micros timeout, bool expect_no_paws = true) {
  BulkResult res;
  size_t largest = 0;
  net.link.observe = [&](bool to_kernel, const uint8_t*, size_t len) {
    if (to_kernel && len > largest) largest = len;
  };
  Transfer x(c, stack_sends, kernel_sends);
  Micros t0 = monotonic_micros();
  x.start(c);
  bool done = x.run(net, timeout);
  res.seconds = seconds_since(t0);
  net.link.observe = nullptr;
  if (!done) x.report_stall(net, what);
  CHECK(done);
  x.check(net);
  res.counters = net.st().counters();
  const Counters& ct = res.counters;
  std::printf("  %s (%s): %.1f MB stack->kernel, %.1f MB kernel->stack in %.2f s (%.0f MB/s); "
              "stack retransmits %llu, timeouts %llu, pkts in %llu out %llu, largest %zu\n",
              what, f.name, stack_sends / 1e6, kernel_sends / 1e6, res.seconds,
              (stack_sends + kernel_sends) / 1e6 / res.seconds,
              (unsigned long long)ct.segments_retransmitted,
              (unsigned long long)ct.retransmission_timeouts, (unsigned long long)ct.packets_in,
              (unsigned long long)ct.packets_out, largest);
  CHECK(largest <= net.config.mtu);
  if (stack_sends >= 100000) CHECK_EQ(largest, size_t(net.config.mtu));
  CHECK_EQ(ct.packets_malformed, 0u);  // nor did we reject anything of the kernel's
  if (expect_no_paws) {
    check_kernel_accepted_everything();
  } else {
    KernelTcpErrors e = kernel_tcp_errors();
    CHECK_EQ(e.in_errs, 0);
    CHECK_EQ(e.in_csum_errors, 0);
    std::printf("  kernel PAWS drops of stale duplicates: %ld\n", e.paws_estab);
  }
  net.st().close(x.s.id, net.link.now());
  return res;
}

}  // namespace

// ---- handshakes ---------------------------------------------------------------

// The connection both ends see has the right addresses and ports, the
// kernel agreed to our options, and a message goes each way.
void check_handshake(Opener opener, const Family& f, uint16_t port) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, opener, f, port);
  REQUIRE(c.sid > 0);
  sockaddr_storage kernel_local, kernel_peer;
  socklen_t l1 = sizeof kernel_local, l2 = sizeof kernel_peer;
  REQUIRE(getsockname(c.kfd, (sockaddr*)&kernel_local, &l1) == 0);
  REQUIRE(getpeername(c.kfd, (sockaddr*)&kernel_peer, &l2) == 0);
  Endpoint local, remote;
  REQUIRE(net.st().local_endpoint(c.sid, &local));
  REQUIRE(net.st().remote_endpoint(c.sid, &remote));
  CHECK(endpoint_of(kernel_peer) == local);
  CHECK(endpoint_of(kernel_local) == remote);
  CHECK(local.addr == f.stack);
  CHECK(remote.addr == f.kernel);
  check_negotiated_options(c.kfd, f);
  SocketInfo info{};
  REQUIRE(net.st().info(c.sid, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::Established));
  check_ping_pong(net, c);
  check_kernel_accepted_everything();
  close(c.kfd);
}

NETNS_TEST(handshake_stack_to_kernel_negotiates_options_and_carries_data, 20) {
  check_handshake(Opener::Stack, kIPv4, 5001);
}

NETNS_TEST(handshake_kernel_to_stack_negotiates_options_and_carries_data, 20) {
  check_handshake(Opener::Kernel, kIPv4, 7001);
}

NETNS_TEST(ipv6_handshake_stack_to_kernel_negotiates_options_and_carries_data, 20) {
  check_handshake(Opener::Stack, kIPv6, 5101);
}

NETNS_TEST(ipv6_handshake_kernel_to_stack_negotiates_options_and_carries_data, 20) {
  check_handshake(Opener::Kernel, kIPv6, 7101);
}

// ---- bulk ---------------------------------------------------------------------

constexpr size_t kBulk = 100u * 1000 * 1000;

void bulk_one_way(Opener opener, const Family& f, uint16_t port, bool stack_sends) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, opener, f, port);
  REQUIRE(c.sid > 0);
  bulk(net, c, f, stack_sends ? kBulk : 0, stack_sends ? 0 : kBulk,
       stack_sends ? "stack->kernel" : "kernel->stack", 30 * kSecond);
}

NETNS_TEST(bulk_100mb_stack_to_kernel_arrives_byte_exact, 40) {
  bulk_one_way(Opener::Stack, kIPv4, 5002, true);
}

NETNS_TEST(bulk_100mb_kernel_to_stack_arrives_byte_exact, 40) {
  bulk_one_way(Opener::Kernel, kIPv4, 7002, false);
}

NETNS_TEST(ipv6_bulk_100mb_stack_to_kernel_arrives_byte_exact, 40) {
  bulk_one_way(Opener::Stack, kIPv6, 5102, true);
}

NETNS_TEST(ipv6_bulk_100mb_kernel_to_stack_arrives_byte_exact, 40) {
  bulk_one_way(Opener::Kernel, kIPv6, 7102, false);
}
// ---- half-close -----------------------------------------------------------------

// The stack sends, then shuts down its write side: the kernel reads to EOF and
// only then answers; the stack (in FIN-WAIT-2) still receives all of it.
NETNS_TEST(half_close_by_stack_kernel_reads_eof_then_still_sends, 20) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Stack, kIPv4, 5003);
  REQUIRE(c.sid > 0);
  const char req[] = "request, then FIN";
  Micros now = net.link.now();
  CHECK_EQ(net.st().send(c.sid, (const uint8_t*)req, sizeof req, now), long(sizeof req));
  CHECK_EQ(net.st().shutdown_write(c.sid, now), 0);
  set_nonblocking(c.kfd, true);
  std::vector<uint8_t> got;
  bool eof = false;
  REQUIRE(net.run_until([&](Micros) {
    uint8_t b[256];
    ssize_t n = recv(c.kfd, b, sizeof b, 0);
    if (n > 0) got.insert(got.end(), b, b + n);
    if (n == 0) eof = true;
    return eof;
  }, 3 * kSecond));
  CHECK_EQ(got.size(), sizeof req);
  // The kernel's ACK of our FIN takes us to FIN-WAIT-2.
  SocketInfo info{};
  CHECK(net.run_until([&](Micros) {
    return net.st().info(c.sid, &info) && info.state == uint8_t(TcpState::FinWait2);
  }, 1 * kSecond));
  // The kernel answers after EOF: 300 KB, more than one window's worth.
  std::vector<uint8_t> answer(300000);
  Stream{42}.fill(answer.data(), answer.size());
  set_nonblocking(c.kfd, false);
  std::thread w([&] {
    kernel_write_all(c.kfd, answer.data(), answer.size());
    shutdown(c.kfd, SHUT_WR);
  });
  std::vector<uint8_t> rx;
  bool done = net.run_until([&](Micros now) {
    uint8_t b[65536];
    size_t n;
    while ((n = net.st().recv(c.sid, b, sizeof b, now)) > 0) rx.insert(rx.end(), b, b + n);
    return net.flags[c.sid].peer_closed;
  }, 5 * kSecond);
  w.join();
  CHECK(done);
  CHECK(rx == answer);
  net.st().close(c.sid, net.link.now());
  // Our last ACK ends the kernel's LAST-ACK; the stack sits in TIME-WAIT.
  net.run_for(200000);
  REQUIRE(net.st().info(c.sid, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::TimeWait));
  close(c.kfd);
}

// The kernel sends, then shutdown(SHUT_WR): the stack sees EOF (PeerClosed)
// after the data and then answers; the kernel reads all of it, then EOF.
NETNS_TEST(half_close_by_kernel_stack_sees_eof_then_still_sends, 20) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Kernel, kIPv4, 7003);
  REQUIRE(c.sid > 0);
  const char req[] = "kernel request, then FIN";
  REQUIRE(kernel_write_all(c.kfd, req, sizeof req));
  REQUIRE(shutdown(c.kfd, SHUT_WR) == 0);
  std::vector<uint8_t> rx;
  REQUIRE(net.run_until([&](Micros now) {
    uint8_t b[256];
    size_t n;
    while ((n = net.st().recv(c.sid, b, sizeof b, now)) > 0) rx.insert(rx.end(), b, b + n);
    return net.flags[c.sid].peer_closed;
  }, 3 * kSecond));
  CHECK_EQ(rx.size(), sizeof req);
  SocketInfo info{};
  REQUIRE(net.st().info(c.sid, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::CloseWait));
  std::vector<uint8_t> answer(300000);
  Stream{43}.fill(answer.data(), answer.size());
  Micros now = net.link.now();
  CHECK_EQ(net.st().send(c.sid, answer.data(), answer.size(), now), long(answer.size()));
  CHECK_EQ(net.st().shutdown_write(c.sid, now), 0);
  set_nonblocking(c.kfd, true);
  std::vector<uint8_t> got;
  bool eof = false;
  CHECK(net.run_until([&](Micros) {
    uint8_t b[65536];
    ssize_t n;
    while ((n = recv(c.kfd, b, sizeof b, 0)) > 0) got.insert(got.end(), b, b + n);
    if (n == 0) eof = true;
    return eof;
  }, 5 * kSecond));
  CHECK(got == answer);
  close(c.kfd);
  net.st().close(c.sid, net.link.now());
  net.run_until([&](Micros) { return net.flags[c.sid].closed; }, 2 * kSecond);
  CHECK(net.flags[c.sid].closed);  // LAST-ACK ended by the kernel's ACK
}

// ---- RST from a closed port -----------------------------------------------------

void check_stack_connect_refused(const Family& f, uint16_t port) {
  Net net;
  REQUIRE(net.ok);
  int id = net.st().connect(Endpoint{f.stack, uint16_t(port + 30000)}, Endpoint{f.kernel, port},
                            0, net.link.now());
  REQUIRE(id > 0);
  CHECK(net.run_until([&](Micros) { return net.flags[SocketId(id)].error != 0; }, 3 * kSecond));
  CHECK_EQ(net.flags[SocketId(id)].error, -ECONNREFUSED);
  CHECK(!net.flags[SocketId(id)].connected);
  CHECK(net.st().counters().resets_in >= 1);
}

void check_kernel_connect_refused(const Family& f, uint16_t port) {
  Net net;
  REQUIRE(net.ok);
  int k = kernel_connect_start(f, port);
  REQUIRE(k >= 0);
  int r = 0;
  CHECK(net.run_until([&](Micros) { return (r = kernel_connect_result(k)) != 0; }, 3 * kSecond));
  CHECK_EQ(r, -ECONNREFUSED);
  CHECK(net.st().counters().resets_out >= 1);
  check_kernel_accepted_everything();
  close(k);
}

NETNS_TEST(stack_connect_to_closed_kernel_port_is_refused, 15) {
  check_stack_connect_refused(kIPv4, 5999);
}

NETNS_TEST(kernel_connect_to_stack_port_without_listener_is_refused, 15) {
  check_kernel_connect_refused(kIPv4, 7999);
}

NETNS_TEST(ipv6_stack_connect_to_closed_kernel_port_is_refused, 15) {
  check_stack_connect_refused(kIPv6, 5998);
}

NETNS_TEST(ipv6_kernel_connect_to_stack_port_without_listener_is_refused, 15) {
  check_kernel_connect_refused(kIPv6, 7998);
}

// ---- a receiver that stops reading -------------------------------------------

constexpr size_t kStallBulk = 4u * 1000 * 1000;

// The kernel stops reading: its window closes, the stack's sender stalls and
// keeps probing the zero window; the kernel reads again and the transfer
// completes byte-exact.
NETNS_TEST(kernel_stops_reading_stack_sender_probes_zero_window_then_completes, 25) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Stack, kIPv4, 5005, /*kernel_buf=*/32768);
  REQUIRE(c.sid > 0);
  Transfer x(c, kStallBulk, 0);
  StackSide& s = x.s;
  KernelSide& k = x.k;
  k.pause_reading = true;
  x.start(c);
  SocketInfo info{};
  bool closed = net.run_until([&](Micros now) {
    s.step(net, now);
    return net.st().info(s.id, &info) && info.send_window == 0 && info.send_queued > 0;
  }, 5 * kSecond);
  REQUIRE(closed);
  Counters before = net.st().counters();
  size_t kernel_had = k.received;
  net.run_for(2 * kSecond, [&](Micros now) { s.step(net, now); });
  Counters after = net.st().counters();
  REQUIRE(net.st().info(s.id, &info));
  std::printf("  stalled 2 s at %zu bytes sent: %llu probes out, %llu answers in, window %u\n",
              s.sent, (unsigned long long)(after.packets_out - before.packets_out),
              (unsigned long long)(after.packets_in - before.packets_in), info.send_window);
  CHECK_EQ(info.send_window, 0u);
  CHECK(info.send_queued > 0);
  // CLOSE-WAIT: the kernel's end sends nothing and shut its write side at once.
  CHECK_EQ(info.state, uint8_t(TcpState::CloseWait));
  CHECK_EQ(k.received.load(), kernel_had);          // nobody read
  CHECK(after.packets_out - before.packets_out >= 2);  // persist timer probes
  CHECK(after.packets_out - before.packets_out <= 20);  // ...backing off, not spinning
  CHECK(after.packets_in - before.packets_in >= 2);    // the kernel answers them
  CHECK_EQ(net.flags[s.id].error, 0);
  // Reading again reopens the window (the kernel sends a window update).
  k.pause_reading = false;
  Micros t0 = monotonic_micros();
  CHECK(x.run(net, 10 * kSecond));
  std::printf("  resumed and completed in %.2f s\n", seconds_since(t0));
  x.check(net);
  check_kernel_accepted_everything();
}

// The stack's application stops reading: our advertised window closes, the
// kernel's sender stalls and probes; we read again and it completes.
NETNS_TEST(stack_stops_reading_kernel_sender_probes_zero_window_then_completes, 25) {
  Config cfg = interop_config();
  cfg.recv_buffer = 128 * 1024;
  Net net(cfg);
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Kernel, kIPv4, 7005);
  REQUIRE(c.sid > 0);
  Transfer x(c, 0, kStallBulk);
  StackSide& s = x.s;
  s.pause_reading = true;
  x.start(c);
  SocketInfo info{};
  bool closed = net.run_until([&](Micros now) {
    s.step(net, now);
    return net.st().info(s.id, &info) && info.recv_window == 0;
  }, 5 * kSecond);
  REQUIRE(closed);
  Counters before = net.st().counters();
  net.run_for(2 * kSecond, [&](Micros now) { s.step(net, now); });
  Counters after = net.st().counters();
  REQUIRE(net.st().info(s.id, &info));
  std::printf("  stalled 2 s with %u bytes unread: %llu probes in, %llu answers out, window %u\n",
              info.recv_queued, (unsigned long long)(after.packets_in - before.packets_in),
              (unsigned long long)(after.packets_out - before.packets_out), info.recv_window);
  CHECK_EQ(info.recv_window, 0u);
  CHECK(info.recv_queued > 0);
  CHECK(info.recv_queued <= cfg.recv_buffer);
  CHECK(after.packets_in - before.packets_in >= 2);   // kernel zero-window probes
  CHECK(after.packets_out - before.packets_out >= 2);  // we answer each
  CHECK_EQ(after.bytes_in, before.bytes_in);  // nothing accepted beyond the window
  s.pause_reading = false;
  Micros t0 = monotonic_micros();
  CHECK(x.run(net, 10 * kSecond));
  std::printf("  resumed and completed in %.2f s\n", seconds_since(t0));
  x.check(net);
  check_kernel_accepted_everything();
}

// ---- faults -----------------------------------------------------------------------

constexpr size_t kLossyBulk = 100u * 1000 * 1000;

// 2% loss and 3% reordering (held 0.3-3 ms while later packets overtake),
// injected by the pump in each direction, seeded.
FaultConfig lossy(uint64_t seed) {
  FaultConfig f;
  f.loss = 0.02;
  f.reorder = 0.03;
  f.seed = seed;
  return f;
}

void print_faults(Net& net) {
  auto& fo = net.link.faults_out();
  auto& fi = net.link.faults_in();
  std::printf("  faults: stack->kernel %llu pkts, %llu dropped, %llu reordered; "
              "kernel->stack %llu pkts, %llu dropped, %llu reordered\n",
              (unsigned long long)fo.seen, (unsigned long long)fo.dropped,
              (unsigned long long)fo.held, (unsigned long long)fi.seen,
              (unsigned long long)fi.dropped, (unsigned long long)fi.held);
}

// Both directions at once: the stack's SACK recovery as a sender, and its
// receiver (out-of-order queue, SACK blocks) under Linux's recovery.
// An original segment held back past its fast retransmission arrives after
// it with an older TSval: the kernel drops it as a PAWS failure, rightly (a
// stale duplicate). Printed, not asserted.
NETNS_TEST(lossy_reordering_link_2pct_both_ways_completes_byte_exact, 90) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Stack, kIPv4, 5006);
  REQUIRE(c.sid > 0);
  net.link.set_faults(lossy(0x10551), lossy(0x10552));
  bulk(net, c, kIPv4, kLossyBulk, kLossyBulk, "lossy both ways", 60 * kSecond, false);
  auto& fo = net.link.faults_out();
  auto& fi = net.link.faults_in();
  print_faults(net);
  CHECK(fo.dropped > 0 && fi.dropped > 0 && fo.held > 0 && fi.held > 0);
}

// The stack alone as the sender through the same faults, over IPv6: losses
// are repaired by SACK recovery, not by waiting for the retransmission timer
// (each timeout idles the connection for at least rto_min, 200 ms). Before
// RFC 6675 recovery, 16 MB took 30-40 timeouts here.
NETNS_TEST(ipv6_lossy_link_stack_sender_repairs_losses_without_timeouts, 90) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Stack, kIPv6, 5007);
  REQUIRE(c.sid > 0);
  net.link.set_faults(lossy(0x3d0), lossy(0x3d1));
  BulkResult r = bulk(net, c, kIPv6, kLossyBulk, 0, "lossy, stack sends", 60 * kSecond, false);
  print_faults(net);
  uint64_t dropped = net.link.faults_out().dropped;
  CHECK(dropped > 1000);
  CHECK(r.counters.retransmission_timeouts * 50 <= dropped);
}

// Regression (found by this suite): the stack's TSval used to tick in
// microseconds, so it wrapped its sign every 2^31 us (35.8 minutes). After a connection idles that long, every segment we send looks
// older than ts_recent to the kernel's PAWS (whose own 24-day staleness rule
// does not apply yet) and is dropped: the connection hangs until -ETIMEDOUT.
// RFC 7323 5.4 asks for a 1 ms .. 1 s tick. The idle period is simulated by
// moving the stack's clock forward.
NETNS_TEST(send_after_36_minutes_idle_reaches_kernel, 30) {
  Net net;
  REQUIRE(net.ok);
  Conn c = open_connection(net, Opener::Stack, kIPv4, 5011);
  REQUIRE(c.sid > 0);
  check_ping_pong(net, c);
  long paws_before = kernel_tcp_errors().paws_estab;
  net.link.clock_offset += (Micros(1) << 31) + 60 * kSecond;  // ~36.8 min idle
  net.st().poll(net.link.now());
  const char msg[] = "still there?";
  CHECK_EQ(net.st().send(c.sid, (const uint8_t*)msg, sizeof msg, net.link.now()),
           long(sizeof msg));
  char buf[64];
  size_t got = 0;
  net.run_until([&](Micros) {
    ssize_t n = recv(c.kfd, buf + got, sizeof buf - got, 0);
    if (n > 0) got += size_t(n);
    return got >= sizeof msg;
  }, 3 * kSecond);
  long paws_after = kernel_tcp_errors().paws_estab;
  std::printf("  kernel got %zu/%zu bytes; PAWSEstab %ld -> %ld\n", got, sizeof msg,
              paws_before, paws_after);
  CHECK_EQ(got, sizeof msg);
  CHECK_EQ(paws_after, paws_before);
  close(c.kfd);
}

