// Listener registry and port table: matching rules, spreading, removal,
// fabric-wide port uniqueness, and robustness against a scribbled registry.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>

#include <random>
#include <set>

#include "check.h"
#include "link/layout.h"
#include "link/registry.h"
#include "link/test/fabric_testing.h"

using namespace sidestep::link;
using namespace sidestep::link::test;

namespace {

const uint8_t kAny[16] = {};
const uint8_t kLoop4[16] = {127, 0, 0, 1};
const uint8_t kOther4[16] = {127, 0, 0, 2};
const uint8_t kLoop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

}  // namespace

TEST(registry_add_lookup_remove) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto c = open_fabric(small_config(name));
    REQUIRE(a && c);
    LinkAddr found = 0;
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3000, &found), -ENOENT);
    int e = a->listener_add(4, kLoop4, 3000, false);
    REQUIRE(e >= 0);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3000, &found), 0);
    CHECK_EQ(found, a->self());
    CHECK_EQ(c->listener_lookup(4, kOther4, 3000, &found), -ENOENT);  // other address
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3001, &found), -ENOENT);   // other port
    CHECK_EQ(c->listener_lookup(6, kLoop6, 3000, &found), -ENOENT);   // other family
    c->listener_remove(e);  // not c's entry: no effect
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3000, &found), 0);
    a->listener_remove(e);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3000, &found), -ENOENT);
    a->listener_remove(e);  // twice: harmless
    a->listener_remove(-1);
    a->listener_remove(1 << 20);
    CHECK_EQ(a->listener_add(5, kLoop4, 3000, false), -EAFNOSUPPORT);
    // Registrations go away with the stack.
    REQUIRE(a->listener_add(4, kAny, 3002, false) >= 0);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3002, &found), 0);
    a.reset();
    CHECK_EQ(c->listener_lookup(4, kLoop4, 3002, &found), -ENOENT);
  }
  CHECK(!shm_exists(name));
}

TEST(registry_prefers_exact_then_family_wildcard_then_v6_any) {
  const std::string name = unique_name();
  {
    auto exact = open_fabric(small_config(name));
    auto wild4 = open_fabric(small_config(name));
    auto any6 = open_fabric(small_config(name));
    auto c = open_fabric(small_config(name));
    REQUIRE(exact && wild4 && any6 && c);
    LinkAddr found = 0;
    int e6 = any6->listener_add(6, kAny, 80, false);
    REQUIRE(e6 >= 0);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 80, &found), 0);  // "::" takes IPv4
    CHECK_EQ(found, any6->self());
    CHECK_EQ(c->listener_lookup(6, kLoop6, 80, &found), 0);
    CHECK_EQ(found, any6->self());
    int e4 = wild4->listener_add(4, kAny, 80, false);
    REQUIRE(e4 >= 0);
    for (int i = 0; i < 5; ++i) {
      CHECK_EQ(c->listener_lookup(4, kLoop4, 80, &found), 0);
      CHECK_EQ(found, wild4->self());
    }
    CHECK_EQ(c->listener_lookup(6, kLoop6, 80, &found), 0);  // 0.0.0.0 takes no IPv6
    CHECK_EQ(found, any6->self());
    REQUIRE(exact->listener_add(4, kLoop4, 80, false) >= 0);
    for (int i = 0; i < 5; ++i) {
      CHECK_EQ(c->listener_lookup(4, kLoop4, 80, &found), 0);
      CHECK_EQ(found, exact->self());
      CHECK_EQ(c->listener_lookup(4, kOther4, 80, &found), 0);
      CHECK_EQ(found, wild4->self());
    }
    // v6only "::" does not take IPv4.
    any6->listener_remove(e6);
    wild4->listener_remove(e4);
    REQUIRE(any6->listener_add(6, kAny, 81, true) >= 0);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 81, &found), -ENOENT);
    CHECK_EQ(c->listener_lookup(6, kLoop6, 81, &found), 0);
    // An IPv4-only query never matches a specific IPv6 listener.
    REQUIRE(any6->listener_add(6, kLoop6, 82, false) >= 0);
    CHECK_EQ(c->listener_lookup(4, kLoop4, 82, &found), -ENOENT);
  }
  CHECK(!shm_exists(name));
}

