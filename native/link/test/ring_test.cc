// Ring behaviour: frames survive wrap-around intact and in order, the MTU is
// enforced, a full ring refuses and counts, the poll budget is honoured, and
// a ring full of garbage is survived.
#define SIDESTEP_TEST_MAIN
#include "check.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstdlib>
#include <random>
#include <vector>

#include "link/layout.h"
#include "link/ring.h"
#include "link/test/fabric_testing.h"

using namespace sidestep::link;
using namespace sidestep::link::test;

namespace {

std::string pattern(size_t len, uint32_t seed) {
  std::string s(len, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

// A ring over plain memory, for tests of the format itself.
struct LocalRing {
  LocalRing(uint32_t bytes, uint32_t mtu)
      : mem(static_cast<uint8_t*>(std::aligned_alloc(4096, layout::kRingHeaderBytes + bytes))) {
    std::memset(mem, 0, layout::kRingHeaderBytes + bytes);
    view.header = reinterpret_cast<layout::RingHeader*>(mem);
    view.data = mem + layout::kRingHeaderBytes;
    view.ring_bytes = bytes;
    view.mtu = mtu;
  }
  ~LocalRing() { std::free(mem); }
  uint8_t* mem;
  RingView view;
};

}  // namespace

TEST(ring_round_trip_preserves_frames_across_wrap_around) {
  const std::string name = unique_name();
  {
    auto f = open_fabric(small_config(name));
    REQUIRE(f);
    // Sizes chosen so frames straddle the end of the 64 KiB ring many times;
    // a few frames in flight at once so head and tail both wrap.
    const size_t sizes[] = {0, 1, 15, 16, 47, 48, 49, 1000, 4096, 9000, 16384, 16383, 333};
    size_t sent = 0, got = 0;
    uint64_t bytes = 0;
    std::vector<std::string> expect;
    for (int round = 0; round < 200; ++round) {
      for (int k = 0; k < 3; ++k) {
        size_t len = sizes[(round * 3 + k) % (sizeof(sizes) / sizeof(sizes[0]))];
        std::string s = pattern(len, static_cast<uint32_t>(sent));
        REQUIRE(send_frame(*f, f->loopback(), s.data(), s.size()));
        expect.push_back(s);
        ++sent;
        bytes += len;
      }
      for (auto& r : poll_all(*f)) {
        CHECK_EQ(r.from, f->loopback());
        REQUIRE(got < expect.size());
        CHECK(r.bytes == expect[got]);
        ++got;
      }
    }
    CHECK_EQ(got, sent);
    CHECK_EQ(f->counters().frames_out, sent);
    CHECK_EQ(f->counters().frames_in, sent);
    CHECK_EQ(f->counters().bytes_in, bytes);
    CHECK_EQ(f->counters().drops_malformed, 0u);
  }
}

TEST(ring_wrap_marker_sends_consumer_back_to_offset_zero) {
  LocalRing r(4096, 1024);
  std::vector<std::string> got;
  auto sink = [](void* ctx, const uint8_t* p, size_t n, uint32_t) {
    static_cast<std::vector<std::string>*>(ctx)->push_back(
        std::string(reinterpret_cast<const char*>(p), n));
  };
  RingConsumeStats stats;
  uint64_t cached = 0;
  // 3 x 1024-byte frames (1088 bytes each) leave 832 bytes before the end: the
  // 4th must wrap, after the consumer freed the first two.
  for (int i = 0; i < 3; ++i) {
    RingReservation res;
    bool repaired = false;
    REQUIRE(ring_reserve(r.view, 1024, &res, &repaired, &cached) == ReserveResult::kOk);
    std::memset(res.payload, 'a' + i, 1024);
    ring_commit(r.view, res, 1024);
  }
  RingReservation res;
  bool repaired = false;
  CHECK(ring_reserve(r.view, 1024, &res, &repaired, &cached) == ReserveResult::kFull);
  CHECK_EQ(ring_consume(r.view, 2, sink, &got, &stats), 2u);
  REQUIRE(ring_reserve(r.view, 1024, &res, &repaired, &cached) == ReserveResult::kOk);
  CHECK_EQ(res.skip, 4096u - 3 * 1088u);
  CHECK(res.payload == r.view.data + sizeof(layout::FrameHeader));  // at offset 0
  std::memset(res.payload, 'd', 1000);
  ring_commit(r.view, res, 1000);  // commit shorter than reserved
  CHECK_EQ(ring_consume(r.view, 10, sink, &got, &stats), 2u);
  REQUIRE(got.size() == 4u);
  CHECK(got[2] == std::string(1024, 'c'));
  CHECK(got[3] == std::string(1000, 'd'));
  CHECK_EQ(stats.malformed, 0u);
  CHECK_EQ(layout::load_relaxed(&r.view.header->head), layout::load_relaxed(&r.view.header->tail));
}

TEST(a_ring_kept_nearly_empty_stays_in_its_first_pages) {
  // Small frames, each consumed soon after: past 64 KiB the producer wraps
  // early, so 8 MiB of frames through a 1 MiB ring never touch its second
  // half (untouched pages stay unallocated: the pair's memory stays small).
  LocalRing r(1u << 20, 16384);
  size_t count = 0;
  auto sink = [](void* ctx, const uint8_t*, size_t, uint32_t) { ++*static_cast<size_t*>(ctx); };
  RingConsumeStats stats;
  uint64_t cached = 0, highest = 0, frames = 0;
  for (uint64_t bytes = 0; bytes < (8u << 20); bytes += 200) {
    RingReservation res;
    bool repaired = false;
    REQUIRE(ring_reserve(r.view, 200, &res, &repaired, &cached) == ReserveResult::kOk);
    const uint64_t at = (res.payload - r.view.data) + 200;
    if (at > highest) highest = at;
    std::memset(res.payload, 'x', 200);
    ring_commit(r.view, res, 200);
    ++frames;
    if (frames % 8 == 0) ring_consume(r.view, 100, sink, &count, &stats);  // a few frames behind
  }
  ring_consume(r.view, 100, sink, &count, &stats);
  CHECK_EQ(count, frames);
  CHECK_EQ(stats.malformed, 0u);
  CHECK(highest < 128u * 1024);
}

TEST(a_busy_ring_keeps_its_whole_size) {
  // A consumer that lags by more than the rewind threshold: the producer
  // uses the whole ring (no early wrap that would waste room).
  LocalRing r(1u << 20, 16384);
  size_t count = 0;
  auto sink = [](void* ctx, const uint8_t*, size_t, uint32_t) { ++*static_cast<size_t*>(ctx); };
  RingConsumeStats stats;
  uint64_t cached = 0, highest = 0, frames = 0;
  for (int i = 0; i < 200; ++i) {
    RingReservation res;
    bool repaired = false;
    if (ring_reserve(r.view, 8000, &res, &repaired, &cached) != ReserveResult::kOk) {
      ring_consume(r.view, 64, sink, &count, &stats);  // catches up half way
      continue;
    }
    const uint64_t at = (res.payload - r.view.data) + 8000;
    if (at > highest) highest = at;
    ring_commit(r.view, res, 8000);
    ++frames;
  }
  ring_consume(r.view, 1000, sink, &count, &stats);
  CHECK_EQ(count, frames);
  CHECK(highest > (1u << 20) - 16384);
}

TEST(max_size_frames_round_trip_and_larger_ones_are_refused) {
  const std::string name = unique_name();
  {
    auto f = open_fabric(small_config(name));
    REQUIRE(f);
    const uint32_t mtu = f->mtu();
    CHECK_EQ(mtu, 16384u);
    for (int i = 0; i < 20; ++i) {  // 20 x 16 KiB through a 64 KiB ring
      std::string s = pattern(mtu, i);
      REQUIRE(send_frame(*f, f->loopback(), s.data(), s.size()));
      auto got = poll_all(*f);
      REQUIRE(got.size() == 1u);
      CHECK(got[0].bytes == s);
    }
    CHECK(f->tx_reserve(f->loopback(), mtu + 1) == nullptr);
    CHECK_EQ(f->counters().drops_malformed, 1u);
  }
}

TEST(full_ring_refuses_reserve_says_so_and_the_consumer_rings_back_when_it_frees_room) {
  auto f = open_fabric(small_config(unique_name()));
  REQUIRE(f);
  std::string s(4000, 'x');  // 4032 bytes per frame: 16 fit in 64 KiB
  int sent = 0;
  while (send_frame(*f, f->loopback(), s.data(), s.size())) ++sent;
  CHECK_EQ(sent, 16);
  CHECK_EQ(f->counters().tx_blocked, 1u);
  CHECK(f->tx_blocked(f->loopback()));  // full, not gone: waiting helps
  CHECK(f->tx_reserve(f->loopback(), 1100) == nullptr);  // 1152 bytes; 1024 are left
  CHECK_EQ(f->counters().tx_blocked, 2u);
  CHECK_EQ(f->counters().drops_ring_full, 0u);  // nothing was dropped
  // The consumer frees one frame's room and rings the producer (here: us).
  f->doorbell_drain();
  CHECK_EQ(poll_all(*f, 1).size(), 1u);
  CHECK(fd_readable(f->doorbell_fd(), 1000));
  CHECK(send_frame(*f, f->loopback(), s.data(), s.size()));
  CHECK(!f->tx_blocked(f->loopback()));
  CHECK_EQ(poll_all(*f).size(), 16u);
  CHECK(!f->rx_pending());
}

TEST(rx_poll_budget_caps_frames_per_call) {
  const std::string name = unique_name();
  {
    auto f = open_fabric(small_config(name));
    REQUIRE(f);
    for (int i = 0; i < 10; ++i) REQUIRE(send_text(*f, f->loopback(), std::to_string(i)));
    auto a = poll_all(*f, 3);
    auto b = poll_all(*f, 3);
    auto c = poll_all(*f, 100);
    CHECK_EQ(a.size(), 3u);
    CHECK_EQ(b.size(), 3u);
    CHECK_EQ(c.size(), 4u);
    if (c.size() == 4u) CHECK(a[0].bytes == "0" && b[0].bytes == "3" && c[3].bytes == "9");
    CHECK_EQ(f->rx_poll([](LinkAddr, const uint8_t*, size_t) {}, 0), 0u);
  }
}

// A random model check of the ring format alone: random reservation sizes,
// commits shorter than reserved, random consume budgets; FIFO must hold and
// the ring must never report free room it does not have.
TEST(ring_matches_a_fifo_model_under_random_operations) {
  LocalRing r(8192, 2048);
  std::mt19937 rng(7);
  std::vector<std::string> model;  // frames committed, not yet consumed
  size_t model_head = 0;
  uint32_t seq = 0;
  struct Ctx {
    std::vector<std::string>* model;
    size_t* head;
    int bad;
  } ctx{&model, &model_head, 0};
  auto sink = [](void* c, const uint8_t* p, size_t n, uint32_t) {
    auto* x = static_cast<Ctx*>(c);
    if (*x->head >= x->model->size() ||
        (*x->model)[*x->head] != std::string(reinterpret_cast<const char*>(p), n))
      ++x->bad;
    ++*x->head;
  };
  RingConsumeStats stats;
  uint64_t cached = 0;
  for (int op = 0; op < 200000; ++op) {
    if (rng() % 2) {
      size_t len = rng() % 2049;
      RingReservation res;
      bool repaired = false;
      if (ring_reserve(r.view, len, &res, &repaired, &cached) == ReserveResult::kOk) {
        size_t used = len ? rng() % (len + 1) : 0;
        std::string s = pattern(used, seq++);
        std::memcpy(res.payload, s.data(), used);
        ring_commit(r.view, res, used);
        model.push_back(s);
      } else {
        // Refusal is only allowed when the frame really does not fit.
        const uint64_t in_use = r.view.header->tail - r.view.header->head;
        const uint64_t need = layout::frame_bytes(len);
        const uint64_t room = 8192 - (r.view.header->tail & 8191);
        CHECK(in_use + (need > room ? room : 0) + need > 8192);
      }
      CHECK(!repaired);
    } else {
      ring_consume(r.view, rng() % 8, sink, &ctx, &stats);
    }
  }
  ring_consume(r.view, 1 << 20, sink, &ctx, &stats);
  CHECK_EQ(ctx.bad, 0);
  CHECK_EQ(model_head, model.size());
  CHECK_EQ(stats.malformed, 0u);
  CHECK(model.size() > 50000u);
}

TEST(commit_without_matching_reservation_publishes_nothing) {
  const std::string name = unique_name();
  {
    auto f = open_fabric(small_config(name));
    REQUIRE(f);
    f->tx_commit(f->loopback(), 10);  // nothing reserved
    uint8_t* p = f->tx_reserve(f->loopback(), 10);
    REQUIRE(p);
    f->tx_commit(f->loopback(), 11);  // longer than reserved
    f->tx_commit(f->loopback() ^ 0x10000, 10);  // another address
    CHECK(!f->rx_pending());
    CHECK_EQ(f->counters().frames_out, 0u);
    p = f->tx_reserve(f->loopback(), 10);
    REQUIRE(p);
    std::memcpy(p, "0123456789", 10);
    f->tx_commit(f->loopback(), 4);  // shorter is fine
    f->tx_commit(f->loopback(), 4);  // but only once
    auto got = poll_all(*f);
    REQUIRE(got.size() == 1u);
    CHECK(got[0].bytes == "0123");
  }
}
