// Fabric lifecycle and peers: the file's mode and removal, layout checks,
// stacks in one process and across processes, death by kill -9, and the
// need-wakeup doorbells.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <barrier>
#include <thread>

#include "check.h"
#include "link/layout.h"
#include "link/registry.h"
#include "link/test/fabric_testing.h"

using namespace sidestep::link;
using namespace sidestep::link::test;

namespace {

const uint8_t kAny[16] = {};
const uint8_t kLoop4[16] = {127, 0, 0, 1};

// Child side of a fork: never returns, never runs the parent's destructors
// (the parent's Fabric shares our inherited file description).
[[noreturn]] void child_exit(bool ok) { ::_exit(ok ? 0 : 1); }

}  // namespace

TEST(file_is_mode_0600_and_removed_after_last_fabric) {
  const std::string name = unique_name();
  const mode_t old_umask = ::umask(0);  // the mode must not depend on the umask
  {
    auto a = open_fabric(small_config(name));
    REQUIRE(a);
    struct stat st;
    REQUIRE(::stat(shm_path(name).c_str(), &st) == 0);
    CHECK_EQ(st.st_mode & 07777, 0600u);
    CHECK_EQ(st.st_uid, ::geteuid());
    auto b = open_fabric(small_config(name));
    REQUIRE(b);
    a.reset();
    CHECK(shm_exists(name));  // b still attached
    b.reset();
    CHECK(!shm_exists(name));
  }
  ::umask(old_umask);
  CHECK(!shm_exists(name));
}

TEST(attach_with_a_different_layout_fails_with_reason) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    REQUIRE(a);
    auto cfg = small_config(name);
    cfg.ring_bytes = 1u << 17;
    std::unique_ptr<Fabric> b;
    std::string why;
    int r = Fabric::open(cfg, &b, &why);
    CHECK_EQ(r, -EINVAL);
    CHECK(!b);
    CHECK(why.find("ring_bytes 65536") != std::string::npos);
    CHECK(why.find("131072") != std::string::npos);
    // The failed attach did not disturb the live one.
    CHECK(send_text(*a, a->self(), "still here"));
    CHECK_EQ(poll_all(*a).size(), 1u);
  }
  CHECK(!shm_exists(name));
}

TEST(invalid_config_is_refused_with_reason) {
  std::unique_ptr<Fabric> f;
  std::string why;
  auto cfg = small_config("bad/name");
  CHECK_EQ(Fabric::open(cfg, &f, &why), -EINVAL);
  CHECK(why.find("name") != std::string::npos);
  cfg = small_config(unique_name());
  cfg.ring_bytes = 100000;  // not a power of two
  CHECK_EQ(Fabric::open(cfg, &f, &why), -EINVAL);
  CHECK(why.find("power of two") != std::string::npos);
  cfg.ring_bytes = 1u << 16;
  cfg.mtu = 65536;  // two max frames don't fit
  CHECK_EQ(Fabric::open(cfg, &f, &why), -EINVAL);
  CHECK(why.find("too small") != std::string::npos);
  CHECK(!shm_exists(cfg.name));
}

