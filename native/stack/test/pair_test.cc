// Two stacks talking over an in-memory link: whole conversations, orderly
// and abortive closes, TIME-WAIT, link failure, and seeded lossy transfers.
#include <cerrno>
#include <cstdlib>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

uint64_t fnv(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// A connected pair: client on side a, server (accepted) on side b.
struct Pair {
  SocketId client = 0, server = 0, listener = 0;
};

Pair connect_pair(Wire& w, bool v6 = false) {
  Pair p;
  Endpoint srv = v6 ? ep6(2, 80) : ep4(2, 80);
  Endpoint cli = v6 ? ep6(1, 40000) : ep4(1, 40000);
  int l = w.b.listen(srv, 16, false);
  if (l <= 0) return p;
  p.listener = SocketId(l);
  int c = w.a.connect(cli, srv, 1, w.now);
  if (c <= 0) return p;
  p.client = SocketId(c);
  w.run(w.now + 1000000);
  int s = w.b.accept(p.listener);
  if (s > 0) p.server = SocketId(s);
  return p;
}

// Pumps `total` bytes each way, the app reading and writing as events say.
struct Transfer {
  size_t total;
  size_t sent[2] = {0, 0}, received[2] = {0, 0};
  uint64_t hash_sent[2] = {0xcbf29ce484222325ull, 0xcbf29ce484222325ull};
  uint64_t hash_recv[2] = {0xcbf29ce484222325ull, 0xcbf29ce484222325ull};
  bool shut[2] = {false, false};
  bool eof[2] = {false, false};
  std::vector<uint8_t> chunk, buf;
  uint64_t pattern = 1;

  double read_chance = 1.0;  // < 1: a slow reader (zero windows, persist)
  uint64_t rng = 77;

  explicit Transfer(size_t n) : total(n), chunk(200000), buf(300000) {}

  bool reads_now() {
    if (read_chance >= 1.0) return true;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return double(rng >> 11) / double(1ull << 53) < read_chance;
  }

  void step(Wire& w, SocketId ids[2]) {
    for (int side = 0; side < 2; ++side) {
      Stack& s = w.stack(side);
      SocketId id = ids[side];
      Event e;
      while (s.next_event(&e)) {
        if (e.type == EventType::PeerClosed && e.socket == id) eof[side] = true;
      }
      // Write while below the send buffer (backpressure).
      while (sent[side] < total && s.send_queued(id) < w.config.send_buffer) {
        size_t n = std::min(chunk.size(), total - sent[side]);
        n = std::min<size_t>(n, 1 + (pattern * 2654435761u) % chunk.size());
        for (size_t i = 0; i < n; ++i) chunk[i] = uint8_t((sent[side] + i) * 131 + side);
        pattern++;
        long r = s.send(id, chunk.data(), n, w.now);
        if (r <= 0) break;
        hash_sent[side] = fnv(hash_sent[side], chunk.data(), n);
        sent[side] += n;
      }
      if (sent[side] == total && !shut[side]) {
        s.shutdown_write(id, w.now);
        shut[side] = true;
      }
      while (reads_now()) {
        size_t n = s.recv(id, buf.data(), 1 + (pattern++ * 40503u) % buf.size(), w.now);
        if (!n) break;
        hash_recv[side] = fnv(hash_recv[side], buf.data(), n);
        received[side] += n;
      }
    }
  }
};

}  // namespace

