// One behaviour per test: a crafted peer feeds an accepted connection and the
// test asserts the exact segments the stack answers with.
#include <cerrno>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TcpOptions ts_opt(uint32_t val, uint32_t ecr = 0) {
  TcpOptions o;
  o.has_timestamp = true;
  o.ts_val = val;
  o.ts_ecr = ecr;
  return o;
}

}  // namespace

TEST(delayed_ack_waits_then_acks_every_second_full_segment) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  CHECK_EQ(rig.stack.poll_at(), kNever);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 65535, {}, filled(1000, 1)));
  CHECK(rig.sent().empty());
  CHECK_EQ(rig.stack.poll_at(), rig.now + rig.config.delayed_ack);
  rig.advance_to(rig.stack.poll_at());
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 1000);
  CHECK_EQ(rig.stack.poll_at(), kNever);
  uint32_t seq = c.peer_seq + 1000;
  rig.feed(build(c.peer, c.local, seq, c.iss + 1, kAck, 65535, {}, filled(1460, 2)));
  CHECK(rig.sent().empty());
  rig.feed(build(c.peer, c.local, seq + 1460, c.iss + 1, kAck, 65535, {}, filled(1460, 3)));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, seq + 2920);
}

TEST(out_of_order_segment_gets_immediate_sack_then_reassembles) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  REQUIRE(c.id);
  uint32_t s = c.peer_seq;
  rig.feed(build(c.peer, c.local, s + 100, c.iss + 1, kAck, 65535, ts_opt(6000), filled(100, 'b')));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, s);
  REQUIRE(out[0].tcp.options.sack_count == 1);
  CHECK_EQ(out[0].tcp.options.sack[0].left, s + 100);
  CHECK_EQ(out[0].tcp.options.sack[0].right, s + 200);
  CHECK(rig.events().empty());
  CHECK_EQ(rig.stack.recv_available(c.id), 0u);
  rig.feed(build(c.peer, c.local, s + 300, c.iss + 1, kAck, 65535, ts_opt(6001), filled(50, 'd')));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].tcp.options.sack_count == 2);
  CHECK_EQ(out[0].tcp.options.sack[0].left, s + 300);  // most recent first (RFC 2018)
  rig.feed(build(c.peer, c.local, s, c.iss + 1, kAck, 65535, ts_opt(6002), filled(100, 'a')));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, s + 200);
  REQUIRE(out[0].tcp.options.sack_count == 1);
  CHECK(has_event(rig.events(), EventType::Readable, c.id));
  std::vector<uint8_t> buf(400);
  REQUIRE(rig.stack.recv(c.id, buf.data(), buf.size(), rig.now) == 200u);
  CHECK_EQ(buf[0], 'a');
  CHECK_EQ(buf[99], 'a');
  CHECK_EQ(buf[100], 'b');
  CHECK_EQ(buf[199], 'b');
}

TEST(window_reopens_after_app_reads) {
  Config cfg = test_config();
  cfg.recv_buffer = 4096;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  uint32_t s = c.peer_seq;
  for (int i = 0; i < 4; ++i) {
    rig.feed(build(c.peer, c.local, s + 1024 * i, c.iss + 1, kAck | kPsh, 65535, {},
                   filled(1024, uint8_t(i))));
    auto out = rig.sent();
    REQUIRE(out.size() == 1);
    CHECK_EQ(out[0].tcp.window, 4096 - 1024 * (i + 1));
  }
  // A byte into the closed window is not taken; the ACK repeats window 0.
  rig.feed(build(c.peer, c.local, s + 4096, c.iss + 1, kAck, 65535, {}, filled(1, 9)));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, s + 4096);
  CHECK_EQ(out[0].tcp.window, 0);
  std::vector<uint8_t> buf(4096);
  CHECK_EQ(rig.stack.recv(c.id, buf.data(), 1024, rig.now), 1024u);
  CHECK(rig.sent().empty());  // 1 KiB is not worth an update yet
  CHECK_EQ(rig.stack.recv(c.id, buf.data(), 1024, rig.now), 1024u);
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.ack, s + 4096);
  CHECK_EQ(out[0].tcp.window, 2048);
}

TEST(nagle_holds_second_runt_until_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto a = bytes_of("aa"), b = bytes_of("bbb");
  rig.stack.send(c.id, a.data(), a.size(), rig.now);
  rig.stack.send(c.id, b.data(), b.size(), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == a);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 3, kAck, 65535));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 3);
  CHECK(out[0].payload == b);
}

