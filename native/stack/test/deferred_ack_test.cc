// Config::defer_acks on a connection's first exchange (issue 6, churn): the
// pure ACKs the server would send before its first reply — the window update
// after its first read (its SYN-ACK's window was unscaled) and an ACK owed
// when set_nodelay() pushes output — are held until flush(), so the reply
// carries them; without a reply, flush() sends exactly one.
#include <cerrno>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

Config deferring() {
  Config c = test_config();
  c.defer_acks = true;
  return c;
}

TcpOptions ts(uint32_t val, uint32_t ecr) {
  TcpOptions o;
  o.has_timestamp = true;
  o.ts_val = val;
  o.ts_ecr = ecr;
  return o;
}

// A window scale peer; one byte (PSH) arrives after accept, then the app
// reads it: the read opens the window far beyond the SYN-ACK's 65535.
Accepted one_byte_read(Rig& rig) {
  Accepted c = accept_from(rig, ep4(1, 80), ep4(2, 5000), true);
  if (!c.id) return c;
  rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck | kPsh, 65535, ts(5002, 0),
                 std::vector<uint8_t>(1, 'x')));
  return c;
}

// Big enough that only a scaled window (shift 5 for the default 1 MiB
// buffer) can say it: the window update, not the SYN-ACK's 65535.
bool opened(const Parsed& p) { return (uint32_t(p.tcp.window) << 5) > 65535u; }

}  // namespace

TEST(window_update_after_the_first_read_is_held_for_flush) {
  Rig rig(deferring());
  Accepted c = one_byte_read(rig);
  REQUIRE(c.id);
  CHECK(rig.sent().empty());  // the ACK for the byte is held
  uint8_t buf[8];
  REQUIRE(rig.stack.recv(c.id, buf, sizeof buf, rig.now) == 1);
  CHECK(rig.sent().empty());  // so is the window update the read calls for
  CHECK(rig.stack.acks_held());
  rig.stack.flush(rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);  // one pure ACK: the byte, and the open window
  CHECK(out[0].has(kAck));
  CHECK(!out[0].has(kSyn) && !out[0].has(kFin) && !out[0].has(kPsh));
  CHECK_EQ(out[0].payload.size(), 0u);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 1);
  CHECK(opened(out[0]));
  CHECK(!rig.stack.acks_held());
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

TEST(window_update_after_the_first_read_rides_on_the_reply) {
  Rig rig(deferring());
  Accepted c = one_byte_read(rig);
  REQUIRE(c.id);
  REQUIRE(rig.stack.set_nodelay(c.id, true) == 0);
  uint8_t buf[8];
  REQUIRE(rig.stack.recv(c.id, buf, sizeof buf, rig.now) == 1);
  CHECK(rig.sent().empty());
  REQUIRE(rig.stack.send(c.id, buf, 1, rig.now) == 1);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);  // the echo, acknowledging the byte, window open
  CHECK_EQ(out[0].payload.size(), 1u);
  CHECK_EQ(out[0].tcp.ack, c.peer_seq + 1);
  CHECK(opened(out[0]));
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());  // nothing was left owed
}

TEST(without_defer_acks_the_ack_opens_the_window_and_the_read_sends_nothing) {
  Rig rig;
  Accepted c = one_byte_read(rig);
  REQUIRE(c.id);
  auto acks = rig.sent();  // PSH: acknowledged at once, the window scaled open
  REQUIRE(acks.size() == 1);
  CHECK(opened(acks[0]));
  uint8_t buf[8];
  REQUIRE(rig.stack.recv(c.id, buf, sizeof buf, rig.now) == 1);
  CHECK(rig.sent().empty());
}