TEST(two_stacks_exchange_and_close_cleanly) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  auto ea = drain(w.a);
  CHECK(has_event(ea, EventType::Connected, p.client));
  auto msg = bytes_of("ping");
  CHECK_EQ(w.a.send(p.client, msg.data(), msg.size(), w.now), 4);
  w.run(w.now + 1000000);
  uint8_t buf[16];
  CHECK_EQ(w.b.recv(p.server, buf, sizeof buf, w.now), 4u);
  auto reply = bytes_of("pong!");
  w.b.send(p.server, reply.data(), reply.size(), w.now);
  w.run(w.now + 1000000);
  CHECK_EQ(w.a.recv(p.client, buf, sizeof buf, w.now), 5u);
  // Client closes first: it ends in TIME-WAIT; server gets EOF.
  w.a.close(p.client, w.now);
  w.run(w.now + 1000000);
  auto eb = drain(w.b);
  CHECK(has_event(eb, EventType::PeerClosed, p.server));
  SocketInfo info;
  REQUIRE(w.a.info(p.client, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::FinWait2));
  w.b.close(p.server, w.now);
  w.run(w.now + 1000000);
  eb = drain(w.b);
  CHECK_EQ(count_events(eb, EventType::Closed, p.server), 1u);
  REQUIRE(w.a.info(p.client, &info));
  CHECK_EQ(info.state, uint8_t(TcpState::TimeWait));
  ea = drain(w.a);
  CHECK_EQ(count_events(ea, EventType::Closed, p.client), 0u);
  Micros tw_start = w.now;
  CHECK(w.run(w.now + w.config.time_wait + 1000000));
  ea = drain(w.a);
  CHECK_EQ(count_events(ea, EventType::Closed, p.client), 1u);
  CHECK(w.now - tw_start >= w.config.time_wait - 1000000);
  CHECK_EQ(w.a.poll_at(), kNever);
  CHECK_EQ(w.b.poll_at(), kNever);
}

TEST(idle_connection_gives_its_buffers_back) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  std::vector<uint8_t> msg(3000, 'm');
  CHECK_EQ(w.a.send(p.client, msg.data(), msg.size(), w.now), 3000);
  w.run(w.now + 1000000);
  SocketInfo info;
  REQUIRE(w.b.info(p.server, &info));
  CHECK(info.buffer_bytes > 0);  // holding the unread message
  uint8_t buf[4096];
  CHECK_EQ(w.b.recv(p.server, buf, sizeof buf, w.now), 3000u);
  w.run(w.now + 1000000);
  REQUIRE(w.b.info(p.server, &info));
  CHECK_EQ(info.buffer_bytes, 0u);  // read: the receive buffer is gone
  REQUIRE(w.a.info(p.client, &info));
  CHECK_EQ(info.buffer_bytes, 0u);  // acknowledged: the send buffer is gone
}

TEST(idle_connection_needs_no_wakeups) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  auto msg = bytes_of("x");
  w.a.send(p.client, msg.data(), 1, w.now);
  w.run(w.now + 10000000);
  CHECK_EQ(w.a.poll_at(), kNever);
  CHECK_EQ(w.b.poll_at(), kNever);
}

TEST(half_close_lets_the_other_direction_flow) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  CHECK_EQ(w.a.shutdown_write(p.client, w.now), 0);
  w.run(w.now + 1000000);
  auto eb = drain(w.b);
  CHECK(has_event(eb, EventType::PeerClosed, p.server));
  auto msg = bytes_of("still talking");
  CHECK_EQ(w.a.send(p.client, msg.data(), msg.size(), w.now), -EPIPE);
  CHECK_EQ(w.b.send(p.server, msg.data(), msg.size(), w.now), long(msg.size()));
  w.run(w.now + 1000000);
  uint8_t buf[64];
  CHECK_EQ(w.a.recv(p.client, buf, sizeof buf, w.now), msg.size());
}

TEST(peer_closed_waits_until_data_before_fin_is_read) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  auto msg = bytes_of("last words");
  w.a.send(p.client, msg.data(), msg.size(), w.now);
  w.a.shutdown_write(p.client, w.now);
  w.run(w.now + 1000000);
  auto eb = drain(w.b);
  CHECK(has_event(eb, EventType::Readable, p.server));
  CHECK_EQ(count_events(eb, EventType::PeerClosed, p.server), 0u);
  uint8_t buf[4];
  CHECK_EQ(w.b.recv(p.server, buf, 4, w.now), 4u);
  CHECK(drain(w.b).empty());
  uint8_t rest[64];
  CHECK_EQ(w.b.recv(p.server, rest, sizeof rest, w.now), msg.size() - 4);
  eb = drain(w.b);
  CHECK_EQ(count_events(eb, EventType::PeerClosed, p.server), 1u);
}

