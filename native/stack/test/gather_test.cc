// Scatter-gather transmit (Link::tx_reserve_headers): a link that carries the
// payload as pointers into the sender's send buffer, delivered with the
// two-piece Stack::input. The bytes must arrive intact whether the send
// buffer wraps (two pieces), grows or empties, and the stack must call
// tx_release() before it moves or frees memory the link still points into.
#include <algorithm>
#include <cstring>
#include <deque>
#include <vector>

#include "harness.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

// One direction of a gathering link. Each frame keeps its headers (copied)
// and the payload pointers, plus a private copy of the payload taken at send
// time: whenever the link reads through a pointer (delivery, release) it
// checks the bytes there are still those, i.e. the stack did not move, free
// or overwrite memory the link was still entitled to read.
class GatherQueue final : public Link {
 public:
  struct Frame {
    std::vector<uint8_t> bytes;  // headers, then the payload once copied
    size_t header_len = 0;
    Payload payload;             // by reference while !copied
    std::vector<uint8_t> expect;
    bool copied = true;
  };
  size_t gathered = 0, two_pieces = 0, releases = 0, stale_reads = 0;
  bool gather = true;

  uint8_t* tx_reserve(LinkAddr, size_t len) override {
    cur_ = Frame{};
    cur_.bytes.resize(len);
    return cur_.bytes.data();
  }
  bool gathers() const override { return gather; }
  uint8_t* tx_reserve_headers(LinkAddr, size_t header_len, const Payload& payload) override {
    cur_ = Frame{};
    cur_.bytes.resize(header_len);
    cur_.header_len = header_len;
    cur_.payload = payload;
    cur_.copied = false;
    for (int i = 0; i < 2; ++i)
      cur_.expect.insert(cur_.expect.end(), payload.data[i], payload.data[i] + payload.len[i]);
    ++gathered;
    if (payload.len[1]) ++two_pieces;
    return cur_.bytes.data();
  }
  void tx_commit(LinkAddr, size_t len) override {
    cur_.bytes.resize(len);
    q_.push_back(std::move(cur_));
  }
  void tx_release() override {
    ++releases;
    for (Frame& f : q_) materialize(f);
  }

  size_t deliver(Stack& to, Micros now) {
    size_t n = 0;
    while (!q_.empty()) {
      Frame f = std::move(q_.front());
      q_.pop_front();
      if (f.copied) {
        to.input(1, f.bytes.data(), f.bytes.size(), now);
      } else {
        check(f);
        to.input(1, f.bytes.data(), f.header_len, f.payload, now);
      }
      ++n;
    }
    return n;
  }
  bool empty() const { return q_.empty(); }

 private:
  void check(const Frame& f) {
    std::vector<uint8_t> now;
    for (int i = 0; i < 2; ++i) now.insert(now.end(), f.payload.data[i], f.payload.data[i] + f.payload.len[i]);
    if (now != f.expect) ++stale_reads;
  }
  void materialize(Frame& f) {
    if (f.copied) return;
    check(f);
    f.bytes.insert(f.bytes.end(), f.expect.begin(), f.expect.end());
    f.copied = true;
  }
  Frame cur_;
  std::deque<Frame> q_;
};

uint64_t fnv(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

struct GatherPair {
  Config cfg;
  GatherQueue ab, ba;
  Stack a, b;
  Micros now = 1000000;
  SocketId client = 0, server = 0;

  explicit GatherPair(const Config& c) : cfg(c), a(c, ab), b(c, ba) {}

  void pump() {
    for (int i = 0; i < 8 && !(ab.empty() && ba.empty()); ++i) {
      ab.deliver(b, now);
      ba.deliver(a, now);
    }
  }
  bool open() {
    int l = b.listen(ep4(2, 80), 4, false);
    int c = a.connect(ep4(1, 40000), ep4(2, 80), 1, now);
    if (l <= 0 || c <= 0) return false;
    pump();
    int s = b.accept(SocketId(l));
    client = SocketId(c);
    server = s > 0 ? SocketId(s) : 0;
    return server != 0;
  }
};

Config gather_config() {
  Config c = test_config();
  c.checksums = false;  // gathering is for trusted links only
  c.mtu = 9000;
  c.send_buffer = 64 * 1024;
  c.recv_buffer = 64 * 1024;
  return c;
}

// Receives into a sink, as the addon's direct receive does.
struct HashingReader final : Reader {
  uint64_t hash = 0xcbf29ce484222325ull;
  size_t got = 0;
  size_t take(SocketId, const uint8_t* data, size_t len) override {
    hash = fnv(hash, data, len);
    got += len;
    return len;
  }
};

}  // namespace