TEST(nodelay_sends_runts_at_once) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  CHECK_EQ(rig.stack.set_nodelay(c.id, true), 0);
  auto a = bytes_of("aa"), b = bytes_of("bbb");
  rig.stack.send(c.id, a.data(), a.size(), rig.now);
  rig.stack.send(c.id, b.data(), b.size(), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 2);
  CHECK_EQ(out[1].tcp.seq, c.iss + 3);
  CHECK_EQ(out[1].tcp.flags, kAck | kPsh);
}

TEST(pieces_sent_with_more_go_out_as_one_segment) {
  // A gathered write (an http response's headers, then its body) under
  // nodelay: one segment, as the kernel's writev, not one per piece.
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  CHECK_EQ(rig.stack.set_nodelay(c.id, true), 0);
  auto a = bytes_of("head"), b = bytes_of("body");
  CHECK_EQ(rig.stack.send(c.id, a.data(), a.size(), rig.now, /*more=*/true), 4);
  CHECK(rig.sent().empty());
  CHECK_EQ(rig.stack.send(c.id, b.data(), b.size(), rig.now), 4);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == bytes_of("headbody"));
  // push() sends what a last `more` left.
  CHECK_EQ(rig.stack.send(c.id, a.data(), a.size(), rig.now, /*more=*/true), 4);
  CHECK(rig.sent().empty());
  rig.stack.push(c.id, rig.now);
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == a);
}

TEST(large_send_is_cut_at_peer_mss) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto data = filled(5000, 4);
  rig.stack.send(c.id, data.data(), data.size(), rig.now);
  auto out = rig.sent();
  // 3 x 1460 and the 680-byte tail: no runt was in flight, so Nagle (with
  // Minshall's refinement, as Linux) lets the tail go at once.
  REQUIRE(out.size() == 4);
  CHECK_EQ(out[0].payload.size(), 1460u);
  CHECK_EQ(out[2].tcp.seq, c.iss + 1 + 2920);
  CHECK_EQ(out[3].payload.size(), 5000u - 3 * 1460);
}

TEST(nagle_holds_a_runt_while_an_earlier_runt_is_unacked) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto first = filled(100, 1);
  rig.stack.send(c.id, first.data(), first.size(), rig.now);
  REQUIRE(rig.sent().size() == 1);
  auto second = filled(50, 2);
  rig.stack.send(c.id, second.data(), second.size(), rig.now);
  CHECK(rig.sent().empty());  // the first runt is still unacknowledged
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1 + 100, kAck, 65535));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].payload.size(), 50u);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1 + 100);
}

// Issue 3's 40 ms stall: with timestamps a full segment carries 12 bytes of
// options, so it holds fewer data bytes than the MSS. Counting it as a runt
// for Minshall's rule held the message's tail until the full segment was
// acknowledged, and a receiver ACKs a lone full segment only when its
// delayed-ACK timer fires. A runt is shorter than what a segment can carry
// after its options (Linux compares with the current MSS, options deducted).
TEST(message_tail_goes_at_once_behind_a_full_segment_with_timestamps) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  REQUIRE(c.id);
  const uint32_t full = 1460 - 12;  // the MSS less the timestamp option
  auto message = filled(full + 100, 1);
  rig.stack.send(c.id, message.data(), message.size(), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 2);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
  CHECK_EQ(out[0].payload.size(), size_t(full));
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[1].tcp.seq, c.iss + 1 + full);
  CHECK_EQ(out[1].payload.size(), 100u);
  CHECK_EQ(out[1].tcp.flags, kAck | kPsh);
  // The 100-byte tail is a runt: Nagle holds the next one until it is acked.
  auto more = filled(50, 2);
  rig.stack.send(c.id, more.data(), more.size(), rig.now);
  CHECK(rig.sent().empty());
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1 + full + 100, kAck, 65535,
                 ts_opt(5002, out[1].tcp.options.ts_val)));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1 + full + 100);
  CHECK_EQ(out[0].payload.size(), 50u);
}

