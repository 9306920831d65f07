// Send memory a link lends (Link::send_memory), a peer that vanished and is
// finished from it (Stack::orphan / feed), and a full link that holds
// segments back until it has room (Link::tx_blocked / Stack::link_ready).
#include "stack/test/harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

struct Pair {
  SocketId client = 0, server = 0;
};

Pair connect(Wire& w) {
  Pair p;
  int l = w.b.listen(ep4(2, 80), 16, false);
  int c = w.a.connect(ep4(1, 40000), ep4(2, 80), 1, w.now);
  if (l <= 0 || c <= 0) return p;
  p.client = SocketId(c);
  w.run(w.now + 1000000);
  int s = w.b.accept(SocketId(l));
  if (s > 0) p.server = SocketId(s);
  return p;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x);
  }
  return v;
}

}  // namespace

TEST(lent_send_memory_keeps_each_byte_at_its_sequence_number) {
  Wire w;
  w.ends[0].lend_bytes = 64 * 1024;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  REQUIRE(w.ends[0].lent.size() == 1u);
  Wire::Lent& l = *w.ends[0].lent[0];
  CHECK(l.local == ep4(1, 40000) && l.remote == ep4(2, 80));
  CHECK(w.a.send_lent(p.client));
  const uint32_t first = l.seq_base;
  // More than the lent ring holds: what fits is taken, the rest is the
  // caller's to offer again once ACKs free room.
  auto data = pattern(200 * 1024, 3);
  size_t offered = 0, received = 0;
  std::vector<uint8_t> got(data.size()), buf(32768);
  while (received < data.size()) {
    if (offered < data.size()) {
      long took = w.a.send(p.client, data.data() + offered, data.size() - offered, w.now);
      REQUIRE(took >= 0);
      CHECK(size_t(took) <= 64 * 1024);
      offered += size_t(took);
      CHECK_EQ(l.end, first + uint32_t(offered));  // published as it is written
      CHECK(l.end - l.seq_base <= 2 * l.ring_bytes);  // the base follows the ring's wraps
      // The last byte written is where its sequence number says.
      if (took > 0) CHECK_EQ(l.ring[(l.end - 1 - l.seq_base) % l.ring_bytes], data[offered - 1]);
    }
    w.run(w.now + 1000);
    for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0; received += n)
      std::memcpy(got.data() + received, buf.data(), n);
  }
  CHECK(got == data);
  // The peer's reading is published on its side of the connection.
  CHECK(w.ends[1].lent.empty());
  // Given back once the connection is gone (after TIME-WAIT).
  w.a.close(p.client, w.now);
  w.b.close(p.server, w.now);
  w.run(w.now + 1000000);
  CHECK(!l.released);
  w.run(w.now + w.config.time_wait + 2000000);
  CHECK(l.released);
}

TEST(lent_send_memory_starts_again_at_its_stagger_once_everything_is_acknowledged) {
  // Messages larger than what stays in own memory (SendBuffer::kOwnBytes),
  // each acknowledged before the next: all of them written where the link
  // said an empty ring starts (its stagger), so a long-lived connection
  // keeps a few pages of it in use instead of sweeping (and keeping
  // resident) the whole, and many connections' hot lines don't share a
  // cache set. Every byte stays where its sequence number and the published
  // base put it.
  for (uint32_t stagger : {0u, 4160u}) {
    Wire w;
    w.ends[0].lend_bytes = 64 * 1024;
    w.ends[0].lend_stagger = stagger;
    Pair p = connect(w);
    REQUIRE(p.server > 0);
    Wire::Lent& l = *w.ends[0].lent[0];
    std::vector<uint8_t> buf(4096);
    for (uint32_t i = 0; i < 100; ++i) {
      auto msg = pattern(2000, i + 1);
      REQUIRE(w.a.send(p.client, msg.data(), msg.size(), w.now) == 2000);
      CHECK_EQ(l.end - l.seq_base, stagger + 2000u);
      CHECK(int32_t(l.end - 2000u - l.from) >= 0);  // every byte in the ring
      CHECK(std::equal(msg.begin(), msg.end(), l.ring.begin() + stagger));
      w.run(w.now + 1000000);  // delivered and acknowledged
      size_t got = 0;
      for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0;) {
        CHECK(std::equal(buf.begin(), buf.begin() + n, msg.begin() + got));
        got += n;
      }
      CHECK_EQ(got, 2000u);
      CHECK_EQ(l.end - l.seq_base, stagger);  // all acknowledged: the next byte goes to the stagger
    }
  }
}

