// Loss recovery as a sender: a crafted peer ACKs (with and without SACK
// blocks) the segments of an accepted connection, and each test asserts the
// exact segments the stack sends back: which holes, in what order, how many
// times, and when new data may go.
#include <cerrno>
#include <string>
#include <utility>

#include "harness.h"
#include "stack/tcp.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

// The stack's data segments carry a timestamp: 1460 - 12 bytes each.
constexpr uint32_t kSeg = 1448;

// A sender with `segments` full segments queued towards a crafted peer that
// negotiated SACK, window scaling and timestamps (accept_from's "modern").
// Segment k starts at seg(k); ack() feeds an ACK described in segments and
// returns the data segments the stack answered with, by index.
struct Sender {
  Rig rig;
  Accepted c;
  explicit Sender(int segments) {
    c = accept_from(rig, ep4(1, 80), ep4(2, 5000), /*modern=*/true);
    if (!c.id) return;
    rig.stack.set_nodelay(c.id, true);
    std::vector<uint8_t> d(size_t(segments) * kSeg, 7);
    rig.stack.send(c.id, d.data(), d.size(), rig.now);
  }
  uint32_t seg(int k) const { return c.iss + 1 + uint32_t(k) * kSeg; }
  // Indices of the data segments sent since the last call.
  std::vector<int> sent() {
    std::vector<int> out;
    for (auto& p : rig.sent()) {
      if (p.payload.empty()) continue;
      out.push_back(int((p.tcp.seq - (c.iss + 1)) / kSeg));
    }
    return out;
  }
  // An ACK up to segment `cum` with SACK blocks [from, to) in segments.
  std::vector<int> ack(int cum, std::vector<std::pair<int, int>> blocks = {},
                       uint16_t window = 65535) {
    TcpOptions o;
    for (auto& b : blocks) {
      o.sack[o.sack_count++] = SackBlock{seg(b.first), seg(b.second)};
    }
    rig.feed(build(c.peer, c.local, c.peer_seq, seg(cum), kAck, window, o));
    return sent();
  }
  SocketInfo info() {
    SocketInfo i{};
    rig.stack.info(c.id, &i);
    return i;
  }
};

std::string show(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + std::to_string(v[i]);
  return s + "]";
}

#define CHECK_SENT(got, ...)                                                       \
  do {                                                                             \
    std::vector<int> got_ = (got), want_ = std::vector<int>{__VA_ARGS__};          \
    if (got_ != want_) {                                                           \
      std::fprintf(stderr, "  %s:%d: sent %s, expected %s\n", __FILE__, __LINE__, \
                   show(got_).c_str(), show(want_).c_str());                       \
      ++::sidestep::testing::failures_in_current();                                \
    }                                                                              \
  } while (0)

}  // namespace

// Initial window: 10 segments. The peer lost 1, 4 and 7 and SACKs the rest
// as it arrives. Each hole is resent exactly once, in order, when the
// scoreboard calls it lost and the pipe leaves room; nothing else is resent.
TEST(sack_scoreboard_retransmits_each_hole_once) {
  Sender s(10);
  REQUIRE(s.c.id);
  CHECK_SENT(s.sent(), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
  CHECK_SENT(s.ack(1));
  CHECK_SENT(s.ack(1, {{2, 3}}));
  CHECK_SENT(s.ack(1, {{2, 4}}));
  // Third duplicate ACK: 1 is lost; cwnd = ssthresh = half the flight.
  CHECK_SENT(s.ack(1, {{5, 6}, {2, 4}}), 1);
  CHECK_EQ(s.info().cwnd, 9 * kSeg / 2);
  CHECK_SENT(s.ack(1, {{5, 7}, {2, 4}}));
  // Three segments sent after 4 arrived: 4 is lost, and the pipe has room.
  CHECK_SENT(s.ack(1, {{8, 9}, {5, 7}, {2, 4}}), 4);
  // No new data to send: the last hole goes before it is known lost (rule 3).
  CHECK_SENT(s.ack(1, {{8, 10}, {5, 7}, {2, 4}}), 7);
  CHECK_SENT(s.ack(4, {{8, 10}, {5, 7}}));
  CHECK_SENT(s.ack(7, {{8, 10}}));
  CHECK_SENT(s.ack(10));
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 3u);
  CHECK_EQ(s.rig.stack.poll_at(), kNever);
}

// Linux changes the window in the ACKs it sends for out-of-order data; with
// SACK a duplicate ACK is one that SACKs new data (RFC 6675), whatever its
// window, so the third one still triggers the fast retransmit.
TEST(fast_retransmit_counts_dupacks_with_sack) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{1, 2}}, 65000));
  CHECK_SENT(s.ack(0, {{1, 3}}, 64000));
  CHECK_SENT(s.ack(0, {{1, 4}}, 63000), 0);
  // A repeated ACK that SACKs nothing new is no duplicate: nothing moves.
  CHECK_SENT(s.ack(0, {{1, 4}}, 62000));
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 1u);
}