TEST(file_accessible_to_others_is_refused) {
  const std::string name = unique_name();
  int fd = ::open(shm_path(name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  ::fchmod(fd, 0644);
  ::close(fd);
  std::unique_ptr<Fabric> f;
  std::string why;
  CHECK_EQ(Fabric::open(small_config(name), &f, &why), -EACCES);
  CHECK(why.find("0644") != std::string::npos);
  CHECK(shm_exists(name));  // not ours to delete
  ::unlink(shm_path(name).c_str());
}

TEST(stale_file_of_dead_stacks_is_rebuilt_with_new_layout) {
  const std::string name = unique_name();
  pid_t pid = ::fork();
  if (pid == 0) {
    auto f = open_fabric(small_config(name));
    ::kill(::getpid(), SIGKILL);  // dies attached: the file stays
    child_exit(false);
  }
  CHECK_EQ(reap(pid), -SIGKILL);
  CHECK(shm_exists(name));
  {
    auto cfg = small_config(name);
    cfg.ring_bytes = 1u << 17;
    auto f = open_fabric(cfg);
    REQUIRE(f);
    CHECK(send_text(*f, f->self(), "x"));
    CHECK_EQ(poll_all(*f).size(), 1u);
  }
  CHECK(!shm_exists(name));
}

TEST(two_fabrics_in_one_process_exchange_frames_both_ways) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    CHECK(a->self() != b->self());
    CHECK(slot_of(a->self()) != slot_of(b->self()));
    CHECK(a->peer_alive(b->self()));
    CHECK(b->peer_alive(a->self()));
    CHECK(a->peer_alive(a->self()));
    CHECK_EQ(a->peer_pid(b->self()), ::getpid());
    for (int i = 0; i < 100; ++i) {
      REQUIRE(send_text(*a, b->self(), "ping " + std::to_string(i)));
      auto got = poll_all(*b);
      REQUIRE(got.size() == 1u);
      CHECK_EQ(got[0].from, a->self());
      CHECK(got[0].bytes == "ping " + std::to_string(i));
      REQUIRE(send_text(*b, got[0].from, "pong " + std::to_string(i)));
      auto back = poll_all(*a);
      REQUIRE(back.size() == 1u);
      CHECK_EQ(back[0].from, b->self());
      CHECK(back[0].bytes == "pong " + std::to_string(i));
    }
    CHECK_EQ(a->counters().frames_out, 100u);
    CHECK_EQ(a->counters().frames_in, 100u);
    CHECK_EQ(b->counters().frames_out, 100u);
    // A detached peer is gone for the data path at once; what it sent before
    // leaving is still delivered, like packets already on the wire.
    for (int i = 0; i < 3; ++i) REQUIRE(send_text(*b, a->self(), "last words"));
    LinkAddr gone = b->self();
    b.reset();
    auto last = poll_all(*a);
    CHECK_EQ(last.size(), 3u);
    for (auto& r : last) CHECK_EQ(r.from, gone);
    CHECK(!a->peer_alive(gone));
    CHECK_EQ(a->peer_pid(gone), -1);
    CHECK(a->tx_reserve(gone, 10) == nullptr);
    CHECK_EQ(a->counters().drops_peer_gone, 1u);
  }
  CHECK(!shm_exists(name));
}

TEST(forked_child_attaches_and_exchanges_frames_with_parent) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr parent_addr = parent->self();
    pid_t pid = ::fork();
    if (pid == 0) {
      auto f = open_fabric(small_config(name));
      if (!f) child_exit(false);
      bool ok = true;
      for (int i = 0; i < 50 && ok; ++i) {
        ok = send_text(*f, parent_addr, "hello " + std::to_string(i));
        auto got = wait_frames(*f);
        ok = ok && got.size() == 1 && got[0].bytes == "reply " + std::to_string(i) &&
             got[0].from == parent_addr;
      }
      f.reset();
      child_exit(ok);
    }
    REQUIRE(pid > 0);
    LinkAddr child = 0;
    for (int i = 0; i < 50; ++i) {
      auto got = wait_frames(*parent);
      REQUIRE(got.size() == 1u);
      CHECK(got[0].bytes == "hello " + std::to_string(i));
      child = got[0].from;
      CHECK(parent->peer_alive(child));
      CHECK_EQ(parent->peer_pid(child), pid);
      REQUIRE(send_text(*parent, child, "reply " + std::to_string(i)));
    }
    CHECK_EQ(reap(pid), 0);
    CHECK(!parent->peer_alive(child));
  }
  CHECK(!shm_exists(name));
}