TEST(rto_backs_off_exponentially) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto d = filled(100, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 1u);
  Micros last = rig.now;
  Micros expect = rig.config.rto_min;  // handshake RTT ~0: RTO clamps to rto_min
  for (int i = 0; i < 5; ++i) {
    Micros at = rig.stack.poll_at();
    CHECK_EQ(at - last, expect);
    rig.advance_to(at);
    auto out = rig.sent();
    REQUIRE(out.size() == 1);
    CHECK_EQ(out[0].tcp.seq, c.iss + 1);
    CHECK_EQ(out[0].payload.size(), 100u);
    last = at;
    expect *= 2;
  }
  SocketInfo info;
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.retransmits, 5u);
  CHECK_EQ(info.cwnd, 1460u);
  // An ACK ends it: the timer stops, nothing is pending.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 101, kAck, 65535));
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

TEST(data_retransmits_give_up_with_etimedout) {
  Config cfg = test_config();
  cfg.rto_max = 2000000;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto d = filled(10, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  for (int i = 0; i < 40 && rig.stack.poll_at() != kNever; ++i) rig.advance_to(rig.stack.poll_at());
  CHECK(has_event(rig.events(), EventType::Error, c.id, -ETIMEDOUT));
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

TEST(fast_retransmit_after_three_dupacks) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.set_nodelay(c.id, true);
  auto d = filled(5 * 1460, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 5u);
  for (int i = 0; i < 2; ++i) {
    rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 65535));
    CHECK(rig.sent().empty());
  }
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 65535));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
  CHECK_EQ(out[0].payload.size(), 1460u);
  CHECK_EQ(rig.stack.counters().segments_retransmitted, 1u);
  SocketInfo info;
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.cwnd, (5u * 1460) / 2 + 3 * 1460);
  // Partial ACK (NewReno): the next hole goes at once.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1 + 2 * 1460, kAck, 65535));
  out = rig.sent();
  REQUIRE(out.size() >= 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1 + 2 * 1460);
  // Full ACK ends recovery with cwnd = ssthresh.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1 + 5 * 1460, kAck, 65535));
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.cwnd, 1460u + 1460u);  // min(ssthresh, flight + mss) with nothing in flight
}

TEST(zero_window_is_probed_by_persist_timer) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), false, 0);
  REQUIRE(c.id);
  auto d = filled(10, 'z');
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK(rig.sent().empty());
  Micros first = rig.stack.poll_at();
  REQUIRE(first != kNever);
  rig.advance_to(first);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
  CHECK_EQ(out[0].payload.size(), 1u);
  // Still closed: the probe is refused and the next one comes later.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 0));
  Micros second = rig.stack.poll_at();
  CHECK(second - rig.now > first - 1000000);
  rig.advance_to(second);
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
  // The window opens: everything goes.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 1000));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].payload.size(), 10u);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);  // the refused probe byte goes again, first
}

TEST(rst_exact_resets_rst_in_window_gets_challenge_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq + 10, 0, kRst, 0));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq);
  CHECK(rig.events().empty());
  rig.feed(build(c.peer, c.local, c.peer_seq + 100000, 0, kRst, 0));  // out of window: ignored
  CHECK(rig.sent().empty());
  rig.feed(build(c.peer, c.local, c.peer_seq, 0, kRst, 0));
  CHECK(rig.sent().empty());
  CHECK(has_event(rig.events(), EventType::Error, c.id, -ECONNRESET));
  CHECK_EQ(rig.stack.counters().resets_in, 1u);
  CHECK_EQ(rig.stack.send(c.id, out[0].payload.data(), 0, rig.now), -EPIPE);
}

TEST(rst_after_peer_fin_is_epipe_as_in_linux) {
  // The peer closed, we write, its closed socket answers with RST: Linux's
  // tcp_reset() reports EPIPE in CLOSE_WAIT (ECONNRESET elsewhere).
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kFin, 1000));
  REQUIRE(rig.sent().size() == 1);
  CHECK(has_event(rig.events(), EventType::PeerClosed, c.id));
  const uint8_t data[3] = {1, 2, 3};
  CHECK_EQ(rig.stack.send(c.id, data, 3, rig.now), 3);
  REQUIRE(rig.sent().size() == 1);
  rig.feed(build(c.peer, c.local, c.peer_seq + 1, 0, kRst, 0));
  CHECK(has_event(rig.events(), EventType::Error, c.id, -EPIPE));
  CHECK_EQ(rig.stack.send(c.id, data, 3, rig.now), -EPIPE);
}

