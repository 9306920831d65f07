// Test fixtures for the stack: a Link that records what the stack sent, a
// builder for crafted segments (using the wire emitter), a parser for the
// recorded packets, and a two-stack in-memory link with a simulated clock.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "check.h"
#include "stack/stack.h"
#include "stack/wire.h"

namespace sidestep::stack::test {

using namespace wire;

struct Packet {
  LinkAddr to = 0;
  std::vector<uint8_t> bytes;
};

// Records every packet; can be told to refuse room (a full ring), saying it
// will have room again (`blocking`) or not.
class RecordingLink : public Link {
 public:
  std::vector<Packet> sent;
  bool full = false;
  bool blocking = false;
  bool idle = false;  // Link::peer_idle
  bool tx_blocked(LinkAddr) const override { return full && blocking; }
  bool peer_idle(LinkAddr) const override { return idle; }
  uint8_t* tx_reserve(LinkAddr to, size_t len) override {
    if (full) return nullptr;
    staging_.assign(len, 0);
    to_ = to;
    return staging_.data();
  }
  void tx_commit(LinkAddr to, size_t len) override {
    sent.push_back(Packet{to, std::vector<uint8_t>(staging_.begin(), staging_.begin() + len)});
  }
  std::vector<Packet> take() {
    std::vector<Packet> out;
    out.swap(sent);
    return out;
  }

 private:
  std::vector<uint8_t> staging_;
  LinkAddr to_ = 0;
};

struct Parsed {
  bool ok = false;
  IpHeader ip;
  TcpHeader tcp;
  std::vector<uint8_t> payload;
  bool has(uint8_t f) const { return (tcp.flags & f) != 0; }
};

inline Parsed parse(const std::vector<uint8_t>& b, bool verify = true) {
  Parsed p;
  if (parse_ip(b.data(), b.size(), verify, &p.ip) != IpParse::Ok) return p;
  const uint8_t* t = b.data() + p.ip.header_len;
  if (!parse_tcp(t, p.ip.payload_len, &p.tcp)) return p;
  p.payload.assign(t + p.tcp.header_len, t + p.ip.payload_len);
  p.ok = true;
  return p;
}

inline Parsed parse_any(const std::vector<uint8_t>& b) { return parse(b, false); }

// Builds an IP packet carrying one TCP segment, checksums filled.
inline std::vector<uint8_t> build(const Endpoint& src, const Endpoint& dst, uint32_t seq,
                                  uint32_t ack, uint8_t flags, uint16_t window,
                                  const TcpOptions& opts = TcpOptions{},
                                  const std::vector<uint8_t>& payload = {}) {
  TcpHeader h;
  h.src_port = src.port;
  h.dst_port = dst.port;
  h.seq = seq;
  h.ack = ack;
  h.flags = flags;
  h.window = window;
  h.options = opts;
  size_t ipl = ip_header_len(src.addr.family);
  size_t tcpl = kTcpHeaderLen + tcp_options_len(opts) + payload.size();
  std::vector<uint8_t> b(ipl + tcpl);
  emit_ip(b.data(), src.addr, dst.addr, tcpl, true);
  size_t hl = emit_tcp(b.data() + ipl, h);
  if (!payload.empty()) std::memcpy(b.data() + ipl + hl, payload.data(), payload.size());
  fill_tcp_checksum(b.data() + ipl, tcpl, src.addr, dst.addr);
  return b;
}

inline std::vector<uint8_t> bytes_of(const char* s) {
  return std::vector<uint8_t>(s, s + std::strlen(s));
}

inline Endpoint ep4(uint8_t last, uint16_t port) { return Endpoint{IpAddr::v4(10, 0, 0, last), port}; }
inline Endpoint ep6(uint8_t last, uint16_t port) {
  IpAddr a;
  a.family = 6;
  a.bytes[0] = 0xfd;
  a.bytes[15] = last;
  return Endpoint{a, port};
}

inline Config test_config() {
  Config c;
  c.checksums = true;
  for (int i = 0; i < 16; ++i) c.isn_secret[i] = uint8_t(i * 7 + 1);
  // Crafted-segment tests expect the steady state's delayed ACKs from the
  // first segment; quick_acks_are_sent_at_start covers the default.
  c.quick_acks = 0;
  return c;
}

// One stack fed crafted segments by a test acting as its peer.
struct Rig {
  Config config;
  RecordingLink link;
  Stack stack;
  Micros now = 1000000;
  explicit Rig(const Config& c = test_config()) : config(c), stack(c, link) {}
  void feed(const std::vector<uint8_t>& pkt, LinkAddr from = 7) {
    stack.input(from, pkt.data(), pkt.size(), now);
  }
  std::vector<Parsed> sent() {
    std::vector<Parsed> out;
    for (auto& p : link.take()) out.push_back(parse(p.bytes));
    return out;
  }
  std::vector<Event> events() {
    std::vector<Event> out;
    Event e;
    while (stack.next_event(&e)) out.push_back(e);
    return out;
  }
  void advance_to(Micros t) {
    now = t;
    stack.poll(now);
  }
};

inline bool has_event(const std::vector<Event>& ev, EventType type, SocketId s, int error = 0) {
  for (auto& e : ev) {
    if (e.type == type && e.socket == s && e.error == error) return true;
  }
  return false;
}

inline size_t count_events(const std::vector<Event>& ev, EventType type, SocketId s) {
  size_t n = 0;
  for (auto& e : ev) n += e.type == type && e.socket == s;
  return n;
}

// Two stacks joined by an in-memory link with a simulated clock. Packets
// travel with `delay`; a PRNG-driven fault injector may drop, duplicate or
// reorder them (seeded: a failure is reproducible).
class Wire {
 public:
  struct Faults {
    double loss = 0, duplicate = 0, reorder = 0, corrupt = 0;
    Micros delay = 10, jitter = 0;
  };