TEST(close_with_unread_data_sends_rst) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  auto msg = bytes_of("unread");
  w.a.send(p.client, msg.data(), msg.size(), w.now);
  w.run(w.now + 1000000);
  w.b.close(p.server, w.now);
  CHECK_EQ(w.b.counters().resets_out, 1u);
  auto eb = drain(w.b);
  CHECK_EQ(count_events(eb, EventType::Closed, p.server), 1u);
  w.run(w.now + 1000000);
  auto ea = drain(w.a);
  CHECK(has_event(ea, EventType::Error, p.client, -ECONNRESET));
  CHECK_EQ(w.a.send(p.client, msg.data(), msg.size(), w.now), -EPIPE);
}

TEST(abort_resets_peer_and_frees_at_once) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  drain(w.a);
  w.a.abort(p.client, w.now);
  auto ea = drain(w.a);
  CHECK_EQ(ea.size(), 1u);
  CHECK(has_event(ea, EventType::Closed, p.client));
  w.run(w.now + 1000000);
  auto eb = drain(w.b);
  CHECK(has_event(eb, EventType::Error, p.server, -ECONNRESET));
  w.b.close(p.server, w.now);
  eb = drain(w.b);
  CHECK_EQ(count_events(eb, EventType::Closed, p.server), 1u);
  CHECK_EQ(w.a.poll_at(), kNever);
  CHECK_EQ(w.b.poll_at(), kNever);
}

TEST(link_down_resets_connections_via_that_link) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  drain(w.b);
  size_t before = w.b.counters().packets_out;
  w.b.link_down(0, w.now);
  CHECK_EQ(w.b.counters().packets_out, before);
  auto eb = drain(w.b);
  CHECK(has_event(eb, EventType::Error, p.server, -ECONNRESET));
  w.b.link_down(5, w.now);  // unrelated link: nothing
  CHECK(drain(w.b).empty());
}

TEST(ids_are_reused_only_after_closed_is_drained) {
  Wire w;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  w.a.abort(p.client, w.now);
  int again = w.a.connect(ep4(1, 40001), ep4(2, 80), 1, w.now);
  CHECK(SocketId(again) != p.client);
  drain(w.a);
  int third = w.a.connect(ep4(1, 40002), ep4(2, 80), 1, w.now);
  CHECK_EQ(SocketId(third), p.client);
}

TEST(writable_fires_after_send_buffer_drains) {
  Config c = test_config();
  c.send_buffer = 100000;
  Wire w(c);
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  drain(w.a);
  std::vector<uint8_t> big(150000, 7);
  CHECK_EQ(w.a.send(p.client, big.data(), big.size(), w.now), 150000);
  CHECK(w.a.send_queued(p.client) >= 100000u);
  std::vector<uint8_t> sink(1 << 20);
  w.run(w.now + 1000000, [&] { w.b.recv(p.server, sink.data(), sink.size(), w.now); });
  auto ea = drain(w.a);
  CHECK_EQ(count_events(ea, EventType::Writable, p.client), 1u);
  CHECK_EQ(w.a.send_queued(p.client), 0u);
}