TEST(kill9_child_is_detected_and_its_slot_registrations_ports_reclaimed) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr parent_addr = parent->self();
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      auto f = open_fabric(small_config(name));
      if (!f) child_exit(false);
      bool ok = f->listener_add(4, kAny, 8080, false) >= 0;
      ok = ok && f->port_claim(40000) == 40000 && f->port_claim(40001) == 40001;
      ok = ok && send_text(*f, parent_addr, "first");
      for (int i = 0; i < 3; ++i) ok = ok && send_text(*f, parent_addr, "stale");
      char c = ok ? 'y' : 'n';
      if (::write(ready[1], &c, 1) != 1) child_exit(false);
      for (;;) ::pause();
    }
    REQUIRE(pid > 0);
    ::close(ready[1]);
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    CHECK_EQ(c, 'y');
    // Consume only the first frame: three more stay in the ring.
    auto first = poll_all(*parent, 1);
    REQUIRE(first.size() == 1u);
    const LinkAddr child = first[0].from;
    CHECK(parent->peer_alive(child));
    LinkAddr found = 0;
    CHECK_EQ(parent->listener_lookup(4, kLoop4, 8080, &found), 0);
    CHECK_EQ(found, child);
    CHECK_EQ(parent->port_claim(40000), -EADDRINUSE);

    ::kill(pid, SIGKILL);
    CHECK_EQ(reap(pid), -SIGKILL);
    CHECK(!parent->peer_alive(child));
    CHECK_EQ(parent->peer_pid(child), -1);
    CHECK_EQ(parent->listener_lookup(4, kLoop4, 8080, &found), -ENOENT);
    CHECK_EQ(parent->port_claim(40000), 40000);  // reclaimed lazily
    CHECK(shm_exists(name));
    // Without a syscall per frame, a producer only learns of the death when
    // the dead consumer's ring fills up: that refusal is counted as peer gone.
    const std::string big(4000, 'z');
    int accepted = 0;
    while (send_frame(*parent, child, big.data(), big.size())) ++accepted;
    CHECK_EQ(accepted, 16);
    CHECK_EQ(parent->counters().drops_peer_gone, 1u);
    CHECK_EQ(parent->counters().drops_ring_full, 0u);

    // The dead child's slot is the free one: a new stack gets it, with a new
    // generation, and the old generation's frames never reach anyone.
    auto again = open_fabric(small_config(name));
    REQUIRE(again);
    CHECK_EQ(slot_of(again->self()), slot_of(child));
    CHECK(again->self() != child);
    CHECK(!parent->peer_alive(child));
    CHECK(parent->peer_alive(again->self()));
    CHECK_EQ(again->port_claim(40001), 40001);  // freed when the slot was claimed
    const uint64_t malformed = parent->counters().drops_malformed;
    CHECK_EQ(poll_all(*parent).size(), 0u);
    CHECK_EQ(parent->counters().drops_malformed, malformed + 3);
    CHECK(parent->tx_reserve(child, 1) == nullptr);  // stale address: peer gone
    // The new owner talks normally, both ways (the ring the parent had filled
    // for the dead child was emptied when the slot was claimed).
    REQUIRE(send_text(*again, parent_addr, "new"));
    auto got = poll_all(*parent);
    REQUIRE(got.size() == 1u);
    CHECK_EQ(got[0].from, again->self());
    REQUIRE(send_text(*parent, again->self(), "welcome"));
    auto welcome = poll_all(*again);
    REQUIRE(welcome.size() == 1u);
    CHECK(welcome[0].bytes == "welcome");
    CHECK_EQ(again->counters().drops_malformed, 0u);
  }
  CHECK(!shm_exists(name));
}

TEST(slots_run_out_after_max_stacks_and_come_back) {
  const std::string name = unique_name();
  {
    std::vector<std::unique_ptr<Fabric>> all;
    for (uint32_t i = 0; i < kMaxStacks; ++i) {
      all.push_back(open_fabric(small_config(name)));
      REQUIRE(all.back());
    }
    std::unique_ptr<Fabric> extra;
    std::string why;
    CHECK_EQ(Fabric::open(small_config(name), &extra, &why), -EUSERS);
    CHECK(why.find("full") != std::string::npos);
    const LinkAddr old = all[10]->self();
    all[10].reset();
    CHECK_EQ(Fabric::open(small_config(name), &extra, &why), 0);
    REQUIRE(extra);
    CHECK_EQ(slot_of(extra->self()), slot_of(old));
    CHECK(extra->self() != old);
    CHECK(all[0]->peer_alive(extra->self()));
  }
  CHECK(!shm_exists(name));
}