  // Send memory a test's link lends (Link::send_memory): the stack keeps a
  // connection's bytes there, where the "peer" (the test) can read them.
  struct Lent {
    std::vector<uint8_t> ring;
    uint32_t ring_bytes = 0;  // the part in use
    uint32_t end = 0, consumed = 0, seq_base = 0, from = 0;
    Endpoint local, remote;
    bool released = false;
  };

  class End : public Link {
   public:
    Wire* wire = nullptr;
    int side = 0;
    size_t lend_bytes = 0;  // > 0: lend each new connection a ring this big
    uint32_t lend_stagger = 0;  // SendMemory::stagger of what it lends
    std::vector<std::unique_ptr<Lent>> lent;
    bool send_memory(LinkAddr, const Endpoint& local, const Endpoint& remote, uint32_t seq_base,
                     SendMemory* out) override {
      if (!lend_bytes) return false;
      auto l = std::make_unique<Lent>();
      l->ring.assign(lend_bytes, 0);
      l->seq_base = seq_base;
      l->local = local;
      l->remote = remote;
      out->ring = l->ring.data();
      out->capacity = lend_bytes;
      out->stagger = lend_stagger;
      out->published_ring = &l->ring_bytes;
      out->published_base = &l->seq_base;
      out->published_end = &l->end;
      out->published_consumed = &l->consumed;
      out->published_from = &l->from;
      out->cookie = lent.size();
      lent.push_back(std::move(l));
      return true;
    }
    void send_memory_release(LinkAddr, const SendMemory& m) override { lent[m.cookie]->released = true; }
    uint8_t* tx_reserve(LinkAddr, size_t len) override {
      buf_.resize(len);
      return buf_.data();
    }
    void tx_commit(LinkAddr, size_t len) override {
      buf_.resize(len);
      wire->carry(side, buf_);
    }

   private:
    std::vector<uint8_t> buf_;
  };

  Config config;
  End ends[2];
  Stack a, b;
  Micros now = 1000000;
  Faults faults;
  uint64_t rng;
  uint64_t delivered = 0, dropped = 0;
  bool trace = std::getenv("SIDESTEP_TRACE") != nullptr;

  explicit Wire(const Config& c = test_config(), uint64_t seed = 1)
      : config(c), a(c, init_end(0)), b(c, init_end(1)), rng(seed * 0x9e3779b97f4a7c15ull + 1) {}

  Stack& stack(int side) { return side == 0 ? a : b; }

  double uniform() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return double(rng >> 11) / double(1ull << 53);
  }