TEST(syn_on_established_connection_gets_challenge_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq + 5, 0, kSyn, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq);
  SocketInfo info;
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.state, uint8_t(TcpState::Established));
}

TEST(ack_of_unsent_data_is_dropped_with_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 500, kAck | kPsh, 1000, {}, bytes_of("no")));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq);  // the data was not taken
  CHECK_EQ(rig.stack.recv_available(c.id), 0u);
}

TEST(old_timestamp_is_rejected_by_paws) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 1000, ts_opt(4000),
                 bytes_of("stale")));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq);
  CHECK_EQ(rig.stack.recv_available(c.id), 0u);
}

TEST(timestamps_measure_rtt) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  REQUIRE(c.id);
  auto d = filled(100, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  uint32_t tsval = out[0].tcp.options.ts_val;
  rig.now += 3000;
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 101, kAck, 1000, ts_opt(5002, tsval)));
  SocketInfo info;
  rig.stack.info(c.id, &info);
  // Samples: ~0 from the handshake, then 3000 us: srtt = 7/8*0 + 3000/8.
  CHECK_EQ(info.srtt_us, 375u);
}

TEST(peer_fin_then_close_goes_through_last_ack) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kFin, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 1);
  CHECK(has_event(rig.events(), EventType::PeerClosed, c.id));
  rig.stack.close(c.id, rig.now);
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck | kFin);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
  CHECK(rig.events().empty());
  rig.feed(build(c.peer, c.local, c.peer_seq + 1, c.iss + 2, kAck, 1000));
  auto ev = rig.events();
  CHECK_EQ(count_events(ev, EventType::Closed, c.id), 1u);
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

TEST(lost_fin_is_retransmitted) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.shutdown_write(c.id, rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck | kFin);
  rig.advance_to(rig.stack.poll_at());
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck | kFin);
  CHECK_EQ(out[0].tcp.seq, c.iss + 1);
}

TEST(data_after_close_is_answered_with_rst) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.close(c.id, rig.now);
  rig.sent();
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 2, kAck | kPsh, 1000, {}, bytes_of("late")));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].has(kRst));
  CHECK_EQ(count_events(rig.events(), EventType::Closed, c.id), 1u);
}

TEST(keepalive_probes_then_times_out) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  Micros t0 = rig.now;
  CHECK_EQ(rig.stack.set_keepalive(c.id, true, 10000000, 1000000, 3), 0);
  CHECK_EQ(rig.stack.poll_at(), t0 + 10000000);
  rig.advance_to(rig.stack.poll_at());
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss);  // snd_una - 1
  CHECK(out[0].payload.empty());
  // An answer resets the count.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 1000));
  CHECK_EQ(rig.stack.poll_at(), rig.now + 10000000);
  for (int i = 0; i < 4; ++i) rig.advance_to(rig.stack.poll_at());
  CHECK_EQ(rig.sent().size(), 3u);
  CHECK(has_event(rig.events(), EventType::Error, c.id, -ETIMEDOUT));
}

TEST(new_syn_ends_time_wait) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.close(c.id, rig.now);  // FIN
  rig.sent();
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 2, kAck | kFin, 1000));
  SocketInfo info;
  REQUIRE(rig.stack.info(c.id, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::TimeWait));
  rig.sent();
  rig.feed(build(c.peer, c.local, c.peer_seq + 100000, 0, kSyn, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kSyn | kAck);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 100001);
  CHECK_EQ(count_events(rig.events(), EventType::Closed, c.id), 1u);
}