TEST(registry_spreads_lookups_across_registrants) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    auto c = open_fabric(small_config(name));
    REQUIRE(a && b && c);
    REQUIRE(a->listener_add(4, kAny, 8000, false, 42) >= 0);
    REQUIRE(b->listener_add(4, kAny, 8000, false, 42) >= 0);
    int to_a = 0, to_b = 0;
    for (int i = 0; i < 100; ++i) {
      LinkAddr found = 0;
      REQUIRE(c->listener_lookup(4, kLoop4, 8000, &found) == 0);
      if (found == a->self()) ++to_a;
      if (found == b->self()) ++to_b;
    }
    CHECK_EQ(to_a + to_b, 100);
    CHECK(to_a >= 40 && to_b >= 40);
    b.reset();
    for (int i = 0; i < 10; ++i) {
      LinkAddr found = 0;
      CHECK_EQ(c->listener_lookup(4, kLoop4, 8000, &found), 0);
      CHECK_EQ(found, a->self());
    }
  }
  CHECK(!shm_exists(name));
}

TEST(registry_exclusive_registration_refuses_any_overlap) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    const int e = a->listener_add(4, kAny, 8100, false);
    REQUIRE(e >= 0);
    CHECK_EQ(b->listener_add(4, kAny, 8100, false), -EADDRINUSE);
    CHECK_EQ(b->listener_add(4, kAny, 8100, false, 7), -EADDRINUSE);
    CHECK_EQ(a->listener_add(4, kAny, 8100, false, 7), -EADDRINUSE);  // its owner too
    // Not the same (family, address, port): no overlap (the kernel judges
    // wildcard against specific addresses; lookups prefer the exact one).
    CHECK(b->listener_add(4, kLoop4, 8100, false) >= 0);
    CHECK(b->listener_add(6, kAny, 8100, false) >= 0);
    CHECK(b->listener_add(4, kAny, 8101, false) >= 0);
    a->listener_remove(e);
    CHECK(b->listener_add(4, kAny, 8100, false) >= 0);
    // An exclusive registration can't join a shared group either.
    REQUIRE(a->listener_add(4, kAny, 8102, false, 9) >= 0);
    CHECK_EQ(b->listener_add(4, kAny, 8102, false), -EADDRINUSE);
  }
  CHECK(!shm_exists(name));
}

TEST(registry_same_share_key_registers_several_and_lookups_rotate) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    auto c = open_fabric(small_config(name));
    auto client = open_fabric(small_config(name));
    REQUIRE(a && b && c && client);
    REQUIRE(a->listener_add(6, kAny, 8200, false, 4242) >= 0);
    const int eb = b->listener_add(6, kAny, 8200, false, 4242);
    REQUIRE(eb >= 0);
    REQUIRE(c->listener_add(6, kAny, 8200, false, 4242) >= 0);
    CHECK_EQ(client->listener_add(6, kAny, 8200, false, 4243), -EADDRINUSE);  // another group
    CHECK_EQ(client->listener_add(6, kAny, 8200, false), -EADDRINUSE);        // exclusive
    // Round robin: each of the three gets every third connection, for IPv6
    // and for IPv4 through the dual-stack "::".
    for (uint8_t family : {6, 4}) {
      int to[3] = {0, 0, 0};
      for (int i = 0; i < 90; ++i) {
        LinkAddr found = 0;
        REQUIRE(client->listener_lookup(family, family == 6 ? kLoop6 : kLoop4, 8200, &found) == 0);
        to[0] += found == a->self();
        to[1] += found == b->self();
        to[2] += found == c->self();
      }
      CHECK_EQ(to[0], 30);
      CHECK_EQ(to[1], 30);
      CHECK_EQ(to[2], 30);
    }
    // A worker that closes its server stops receiving at once.
    b->listener_remove(eb);
    for (int i = 0; i < 20; ++i) {
      LinkAddr found = 0;
      REQUIRE(client->listener_lookup(6, kLoop6, 8200, &found) == 0);
      CHECK(found == a->self() || found == c->self());
    }
  }
  CHECK(!shm_exists(name));
}