TEST(small_writes_stay_out_of_the_lent_ring_until_one_waits) {
  // Request-sized writes, each sent at once, leave in frames from own
  // memory: the lent ring is never touched (an idle connection keeps no
  // page of it), while the published end says how far the application
  // wrote and `from` that none of it is in the ring. A write that can't
  // leave at once (Nagle holds it behind one unacknowledged) moves what
  // is queued into the ring: a process that exits now still delivers it.
  Wire w;
  w.ends[0].lend_bytes = 64 * 1024;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  Wire::Lent& l = *w.ends[0].lent[0];
  const uint32_t first = l.end;
  std::vector<uint8_t> buf(4096);
  uint32_t written = 0;
  for (uint32_t i = 0; i < 50; ++i) {
    auto msg = pattern(200, i + 1);
    REQUIRE(w.a.send(p.client, msg.data(), msg.size(), w.now) == 200);
    written += 200;
    CHECK(w.a.send_lent(p.client));
    CHECK_EQ(l.end, first + written);
    CHECK_EQ(l.from, l.end);
    w.run(w.now + 1000000);
    size_t got = 0;
    for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0;) {
      CHECK(std::equal(buf.begin(), buf.begin() + n, msg.begin() + got));
      got += n;
    }
    CHECK_EQ(got, 200u);
  }
  CHECK(std::all_of(l.ring.begin(), l.ring.end(), [](uint8_t b) { return b == 0; }));
  // Two at once: the first leaves, Nagle keeps the second.
  auto one = pattern(300, 7), two = pattern(400, 8);
  REQUIRE(w.a.send(p.client, one.data(), one.size(), w.now) == 300);
  REQUIRE(w.a.send(p.client, two.data(), two.size(), w.now) == 400);
  CHECK_EQ(l.end, first + written + 700);
  CHECK_EQ(l.from, first + written);  // both in the ring, from the first unacknowledged
  const size_t at = (l.from - l.seq_base) % l.ring_bytes;
  CHECK(std::equal(one.begin(), one.end(), l.ring.begin() + at));
  CHECK(std::equal(two.begin(), two.end(), l.ring.begin() + at + 300));
  w.run(w.now + 1000000);
  std::vector<uint8_t> got;
  for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0;)
    got.insert(got.end(), buf.begin(), buf.begin() + n);
  one.insert(one.end(), two.begin(), two.end());
  CHECK(got == one);
}

TEST(lent_send_memory_uses_only_as_much_of_its_ring_as_its_bytes_in_flight_need) {
  // A 4 MiB ring, a stream whose reader lags by up to ~300 KiB: the part of
  // the ring in use doubles from 256 KiB only as far as that needs, every
  // byte stays where its sequence number and the published size say, and no
  // byte is written past that size (those pages are never touched).
  Wire w;
  w.ends[0].lend_bytes = 4u << 20;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  Wire::Lent& l = *w.ends[0].lent[0];
  CHECK_EQ(l.ring_bytes, 256u * 1024);
  auto data = pattern(6u << 20, 7);
  size_t offered = 0, received = 0;
  std::vector<uint8_t> got(data.size()), buf(16384);
  uint32_t largest = l.ring_bytes;
  while (received < data.size()) {
    // Writes of 48 KiB while less than ~300 KiB is unread (the first 400
    // KiB at once, before anything is acknowledged: more than 256 KiB in
    // flight).
    while (offered < data.size() && (offered - received < 300 * 1024 || offered < 400 * 1024)) {
      const size_t want = std::min<size_t>(48 * 1024, data.size() - offered);
      long took = w.a.send(p.client, data.data() + offered, want, w.now);
      REQUIRE(took >= 0);
      if (took == 0) break;
      offered += size_t(took);
      largest = std::max(largest, l.ring_bytes);
      REQUIRE((l.ring_bytes & (l.ring_bytes - 1)) == 0);
      CHECK(l.end - l.seq_base <= 2 * l.ring_bytes);
      // Each byte of this write where its sequence number and the
      // published size put it (the stream's first byte is l.end - offered).
      const uint32_t first = l.end - uint32_t(offered);
      for (size_t k = offered - size_t(took); k < offered; k += 4099)
        REQUIRE(l.ring[(first + uint32_t(k) - l.seq_base) % l.ring_bytes] == data[k]);
    }
    w.run(w.now + 1000);
    for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0; received += n)
      std::memcpy(got.data() + received, buf.data(), n);
  }
  CHECK(got == data);
  CHECK_EQ(largest, 512u * 1024);  // needed more than 256 KiB, never 1 MiB
  // Nothing past the part in use was ever written.
  CHECK(std::all_of(l.ring.begin() + largest, l.ring.end(), [](uint8_t b) { return b == 0; }));
}