// Demux remembers the connection of the last segment; that shortcut must
// give what the table gives: segments alternating between connections each
// reach their own, and once a connection is gone (its id even reused by
// another one) its 4-tuple finds no socket.
TEST(segments_reach_their_own_connection_and_a_gone_one_gets_rst) {
  Rig rig;
  Accepted one = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  Accepted two = accept_from(rig, ep4(1, 81), ep4(2, 5001));
  REQUIRE(one.id && two.id);
  auto data = [&](const Accepted& c, uint32_t offset, const char* text) {
    rig.feed(build(c.peer, c.local, c.peer_seq + offset, c.iss + 1, kAck | kPsh, 65535, {},
                   bytes_of(text)));
  };
  data(one, 0, "one");
  data(two, 0, "two");
  data(one, 3, "three");
  auto out = rig.sent();
  REQUIRE(out.size() == 3);
  CHECK_EQ(out[0].tcp.src_port, 80);
  CHECK_EQ(out[0].tcp.ack, one.peer_seq + 3);
  CHECK_EQ(out[1].tcp.src_port, 81);
  CHECK_EQ(out[1].tcp.ack, two.peer_seq + 3);
  CHECK_EQ(out[2].tcp.src_port, 80);
  CHECK_EQ(out[2].tcp.ack, one.peer_seq + 8);
  CHECK_EQ(rig.stack.recv_available(one.id), 8u);
  CHECK_EQ(rig.stack.recv_available(two.id), 3u);

  rig.stack.abort(one.id, rig.now);
  REQUIRE(rig.sent().size() == 1);  // its RST
  CHECK_EQ(count_events(rig.events(), EventType::Closed, one.id), 1u);
  // A new connection on the first listener may take the freed id.
  Endpoint third_peer = ep4(2, 5002);
  rig.feed(build(third_peer, one.local, 7000, 0, kSyn, 65535, peer_syn_options(false)));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  uint32_t third_iss = out[0].tcp.seq;
  rig.feed(build(third_peer, one.local, 7001, third_iss + 1, kAck, 65535));
  int third = rig.stack.accept(one.listener);
  REQUIRE(third > 0);
  CHECK_EQ(SocketId(third), one.id);
  data(one, 8, "late");
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kRst);
  CHECK_EQ(out[0].tcp.seq, one.iss + 1);
  CHECK_EQ(out[0].tcp.dst_port, 5000);  // the listener's answer to a stray ACK
  CHECK_EQ(rig.stack.recv_available(SocketId(third)), 0u);
}

TEST(full_link_drops_and_counts_then_recovers) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.link.full = true;
  auto d = filled(100, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.stack.counters().packets_link_full, 1u);
  rig.link.full = false;
  REQUIRE(rig.stack.poll_at() != kNever);
  rig.advance_to(rig.stack.poll_at());
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].payload.size(), 100u);
}

TEST(closing_listener_resets_unaccepted_connections) {
  Rig rig;
  int l = rig.stack.listen(ep4(1, 80), 8, false);
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1000, 0, kSyn, 1000));
  uint32_t iss = rig.sent()[0].tcp.seq;
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1001, iss + 1, kAck, 1000));
  rig.stack.close(SocketId(l), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].has(kRst));
  CHECK_EQ(count_events(rig.events(), EventType::Closed, SocketId(l)), 1u);
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

TEST(set_nodelay_pushes_a_held_runt) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto a = bytes_of("aa"), b = bytes_of("bbb");
  rig.stack.send(c.id, a.data(), a.size(), rig.now);
  rig.stack.send(c.id, b.data(), b.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 1u);
  rig.stack.set_nodelay(c.id, true);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].payload == b);
}

TEST(bare_fin_is_taken_even_with_a_zero_window) {
  Config cfg = test_config();
  cfg.recv_buffer = 2048;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 65535, {}, filled(2048, 1)));
  CHECK_EQ(rig.sent()[0].tcp.window, 0);
  rig.feed(build(c.peer, c.local, c.peer_seq + 2048, c.iss + 1, kAck | kFin, 65535));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 2049);
  SocketInfo info;
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.state, uint8_t(TcpState::CloseWait));
  rig.events();
  std::vector<uint8_t> buf(4096);
  CHECK_EQ(rig.stack.recv(c.id, buf.data(), buf.size(), rig.now), 2048u);
  CHECK(has_event(rig.events(), EventType::PeerClosed, c.id));
}

TEST(fin_into_zero_window_is_still_retransmitted) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), false, 0);
  REQUIRE(c.id);
  rig.stack.shutdown_write(c.id, rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].has(kFin));
  rig.advance_to(rig.stack.poll_at());
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(out[0].has(kFin));
}

TEST(duplicate_of_read_data_after_close_does_not_reset) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  auto d = bytes_of("data");
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 1000, {}, d));
  std::vector<uint8_t> buf(16);
  rig.stack.recv(c.id, buf.data(), buf.size(), rig.now);
  rig.stack.close(c.id, rig.now);
  rig.sent();
  // Our ACK was lost: the peer repeats the data with its FIN.
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 2, kAck | kFin, 1000, {}, d));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK(!out[0].has(kRst));
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 5);
}

