// Helpers shared by the link tests: unique fabric names, small fabrics, and
// sending/receiving whole frames.
#pragma once

#include <poll.h>
#include <sys/stat.h>
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

inline std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }

inline bool shm_exists(const std::string& name) {
  struct stat st;
  return ::stat(shm_path(name).c_str(), &st) == 0;
}

// Small rings keep the tests fast and make wrap-around and full rings easy.
inline FabricConfig small_config(const std::string& name) {
  FabricConfig c;
  c.name = name;
  c.ring_bytes = 1u << 16;
  c.mtu = 16384;
  c.command = "link-test";
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

// Polls until at least one frame arrives or `ms` pass.
inline std::vector<Received> wait_frames(Fabric& f, int ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    auto got = poll_all(f);
    if (!got.empty() || std::chrono::steady_clock::now() > deadline) return got;
    if (f.prepare_sleep()) {
      pollfd pfd = {f.doorbell_fd(), POLLIN, 0};
      ::poll(&pfd, 1, 10);
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