TEST(registry_dead_registrant_gets_no_connections_and_blocks_nobody) {
  const std::string name = unique_name();
  {
    auto parent = open_fabric(small_config(name));
    auto client = open_fabric(small_config(name));
    REQUIRE(parent && client);
    const int mine = parent->listener_add(4, kAny, 8300, false, 77);
    REQUIRE(mine >= 0);
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      auto f = open_fabric(small_config(name));
      bool ok = f && f->listener_add(4, kAny, 8300, false, 77) >= 0 &&
                f->listener_add(4, kAny, 8301, false) >= 0;
      char ch = ok ? 'y' : 'n';
      if (::write(ready[1], &ch, 1) != 1) ::_exit(1);
      for (;;) ::pause();
    }
    REQUIRE(pid > 0);
    ::close(ready[1]);
    char ch = 0;
    REQUIRE(::read(ready[0], &ch, 1) == 1);
    ::close(ready[0]);
    CHECK_EQ(ch, 'y');
    std::set<LinkAddr> seen;
    for (int i = 0; i < 4; ++i) {
      LinkAddr found = 0;
      REQUIRE(client->listener_lookup(4, kLoop4, 8300, &found) == 0);
      seen.insert(found);
    }
    CHECK_EQ(seen.size(), 2u);  // parent and child share the port
    CHECK_EQ(client->listener_add(4, kAny, 8301, false), -EADDRINUSE);
    ::kill(pid, SIGKILL);
    CHECK_EQ(reap(pid), -SIGKILL);
    // The dead worker's registration gets no more connections...
    for (int i = 0; i < 10; ++i) {
      LinkAddr found = 0;
      REQUIRE(client->listener_lookup(4, kLoop4, 8300, &found) == 0);
      CHECK_EQ(found, parent->self());
    }
    // ...and holds nothing: its exclusive port and, once the survivors are
    // gone, its group's port are free for anyone.
    CHECK(client->listener_add(4, kAny, 8301, false) >= 0);
    parent->listener_remove(mine);
    CHECK(client->listener_add(4, kAny, 8300, false, 78) >= 0);
  }
  CHECK(!shm_exists(name));
}

TEST(registry_full_returns_enospc_and_entries_are_reused) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    REQUIRE(a);
    std::vector<int> ids;
    for (uint32_t i = 0; i < layout::kRegistryEntries; ++i) {
      int e = a->listener_add(4, kAny, static_cast<uint16_t>(1000 + i), false);
      REQUIRE(e >= 0);
      ids.push_back(e);
    }
    CHECK_EQ(a->listener_add(4, kAny, 5, false), -ENOSPC);
    a->listener_remove(ids[7]);
    CHECK_EQ(a->listener_add(4, kAny, 5, false), ids[7]);
    LinkAddr found = 0;
    CHECK_EQ(a->listener_lookup(4, kLoop4, 5, &found), 0);
    CHECK_EQ(a->listener_lookup(4, kLoop4, 1007, &found), -ENOENT);
    CHECK_EQ(a->listener_lookup(4, kLoop4, 1000 + 1023, &found), 0);
  }
  CHECK(!shm_exists(name));
}