TEST(poll_at_follows_a_restarted_retransmission_timer) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.stack.set_nodelay(c.id, true);
  auto d = filled(100, 1);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  CHECK_EQ(rig.sent().size(), 2u);
  Micros rto = rig.config.rto_min;
  CHECK_EQ(rig.stack.poll_at(), rig.now + rto);
  rig.now += 100000;
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 101, kAck, 65535));
  // RFC 6298 5.3: an ACK for new data restarts the timer (srtt ~0: rto_min).
  CHECK_EQ(rig.stack.poll_at(), rig.now + rto);
  rig.advance_to(rig.now + rto - 1);
  CHECK(rig.sent().empty());
  rig.advance_to(rig.now + 1);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.seq, c.iss + 101);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 201, kAck, 65535));
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

TEST(timers_of_many_connections_fire_in_order) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 64, false);
  std::vector<SocketId> ids;
  for (uint16_t i = 0; i < 20; ++i) {
    int id = rig.stack.connect(ep4(1, uint16_t(40000 + i)), ep4(2, 80), 7, rig.now);
    REQUIRE(id > 0);
    rig.now += 1000;
  }
  CHECK_EQ(rig.sent().size(), 20u);
  Micros first = rig.stack.poll_at();
  CHECK_EQ(first, 1000000u + rig.config.rto_initial);
  rig.advance_to(first + 5500);  // the first six SYNs are due
  CHECK_EQ(rig.sent().size(), 6u);
  CHECK_EQ(rig.stack.poll_at(), first + 6000);
}

TEST(new_syn_with_newer_timestamp_ends_time_wait) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  REQUIRE(c.id);
  rig.stack.close(c.id, rig.now);
  rig.sent();
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 2, kAck | kFin, 1000, ts_opt(5100)));
  rig.sent();
  TcpOptions o = peer_syn_options(true);
  o.ts_val = 5200;
  rig.feed(build(c.peer, c.local, c.peer_seq - 50000, 0, kSyn, 1000, o));  // older seq
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kSyn | kAck);
}

TEST(unanswered_zero_window_probes_time_out) {
  Config cfg = test_config();
  cfg.rto_max = 2000000;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), false, 0);
  REQUIRE(c.id);
  auto d = filled(10, 'z');
  rig.stack.send(c.id, d.data(), d.size(), rig.now);
  for (int i = 0; i < 40 && rig.stack.poll_at() != kNever; ++i) {
    rig.advance_to(rig.stack.poll_at());
  }
  CHECK(has_event(rig.events(), EventType::Error, c.id, -ETIMEDOUT));
}

TEST(deferred_ack_for_a_pushed_segment_is_sent_by_flush) {
  Config cfg = test_config();
  cfg.defer_acks = true;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 65535, {}, filled(100, 'q')));
  CHECK(rig.sent().empty());  // held back: the app may answer
  rig.stack.flush(rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 100);
  CHECK_EQ(out[0].payload.size(), 0u);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());  // owed once, sent once
}

TEST(deferred_ack_rides_on_the_reply) {
  Config cfg = test_config();
  cfg.defer_acks = true;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  REQUIRE(rig.stack.set_nodelay(c.id, true) == 0);
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 65535, {}, filled(100, 'q')));
  CHECK(rig.sent().empty());
  std::vector<uint8_t> reply(50, 'r');
  REQUIRE(rig.stack.send(c.id, reply.data(), reply.size(), rig.now) == 50);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);  // one segment: the reply, acknowledging the request
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 100);
  CHECK_EQ(out[0].payload.size(), 50u);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

TEST(quick_acks_are_sent_at_start_then_acks_are_delayed) {
  Config cfg = test_config();
  cfg.quick_acks = 2;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  uint32_t seq = c.peer_seq;
  for (int i = 0; i < 2; ++i) {
    rig.feed(build(c.peer, c.local, seq, c.iss + 1, kAck, 65535, {}, filled(500, 1)));
    seq += 500;
    auto out = rig.sent();
    REQUIRE(out.size() == 1);  // quick: at once
    CHECK_EQ(out[0].tcp.ack, seq);
  }
  rig.feed(build(c.peer, c.local, seq, c.iss + 1, kAck, 65535, {}, filled(500, 1)));
  CHECK(rig.sent().empty());  // now delayed
  CHECK_EQ(rig.stack.poll_at(), rig.now + rig.config.delayed_ack);
}