TEST(armed_consumer_gets_exactly_one_doorbell) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    CHECK(!fd_readable(b->doorbell_fd(), 0));
    CHECK(b->prepare_sleep());
    REQUIRE(send_text(*a, b->self(), "wake"));
    CHECK(fd_readable(b->doorbell_fd(), 1000));
    CHECK_EQ(a->counters().doorbells_rung, 1u);
    CHECK_EQ(a->counters().doorbells_suppressed, 0u);
    // The flag was consumed by the first commit: more frames ring nothing.
    REQUIRE(send_text(*a, b->self(), "more"));
    CHECK_EQ(a->counters().doorbells_rung, 1u);
    CHECK_EQ(a->counters().doorbells_suppressed, 1u);
    b->doorbell_drain();
    CHECK_EQ(b->counters().wakeups, 1u);
    CHECK(!fd_readable(b->doorbell_fd(), 0));
    CHECK_EQ(poll_all(*b).size(), 2u);
  }
  CHECK(!shm_exists(name));
}

// The slot's published eventfd number, as another process would see it.
int32_t* published_eventfd(const std::string& name, const FabricConfig& cfg, LinkAddr who,
                           void** mapping, size_t* bytes) {
  int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return nullptr;
  auto geo = layout::Geometry::for_config(cfg.ring_bytes, cfg.mtu);
  void* m = ::mmap(nullptr, geo.metadata_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return nullptr;
  *mapping = m;
  *bytes = geo.metadata_bytes;
  auto* slots = reinterpret_cast<layout::Slot*>(static_cast<uint8_t*>(m) + geo.slots_offset);
  return &slots[slot_of(who)].doorbell_eventfd;
}

TEST(another_process_rings_our_eventfd_not_the_datagram) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr parent_addr = parent->self();
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      auto f = open_fabric(small_config(name));
      if (!f) child_exit(false);
      char go;
      if (::read(ready[0], &go, 1) != 1) child_exit(false);  // the parent is armed
      bool ok = send_text(*f, parent_addr, "wake");
      ok = ok && f->counters().doorbells_rung == 1 && f->counters().doorbells_fallback == 0;
      f.reset();
      child_exit(ok);
    }
    REQUIRE(pid > 0);
    CHECK(parent->prepare_sleep());
    REQUIRE(::write(ready[1], "g", 1) == 1);
    CHECK(fd_readable(parent->doorbell_fd(), 2000));
    CHECK(!fd_readable(parent->doorbell_fallback_fd(), 0));
    parent->doorbell_drain();
    CHECK_EQ(parent->counters().wakeups, 1u);
    CHECK(!fd_readable(parent->doorbell_fd(), 0));
    CHECK_EQ(reap(pid), 0);  // the child rang once, by eventfd
    ::close(ready[0]);
    ::close(ready[1]);
  }
  CHECK(!shm_exists(name));
}

size_t open_fds() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

TEST(the_eventfd_of_a_peer_that_died_is_let_go) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr parent_addr = parent->self();
    int done[2];
    REQUIRE(::pipe(done) == 0);
    const size_t before = open_fds();
    pid_t pid = ::fork();
    if (pid == 0) {
      auto f = open_fabric(small_config(name));
      if (!f || !f->prepare_sleep() || !send_text(*f, parent_addr, "armed")) child_exit(false);
      char c;
      if (::read(done[0], &c, 1) != 1) child_exit(false);
      child_exit(true);
    }
    REQUIRE(pid > 0);
    auto got = wait_frames(*parent);
    REQUIRE(got.size() == 1u);
    const LinkAddr child = got[0].from;
    parent->vouch(child, true);
    REQUIRE(send_text(*parent, child, "ring"));  // the child is armed: we take its eventfd
    CHECK_EQ(parent->counters().doorbells_rung, 1u);
    CHECK_EQ(parent->counters().doorbells_fallback, 0u);
    CHECK_EQ(open_fds(), before + 1);
    REQUIRE(::write(done[1], "x", 1) == 1);
    CHECK_EQ(reap(pid), 0);
    parent->vouch(child, false);  // what the runtime does when the pidfd says it died
    CHECK_EQ(open_fds(), before);
    ::close(done[0]);
    ::close(done[1]);
  }
  CHECK(!shm_exists(name));
}

TEST(producer_without_eventfds_rings_the_datagram_fallback) {
  const std::string name = unique_name();
  {
    auto cfg = small_config(name);
    cfg.eventfd_doorbells = false;
    auto a = open_fabric(cfg);
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    CHECK(b->prepare_sleep());
    REQUIRE(send_text(*a, b->self(), "wake"));
    CHECK(fd_readable(b->doorbell_fallback_fd(), 1000));
    CHECK(!fd_readable(b->doorbell_fd(), 0));
    CHECK_EQ(a->counters().doorbells_rung, 1u);
    CHECK_EQ(a->counters().doorbells_fallback, 1u);
    b->doorbell_fallback_drain();
    CHECK_EQ(b->counters().wakeups, 1u);
    CHECK(!fd_readable(b->doorbell_fallback_fd(), 0));
    CHECK_EQ(poll_all(*b).size(), 1u);
  }
  CHECK(!shm_exists(name));
}