  void carry(int from_side, const std::vector<uint8_t>& pkt) {
    if (faults.loss > 0 && uniform() < faults.loss) {
      ++dropped;
      return;
    }
    int copies = (faults.duplicate > 0 && uniform() < faults.duplicate) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      std::vector<uint8_t> bytes = pkt;
      if (faults.corrupt > 0 && uniform() < faults.corrupt && !bytes.empty()) {
        size_t at = size_t(uniform() * double(bytes.size())) % bytes.size();
        bytes[at] ^= uint8_t(1u << (rng % 8));
      }
      Micros at = now + faults.delay;
      if (faults.jitter) at += Micros(uniform() * double(faults.jitter));
      if (faults.reorder > 0 && uniform() < faults.reorder) at += faults.delay * 5 + 50;
      inflight_.push_back(InFlight{at, seq_++, 1 - from_side, std::move(bytes)});
      std::push_heap(inflight_.begin(), inflight_.end());
    }
  }

  // Delivers packets and fires timers until `until` or until nothing is
  // pending anywhere. Returns false if time ran out with work pending.
  // `app` runs between steps; `busy` says the app still has work of its own
  // (a slow reader), so the clock keeps moving even when the stacks are idle.
  bool run(Micros until, const std::function<void()>& app = nullptr,
           const std::function<bool()>& busy = nullptr) {
    for (;;) {
      if (app) app();
      Micros next = std::min(a.poll_at(), b.poll_at());
      if (!inflight_.empty()) next = std::min(next, inflight_.front().at);
      if (busy && busy()) next = std::min(next, now + 1000);
      if (next == kNever) return true;
      if (next > until) {
        now = until;
        return false;
      }
      if (next > now) now = next;
      while (!inflight_.empty() && inflight_.front().at <= now) {
        std::pop_heap(inflight_.begin(), inflight_.end());
        InFlight f = std::move(inflight_.back());
        inflight_.pop_back();
        ++delivered;
        if (trace) {
          Parsed p = parse_any(f.bytes);
          std::fprintf(stderr, "%10.6f %s seq %u ack %u %s%s%s%s len %zu win %u ts %u/%u\n",
                       double(now) / 1e6, f.side == 1 ? "a->b" : "b->a", p.tcp.seq, p.tcp.ack,
                       p.has(kSyn) ? "S" : "", p.has(kFin) ? "F" : "", p.has(kRst) ? "R" : "",
                       p.has(kPsh) ? "P" : "", p.payload.size(), p.tcp.window,
                       p.tcp.options.ts_val, p.tcp.options.ts_ecr);
        }
        stack(f.side).input(f.side == 0 ? 1 : 0, f.bytes.data(), f.bytes.size(), now);
      }
      a.poll(now);
      b.poll(now);
    }
  }

  bool idle_wire() const { return inflight_.empty(); }

 private:
  struct InFlight {
    Micros at;
    uint64_t order;
    int side;
    std::vector<uint8_t> bytes;
    bool operator<(const InFlight& o) const {  // min-heap on (at, order)
      return at != o.at ? at > o.at : order > o.order;
    }
  };
  std::vector<InFlight> inflight_;
  uint64_t seq_ = 0;

  Link& init_end(int side) {
    ends[side].wire = this;
    ends[side].side = side;
    return ends[side];
  }
};

inline std::vector<Event> drain(Stack& s) {
  std::vector<Event> out;
  Event e;
  while (s.next_event(&e)) out.push_back(e);
  return out;
}

}  // namespace sidestep::stack::test

namespace sidestep::stack::test {

// A connection accepted by `rig.stack` from a crafted peer at `peer`.
struct Accepted {
  SocketId listener = 0, id = 0;
  uint32_t iss = 0;       // the stack's ISN
  uint32_t peer_seq = 0;  // next sequence number the peer sends
  Endpoint local, peer;
};

inline TcpOptions peer_syn_options(bool modern) {
  TcpOptions o;
  o.mss = 1460;
  if (modern) {
    o.window_scale = 2;
    o.sack_permitted = true;
    o.has_timestamp = true;
    o.ts_val = 5000;
  }
  return o;
}

// Listens on local, sends SYN, checks the SYN-ACK, completes and accepts.
inline Accepted accept_from(Rig& rig, const Endpoint& local, const Endpoint& peer,
                            bool modern = false, uint16_t peer_window = 65535) {
  Accepted a;
  a.local = local;
  a.peer = peer;
  int l = rig.stack.listen(local, 8, false);
  if (l <= 0) return a;
  a.listener = SocketId(l);
  rig.feed(build(peer, local, 1000, 0, kSyn, peer_window, peer_syn_options(modern)));
  auto out = rig.sent();
  if (out.size() != 1 || !out[0].has(kSyn) || !out[0].has(kAck)) return a;
  a.iss = out[0].tcp.seq;
  TcpOptions o;
  if (modern) {
    o.has_timestamp = true;
    o.ts_val = 5001;
    o.ts_ecr = out[0].tcp.options.ts_val;
  }
  rig.feed(build(peer, local, 1001, a.iss + 1, kAck, peer_window, o));
  int id = rig.stack.accept(a.listener);
  if (id <= 0) return a;
  a.id = SocketId(id);
  a.peer_seq = 1001;
  rig.events();
  return a;
}

}  // namespace sidestep::stack::test
