// Frame kinds, the stack directory and capture mirroring: what `sidestep
// stat` and `sidestep capture` are built on.
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fabric_testing.h"

using namespace sidestep::link;
using namespace sidestep::link::test;

TEST(control_frames_reach_kind_aware_receivers_only) {
  const std::string name = unique_name();
  auto a = open_fabric(small_config(name));
  auto b = open_fabric(small_config(name));
  REQUIRE(a && b);
  uint8_t* p = a->tx_reserve(b->self(), 5);
  REQUIRE(p);
  std::memcpy(p, "hello", 5);
  a->tx_commit(b->self(), 5, FrameKind::Control);
  REQUIRE(send_text(*a, b->self(), "packet"));
  // A packet-only receiver sees the packet and skips the control frame...
  auto packets = poll_all(*b);
  REQUIRE(packets.size() == 1);
  CHECK(packets[0].bytes == "packet");
  // ...a kind-aware one sees both, with their kinds.
  p = a->tx_reserve(b->self(), 5);
  REQUIRE(p);
  std::memcpy(p, "again", 5);
  a->tx_commit(b->self(), 5, FrameKind::Control);
  std::vector<std::pair<uint32_t, std::string>> got;
  b->rx_poll([&](LinkAddr, const uint8_t* d, size_t n, uint32_t kind) {
    got.emplace_back(kind, std::string(reinterpret_cast<const char*>(d), n));
  }, 16);
  REQUIRE(got.size() == 1);
  CHECK(frame_kind(got[0].first) == FrameKind::Control);
  CHECK(got[0].second == "again");
  a.reset();
  b.reset();
  CHECK(!shm_exists(name));
}

TEST(stacks_lists_every_live_stack_with_pid_and_command) {
  const std::string name = unique_name();
  auto a = open_fabric(small_config(name));
  auto b = open_fabric(small_config(name));
  REQUIRE(a && b);
  auto list = a->stacks();
  REQUIRE(list.size() == 2);
  CHECK(list[0].pid == ::getpid() && list[1].pid == ::getpid());
  CHECK(list[0].command == "link-test");
  CHECK((list[0].addr == a->self() && list[1].addr == b->self()) ||
        (list[0].addr == b->self() && list[1].addr == a->self()));
  // Occupancy: what b has not taken from its rings yet.
  REQUIRE(send_text(*a, b->self(), "12345"));
  uint64_t occupancy = 0;
  for (auto& s : a->stacks())
    if (s.addr == b->self()) occupancy = s.ring_occupancy;
  CHECK_EQ(occupancy, 64u);  // one frame: 16-byte header + 5 bytes, padded to 64
  poll_all(*b);
  for (auto& s : a->stacks())
    if (s.addr == b->self()) CHECK_EQ(s.ring_occupancy, 0u);
  b.reset();
  CHECK_EQ(a->stacks().size(), 1u);
  a.reset();
  CHECK(!shm_exists(name));
}

TEST(mirror_copies_sent_packets_to_the_capture_tool_until_cleared) {
  const std::string name = unique_name();
  auto a = open_fabric(small_config(name));
  auto b = open_fabric(small_config(name));
  auto tool = open_fabric(small_config(name));
  REQUIRE(a && b && tool);
  REQUIRE(tool->set_mirror(a->self(), tool->self()) == 0);
  REQUIRE(send_text(*a, b->self(), "ip packet bytes"));
  auto at_b = poll_all(*b);
  REQUIRE(at_b.size() == 1);
  CHECK(at_b[0].bytes == "ip packet bytes");
  std::vector<std::pair<uint32_t, std::string>> captured;
  auto drain = [&] {
    tool->rx_poll([&](LinkAddr from, const uint8_t* d, size_t n, uint32_t kind) {
      CHECK(from == a->self());
      captured.emplace_back(kind, std::string(reinterpret_cast<const char*>(d), n));
    }, 16);
  };
  drain();
  REQUIRE(captured.size() == 1);
  CHECK(frame_kind(captured[0].first) == FrameKind::Capture);
  CHECK_EQ(frame_detail(captured[0].first), slot_of(b->self()));
  REQUIRE(captured[0].second.size() == 8 + 15);
  CHECK(captured[0].second.substr(8) == "ip packet bytes");
  uint64_t sent_us;
  std::memcpy(&sent_us, captured[0].second.data(), 8);
  timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  const uint64_t now_us = uint64_t(now.tv_sec) * 1000000u + uint64_t(now.tv_nsec) / 1000u;
  CHECK(sent_us <= now_us && now_us - sent_us < 10000000u);
  // Control frames are not captured; and clearing the mirror stops copies.
  REQUIRE(tool->set_mirror(a->self(), 0) == 0);
  REQUIRE(send_text(*a, b->self(), "not captured"));
  drain();
  CHECK_EQ(captured.size(), 1u);
  // A tool that leaves stops the copies by itself.
  REQUIRE(tool->set_mirror(a->self(), tool->self()) == 0);
  tool.reset();
  REQUIRE(send_text(*a, b->self(), "tool gone"));
  CHECK_EQ(poll_all(*b).size(), 2u);
  CHECK(a->counters().drops_ring_full == 0);
  a.reset();
  b.reset();
  CHECK(!shm_exists(name));
}