TEST(a_published_number_that_is_not_an_eventfd_is_never_written) {
  const std::string name = unique_name();
  {
    auto cfg = small_config(name);
    auto a = open_fabric(cfg);
    auto b = open_fabric(cfg);
    REQUIRE(a && b);
    // b's slot claims its doorbell is a pipe of this process: a producer
    // must check what it took before writing a byte to it.
    int p[2];
    REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    void* m = nullptr;
    size_t bytes = 0;
    int32_t* number = published_eventfd(name, cfg, b->self(), &m, &bytes);
    REQUIRE(number);
    const int32_t real = *number;
    *number = p[1];
    CHECK(b->prepare_sleep());
    REQUIRE(send_text(*a, b->self(), "wake"));
    char c;
    CHECK(::read(p[0], &c, 1) < 0);  // nothing was written into the pipe
    CHECK_EQ(a->counters().doorbells_fallback, 1u);
    CHECK(fd_readable(b->doorbell_fallback_fd(), 1000));
    *number = real;
    ::munmap(m, bytes);
    ::close(p[0]);
    ::close(p[1]);
  }
  CHECK(!shm_exists(name));
}

TEST(disarmed_consumer_costs_producers_no_syscall) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    CHECK(b->prepare_sleep());
    b->disarm();  // woke up for another reason and is polling
    for (int i = 0; i < 5; ++i) REQUIRE(send_text(*a, b->self(), "x"));
    CHECK_EQ(a->counters().doorbells_rung, 0u);
    CHECK_EQ(a->counters().doorbells_suppressed, 5u);
    CHECK(!fd_readable(b->doorbell_fd(), 50));
    CHECK_EQ(poll_all(*b).size(), 5u);
  }
  CHECK(!shm_exists(name));
}

TEST(prepare_sleep_refuses_while_a_frame_is_pending) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    REQUIRE(send_text(*a, b->self(), "x"));
    CHECK(b->rx_pending());
    CHECK(!b->prepare_sleep());
    // It left the flag clear: producers still need not ring.
    REQUIRE(send_text(*a, b->self(), "y"));
    CHECK_EQ(a->counters().doorbells_rung, 0u);
    CHECK_EQ(poll_all(*b).size(), 2u);
    CHECK(!b->rx_pending());
    CHECK(b->prepare_sleep());
  }
  CHECK(!shm_exists(name));
}

TEST(loopback_to_self_rings_own_doorbell_when_armed) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    REQUIRE(a);
    CHECK(a->prepare_sleep());
    REQUIRE(send_text(*a, a->self(), "me"));
    CHECK(fd_readable(a->doorbell_fd(), 1000));
    CHECK_EQ(a->counters().doorbells_rung, 1u);
    a->doorbell_drain();
    auto got = poll_all(*a);
    REQUIRE(got.size() == 1u);
    CHECK(got[0].bytes == "me");
  }
  CHECK(!shm_exists(name));
}