namespace {
// A Reader that takes up to `limit` bytes per offer and keeps them.
struct CollectingReader final : Reader {
  size_t limit = SIZE_MAX;
  std::vector<uint8_t> got;
  size_t offers = 0;
  size_t take(SocketId, const uint8_t* data, size_t len) override {
    ++offers;
    size_t n = std::min(len, limit);
    got.insert(got.end(), data, data + n);
    return n;
  }
};
}  // namespace

TEST(direct_reader_takes_in_order_bytes_and_the_window_stays_open) {
  Config cfg = test_config();
  cfg.recv_buffer = 4096;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  CollectingReader reader;
  REQUIRE(rig.stack.set_reader(c.id, &reader) == 0);
  uint32_t s = c.peer_seq;
  // Five segments: more than the receive buffer could hold.
  for (int i = 0; i < 5; ++i) {
    rig.feed(build(c.peer, c.local, s + 1024 * i, c.iss + 1, kAck | kPsh, 65535, {},
                   filled(1024, uint8_t(i))));
    auto out = rig.sent();
    REQUIRE(out.size() == 1);
    CHECK_EQ(out[0].tcp.ack, s + 1024 * (i + 1));
    CHECK_EQ(out[0].tcp.window, 4096);
  }
  CHECK(!has_event(rig.events(), EventType::Readable, c.id));
  CHECK_EQ(rig.stack.recv_available(c.id), 0u);
  REQUIRE(reader.got.size() == 5 * 1024u);
  for (int i = 0; i < 5; ++i) CHECK_EQ(reader.got[1024 * i], uint8_t(i));
  // The FIN after it all is EOF at once: nothing waits in the buffer.
  rig.feed(build(c.peer, c.local, s + 5 * 1024, c.iss + 1, kAck | kFin, 65535, {}, {}));
  CHECK(has_event(rig.events(), EventType::PeerClosed, c.id));
}

TEST(direct_reader_leaves_what_it_refuses_and_out_of_order_bytes_to_the_buffer) {
  Config cfg = test_config();
  cfg.recv_buffer = 4096;
  Rig rig(cfg);
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  CollectingReader reader;
  reader.limit = 300;
  REQUIRE(rig.stack.set_reader(c.id, &reader) == 0);
  uint32_t s = c.peer_seq;
  rig.feed(build(c.peer, c.local, s, c.iss + 1, kAck | kPsh, 65535, {}, filled(1000, 'a')));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, s + 1000);
  CHECK_EQ(out[0].tcp.window, 4096 - 700);
  CHECK_EQ(reader.got.size(), 300u);
  CHECK(has_event(rig.events(), EventType::Readable, c.id));
  CHECK_EQ(rig.stack.recv_available(c.id), 700u);
  // Older bytes wait: the next in-order segment is not offered.
  rig.feed(build(c.peer, c.local, s + 1000, c.iss + 1, kAck | kPsh, 65535, {}, filled(100, 'b')));
  rig.sent();
  CHECK_EQ(reader.offers, 1u);
  std::vector<uint8_t> buf(4096);
  REQUIRE(rig.stack.recv(c.id, buf.data(), buf.size(), rig.now) == 800u);
  CHECK_EQ(buf[0], 'a');
  CHECK_EQ(buf[699], 'a');
  CHECK_EQ(buf[700], 'b');
  // Out of order: buffered, not offered; the hole's filler is offered only
  // while nothing is buffered beyond it, so it goes to the buffer too.
  rig.feed(build(c.peer, c.local, s + 1200, c.iss + 1, kAck, 65535, {}, filled(100, 'd')));
  rig.feed(build(c.peer, c.local, s + 1100, c.iss + 1, kAck, 65535, {}, filled(100, 'c')));
  rig.sent();
  CHECK_EQ(reader.offers, 1u);
  REQUIRE(rig.stack.recv(c.id, buf.data(), buf.size(), rig.now) == 200u);
  CHECK_EQ(buf[0], 'c');
  CHECK_EQ(buf[100], 'd');
  // Detached: bytes are buffered again.
  REQUIRE(rig.stack.set_reader(c.id, nullptr) == 0);
  rig.feed(build(c.peer, c.local, s + 1300, c.iss + 1, kAck | kPsh, 65535, {}, filled(10, 'e')));
  rig.sent();
  CHECK_EQ(reader.offers, 1u);
  CHECK_EQ(rig.stack.recv_available(c.id), 10u);
}