// The byte comes with the handshake's last ACK, before accept(); the
// application accepts, turns Nagle off (which pushes output), reads, echoes.
TEST(ack_owed_at_accept_is_not_pushed_out_by_set_nodelay) {
  for (bool reply : {true, false}) {
    Rig rig(deferring());
    Endpoint local = ep4(1, 80), peer = ep4(2, 5000);
    int l = rig.stack.listen(local, 8, false);
    REQUIRE(l > 0);
    rig.feed(build(peer, local, 1000, 0, kSyn, 65535, peer_syn_options(true)));
    auto synack = rig.sent();
    REQUIRE(synack.size() == 1);
    uint32_t iss = synack[0].tcp.seq;
    rig.feed(build(peer, local, 1001, iss + 1, kAck | kPsh, 65535,
                   ts(5001, synack[0].tcp.options.ts_val), std::vector<uint8_t>(1, 'x')));
    CHECK(rig.sent().empty());
    int id = rig.stack.accept(SocketId(l));
    REQUIRE(id > 0);
    REQUIRE(rig.stack.set_nodelay(SocketId(id), true) == 0);
    CHECK(rig.sent().empty());  // held: no reply yet, but one may come
    uint8_t buf[8];
    REQUIRE(rig.stack.recv(SocketId(id), buf, sizeof buf, rig.now) == 1);
    CHECK(rig.sent().empty());
    if (reply) {
      REQUIRE(rig.stack.send(SocketId(id), buf, 1, rig.now) == 1);
      auto out = rig.sent();
      REQUIRE(out.size() == 1);
      CHECK_EQ(out[0].payload.size(), 1u);
      CHECK_EQ(out[0].tcp.ack, 1002u);
      CHECK(opened(out[0]));
    }
    rig.stack.flush(rig.now);
    auto out = rig.sent();
    if (reply) {
      CHECK(out.empty());
    } else {
      REQUIRE(out.size() == 1);  // exactly one window update / ACK
      CHECK_EQ(out[0].payload.size(), 0u);
      CHECK_EQ(out[0].tcp.ack, 1002u);
      CHECK(opened(out[0]));
    }
  }
}

namespace {

// An active open under defer_acks: SYN out, SYN-ACK in. Returns the id and
// the ISN (0 on failure).
int connected(Rig& rig, const Endpoint& local, const Endpoint& remote, uint32_t* iss) {
  int id = rig.stack.connect(local, remote, 3, rig.now);
  if (id <= 0) return 0;
  auto syn = rig.sent();
  if (syn.size() != 1) return 0;
  *iss = syn[0].tcp.seq;
  rig.feed(build(remote, local, 7000, *iss + 1, kSyn | kAck, 30000, peer_syn_options(false)), 3);
  return id;
}

}  // namespace

TEST(handshake_ack_is_held_and_rides_on_the_first_write) {
  Rig rig(deferring());
  Endpoint local = ep4(1, 40000), remote = ep4(2, 80);
  uint32_t iss = 0;
  int id = connected(rig, local, remote, &iss);
  REQUIRE(id > 0);
  CHECK(rig.sent().empty());
  CHECK(has_event(rig.events(), EventType::Connected, SocketId(id)));
  REQUIRE(rig.stack.set_nodelay(SocketId(id), true) == 0);
  CHECK(rig.sent().empty());
  uint8_t x = 'x';
  REQUIRE(rig.stack.send(SocketId(id), &x, 1, rig.now) == 1);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);  // the byte, completing the handshake
  CHECK_EQ(out[0].tcp.flags, kAck | kPsh);
  CHECK_EQ(out[0].tcp.seq, iss + 1);
  CHECK_EQ(out[0].tcp.ack, 7001u);
  CHECK_EQ(out[0].payload.size(), 1u);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