// Without SACK, RFC 5681's definition holds: an ACK that changes the window
// is a window update, not a duplicate.
TEST(dupacks_with_changed_window_are_not_counted_without_sack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.set_nodelay(c.id, true);
  std::vector<uint8_t> d(5 * 1460, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 5u);
  for (uint16_t w : {65000, 64000, 63000}) {
    rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, w));
  }
  CHECK(rig.sent().empty());
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 63000));
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 63000));
  CHECK(rig.sent().empty());  // two duplicates so far
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 63000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
}

// ACKs get lost too: one ACK that SACKs three segments above a hole says
// the hole is lost (RFC 6675 IsLost), without waiting for three dupacks.
TEST(sack_of_three_segments_above_a_hole_starts_recovery_at_once) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{1, 4}}), 0);
  SocketInfo i = s.info();
  CHECK_EQ(i.cwnd, 10 * kSeg / 2);
  CHECK_EQ(i.retransmits, 1u);
}

// Reordering below the threshold: the hole fills before three segments
// sent after it arrived, and nothing is retransmitted.
TEST(reordered_segment_within_dupthresh_is_not_retransmitted) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{1, 2}}));
  CHECK_SENT(s.ack(0, {{1, 3}}));
  CHECK_SENT(s.ack(3));
  CHECK_SENT(s.ack(10));
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 0u);
  // Slow start went on (the handshake's ACK counted one byte): no reduction.
  CHECK_EQ(s.info().cwnd, 14600u + 1 + 2 * 2 * 1460u);
}

// The retransmission of a hole is lost as well. Once three segments sent
// after the retransmission are SACKed, it is resent — without waiting for the
// retransmission timer (which RFC 6675 alone would need).
TEST(lost_retransmission_is_resent_after_three_later_segments_arrive) {
  Sender s(15);
  REQUIRE(s.c.id);
  CHECK_SENT(s.sent(), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
  // Each SACKed segment leaves the pipe: a new one may go (as limited
  // transmit would let it).
  CHECK_SENT(s.ack(0, {{1, 2}}), 10);
  CHECK_SENT(s.ack(0, {{1, 3}}), 11);
  // 0 is lost: retransmitted; cwnd = half of 12 segments in flight.
  CHECK_SENT(s.ack(0, {{1, 4}}), 0);
  CHECK_EQ(s.info().cwnd, 6 * kSeg);
  // The retransmission is lost too. The pipe drains as 4..11 arrive...
  CHECK_SENT(s.ack(0, {{1, 5}}));
  CHECK_SENT(s.ack(0, {{1, 6}}));
  CHECK_SENT(s.ack(0, {{1, 7}}));
  CHECK_SENT(s.ack(0, {{1, 8}}), 12);
  CHECK_SENT(s.ack(0, {{1, 9}}), 13);
  CHECK_SENT(s.ack(0, {{1, 10}}), 14);
  CHECK_SENT(s.ack(0, {{1, 11}}));
  CHECK_SENT(s.ack(0, {{1, 12}}));
  // ...and 12, 13, 14, all sent after the retransmission, arrive.
  CHECK_SENT(s.ack(0, {{1, 13}}));
  CHECK_SENT(s.ack(0, {{1, 14}}));
  CHECK_SENT(s.ack(0, {{1, 15}}), 0);
  CHECK_EQ(s.info().retransmits, 2u);
  CHECK_SENT(s.ack(15));
  CHECK_EQ(s.rig.stack.poll_at(), kNever);
}

// A partial ACK in recovery whose next hole no SACK block has shown (the
// peer's SACK-bearing ACKs were lost): NewReno's rule, the hole at snd_una
// is lost, still applies.
TEST(partial_ack_in_sack_recovery_resends_the_next_hole) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{1, 4}}), 0);
  // 0's retransmission arrived, 4 is missing, the SACKs for 5..9 were lost.
  CHECK_SENT(s.ack(4), 4);
  CHECK_SENT(s.ack(10));
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 2u);
}

// Blocks below the cumulative ACK (D-SACK), beyond what was sent, or
// inverted say nothing about the holes: no duplicate ACK is counted.
TEST(sack_blocks_outside_the_flight_are_ignored) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(2));
  for (int i = 0; i < 4; ++i) {
    TcpOptions o;
    o.sack[o.sack_count++] = SackBlock{s.seg(0), s.seg(1)};    // D-SACK
    o.sack[o.sack_count++] = SackBlock{s.seg(9), s.seg(12)};   // beyond snd_max
    o.sack[o.sack_count++] = SackBlock{s.seg(6), s.seg(5)};    // inverted
    s.rig.feed(build(s.c.peer, s.c.local, s.c.peer_seq, s.seg(2), kAck, 65535, o));
  }
  CHECK_SENT(s.sent());
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 0u);
}