// Two threads, each with its own Fabric, ping-pong through sleep/wake: every
// wait goes through prepare_sleep() and poll(). A lost wakeup would show as a
// poll() timeout with a frame pending.
TEST(need_wakeup_loses_no_wakeup_in_threaded_ping_pong) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    constexpr int kRounds = 20000;
    std::atomic<int> lost{0};
    auto serve = [&](Fabric& f, LinkAddr peer, bool starts) {
      int received = 0;
      if (starts) send_text(f, peer, "p");
      while (received < kRounds) {
        size_t n = f.rx_poll([](LinkAddr, const uint8_t*, size_t) {}, 64);
        if (n) {
          received += static_cast<int>(n);
          if (received < kRounds || !starts)
            for (size_t i = 0; i < n; ++i)
              while (!send_text(f, peer, "p")) std::this_thread::yield();
          continue;
        }
        if (!f.prepare_sleep()) continue;
        if (!fd_readable(f.doorbell_fd(), 2000)) {
          if (f.rx_pending()) ++lost;
          else break;  // the peer stopped: a bug elsewhere, don't hang
        }
        f.doorbell_drain();
        f.disarm();
      }
    };
    std::thread tb([&] { serve(*b, a->self(), false); });
    serve(*a, b->self(), true);
    tb.join();
    CHECK_EQ(lost.load(), 0);
    CHECK_EQ(a->counters().frames_in, uint64_t{kRounds});
    CHECK_EQ(b->counters().frames_in, uint64_t{kRounds});
    // Most waits really slept: the doorbells were rung and consumed.
    // (A doorbell rung while the consumer's re-check already saw the frame
    // stays queued until its next sleep, so wakeups can trail rings.)
    CHECK(a->counters().doorbells_rung > 0u && b->counters().doorbells_rung > 0u);
    CHECK(b->counters().wakeups > 0u && b->counters().wakeups <= a->counters().doorbells_rung);
    CHECK(a->counters().wakeups > 0u && a->counters().wakeups <= b->counters().doorbells_rung);
  }
  CHECK(!shm_exists(name));
}

TEST(counters_are_mirrored_into_the_slot) {
  const std::string name = unique_name();
  {
    auto cfg = small_config(name);
    auto a = open_fabric(cfg);
    REQUIRE(a);
    for (int i = 0; i < 3; ++i) REQUIRE(send_text(*a, a->self(), "abc"));
    poll_all(*a);
    int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    auto geo = layout::Geometry::for_config(cfg.ring_bytes, cfg.mtu);
    layout::Slot slot;
    REQUIRE(::pread(fd, &slot, sizeof(slot),
                    geo.slots_offset + slot_of(a->self()) * sizeof(layout::Slot)) ==
            static_cast<ssize_t>(sizeof(slot)));
    ::close(fd);
    FabricCounters mirrored;
    std::memcpy(&mirrored, slot.counters, sizeof(mirrored));
    CHECK_EQ(mirrored.frames_out, 3u);
    CHECK_EQ(mirrored.frames_in, 3u);
    CHECK_EQ(mirrored.bytes_in, 9u);
    CHECK_EQ(slot.pid, ::getpid());
    CHECK_EQ(slot.generation, generation_of(a->self()));
    CHECK(std::string(slot.command) == "link-test");
  }
  CHECK(!shm_exists(name));
}

TEST(released_slot_returns_its_ring_memory) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    std::string s(8000, 'm');
    for (int i = 0; i < 40; ++i) {  // wraps both rings: every page touched
      REQUIRE(send_frame(*a, b->self(), s.data(), s.size()));
      REQUIRE(send_frame(*b, a->self(), s.data(), s.size()));
      poll_all(*a);
      poll_all(*b);
    }
    struct stat before, after;
    REQUIRE(::stat(shm_path(name).c_str(), &before) == 0);
    b.reset();
    REQUIRE(::stat(shm_path(name).c_str(), &after) == 0);
    // Both rings between a and b (64 KiB + a header page each) are punched.
    const long long freed = (static_cast<long long>(before.st_blocks) - after.st_blocks) * 512;
    CHECK(freed >= 2 * (64 << 10));
  }
  CHECK(!shm_exists(name));
}

