// Opening connections: passive and active handshakes, options negotiated,
// refusals, backlog, timeouts. Crafted segments in, exact segments out.
#include <cerrno>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

TEST(handshake_ipv4_then_data_acked) {
  Rig rig;
  Endpoint local = ep4(1, 80), peer = ep4(2, 5000);
  int l = rig.stack.listen(local, 8, false);
  REQUIRE(l > 0);
  rig.feed(build(peer, local, 1000, 0, kSyn, 65535, peer_syn_options(true)));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  const Parsed& synack = out[0];
  REQUIRE(synack.ok);
  CHECK_EQ(synack.tcp.flags, kSyn | kAck);
  CHECK_EQ(synack.tcp.ack, 1001u);
  CHECK_EQ(synack.tcp.window, 65535);
  CHECK_EQ(synack.tcp.options.mss, 65535 - 40);
  CHECK_EQ(synack.tcp.options.window_scale, 5);  // 1 MiB buffer
  CHECK(synack.tcp.options.sack_permitted);
  CHECK(synack.tcp.options.has_timestamp);
  CHECK_EQ(synack.tcp.options.ts_ecr, 5000u);
  CHECK_EQ(rig.stack.accept(SocketId(l)), -EAGAIN);
  uint32_t iss = synack.tcp.seq;

  TcpOptions ts;
  ts.has_timestamp = true;
  ts.ts_val = 5001;
  ts.ts_ecr = synack.tcp.options.ts_val;
  rig.feed(build(peer, local, 1001, iss + 1, kAck, 1000, ts));
  CHECK(rig.sent().empty());
  auto ev = rig.events();
  CHECK(has_event(ev, EventType::Acceptable, SocketId(l)));
  int id = rig.stack.accept(SocketId(l));
  REQUIRE(id > 0);
  CHECK_EQ(rig.stack.counters().connections_opened, 1u);
  SocketInfo info;
  REQUIRE(rig.stack.info(SocketId(id), &info));
  CHECK_EQ(info.state, uint8_t(TcpState::Established));
  CHECK_EQ(info.send_window, 1000u << 2);

  ts.ts_val = 5002;
  rig.feed(build(peer, local, 1001, iss + 1, kAck | kPsh, 1000, ts, bytes_of("hello")));
  out = rig.sent();
  REQUIRE(out.size() == 1);  // PSH: ACK at once
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.seq, iss + 1);
  CHECK_EQ(out[0].tcp.ack, 1006u);
  CHECK_EQ(out[0].tcp.options.ts_ecr, 5002u);
  CHECK_EQ(out[0].tcp.window, ((1u << 20) - 5) >> 5);
  ev = rig.events();
  CHECK(has_event(ev, EventType::Readable, SocketId(id)));
  uint8_t buf[16];
  CHECK_EQ(rig.stack.recv(SocketId(id), buf, sizeof buf, rig.now), 5u);
  CHECK(std::memcmp(buf, "hello", 5) == 0);
}

TEST(connect_ipv6_sends_syn_with_options_and_completes) {
  Rig rig;
  Endpoint local = ep6(1, 40000), remote = ep6(2, 443);
  int id = rig.stack.connect(local, remote, 3, rig.now);
  REQUIRE(id > 0);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].ip.src.family, 6);
  CHECK_EQ(out[0].tcp.flags, kSyn);
  CHECK_EQ(out[0].tcp.options.mss, 65476);  // (65536 - 40) - 20
  CHECK_EQ(out[0].tcp.options.window_scale, 5);
  CHECK(out[0].tcp.options.sack_permitted);
  CHECK(out[0].tcp.options.has_timestamp);
  CHECK_EQ(rig.link.sent.size(), 0u);
  uint32_t iss = out[0].tcp.seq;
  rig.feed(build(remote, local, 7000, iss + 1, kSyn | kAck, 30000, peer_syn_options(false)), 3);
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.seq, iss + 1);
  CHECK_EQ(out[0].tcp.ack, 7001u);
  CHECK(!out[0].tcp.options.has_timestamp);  // peer did not agree
  CHECK_EQ(out[0].tcp.window, 65535);         // no scaling agreed: capped
  auto ev = rig.events();
  CHECK(has_event(ev, EventType::Connected, SocketId(id)));
  SocketInfo info;
  rig.stack.info(SocketId(id), &info);
  CHECK_EQ(info.send_window, 30000u);
  Endpoint e;
  REQUIRE(rig.stack.remote_endpoint(SocketId(id), &e));
  CHECK(e == remote);
  CHECK_EQ(rig.stack.link_of(SocketId(id)), 3u);
}