// A retransmission timeout with SACK: everything not SACKed is lost and goes
// again in slow start, lowest first; SACKed segments are not resent.
TEST(rto_with_sack_resends_only_what_was_not_sacked) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{5, 7}}));  // two SACKed: no loss called yet
  s.rig.advance_to(s.rig.stack.poll_at());
  CHECK_SENT(s.sent(), 0);  // the timeout: cwnd is one segment
  CHECK_EQ(s.info().cwnd, 1460u);
  CHECK_SENT(s.ack(1, {{5, 7}}), 1, 2);  // slow start
  CHECK_SENT(s.ack(3, {{5, 7}}), 3, 4, 7, 8);
  CHECK_SENT(s.ack(8), 9);
  CHECK_SENT(s.ack(10));
  CHECK_EQ(s.rig.stack.counters().segments_retransmitted, 8u);
}

// A receiver may drop data it SACKed (RFC 2018 8). The first timeout keeps
// the SACK marks; a second one in a row forgets them, so SACKed segments are
// resent too and a reneging peer can't stall the connection.
TEST(repeated_timeout_forgets_sack_marks_in_case_the_peer_reneged) {
  Sender s(10);
  REQUIRE(s.c.id);
  s.sent();
  CHECK_SENT(s.ack(0, {{5, 7}}));
  s.rig.advance_to(s.rig.stack.poll_at());
  CHECK_SENT(s.sent(), 0);
  s.rig.advance_to(s.rig.stack.poll_at());
  CHECK_SENT(s.sent(), 0);
  CHECK_SENT(s.ack(5), 5, 6, 7);  // 5 and 6 again: their SACK is forgotten
}

// The FIN has a sequence number and a place on the scoreboard: lost after
// the data, it goes again after the data, still a FIN.
TEST(fin_lost_with_the_tail_is_resent_after_it) {
  Sender s(3);
  REQUIRE(s.c.id);
  CHECK_EQ(s.rig.stack.shutdown_write(s.c.id, s.rig.now), 0);
  auto out = s.rig.sent();
  REQUIRE(out.size() == 4);
  CHECK(out[3].has(kFin) && out[3].payload.empty() && out[3].tcp.seq == s.seg(3));
  CHECK_SENT(s.ack(1, {{2, 3}}));
  s.rig.advance_to(s.rig.stack.poll_at());
  CHECK_SENT(s.sent(), 1);
  // Slow start: the ACK of the data lets the FIN (held lost) go at once.
  s.rig.feed(build(s.c.peer, s.c.local, s.c.peer_seq, s.seg(3), kAck, 65535));
  out = s.rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].has(kFin));
  CHECK_EQ(out[0].tcp.seq, s.seg(3));
  CHECK(out[0].payload.empty());
  SocketInfo i = s.info();
  CHECK_EQ(i.state, uint8_t(TcpState::FinWait1));
  s.rig.feed(build(s.c.peer, s.c.local, s.c.peer_seq, s.seg(3) + 1, kAck, 65535));
  CHECK_EQ(s.info().state, uint8_t(TcpState::FinWait2));
}

// The scoreboard itself: a peer SACKing odd byte ranges can split records,
// but never beyond the limit, and the pipe stays consistent.
TEST(scoreboard_refuses_to_split_beyond_its_limit) {
  Scoreboard sb;
  const uint32_t base = 1000;
  const uint32_t n = Scoreboard::kMaxRecords / 2;
  for (uint32_t i = 0; i < n; ++i) sb.on_transmit(base + i * 100, base + (i + 1) * 100);
  CHECK_EQ(sb.count(), size_t(n));
  CHECK_EQ(sb.pipe(), n * 100);
  // SACK one byte in the middle of every record: each would split in three.
  for (uint32_t i = 0; i < n; ++i) sb.on_sack(base + i * 100 + 50, base + i * 100 + 51);
  CHECK(sb.count() <= Scoreboard::kMaxRecords);
  CHECK_EQ(sb.pipe() + sb.sacked_bytes(), n * 100);
  sb.on_ack(base + n * 100);
  CHECK(sb.empty());
  CHECK_EQ(sb.pipe(), 0u);
  CHECK_EQ(sb.sacked_bytes(), 0u);
}

// Without SACK, recovery is NewReno's (RFC 6582): fast retransmit at the
// third duplicate, then each partial ACK resends the next hole at once.
TEST(newreno_without_sack_resends_one_hole_per_partial_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.set_nodelay(c.id, true);
  std::vector<uint8_t> d(10 * 1460, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 10u);
  auto seg = [&](int k) { return c.iss + 1 + uint32_t(k) * 1460; };
  auto ack = [&](int k) {
    rig.feed(build(c.peer, c.local, c.peer_seq, seg(k), kAck, 65535));
    std::vector<uint32_t> out;
    for (auto& p : rig.sent()) {
      if (!p.payload.empty()) out.push_back((p.tcp.seq - seg(0)) / 1460);
    }
    return out;
  };
  // Lost: 1 and 4.
  CHECK(ack(1).empty());
  CHECK(ack(1).empty());
  CHECK(ack(1).empty());
  CHECK(ack(1) == std::vector<uint32_t>{1});
  CHECK(ack(4) == std::vector<uint32_t>{4});  // partial ACK: the next hole
  CHECK(ack(10).empty());
  CHECK_EQ(rig.stack.counters().segments_retransmitted, 2u);
}