// A real concurrent producer in another process: every frame arrives, intact
// and in order, through many wrap-arounds and full-ring retries.
TEST(cross_process_stream_arrives_intact_and_in_order) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr to = parent->self();
    constexpr uint32_t kFrames = 100000;
    pid_t pid = ::fork();
    if (pid == 0) {
      auto f = open_fabric(small_config(name));
      if (!f) child_exit(false);
      for (uint32_t i = 0; i < kFrames; ++i) {
        const size_t len = 4 + (i * 7919u) % 3000;
        uint8_t* p;
        while (!(p = f->tx_reserve(to, len))) ::sched_yield();
        std::memcpy(p, &i, 4);
        std::memset(p + 4, static_cast<int>(i & 0xff), len - 4);
        f->tx_commit(to, len);
      }
      // Stay attached until the parent has read everything (frames of a
      // departed stack stay deliverable anyway, but this is the normal case).
      auto bye = wait_frames(*f, 10000);
      f.reset();
      child_exit(bye.size() == 1);
    }
    REQUIRE(pid > 0);
    uint32_t next = 0;
    bool ok = true;
    LinkAddr child = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (next < kFrames && ok && std::chrono::steady_clock::now() < deadline) {
      size_t n = parent->rx_poll(
          [&](LinkAddr from, const uint8_t* p, size_t len) {
            uint32_t seq;
            if (len < 4) { ok = false; return; }
            std::memcpy(&seq, p, 4);
            if (seq != next || len != 4 + (seq * 7919u) % 3000) ok = false;
            for (size_t k = 4; k < len && ok; ++k)
              if (p[k] != static_cast<uint8_t>(seq & 0xff)) ok = false;
            child = from;
            ++next;
          },
          256);
      if (n == 0 && parent->prepare_sleep()) {
        fd_readable(parent->doorbell_fd(), 100);
        parent->doorbell_drain();
        parent->disarm();
      }
    }
    CHECK(ok);
    CHECK_EQ(next, kFrames);
    CHECK_EQ(parent->counters().drops_malformed, 0u);
    if (child) send_text(*parent, child, "bye");
    CHECK_EQ(reap(pid), 0);
  }
  CHECK(!shm_exists(name));
}

TEST(uninitialised_file_without_stacks_is_rebuilt) {
  const std::string name = unique_name();
  int fd = ::open(shm_path(name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 1 << 20) == 0);  // as if its creator died mid-way
  ::close(fd);
  {
    auto f = open_fabric(small_config(name));
    REQUIRE(f);
    CHECK(send_text(*f, f->self(), "x"));
    CHECK_EQ(poll_all(*f).size(), 1u);
  }
  CHECK(!shm_exists(name));
}

// Several producer threads into one sleeping consumer: the inbound mask, the
// round-robin and the need-wakeup flag together lose nothing.
TEST(many_producers_into_one_sleeping_consumer_lose_nothing) {
  const std::string name = unique_name();
  {
    auto consumer = open_fabric(small_config(name));
    REQUIRE(consumer);
    constexpr int kProducers = 3;
    constexpr uint32_t kEach = 20000;
    std::vector<std::unique_ptr<Fabric>> producers;
    for (int i = 0; i < kProducers; ++i) {
      producers.push_back(open_fabric(small_config(name)));
      REQUIRE(producers.back());
    }
    const LinkAddr to = consumer->self();
    std::vector<std::thread> threads;
    for (auto& p : producers) {
      Fabric* f = p.get();
      threads.emplace_back([f, to] {
        for (uint32_t i = 0; i < kEach; ++i) {
          while (!send_frame(*f, to, &i, sizeof(i))) std::this_thread::yield();
          if (i % 1000 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      });
    }
    std::vector<uint32_t> next(kMaxStacks, 0);
    uint32_t total = 0, lost_wakeups = 0, out_of_order = 0;
    while (total < kProducers * kEach) {
      size_t n = consumer->rx_poll(
          [&](LinkAddr from, const uint8_t* p, size_t len) {
            uint32_t v = 0;
            if (len == sizeof(v)) std::memcpy(&v, p, sizeof(v));
            if (len != sizeof(v) || v != next[slot_of(from)]) ++out_of_order;
            next[slot_of(from)] = v + 1;
            ++total;
          },
          64);
      if (n) continue;
      if (!consumer->prepare_sleep()) continue;
      if (!fd_readable(consumer->doorbell_fd(), 2000)) {
        if (consumer->rx_pending()) ++lost_wakeups;
        else break;
      }
      consumer->doorbell_drain();
      consumer->disarm();
    }
    for (auto& t : threads) t.join();
    CHECK_EQ(total, kProducers * kEach);
    CHECK_EQ(out_of_order, 0u);
    CHECK_EQ(lost_wakeups, 0u);
    CHECK(consumer->counters().wakeups > 0u);
  }
  CHECK(!shm_exists(name));
}

TEST(forked_copy_destroyed_in_child_leaves_parent_attached) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    auto other = open_fabric(small_config(name));
    REQUIRE(parent && other);
    pid_t pid = ::fork();
    if (pid == 0) {
      parent.reset();  // runs ~Fabric on the inherited copy
      other.reset();
      child_exit(true);
    }
    CHECK_EQ(reap(pid), 0);
    CHECK(shm_exists(name));
    CHECK(other->peer_alive(parent->self()));
    REQUIRE(send_text(*other, parent->self(), "still attached"));
    CHECK_EQ(poll_all(*parent).size(), 1u);
  }
  CHECK(!shm_exists(name));
}

