// Wire formats and hostile input: parse/emit round trips, checksums, and
// malformed packets that must be dropped and counted without a reply.
#include <cerrno>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

// A SYN to a listening rig, ready to be broken in various ways.
std::vector<uint8_t> good_syn() {
  TcpOptions o;
  o.mss = 1460;
  o.window_scale = 7;
  o.sack_permitted = true;
  o.has_timestamp = true;
  o.ts_val = 1;
  return build(ep4(2, 5000), ep4(1, 80), 1000, 0, kSyn, 1000, o);
}

void expect_dropped(Rig& rig, const std::vector<uint8_t>& pkt) {
  uint64_t before = rig.stack.counters().packets_malformed;
  rig.feed(pkt);
  CHECK_EQ(rig.stack.counters().packets_malformed, before + 1);
  CHECK(rig.sent().empty());
}

void refill_tcp_checksum(std::vector<uint8_t>& p) {
  size_t tcp_len = p.size() - 20;
  IpAddr s = IpAddr::v4(10, 0, 0, 2), d = IpAddr::v4(10, 0, 0, 1);
  fill_tcp_checksum(p.data() + 20, tcp_len, s, d);
}

}  // namespace

TEST(tcp_header_with_all_options_round_trips) {
  TcpHeader h;
  h.src_port = 1;
  h.dst_port = 2;
  h.seq = 0xdeadbeef;
  h.ack = 7;
  h.flags = kAck | kPsh;
  h.window = 513;
  h.options.has_timestamp = true;
  h.options.ts_val = 11;
  h.options.ts_ecr = 12;
  h.options.sack_count = 3;
  for (int i = 0; i < 3; ++i) h.options.sack[i] = SackBlock{uint32_t(i * 10), uint32_t(i * 10 + 5)};
  uint8_t buf[60];
  size_t n = emit_tcp(buf, h);
  CHECK_EQ(n, 20u + 12 + 4 + 24);
  TcpHeader p;
  REQUIRE(parse_tcp(buf, n, &p));
  CHECK_EQ(p.seq, 0xdeadbeefu);
  CHECK_EQ(p.flags, kAck | kPsh);
  CHECK_EQ(p.window, 513);
  CHECK_EQ(p.options.ts_ecr, 12u);
  CHECK_EQ(p.options.sack_count, 3);
  CHECK_EQ(p.options.sack[2].right, 25u);
}

TEST(checksums_verify_and_detect_a_flipped_bit) {
  auto p = good_syn();
  IpHeader ip;
  REQUIRE(parse_ip(p.data(), p.size(), true, &ip) == IpParse::Ok);
  CHECK(tcp_checksum_ok(p.data() + 20, ip.payload_len, ip.src, ip.dst));
  p[30] ^= 0x10;
  CHECK(!tcp_checksum_ok(p.data() + 20, ip.payload_len, ip.src, ip.dst));
  auto q = build(ep6(2, 5000), ep6(1, 80), 1, 2, kAck, 3, {}, bytes_of("odd"));
  REQUIRE(parse_ip(q.data(), q.size(), true, &ip) == IpParse::Ok);
  CHECK(tcp_checksum_ok(q.data() + 40, ip.payload_len, ip.src, ip.dst));
}

TEST(malformed_tcp_header_is_dropped_and_counted) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 8, false);
  auto p = good_syn();
  {
    auto q = p;  // data offset beyond the segment
    q[32] = 0xf0;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // data offset below 5 words
    q[32] = 0x40;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // option length running past the header
    q[41] = 40;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // option length 0 (would loop forever)
    q[41] = 0;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // MSS option of the wrong size
    q[41] = 3;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // SYN+RST
    q[33] |= kRst;
    refill_tcp_checksum(q);
    expect_dropped(rig, q);
  }
  CHECK_EQ(rig.stack.accept(1), -EAGAIN);
}

TEST(malformed_ip_header_is_dropped_and_counted) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 8, false);
  auto p = good_syn();
  expect_dropped(rig, std::vector<uint8_t>(p.begin(), p.begin() + 10));  // truncated IP
  expect_dropped(rig, std::vector<uint8_t>(p.begin(), p.begin() + 30));  // total > len
  {
    auto q = p;  // IHL below 5
    q[0] = 0x44;
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // a fragment
    q[6] = 0x20;
    q[10] = q[11] = 0;
    uint16_t c = uint16_t(~ones_sum(q.data(), 20));
    std::memcpy(q.data() + 10, &c, 2);
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // bad IPv4 header checksum
    q[8] ^= 1;
    expect_dropped(rig, q);
  }
  {
    auto q = p;  // bad TCP checksum
    q[p.size() - 1] ^= 1;
    expect_dropped(rig, q);
  }
  {
    std::vector<uint8_t> q = {0x70, 0, 0, 0};  // IP version 7
    expect_dropped(rig, q);
  }
  expect_dropped(rig, {});
}