TEST(handshake_ack_held_goes_alone_at_flush) {
  Rig rig(deferring());
  Endpoint local = ep4(1, 40000), remote = ep4(2, 80);
  uint32_t iss = 0;
  int id = connected(rig, local, remote, &iss);
  REQUIRE(id > 0);
  CHECK(rig.stack.acks_held());
  rig.stack.flush(rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.seq, iss + 1);
  CHECK_EQ(out[0].tcp.ack, 7001u);
  CHECK_EQ(out[0].payload.size(), 0u);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

TEST(reset_right_after_connect_completes_the_handshake_first) {
  Rig rig(deferring());
  Endpoint local = ep4(1, 40000), remote = ep4(2, 80);
  uint32_t iss = 0;
  int id = connected(rig, local, remote, &iss);
  REQUIRE(id > 0);
  rig.stack.abort(SocketId(id), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 2);  // the peer accepts the connection, then it is reset
  CHECK_EQ(out[0].tcp.flags, kAck);
  CHECK_EQ(out[0].tcp.ack, 7001u);
  CHECK(out[1].has(kRst));
  CHECK_EQ(out[1].tcp.seq, iss + 1);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

TEST(close_right_after_connect_sends_the_fin_with_the_ack) {
  Rig rig(deferring());
  Endpoint local = ep4(1, 40000), remote = ep4(2, 80);
  uint32_t iss = 0;
  int id = connected(rig, local, remote, &iss);
  REQUIRE(id > 0);
  rig.stack.close(SocketId(id), rig.now);
  auto out = rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.flags, kAck | kFin);
  CHECK_EQ(out[0].tcp.ack, 7001u);
  rig.stack.flush(rig.now);
  CHECK(rig.sent().empty());
}

// The other side of the reset above: the handshake's ACK and the RST arrive
// together, before the application accepted. As on Linux, accept() still
// hands the connection over, and it fails with ECONNRESET.
TEST(connection_reset_in_the_accept_queue_is_accepted_then_fails) {
  Rig rig;
  Endpoint local = ep4(1, 80), peer = ep4(2, 5000);
  int l = rig.stack.listen(local, 8, false);
  REQUIRE(l > 0);
  rig.feed(build(peer, local, 1000, 0, kSyn, 65535, peer_syn_options(false)));
  auto synack = rig.sent();
  REQUIRE(synack.size() == 1);
  uint32_t iss = synack[0].tcp.seq;
  rig.feed(build(peer, local, 1001, iss + 1, kAck, 65535));
  rig.feed(build(peer, local, 1001, iss + 1, kRst | kAck, 0));
  CHECK(rig.sent().empty());  // nothing answers a reset
  auto ev = rig.events();
  CHECK(has_event(ev, EventType::Acceptable, SocketId(l)));
  int id = rig.stack.accept(SocketId(l));
  REQUIRE(id > 0);
  ev = rig.events();
  CHECK(has_event(ev, EventType::Error, SocketId(id), -ECONNRESET));
  CHECK_EQ(rig.stack.accept(SocketId(l)), -EAGAIN);
  uint8_t b = 0;
  CHECK_EQ(rig.stack.send(SocketId(id), &b, 1, rig.now), long(-EPIPE));
  rig.stack.close(SocketId(id), rig.now);
  CHECK(rig.sent().empty());
  ev = rig.events();
  CHECK_EQ(count_events(ev, EventType::Closed, SocketId(id)), 1u);
  // The 4-tuple is free again: a new SYN opens a new connection.
  rig.feed(build(peer, local, 9000, 0, kSyn, 65535, peer_syn_options(false)));
  auto again = rig.sent();
  REQUIRE(again.size() == 1);
  CHECK_EQ(again[0].tcp.flags, kSyn | kAck);
}

TEST(closing_a_listener_with_a_reset_connection_queued_sends_nothing_for_it) {
  Rig rig;
  Endpoint local = ep4(1, 80), peer = ep4(2, 5000);
  int l = rig.stack.listen(local, 8, false);
  REQUIRE(l > 0);
  rig.feed(build(peer, local, 1000, 0, kSyn, 65535, peer_syn_options(false)));
  uint32_t iss = rig.sent()[0].tcp.seq;
  rig.feed(build(peer, local, 1001, iss + 1, kAck, 65535));
  rig.feed(build(peer, local, 1001, iss + 1, kRst | kAck, 0));
  rig.stack.close(SocketId(l), rig.now);
  CHECK(rig.sent().empty());
  rig.events();
  CHECK_EQ(rig.stack.poll_at(), kNever);
}

// A bulk stream's ACKs (Stack::Impl::ack_or_hold): under defer_acks one goes
// at the batch's flush, so a sender that filled the window sleeps until the
// receiver has taken all of it, and the two never overlap. An ACK for half
// a window goes at once instead, if the peer is idle waiting for it and no
// other connection took data in the batch (many streams keep a sender busy:
// there the batch's ACKs wake it once).
namespace {

struct HalfWindow {
  Rig rig;
  Accepted a;
  explicit HalfWindow(bool idle) : rig(small_window()) {
    rig.link.idle = idle;
    a = accept_from(rig, ep4(1, 80), ep4(2, 5000));
  }
  static Config small_window() {
    Config c = deferring();
    c.recv_buffer = 64 * 1024;
    return c;
  }
  // Feed `bytes` in 1,000-byte segments (no PSH); the highest ACK the stack
  // sent meanwhile, as bytes of the stream (0: none).
  uint32_t feed(Accepted& c, uint32_t bytes) {
    uint32_t acked = 0;
    std::vector<uint8_t> chunk(1000, 'x');
    for (uint32_t n = 0; n < bytes; n += 1000) {
      rig.feed(build(c.peer, c.local, c.peer_seq, c.iss + 1, kAck, 65535, TcpOptions{}, chunk));
      c.peer_seq += 1000;
      for (const Parsed& p : rig.sent())
        if (p.ok && p.has(kAck) && p.payload.empty()) acked = p.tcp.ack - 1001;
    }
    return acked;
  }
};

}  // namespace

TEST(an_ack_for_half_a_window_goes_at_once_to_an_idle_peer) {
  HalfWindow h(true);
  REQUIRE(h.a.id);
  const uint32_t acked = h.feed(h.a, 40000);
  CHECK(acked >= 32 * 1024);  // before any flush
  CHECK(acked < 40000);
  CHECK(h.rig.stack.acks_held() || acked == 0);
  h.rig.stack.flush(h.rig.now);
  auto out = h.rig.sent();
  REQUIRE(out.size() == 1);  // the rest at the flush
  CHECK_EQ(out[0].tcp.ack, 1001u + 40000u);
}

TEST(an_ack_for_half_a_window_is_held_while_the_peer_is_busy) {
  HalfWindow h(false);
  REQUIRE(h.a.id);
  CHECK_EQ(h.feed(h.a, 40000), 0u);
  CHECK(h.rig.stack.acks_held());
  h.rig.stack.flush(h.rig.now);
  auto out = h.rig.sent();
  REQUIRE(out.size() == 1);
  CHECK_EQ(out[0].tcp.ack, 1001u + 40000u);
}

TEST(an_ack_for_half_a_window_is_held_when_another_connection_took_data_in_the_batch) {
  HalfWindow h(true);
  REQUIRE(h.a.id);
  Accepted other = accept_from(h.rig, ep4(1, 81), ep4(2, 5001));
  REQUIRE(other.id);
  h.rig.stack.flush(h.rig.now);
  h.rig.sent();
  CHECK_EQ(h.feed(other, 1000), 0u);
  CHECK_EQ(h.feed(h.a, 40000), 0u);
  h.rig.stack.flush(h.rig.now);
  bool acked = false;
  for (const Parsed& p : h.rig.sent()) acked = acked || p.tcp.ack == 1001u + 40000u;
  CHECK(acked);  // at the flush
  // Read, so the window is open again; the next batch has only this
  // connection: its half window goes at once again.
  std::vector<uint8_t> buf(64 * 1024);
  CHECK_EQ(h.rig.stack.recv(h.a.id, buf.data(), buf.size(), h.rig.now), size_t(40000));
  h.rig.stack.flush(h.rig.now);
  h.rig.sent();
  CHECK(h.feed(h.a, 34000) >= 40000u + 32 * 1024);
}