// Config::send_budget: each socket's limit is send_budget / (sockets with
// half a window or more queued), between the window and send_buffer; one over
// it waits for Writable, which comes once ACKs take it below; a socket that
// is gone stops counting.
TEST(send_limit_shrinks_while_many_sockets_stream) {
  Config c = test_config();
  c.recv_buffer = 64 * 1024;
  c.send_buffer = 128 * 1024;
  c.send_budget = 256 * 1024;
  Wire w(c);
  int l = w.b.listen(ep4(2, 80), 16, false);
  REQUIRE(l > 0);
  SocketId client[4] = {}, server[4] = {};
  for (int i = 0; i < 4; ++i) {
    int id = w.a.connect(ep4(1, uint16_t(40000 + i)), ep4(2, 80), 1, w.now);
    REQUIRE(id > 0);
    client[i] = SocketId(id);
  }
  w.run(w.now + 1000000);
  for (int i = 0; i < 4; ++i) {
    int id = w.b.accept(SocketId(l));
    REQUIRE(id > 0);
    server[i] = SocketId(id);
  }
  drain(w.a);
  std::vector<uint8_t> chunk(100 * 1024, 5);
  // Nothing is acknowledged between these sends (the wire has not run).
  // One or two streaming: each may queue send_buffer (128 KiB).
  CHECK_EQ(w.a.send(client[0], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  CHECK(!w.a.send_blocked(client[0]));
  CHECK_EQ(w.a.send(client[1], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  CHECK(!w.a.send_blocked(client[1]));
  // Three: 256 / 3 = 85 KiB each; four: the window, 64 KiB.
  CHECK_EQ(w.a.send(client[2], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  CHECK(w.a.send_blocked(client[2]));
  CHECK_EQ(w.a.send(client[3], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  CHECK(w.a.send_blocked(client[3]));
  std::vector<uint8_t> sink(1 << 20);
  w.run(w.now + 2000000, [&] {
    for (SocketId s : server) w.b.recv(s, sink.data(), sink.size(), w.now);
  });
  auto ea = drain(w.a);
  for (int i = 0; i < 4; ++i) {
    CHECK_EQ(w.a.send_queued(client[i]), 0u);
    CHECK(!w.a.send_blocked(client[i]));
    CHECK_EQ(count_events(ea, EventType::Writable, client[i]), i < 2 ? 0u : 1u);
  }
  // Three streaming again, then gone (reset with their bytes queued): the
  // one left has the whole send_buffer (under a count of four it would have
  // the window, 64 KiB, and be blocked at 100 KiB).
  for (int i = 1; i < 4; ++i) CHECK_EQ(w.a.send(client[i], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  for (int i = 1; i < 4; ++i) w.a.abort(client[i], w.now);
  CHECK_EQ(w.a.send(client[0], chunk.data(), chunk.size(), w.now), long(chunk.size()));
  CHECK(!w.a.send_blocked(client[0]));
}

TEST(bulk_transfer_8mb_both_ways_is_byte_exact) {
  Config c = test_config();
  c.checksums = false;
  c.time_wait = 1000000;
  Wire w(c);
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  SocketId ids[2] = {p.client, p.server};
  Transfer x(8u << 20);
  bool done = w.run(w.now + 60000000, [&] { x.step(w, ids); });
  CHECK(done);
  for (int s = 0; s < 2; ++s) {
    CHECK_EQ(x.received[s], x.total);
    CHECK(x.hash_recv[s] == x.hash_sent[1 - s]);
    CHECK(x.eof[s]);
  }
  CHECK_EQ(w.a.counters().segments_retransmitted, 0u);
}

TEST(bulk_transfer_ipv6_with_checksums) {
  Config c = test_config();
  c.time_wait = 1000000;
  Wire w(c);
  Pair p = connect_pair(w, true);
  REQUIRE(p.server > 0);
  SocketId ids[2] = {p.client, p.server};
  Transfer x(2u << 20);
  CHECK(w.run(w.now + 60000000, [&] { x.step(w, ids); }));
  for (int s = 0; s < 2; ++s) {
    CHECK_EQ(x.received[s], x.total);
    CHECK(x.hash_recv[s] == x.hash_sent[1 - s]);
  }
  CHECK_EQ(w.a.counters().packets_malformed + w.b.counters().packets_malformed, 0u);
}

namespace {

void lossy_transfer(uint64_t seed, size_t bytes, Wire::Faults f, uint32_t mtu,
                    uint32_t recv_buffer = 1u << 20, double read_chance = 1.0,
                    bool nodelay = false) {
  Config c = test_config();
  c.checksums = false;
  c.mtu = mtu;
  c.recv_buffer = recv_buffer;
  c.send_buffer = recv_buffer;
  c.time_wait = 2000000;
  Wire w(c, seed);
  w.faults = f;
  Pair p = connect_pair(w);
  if (p.server == 0) {
    // The handshake itself may need retries under loss.
    w.run(w.now + 30000000);
    int s = w.b.accept(p.listener);
    if (s > 0) p.server = SocketId(s);
  }
  REQUIRE(p.server > 0);
  SocketId ids[2] = {p.client, p.server};
  if (nodelay) {
    w.a.set_nodelay(p.client, true);
    w.b.set_nodelay(p.server, true);
  }
  Transfer x(bytes);
  x.read_chance = read_chance;
  x.rng = seed;
  Micros start = w.now;
  bool stalled = !w.run(
      w.now + 600000000, [&] { x.step(w, ids); },
      [&] { return x.read_chance < 1.0 && !(x.eof[0] && x.eof[1]); });
  if (stalled || x.received[0] != bytes || x.received[1] != bytes) {
    std::fprintf(stderr, "  seed %llu: received %zu/%zu, stalled %d\n", (unsigned long long)seed,
                 x.received[0], x.received[1], int(stalled));
    for (int side = 0; side < 2; ++side) {
      SocketInfo i;
      w.stack(side).info(ids[side], &i);
      std::fprintf(stderr,
                   "    side %d: %s sent %zu queued %u recvq %u swnd %u rwnd %u cwnd %u rtx %u"
                   " poll_at %lld\n",
                   side, tcp_state_name(TcpState(i.state)), x.sent[side], i.send_queued,
                   i.recv_queued, i.send_window, i.recv_window, i.cwnd, i.retransmits,
                   (long long)(w.stack(side).poll_at() == kNever ? -1 : w.stack(side).poll_at() - w.now));
    }
  }
  if (std::getenv("SIDESTEP_VERBOSE")) {
    std::fprintf(stderr,
                 "  seed %llu: %.3f s simulated, %llu+%llu retransmits, %llu+%llu timeouts, "
                 "%llu dropped\n",
                 (unsigned long long)seed, double(w.now - start) / 1e6,
                 (unsigned long long)w.a.counters().segments_retransmitted,
                 (unsigned long long)w.b.counters().segments_retransmitted,
                 (unsigned long long)w.a.counters().retransmission_timeouts,
                 (unsigned long long)w.b.counters().retransmission_timeouts,
                 (unsigned long long)w.dropped);
  }
  CHECK(!stalled);
  for (int s = 0; s < 2; ++s) {
    CHECK_EQ(x.received[s], bytes);
    CHECK(x.hash_recv[s] == x.hash_sent[1 - s]);
    CHECK(x.eof[s]);
  }
}

}  // namespace

TEST(seeded_lossy_reordering_link_transfers_exactly) {
  Wire::Faults f;
  f.loss = 0.02;
  f.duplicate = 0.01;
  f.reorder = 0.02;
  f.delay = 200;
  f.jitter = 100;
  for (uint64_t seed = 1; seed <= 6; ++seed) lossy_transfer(seed, 8u << 20, f, 65536);
}

// Issue-sized transfers: 64 MB each way, at the fabric's MTU and at
// Ethernet's, through loss, duplication and reordering, for several seeds.
// SIDESTEP_SIM_MB changes the size (a failing seed replays exactly).
TEST(seeded_lossy_64mb_transfers_are_byte_exact) {
  const char* mb = std::getenv("SIDESTEP_SIM_MB");
  const size_t bytes = size_t(mb ? std::atoi(mb) : 64) << 20;
  Wire::Faults f;
  f.loss = 0.01;
  f.duplicate = 0.005;
  f.reorder = 0.01;
  f.delay = 200;
  f.jitter = 100;
  for (uint64_t seed = 31; seed <= 33; ++seed) lossy_transfer(seed, bytes, f, 65536);
  lossy_transfer(34, bytes / 4, f, 1500);
}

TEST(seeded_lossy_small_mtu_transfers_exactly) {
  Wire::Faults f;
  f.loss = 0.01;
  f.duplicate = 0.01;
  f.reorder = 0.05;
  f.delay = 500;
  f.jitter = 300;
  for (uint64_t seed = 11; seed <= 13; ++seed) lossy_transfer(seed, 1u << 20, f, 1500);
}

TEST(seeded_heavy_loss_small_windows_transfers_exactly) {
  Wire::Faults f;
  f.loss = 0.10;
  f.duplicate = 0.05;
  f.reorder = 0.10;
  f.delay = 1000;
  f.jitter = 2000;
  for (uint64_t seed = 21; seed <= 24; ++seed) lossy_transfer(seed, 256u << 10, f, 9000, 16384);
}

TEST(many_connections_share_one_stack_pair) {
  Config c = test_config();
  c.checksums = false;
  c.time_wait = 1000000;
  Wire w(c, 5);
  w.faults.loss = 0.01;
  w.faults.reorder = 0.02;
  w.faults.delay = 100;
  int l = w.b.listen(ep4(2, 80), 128, false);
  REQUIRE(l > 0);
  constexpr int kConns = 64;
  constexpr size_t kBytes = 64 * 1024;
  std::vector<SocketId> clients, servers;
  for (int i = 0; i < kConns; ++i) {
    int id = w.a.connect(ep4(1, uint16_t(30000 + i)), ep4(2, 80), 1, w.now);
    REQUIRE(id > 0);
    clients.push_back(SocketId(id));
  }
  std::vector<uint8_t> data(kBytes), buf(1 << 16);
  for (size_t i = 0; i < kBytes; ++i) data[i] = uint8_t(i * 7);
  std::vector<size_t> got(kConns + 1000, 0);
  std::vector<bool> sent(kConns, false);
  size_t done = 0, accepted = 0;
  w.run(w.now + 120000000, [&] {
    for (int id; (id = w.b.accept(SocketId(l))) > 0;) {
      servers.push_back(SocketId(id));
      got[id] = 0;
      ++accepted;
    }
    Event e;
    while (w.a.next_event(&e)) {
      if (e.type == EventType::Connected) {
        for (int i = 0; i < kConns; ++i) {
          if (clients[i] == e.socket && !sent[i]) {
            w.a.send(e.socket, data.data(), data.size(), w.now);
            w.a.shutdown_write(e.socket, w.now);
            sent[i] = true;
          }
        }
      }
    }
    while (w.b.next_event(&e)) {
    }
    for (SocketId s : servers) {
      for (size_t n; (n = w.b.recv(s, buf.data(), buf.size(), w.now)) > 0;) {
        for (size_t k = 0; k < n; ++k) {
          if (buf[k] != uint8_t((got[s] + k) * 7)) {
            std::fprintf(stderr, "  corrupt byte on %u\n", s);
            std::abort();
          }
        }
        got[s] += n;
        if (got[s] == kBytes) {
          ++done;
          w.b.close(s, w.now);  // its id may come back for a later accept
          servers.erase(std::find(servers.begin(), servers.end(), s));
          return;
        }
      }
    }
  });
  CHECK_EQ(accepted, size_t(kConns));
  CHECK_EQ(done, size_t(kConns));
  if (done != size_t(kConns)) {
    for (int i = 0; i < kConns; ++i) {
      SocketInfo ci;
      w.a.info(clients[i], &ci);
      if (ci.state != uint8_t(TcpState::FinWait2)) {
        std::fprintf(stderr, "  client %d: %s queued %u sent %d rtx %u\n", i,
                     tcp_state_name(TcpState(ci.state)), ci.send_queued, int(sent[i]),
                     ci.retransmits);
      }
    }
    for (SocketId s : servers) {
      SocketInfo si;
      w.b.info(s, &si);
      if (got[s] != kBytes) {
        std::fprintf(stderr, "  server %u: %s got %zu rwnd %u\n", s,
                     tcp_state_name(TcpState(si.state)), got[s], si.recv_window);
      }
    }
  }
  for (SocketId s : clients) w.a.close(s, w.now);
  CHECK(w.run(w.now + 10000000));
  CHECK_EQ(w.a.poll_at(), kNever);
  CHECK_EQ(w.b.poll_at(), kNever);
}

TEST(sequence_numbers_wrap_during_transfer) {
  Config c = test_config();
  c.checksums = false;
  c.time_wait = 1000000;
  // ISN = F(tuple, secret) + now/4: find the clock that puts the client's
  // ISN 100 KB below 2^32, so 4 MB of data crosses the wrap.
  Rig probe(c);
  probe.now = 0;
  probe.stack.connect(ep4(1, 40000), ep4(2, 80), 1, 0);
  uint32_t f = probe.sent()[0].tcp.seq;
  uint32_t want = uint32_t(0) - 100000u;
  Wire w(c, 3);
  w.now = Micros(uint32_t(want - f)) * 4;
  w.faults.loss = 0.01;
  w.faults.reorder = 0.02;
  w.faults.delay = 100;
  Pair p = connect_pair(w);
  REQUIRE(p.server > 0);
  SocketId ids[2] = {p.client, p.server};
  Transfer x(4u << 20);
  CHECK(w.run(w.now + 60000000, [&] { x.step(w, ids); }));
  for (int s = 0; s < 2; ++s) {
    CHECK_EQ(x.received[s], x.total);
    CHECK(x.hash_recv[s] == x.hash_sent[1 - s]);
  }
}

TEST(crafted_peer_sequence_wraps_cleanly) {
  Rig rig;
  int l = rig.stack.listen(ep4(1, 80), 8, false);
  uint32_t seq = 0xfffffff0u;
  rig.feed(build(ep4(2, 5000), ep4(1, 80), seq, 0, kSyn, 65535));
  uint32_t iss = rig.sent()[0].tcp.seq;
  rig.feed(build(ep4(2, 5000), ep4(1, 80), seq + 1, iss + 1, kAck, 65535));
  int id = rig.stack.accept(SocketId(l));
  REQUIRE(id > 0);
  std::vector<uint8_t> d(40, 'w');
  rig.feed(build(ep4(2, 5000), ep4(1, 80), seq + 1, iss + 1, kAck | kPsh, 65535, {}, d));
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, seq + 41);  // 0x19, past the wrap
  CHECK_EQ(rig.stack.recv_available(SocketId(id)), 40u);
}

TEST(seeded_random_fault_sweep_transfers_exactly) {
  // Each seed draws its own link, MTU, buffers and reader speed.
  // SIDESTEP_SEED=n reruns one seed; SIDESTEP_SWEEP=n widens the sweep.
  const char* only = std::getenv("SIDESTEP_SEED");
  const char* wide = std::getenv("SIDESTEP_SWEEP");
  uint64_t end = 100 + (wide ? std::strtoull(wide, nullptr, 10) : 24);
  for (uint64_t seed = 100; seed < end; ++seed) {
    if (only && std::strtoull(only, nullptr, 10) != seed) continue;
    uint64_t r = seed * 0x9e3779b97f4a7c15ull;
    auto next = [&] {
      r ^= r >> 33;
      r *= 0xff51afd7ed558ccdull;
      r ^= r >> 33;
      return r;
    };
    Wire::Faults f;
    f.loss = double(next() % 150) / 1000;
    f.duplicate = double(next() % 50) / 1000;
    f.reorder = double(next() % 200) / 1000;
    f.delay = 10 + next() % 2000;
    f.jitter = next() % 1000;
    const uint32_t mtus[] = {576, 1500, 9000, 65536};
    const uint32_t bufs[] = {8192, 65536, 1u << 20};
    uint32_t mtu = mtus[next() % 4];
    uint32_t buf = bufs[next() % 3];
    double read_chance = (next() % 3 == 0) ? 0.05 : 1.0;
    bool nodelay = next() % 2;
    if (std::getenv("SIDESTEP_VERBOSE")) {
      std::fprintf(stderr, "  seed %llu: loss %.3f dup %.3f reorder %.3f delay %llu mtu %u buf %u"
                   " read %.2f nodelay %d\n", (unsigned long long)seed, f.loss, f.duplicate,
                   f.reorder, (unsigned long long)f.delay, mtu, buf, read_chance, int(nodelay));
    }
    lossy_transfer(seed, 384u << 10, f, mtu, buf, read_chance, nodelay);
  }
}

namespace {

// A stack talking to itself (same-process loopback): what it sends comes
// back to its own input, queued, never re-entrantly.
class LoopLink : public Link {
 public:
  std::deque<std::vector<uint8_t>> queue;
  uint8_t* tx_reserve(LinkAddr, size_t len) override {
    buf_.resize(len);
    return buf_.data();
  }
  void tx_commit(LinkAddr, size_t len) override {
    queue.emplace_back(buf_.begin(), buf_.begin() + len);
  }

 private:
  std::vector<uint8_t> buf_;
};

}  // namespace

TEST(one_stack_connects_to_itself_over_loopback) {
  Config c = test_config();
  c.checksums = false;
  LoopLink link;
  Stack s(c, link);
  Micros now = 1000000;
  Endpoint srv{IpAddr::v4(127, 0, 0, 1), 8080}, cli{IpAddr::v4(127, 0, 0, 1), 50000};
  int l = s.listen(srv, 8, false);
  int id = s.connect(cli, srv, 0, now);
  REQUIRE(l > 0 && id > 0);
  auto pump = [&] {
    while (!link.queue.empty()) {
      auto p = std::move(link.queue.front());
      link.queue.pop_front();
      s.input(0, p.data(), p.size(), now);
    }
  };
  pump();
  int acc = s.accept(SocketId(l));
  REQUIRE(acc > 0);
  std::vector<uint8_t> big(3u << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i ^ (i >> 9));
  CHECK_EQ(s.send(SocketId(id), big.data(), big.size(), now), long(big.size()));
  std::vector<uint8_t> got, buf(1 << 16);
  for (int round = 0; round < 1000 && got.size() < big.size(); ++round) {
    pump();
    for (size_t n; (n = s.recv(SocketId(acc), buf.data(), buf.size(), now)) > 0;) {
      got.insert(got.end(), buf.begin(), buf.begin() + n);
    }
    now += 10;
    s.poll(now);
  }
  CHECK(got == big);
  Endpoint e;
  REQUIRE(s.remote_endpoint(SocketId(acc), &e));
  CHECK(e == cli);
}

TEST(corrupted_packets_are_dropped_by_checksum_and_recovered) {
  Config c = test_config();  // checksums on, as on a TAP device or NIC
  c.mtu = 1500;
  c.time_wait = 1000000;
  Wire w(c, 9);
  w.faults.corrupt = 0.05;
  w.faults.delay = 200;
  Pair p = connect_pair(w);
  if (p.server == 0) {
    w.run(w.now + 30000000);
    int s = w.b.accept(p.listener);
    if (s > 0) p.server = SocketId(s);
  }
  REQUIRE(p.server > 0);
  SocketId ids[2] = {p.client, p.server};
  Transfer x(1u << 20);
  CHECK(w.run(w.now + 600000000, [&] { x.step(w, ids); }));
  for (int s = 0; s < 2; ++s) {
    CHECK_EQ(x.received[s], x.total);
    CHECK(x.hash_recv[s] == x.hash_sent[1 - s]);
  }
  CHECK(w.a.counters().packets_malformed + w.b.counters().packets_malformed > 0);
}