// Stacks attaching while the last one detaches (and unlinks the file) must
// never end up on an orphaned file: two stacks that are attached at the same
// time can always reach each other.
TEST(concurrent_attach_and_detach_never_split_the_fabric) {
  const std::string name = unique_name();
  constexpr int kRounds = 150;
  std::barrier sync(2);
  std::atomic<LinkAddr> addrs[2];
  std::atomic<int> failures{0};
  auto run = [&](int me) {
    for (int round = 0; round < kRounds; ++round) {
      std::string why;
      std::unique_ptr<Fabric> f;
      if (Fabric::open(small_config(name), &f, &why) != 0) {
        ++failures;
        std::fprintf(stderr, "  open: %s\n", why.c_str());
      }
      addrs[me] = f ? f->self() : 0;
      sync.arrive_and_wait();
      if (f) {
        const LinkAddr peer = addrs[1 - me];
        bool ok = peer && send_text(*f, peer, "hi");
        auto got = ok ? wait_frames(*f, 2000) : std::vector<Received>{};
        if (!ok || got.size() != 1 || got[0].from != peer) ++failures;
      }
      sync.arrive_and_wait();
      f.reset();  // both detach at once: one of them removes the file
      if (round % 2) sync.arrive_and_wait();  // sometimes re-attach in lockstep
    }
  };
  std::thread other(run, 1);
  run(0);
  other.join();
  CHECK_EQ(failures.load(), 0);
  CHECK(!shm_exists(name));
}

TEST(symlink_at_the_fabric_path_is_refused) {
  const std::string name = unique_name();
  const std::string target = shm_path(name + "-target");
  REQUIRE(::symlink(target.c_str(), shm_path(name).c_str()) == 0);
  std::unique_ptr<Fabric> f;
  std::string why;
  CHECK_EQ(Fabric::open(small_config(name), &f, &why), -ELOOP);
  CHECK(why.find(shm_path(name)) != std::string::npos);
  CHECK(!shm_exists(name + "-target"));  // nothing created through the link
  ::unlink(shm_path(name).c_str());
}

// The need-wakeup protocol across a process boundary: each side sleeps in
// poll() after every frame; a lost wakeup shows as a timeout with a frame
// pending.
TEST(need_wakeup_loses_no_wakeup_across_processes) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    REQUIRE(parent);
    const LinkAddr parent_addr = parent->self();
    constexpr int kRounds = 5000;
    // Returns the number of lost wakeups, or -1 on another failure.
    auto serve = [](Fabric& f, LinkAddr* peer, bool starts) {
      int received = 0, lost = 0;
      if (starts && !send_text(f, *peer, "p")) return -1;
      while (received < kRounds) {
        size_t n = f.rx_poll([&](LinkAddr from, const uint8_t*, size_t) { *peer = from; }, 64);
        if (n) {
          received += static_cast<int>(n);
          if (received < kRounds || !starts)
            for (size_t i = 0; i < n; ++i)
              if (!send_text(f, *peer, "p")) return -1;
          continue;
        }
        if (!f.prepare_sleep()) continue;
        if (!fd_readable(f.doorbell_fd(), 2000)) {
          if (!f.rx_pending()) return -1;
          ++lost;
        }
        f.doorbell_drain();
        f.disarm();
      }
      return lost;
    };
    pid_t pid = ::fork();
    if (pid == 0) {
      auto f = open_fabric(small_config(name));
      if (!f) child_exit(false);
      LinkAddr peer = parent_addr;
      int lost = serve(*f, &peer, true);
      f.reset();  // the parent's last frame came after our last one
      child_exit(lost == 0);
    }
    REQUIRE(pid > 0);
    LinkAddr child = 0;
    CHECK_EQ(serve(*parent, &child, false), 0);
    CHECK_EQ(reap(pid), 0);
    CHECK(parent->counters().wakeups > 0u);
  }
  CHECK(!shm_exists(name));
}