TEST(gathering_link_carries_payloads_by_reference_and_bytes_arrive_intact) {
  for (bool direct : {false, true}) {
    Config cfg = gather_config();
    // A window smaller than the send buffer: acknowledgements free its head
    // while more is queued behind, so the ring wraps under segments.
    cfg.recv_buffer = 24 * 1024;
    GatherPair p(cfg);
    REQUIRE(p.open());
    HashingReader reader;
    if (direct) REQUIRE(p.b.set_reader(p.server, &reader) == 0);
    const size_t total = 8 << 20;
    std::vector<uint8_t> chunk(7001), buf(100000);
    uint64_t sent_hash = 0xcbf29ce484222325ull, recv_hash = 0xcbf29ce484222325ull;
    size_t sent = 0, received = 0;
    for (int rounds = 0; received < total && rounds < 100000; ++rounds) {
      while (sent < total && p.a.send_queued(p.client) < p.cfg.send_buffer) {
        size_t n = std::min(chunk.size() - (sent % 13), total - sent);  // odd sizes: the ring wraps anywhere
        for (size_t i = 0; i < n; ++i) chunk[i] = uint8_t((sent + i) * 2654435761u >> 13);
        REQUIRE(p.a.send(p.client, chunk.data(), n, p.now) == long(n));
        sent_hash = fnv(sent_hash, chunk.data(), n);
        sent += n;
      }
      p.pump();
      for (size_t n; (n = p.b.recv(p.server, buf.data(), buf.size(), p.now)) > 0;) {
        recv_hash = fnv(recv_hash, buf.data(), n);
        received += n;
      }
      received += reader.got;
      reader.got = 0;
      p.now += 100;
      if (p.a.poll_at() <= p.now) p.a.poll(p.now);
      if (p.b.poll_at() <= p.now) p.b.poll(p.now);
    }
    CHECK_EQ(received, total);
    CHECK_EQ(direct ? reader.hash : recv_hash, sent_hash);
    CHECK(p.ab.gathered > 100u);   // data went by reference...
    // ...including from a wrapped send buffer (with recv() the window, not
    // the application, paces the sender, so its ring wraps under segments).
    if (!direct) CHECK(p.ab.two_pieces > 0u);
    CHECK_EQ(p.ab.stale_reads, 0u);
    CHECK_EQ(p.b.counters().packets_malformed, 0u);
  }
}

TEST(send_buffer_is_released_before_it_grows_or_is_freed_under_references) {
  GatherPair p(gather_config());
  REQUIRE(p.open());
  std::vector<uint8_t> small(100, 'x'), big(50000, 'y');
  // 100 bytes go by reference from a small (1 KiB) send buffer and stay in
  // the link, undelivered.
  REQUIRE(p.a.send(p.client, small.data(), small.size(), p.now) == 100);
  REQUIRE(p.ab.gathered == 1u);
  const size_t releases = p.ab.releases;
  // The buffer must grow for 50000 more: the link is told to let go first.
  REQUIRE(p.a.send(p.client, big.data(), big.size(), p.now) == long(big.size()));
  CHECK(p.ab.releases > releases);
  p.pump();
  std::vector<uint8_t> got(60000);
  size_t n = 0;
  for (size_t k; (k = p.b.recv(p.server, got.data() + n, got.size() - n, p.now)) > 0;) n += k;
  CHECK_EQ(n, 50100u);
  CHECK(std::memcmp(got.data(), small.data(), 100) == 0);
  CHECK(std::all_of(got.begin() + 100, got.begin() + n, [](uint8_t c) { return c == 'y'; }));
  CHECK_EQ(p.ab.stale_reads, 0u);
  // Acknowledged and emptied, a small buffer is freed: with references
  // outstanding (a retransmission here), the link is told first.
  p.a.abort(p.client, p.now);
  CHECK_EQ(p.ab.stale_reads, 0u);
}

TEST(gathered_input_whose_lengths_disagree_is_dropped_and_counted) {
  GatherPair p(gather_config());
  REQUIRE(p.open());
  std::vector<uint8_t> data(300, 'z');
  Payload pl;
  const uint64_t malformed = p.b.counters().packets_malformed;
  // Headers that claim a TCP header longer than what was given.
  uint8_t h[40] = {0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2};
  const uint16_t total = 40 + 300;
  h[2] = uint8_t(total >> 8);
  h[3] = uint8_t(total);
  h[20] = 40000 >> 8;
  h[21] = 40000 & 0xff;
  h[22] = 0;
  h[23] = 80;
  h[32] = 0x80;  // data offset 32 bytes, but only 20 follow the IP header
  h[33] = 0x10;  // ACK
  pl.data[0] = data.data();
  pl.len[0] = data.size();
  p.b.input(1, h, sizeof h, pl, p.now);
  CHECK_EQ(p.b.counters().packets_malformed, malformed + 1);
  // An IP length that doesn't cover the payload given.
  h[32] = 0x50;
  h[2] = 0;
  h[3] = 40 + 100;
  p.b.input(1, h, sizeof h, pl, p.now);
  CHECK_EQ(p.b.counters().packets_malformed, malformed + 2);
  // Nothing was answered to either.
  CHECK(p.ba.empty());
}