TEST(ports_are_unique_fabric_wide_and_released_by_owner_only) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    auto b = open_fabric(small_config(name));
    REQUIRE(a && b);
    std::set<int> seen;
    for (int i = 0; i < 500; ++i) {
      for (Fabric* f : {a.get(), b.get()}) {
        int p = f->port_claim(0);
        REQUIRE(p >= 32768 && p <= 60999);
        CHECK(seen.insert(p).second);
      }
    }
    CHECK_EQ(a->port_claim(5000), 5000);
    CHECK_EQ(a->port_claim(5000), -EADDRINUSE);
    CHECK_EQ(b->port_claim(5000), -EADDRINUSE);
    b->port_release(5000);  // not b's
    CHECK_EQ(b->port_claim(5000), -EADDRINUSE);
    a->port_release(5000);
    CHECK_EQ(b->port_claim(5000), 5000);
    // A detaching stack frees its ports.
    const int p = a->port_claim(0);
    REQUIRE(p > 0);
    a.reset();
    CHECK_EQ(b->port_claim(static_cast<uint16_t>(p)), p);
  }
  CHECK(!shm_exists(name));
}

TEST(ephemeral_range_exhaustion_is_eaddrnotavail) {
  const std::string name = unique_name();
  {
    auto a = open_fabric(small_config(name));
    REQUIRE(a);
    int n = 0;
    while (a->port_claim(0) > 0) ++n;
    CHECK_EQ(n, 60999 - 32768 + 1);
    CHECK_EQ(a->port_claim(0), -EADDRNOTAVAIL);
    a->port_release(40000);
    CHECK_EQ(a->port_claim(0), 40000);
  }
  CHECK(!shm_exists(name));
}

TEST(scribbled_registry_and_slots_do_not_crash_lookups) {
  const std::string name = unique_name();
  {
    auto cfg = small_config(name);
    auto a = open_fabric(cfg);
    auto b = open_fabric(cfg);
    REQUIRE(a && b);
    REQUIRE(a->listener_add(4, kAny, 9000, false) >= 0);
    int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    auto geo = layout::Geometry::for_config(cfg.ring_bytes, cfg.mtu);
    void* m = ::mmap(nullptr, geo.metadata_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    REQUIRE(m != MAP_FAILED);
    auto* base = static_cast<uint8_t*>(m);
    auto* header = reinterpret_cast<layout::FileHeader*>(base);
    auto* entries = reinterpret_cast<layout::RegistryEntry*>(base + geo.registry_offset);
    auto* ports = reinterpret_cast<uint32_t*>(base + geo.ports_offset);
    std::mt19937_64 rng(99);
    for (int iter = 0; iter < 200; ++iter) {
      header->registry_high_water = static_cast<uint32_t>(rng());
      for (int k = 0; k < 64; ++k) {
        auto& e = entries[rng() % layout::kRegistryEntries];
        uint64_t r = rng();
        std::memcpy(reinterpret_cast<uint8_t*>(&e) + (r % 56), &r, 8);
        if (iter % 3 == 0) {
          e.port = 9000;
          e.state = layout::kEntryUsed;
        }
      }
      for (int k = 0; k < 256; ++k) ports[rng() % layout::kPorts] = static_cast<uint32_t>(rng());
      LinkAddr found = 0;
      b->listener_lookup(4, kLoop4, 9000, &found);
      b->peer_alive(static_cast<LinkAddr>(rng()));
      b->peer_pid(static_cast<LinkAddr>(rng()));
      int p = b->port_claim(0);
      if (p > 0) b->port_release(static_cast<uint16_t>(p));
    }
    // Writers repair what they touch: a fresh registration works.
    std::memset(entries, 0, layout::kRegistryEntries * sizeof(layout::RegistryEntry));
    header->registry_high_water = 0;
    REQUIRE(a->listener_add(4, kAny, 9001, false) >= 0);
    LinkAddr found = 0;
    CHECK_EQ(b->listener_lookup(4, kLoop4, 9001, &found), 0);
    CHECK_EQ(found, a->self());
    ::munmap(m, geo.metadata_bytes);
  }
  CHECK(!shm_exists(name));
}