TEST(a_large_first_write_takes_the_whole_lent_ring) {
  // Everything a process writes just before it exits must sit in the lent
  // memory (issue 14): a first write as large as the ring takes all of it.
  Wire w;
  w.ends[0].lend_bytes = 4u << 20;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  Wire::Lent& l = *w.ends[0].lent[0];
  auto data = pattern(5u << 20, 9);
  CHECK_EQ(w.a.send(p.client, data.data(), data.size(), w.now), long(4u << 20));
  CHECK_EQ(l.ring_bytes, 4u << 20);
  CHECK(std::equal(data.begin(), data.begin() + (4u << 20), l.ring.begin()));
}

TEST(a_vanished_peers_stream_is_finished_from_its_send_memory) {
  Config c = test_config();
  c.recv_buffer = 16 * 1024;  // the survivor's window: most bytes stay owed
  Wire w(c);
  w.ends[0].lend_bytes = 256 * 1024;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  auto data = pattern(100 * 1024, 9);
  REQUIRE(w.a.send(p.client, data.data(), data.size(), w.now) == long(data.size()));
  w.a.shutdown_write(p.client, w.now);
  w.run(w.now + 1000);
  Wire::Lent& l = *w.ends[0].lent[0];
  CHECK_EQ(l.end - l.seq_base, uint32_t(data.size()));
  // The client's process dies: nothing more comes from it. The survivor
  // takes what it still owed from its memory, as far as its window goes.
  w.faults.loss = 1.0;
  drain(w.b);
  w.b.orphan(p.server, w.now);
  std::vector<uint8_t> got;
  std::vector<uint8_t> buf(4096);
  bool eof = false;
  for (int round = 0; round < 1000 && !eof; ++round) {
    const uint32_t at = w.b.receive_point(p.server);
    const uint32_t left = l.end - at;
    Payload bytes;
    const size_t pos = (at - l.seq_base) % l.ring_bytes;
    bytes.data[0] = l.ring.data() + pos;
    bytes.len[0] = std::min<size_t>(left, l.ring_bytes - pos);
    if (bytes.len[0] < left) {
      bytes.data[1] = l.ring.data();
      bytes.len[1] = left - bytes.len[0];
    }
    w.b.feed(p.server, bytes, true, w.now);
    for (size_t n; (n = w.b.recv(p.server, buf.data(), buf.size(), w.now)) > 0;)
      got.insert(got.end(), buf.begin(), buf.begin() + n);
    for (auto& e : drain(w.b)) eof |= e.type == EventType::PeerClosed && e.socket == p.server;
  }
  CHECK(eof);
  CHECK(got == data);
  // Nothing was sent to the dead peer for it, and closing frees it at once.
  const uint64_t out = w.b.counters().packets_out;
  w.b.close(p.server, w.now);
  CHECK_EQ(w.b.counters().packets_out, out);
  CHECK_EQ(count_events(drain(w.b), EventType::Closed, p.server), 1u);
}

TEST(writing_to_an_orphan_draws_the_reset_its_dead_peer_would_send) {
  Wire w;
  w.ends[0].lend_bytes = 64 * 1024;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  w.faults.loss = 1.0;
  drain(w.b);
  w.b.orphan(p.server, w.now);
  auto msg = pattern(10, 1);
  CHECK_EQ(w.b.send(p.server, msg.data(), msg.size(), w.now), 10);  // taken, as a kernel takes it
  CHECK(has_event(drain(w.b), EventType::Error, p.server, -ECONNRESET));
}

TEST(link_down_spares_orphans) {
  Wire w;
  Pair p = connect(w);
  REQUIRE(p.server > 0);
  w.b.orphan(p.server, w.now);
  drain(w.b);
  w.b.link_down(0, w.now);
  CHECK(!has_event(drain(w.b), EventType::Error, p.server, -ECONNRESET));
}

TEST(a_full_link_holds_segments_until_it_has_room_instead_of_losing_them) {
  Rig r;
  Accepted a = accept_from(r, ep4(1, 80), ep4(9, 5000));
  REQUIRE(a.id > 0);
  r.sent();
  r.link.full = true;
  r.link.blocking = true;
  auto msg = pattern(1000, 2);
  r.stack.send(a.id, msg.data(), msg.size(), r.now);
  CHECK(r.sent().empty());
  CHECK(r.stack.link_waiting());
  r.link.full = false;
  r.stack.link_ready(r.now);
  auto out = r.sent();
  REQUIRE(out.size() == 1u);
  CHECK(out[0].payload == msg);
  CHECK(!r.stack.link_waiting());
  CHECK_EQ(r.stack.counters().segments_retransmitted, 0u);
}

TEST(a_gone_link_is_not_waited_for) {
  Rig r;
  Accepted a = accept_from(r, ep4(1, 80), ep4(9, 5000));
  REQUIRE(a.id > 0);
  r.link.full = true;  // and not blocking: the peer is gone
  auto msg = pattern(100, 2);
  r.stack.send(a.id, msg.data(), msg.size(), r.now);
  CHECK(!r.stack.link_waiting());
}