TEST(data_queued_before_connected_is_sent_after_handshake) {
  Rig rig;
  Endpoint local = ep4(1, 40000), remote = ep4(2, 80);
  int id = rig.stack.connect(local, remote, 3, rig.now);
  auto syn = rig.sent();
  uint32_t iss = syn[0].tcp.seq;
  auto msg = bytes_of("early");
  CHECK_EQ(rig.stack.send(SocketId(id), msg.data(), msg.size(), rig.now), 5);
  CHECK(rig.sent().empty());
  rig.feed(build(remote, local, 7000, iss + 1, kSyn | kAck, 30000, peer_syn_options(false)), 3);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);  // the data segment carries the ACK
  CHECK_EQ(out[0].tcp.flags, kAck | kPsh);
  CHECK_EQ(out[0].tcp.seq, iss + 1);
  CHECK(out[0].payload == msg);
}

TEST(rst_to_closed_port_refuses_connect) {
  Rig rig;
  Endpoint local = ep4(1, 40000), remote = ep4(2, 81);
  int id = rig.stack.connect(local, remote, 3, rig.now);
  uint32_t iss = rig.sent()[0].tcp.seq;
  rig.feed(build(remote, local, 0, iss + 1, kRst | kAck, 0), 3);
  auto ev = rig.events();
  CHECK(has_event(ev, EventType::Error, SocketId(id), -ECONNREFUSED));
  CHECK(rig.sent().empty());
  CHECK_EQ(rig.stack.poll_at(), kNever);
  rig.stack.close(SocketId(id), rig.now);
  ev = rig.events();
  CHECK_EQ(count_events(ev, EventType::Closed, SocketId(id)), 1u);
}

TEST(syn_to_port_without_listener_gets_rst) {
  Rig rig;
  rig.feed(build(ep4(2, 5000), ep4(1, 9), 4242, 0, kSyn, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kRst | kAck);
  CHECK_EQ(out[0].tcp.seq, 0u);
  CHECK_EQ(out[0].tcp.ack, 4243u);
  CHECK_EQ(out[0].tcp.dst_port, 5000);
  CHECK_EQ(rig.stack.counters().packets_no_socket, 1u);
  // An ACK to nowhere gets RST with seq = its ack; a RST gets nothing.
  rig.feed(build(ep4(2, 5000), ep4(1, 9), 4243, 777, kAck, 1000));
  out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kRst);
  CHECK_EQ(out[0].tcp.seq, 777u);
  rig.feed(build(ep4(2, 5000), ep4(1, 9), 4243, 777, kRst, 0));
  CHECK(rig.sent().empty());
}

TEST(ipv4_reaches_dual_stack_listener_unless_v6only) {
  Rig rig;
  int l = rig.stack.listen(Endpoint{IpAddr::v6_any(), 80}, 8, false);
  REQUIRE(l > 0);
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1, 0, kSyn, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kSyn | kAck);
  CHECK_EQ(out[0].ip.src.family, 4);

  Rig rig6;
  rig6.stack.listen(Endpoint{IpAddr::v6_any(), 80}, 8, true);
  rig6.feed(build(ep4(2, 5000), ep4(1, 80), 1, 0, kSyn, 1000));
  out = rig6.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kRst | kAck);
}