TEST(checksums_are_skipped_on_the_fabric) {
  Config c = test_config();
  c.checksums = false;
  Rig rig(c);
  rig.stack.listen(ep4(1, 80), 8, false);
  auto p = good_syn();
  p[36] ^= 0xff;  // corrupt the TCP checksum field: nobody looks
  rig.feed(p);
  auto out = rig.link.take();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].bytes[20 + 16], 0);  // and none is computed
  CHECK_EQ(out[0].bytes[20 + 17], 0);
  CHECK_EQ(rig.stack.counters().packets_malformed, 0u);
}

TEST(trailing_link_padding_is_ignored) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 8, false);
  auto p = good_syn();
  p.resize(p.size() + 30, 0xee);
  rig.feed(p);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kSyn | kAck);
}

TEST(foreign_destination_is_ignored_unless_accept_any) {
  Config c = test_config();
  c.accept_any_address = false;
  Rig rig(c);
  rig.stack.listen(Endpoint{IpAddr::v4_any(), 80}, 8, false);
  rig.feed(good_syn());
  CHECK(rig.sent().empty());
  rig.stack.add_address(IpAddr::v4(10, 0, 0, 1));
  rig.feed(good_syn());
  CHECK_EQ(rig.sent().size(), 1u);
}

TEST(segment_from_another_link_is_ignored) {
  Rig rig;
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  REQUIRE(c.id);
  rig.feed(build(c.peer, c.local, c.peer_seq, 0, kRst, 0), 99);
  CHECK(rig.events().empty());
  SocketInfo info;
  rig.stack.info(c.id, &info);
  CHECK_EQ(info.state, uint8_t(TcpState::Established));
}

TEST(random_and_mutated_packets_never_crash) {
  Rig rig;
  rig.stack.listen(ep4(1, 80), 64, false);
  rig.stack.listen(Endpoint{IpAddr::v6_any(), 80}, 64, false);
  Accepted c = accept_from(rig, ep4(1, 81), ep4(2, 5000), true);
  REQUIRE(c.id);
  uint64_t x = 88172645463325252ull;
  auto rnd = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  std::vector<std::vector<uint8_t>> seeds = {
      good_syn(),
      build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 100, {}, bytes_of("payload")),
      build(ep6(2, 5000), ep6(1, 80), 5, 0, kSyn, 100),
  };
  Config nock = test_config();
  nock.checksums = false;
  Rig fabric(nock);
  fabric.stack.listen(ep4(1, 80), 64, false);
  Accepted fc = accept_from(fabric, ep4(1, 81), ep4(2, 5000), true);
  for (int i = 0; i < 200000; ++i) {
    std::vector<uint8_t> p;
    if (rnd() % 4 == 0) {
      p.resize(rnd() % 120);
      for (auto& b : p) b = uint8_t(rnd());
      if (!p.empty()) p[0] = uint8_t((rnd() & 1 ? 0x40 : 0x60) | (p[0] & 0x0f));
    } else {
      p = seeds[rnd() % seeds.size()];
      int flips = 1 + int(rnd() % 4);
      for (int k = 0; k < flips; ++k) p[rnd() % p.size()] ^= uint8_t(1u << (rnd() % 8));
      if (rnd() % 8 == 0) p.resize(rnd() % (p.size() + 1));
    }
    rig.feed(p);
    fabric.feed(p);
    if (i % 1000 == 0) {
      rig.advance_to(rig.now + 50000);
      fabric.advance_to(fabric.now + 50000);
      rig.link.take();
      fabric.link.take();
      rig.events();
      fabric.events();
    }
  }
  CHECK(rig.stack.counters().packets_malformed > 0);
  (void)fc;
}

TEST(multicast_and_broadcast_segments_get_no_answer) {
  Rig rig;
  Endpoint bcast{IpAddr::v4(255, 255, 255, 255), 80};
  rig.feed(build(ep4(2, 5000), bcast, 1, 0, kSyn, 1000));
  Endpoint mcast{IpAddr::v4(224, 0, 0, 1), 5000};
  rig.feed(build(mcast, ep4(1, 80), 1, 0, kSyn, 1000));
  CHECK(rig.sent().empty());
  CHECK_EQ(rig.stack.counters().packets_malformed, 2u);
}

TEST(ipv6_segments_with_ipv4_mapped_addresses_are_dropped) {
  Rig rig;
  int l = rig.stack.listen(Endpoint{IpAddr::v6_any(), 80}, 8, false);
  REQUIRE(l > 0);
  Endpoint mapped = ep6(2, 5000);
  std::memset(mapped.addr.bytes, 0, 16);
  mapped.addr.bytes[10] = mapped.addr.bytes[11] = 0xff;
  mapped.addr.bytes[12] = 10;
  mapped.addr.bytes[15] = 2;  // ::ffff:10.0.0.2
  rig.feed(build(mapped, ep6(1, 80), 1, 0, kSyn, 1000));
  CHECK(rig.sent().empty());
  CHECK_EQ(rig.stack.counters().packets_malformed, 1u);
  rig.feed(build(ep6(2, 5000), ep6(1, 80), 1, 0, kSyn, 1000));  // a real one is answered
  CHECK_EQ(rig.sent().size(), 1u);
}
