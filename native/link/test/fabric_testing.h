// Helpers shared by the link tests: unique fabric names, small fabrics, kernel
// listening sockets to serve, pairs, and sending/receiving whole frames.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "link/fabric.h"

namespace sidestep::link::test {

inline std::string unique_name() {
  static int n = 0;
  return "sidestep-test-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

// Small rings keep the tests fast and make wrap-around and full rings easy.
inline FabricConfig small_config(const std::string& name) {
  FabricConfig c;
  c.name = name;
  c.ring_bytes = 1u << 16;
  c.mtu = 16384;
  return c;
}

inline std::unique_ptr<Fabric> open_fabric(const FabricConfig& c, std::string* why = nullptr) {
  std::unique_ptr<Fabric> f;
  std::string w;
  int r = Fabric::open(c, &f, &w);
  if (r < 0) {
    std::fprintf(stderr, "  Fabric::open(%s) = %d: %s\n", c.name.c_str(), r, w.c_str());
    if (why) *why = w;
    return nullptr;
  }
  return f;
}

inline const uint8_t* loopback_v4() {
  static const uint8_t a[16] = {127, 0, 0, 1};
  return a;
}

// A kernel TCP socket listening on 127.0.0.1 (port 0: any); closed with it.
struct KernelListener {
  int fd = -1;
  uint16_t port = 0;
  explicit KernelListener(uint16_t want = 0, bool reuseport = false) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (reuseport) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(want);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd, 16) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      ::close(fd);
      fd = -1;
      return;
    }
    port = ntohs(sa.sin_port);
  }
  ~KernelListener() {
    if (fd >= 0) ::close(fd);
  }
  KernelListener(const KernelListener&) = delete;
  KernelListener& operator=(const KernelListener&) = delete;
};

// Serve `kl` from fabric `f`: the listener entry, or a negative errno.
inline int serve(Fabric& f, const KernelListener& kl) {
  std::string why;
  int r = f.listener_add(kl.fd, 4, loopback_v4(), kl.port, &why);
  if (r < 0) std::fprintf(stderr, "  listener_add: %d %s\n", r, why.c_str());
  return r;
}

// Where a connection from 127.0.0.1:<a reserved port> to 127.0.0.1:port
// goes, as `client` decides it. 0 and *via, or the negative errno (*why).
inline int route_to(Fabric& client, uint16_t port, LinkAddr* via, std::string* why = nullptr) {
  std::string w;
  uint16_t local = 0;
  int h = client.ports().take(4, loopback_v4(), [](uint16_t) { return true; }, &local);
  if (h < 0) return h;
  int r = client.route(4, loopback_v4(), local, loopback_v4(), port, via, &w);
  client.ports().give_back(h);
  if (why) *why = w;
  return r;
}

// Let every fabric in `fs` handle its control plane once; returns the pairs
// that went down.
inline std::vector<LinkAddr> control(std::initializer_list<Fabric*> fs) {
  std::vector<LinkAddr> down;
  for (Fabric* f : fs) f->control_poll(&down);
  return down;
}

inline bool send_frame(Fabric& f, LinkAddr to, const void* data, size_t len) {
  uint8_t* p = f.tx_reserve(to, len);
  if (!p) return false;
  std::memcpy(p, data, len);
  f.tx_commit(to, len);
  return true;
}

inline bool send_text(Fabric& f, LinkAddr to, const std::string& s) {
  return send_frame(f, to, s.data(), s.size());
}

struct Received {
  LinkAddr from;
  std::string bytes;
};

inline std::vector<Received> poll_all(Fabric& f, size_t budget = 1024) {
  std::vector<Received> out;
  f.rx_poll(
      [&](LinkAddr from, const uint8_t* p, size_t n) {
        out.push_back({from, std::string(reinterpret_cast<const char*>(p), n)});
      },
      budget);
  return out;
}

// Polls until at least one frame arrives or `ms` pass, sleeping on the
// doorbell and the control plane as a runtime would.
inline std::vector<Received> wait_frames(Fabric& f, int ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    std::vector<LinkAddr> down;
    f.control_poll(&down);
    auto got = poll_all(f);
    if (!got.empty() || std::chrono::steady_clock::now() > deadline) return got;
    if (f.prepare_sleep()) {
      pollfd pfd[2] = {{f.doorbell_fd(), POLLIN, 0}, {f.control_fd(), POLLIN, 0}};
      ::poll(pfd, 2, 10);
      f.doorbell_drain();
      f.disarm();
    }
  }
}

inline bool fd_readable(int fd, int ms) {
  pollfd pfd = {fd, POLLIN, 0};
  return ::poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

// Reaps a child; returns its exit status or -signal.
inline int reap(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1000;
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return -WTERMSIG(st);
  return -1001;
}

}  // namespace sidestep::link::test