TEST(listen_twice_on_same_endpoint_is_addrinuse) {
  Rig rig;
  CHECK(rig.stack.listen(ep4(1, 80), 8, false) > 0);
  CHECK_EQ(rig.stack.listen(ep4(1, 80), 8, false), -EADDRINUSE);
  CHECK(rig.stack.listen(Endpoint{IpAddr::v4_any(), 80}, 8, false) > 0);
}

TEST(exact_listener_wins_over_wildcard) {
  Rig rig;
  int any = rig.stack.listen(Endpoint{IpAddr::v4_any(), 80}, 8, false);
  int exact = rig.stack.listen(ep4(1, 80), 8, false);
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1000, 0, kSyn, 1000));
  auto s = rig.sent();
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1001, s[0].tcp.seq + 1, kAck, 1000));
  CHECK_EQ(rig.stack.accept(SocketId(any)), -EAGAIN);
  CHECK(rig.stack.accept(SocketId(exact)) > 0);
}

TEST(excess_syns_beyond_backlog_are_dropped) {
  Rig rig;
  int l = rig.stack.listen(ep4(1, 80), 2, false);
  for (uint16_t p = 5000; p < 5004; ++p) rig.feed(build(ep4(2, p), ep4(1, 80), 1, 0, kSyn, 1000));
  CHECK_EQ(rig.sent().size(), 2u);
  (void)l;
}

TEST(connect_to_taken_tuple_is_addrinuse) {
  Rig rig;
  CHECK(rig.stack.connect(ep4(1, 40000), ep4(2, 80), 3, rig.now) > 0);
  CHECK_EQ(rig.stack.connect(ep4(1, 40000), ep4(2, 80), 3, rig.now), -EADDRINUSE);
}

TEST(syn_retransmits_back_off_then_connect_times_out) {
  Config c = test_config();
  c.syn_timeout = 20000000;
  Rig rig(c);
  Micros start = rig.now;
  int id = rig.stack.connect(ep4(1, 40000), ep4(2, 80), 3, rig.now);
  CHECK_EQ(rig.sent().size(), 1u);
  std::vector<Micros> times;
  while (rig.stack.poll_at() != kNever && times.size() < 10) {
    rig.advance_to(rig.stack.poll_at());
    for (auto& p : rig.sent()) {
      CHECK_EQ(p.tcp.flags, kSyn);
      times.push_back(rig.now - start);
    }
  }
  REQUIRE(times.size() == 4);
  CHECK_EQ(times[0], 1000000u);
  CHECK_EQ(times[1], 3000000u);
  CHECK_EQ(times[2], 7000000u);
  CHECK_EQ(times[3], 15000000u);
  auto ev = rig.events();
  CHECK(has_event(ev, EventType::Error, SocketId(id), -ETIMEDOUT));
  CHECK_EQ(rig.now - start, 20000000u);
}

TEST(isn_differs_per_tuple_and_secret) {
  Rig a, b;
  a.stack.connect(ep4(1, 40000), ep4(2, 80), 3, a.now);
  a.stack.connect(ep4(1, 40001), ep4(2, 80), 3, a.now);
  auto s = a.sent();
  CHECK(s[0].tcp.seq != s[1].tcp.seq);
  Config c = test_config();
  c.isn_secret[0] ^= 1;
  Rig d(c);
  d.stack.connect(ep4(1, 40000), ep4(2, 80), 3, d.now);
  CHECK(d.sent()[0].tcp.seq != s[0].tcp.seq);
}

TEST(lost_synack_is_resent_when_syn_repeats) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 8, false);
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1000, 0, kSyn, 1000));
  uint32_t iss = rig.sent()[0].tcp.seq;
  rig.feed(build(ep4(2, 5000), ep4(1, 80), 1000, 0, kSyn, 1000));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kSyn | kAck);
  CHECK_EQ(out[0].tcp.seq, iss);
}
