// libFuzzer target for the stack's segment input path (issue 3, point 4).
//
// The input is a small program. The first bytes choose a configuration
// (checksums, IPv4/IPv6, listening or connecting, deferred ACKs, buffer sizes,
// MTU); the rest is a sequence of records:
//
//   time    advance the clock (µs / ms / s, or straight to poll_at())
//   packet  feed one IP packet: either raw fuzz bytes, or a packet built from a
//           valid IPv4/IPv6 + TCP template for one of four peer connections,
//           with fuzzed flags / seq / ack / window / options / payload length,
//           and optionally mangled afterwards (byte flip, truncation, padding)
//   app     send, recv, close, shutdown_write, abort, set_nodelay,
//           set_keepalive, accept, connect, link_down, link full on/off
//
// After every record the harness drains events, flushes deferred ACKs, calls
// poll(now) and parses everything the stack transmitted, tracking what a peer
// would know (the stack's ISN, highest sequence sent, last timestamp) so that
// the next template packet can carry sensible seq/ack/TSecr values and get deep
// into the state machine.
//
// Invariants checked for every input (a violation aborts, which libFuzzer
// reports as a crash): no ASan/UBSan report; poll_at() is kNever or > now after
// poll(now) and never earlier than the current time otherwise; recv() returns
// at most what was asked and at most recv_available(); counters never
// decrease; every packet the stack transmits is a well-formed IP+TCP packet
// (checksums valid when enabled) no larger than the MTU nor than it reserved;
// the byte streams are intact in both directions (the peer sends
// byte(seq) = uint8_t(seq), the app sends byte(offset) = uint8_t(offset));
// events make sense (Closed only after close()/abort(), nothing after Closed,
// PeerClosed at most once, no Readable after PeerClosed, errors are negative
// errnos of the documented set).
//
// Built by native/fuzz/Makefile: with clang's libFuzzer (`make run`) or, with
// -DSIDESTEP_FUZZ_STANDALONE, as a plain binary that replays files
// (`make regress`).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "stack/stack.h"
#include "stack/wire.h"

using namespace sidestep::stack;
using namespace sidestep::stack::wire;

namespace {

#define FUZZ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "\nstack_input_fuzzer: invariant failed: %s\n  ", \
                   #cond);                                                 \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n  (%s:%d)\n", __FILE__, __LINE__);           \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

bool g_verbose = std::getenv("SIDESTEP_FUZZ_VERBOSE") != nullptr;
// SIDESTEP_FUZZ_ALLOW_PAST_DEADLINE=1 tolerates poll_at() < now between clock
// steps (known finding: set_keepalive() on a connection idle for longer than
// `idle` files keepalive_at = last_rx + idle, in the past), so fuzzing can go
// on past it.
bool g_allow_past_deadline = std::getenv("SIDESTEP_FUZZ_ALLOW_PAST_DEADLINE") != nullptr;
#define TRACE(...)                                 \
  do {                                             \
    if (g_verbose) std::fprintf(stderr, __VA_ARGS__); \
  } while (0)

// Reads the program; past the end every read yields 0 and done() is true.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  bool done() const { return i_ >= n_; }
  uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  uint16_t u16() { return uint16_t(u8() << 8 | u8()); }
  uint32_t u32() { return uint32_t(u16()) << 16 | u16(); }
  size_t take(uint8_t* out, size_t n) {
    size_t k = n_ - i_ < n ? n_ - i_ : n;
    if (k) std::memcpy(out, d_ + i_, k);
    i_ += k;
    return k;
  }

 private:
  const uint8_t* d_;
  size_t n_, i_ = 0;
};

// A link that hands out exactly-sized heap buffers (ASan sees overflows) and
// keeps what was committed; it can play a full ring.
class FuzzLink : public Link {
 public:
  struct Out {
    LinkAddr to;
    std::vector<uint8_t> bytes;
  };
  std::vector<Out> sent;
  bool full = false;
  size_t mtu = 65536;

  uint8_t* tx_reserve(LinkAddr to, size_t len) override {
    FUZZ_CHECK(len > 0 && len <= mtu, "tx_reserve(len=%zu) with mtu %zu", len, mtu);
    if (full) return nullptr;
    reserved_ = std::vector<uint8_t>(len, 0xa5);
    reserved_to_ = to;
    have_ = true;
    return reserved_.data();
  }
  void tx_commit(LinkAddr to, size_t len) override {
    FUZZ_CHECK(have_, "tx_commit without tx_reserve");
    FUZZ_CHECK(to == reserved_to_, "tx_commit to %u, reserved for %u", to, reserved_to_);
    FUZZ_CHECK(len <= reserved_.size(), "tx_commit(%zu) > reserved %zu", len, reserved_.size());
    reserved_.resize(len);
    sent.push_back(Out{to, std::move(reserved_)});
    reserved_.clear();
    have_ = false;
  }

 private:
  std::vector<uint8_t> reserved_;
  LinkAddr reserved_to_ = 0;
  bool have_ = false;
};

constexpr int kConns = 4;
constexpr uint16_t kServicePort = 80;
constexpr LinkAddr kPeerLink = 7;

IpAddr addr(uint8_t family, uint8_t last) {
  if (family == 4) return IpAddr::v4(10, 0, 0, last);
  IpAddr a;
  a.family = 6;
  a.bytes[0] = 0xfd;
  a.bytes[15] = last;
  return a;
}

// What the fuzzer, as peer k, knows about connection k.
struct PeerConn {
  uint8_t family = 4;
  Endpoint stack_ep, peer_ep;
  uint32_t peer_nxt = 0;   // our next sequence number
  bool stack_seen = false; // the stack sent us something
  uint32_t stack_nxt = 0;  // highest sequence the stack sent (+len)
  uint32_t last_ack = 0;   // highest ACK we sent (a duplicate ACK repeats it)
  bool acked_any = false;
  bool iss_known = false;
  uint32_t stack_iss = 0;
  uint32_t ts_echo = 0;    // the stack's last TSval
  uint32_t ts_clock = 1;   // our TSval
  uint16_t stack_win = 0;
  bool ack_seen = false;   // the stack's cumulative ACK (its rcv_nxt) ...
  uint32_t stack_ack = 0;  // ... never moves back within one connection
};

enum class Kind { Listener, Conn };
struct AppSock {
  Kind kind;
  int conn = -1;           // PeerConn index (for Conn)
  bool closed = false;     // close()/abort() called
  bool eof = false;        // PeerClosed seen
  bool connected = false;  // Connected seen
  bool rx_started = false;
  uint8_t rx_next = 0;     // next expected byte of the peer's stream
  uint64_t tx_off = 0;     // bytes the app has sent
};

struct Harness {
  Config config;
  FuzzLink link;
  Stack* stack = nullptr;
  Micros now = 1000000;
  bool listen_mode = false;
  bool dual_stack = false;
  uint8_t family = 4;
  PeerConn conns[kConns];
  std::map<SocketId, AppSock> socks;
  SocketId listener = 0;
  bool rx_tainted = false;  // raw / mangled packets may have injected data
  bool tx_unchecked = false;  // a full link may have hidden a SYN
  Counters last_counters;
  std::vector<uint8_t> scratch;

  ~Harness() { delete stack; }

  uint8_t pattern_payload_byte(uint32_t seq) { return uint8_t(seq); }

  // --- setup ---

  void setup(FuzzInput& r) {
    uint8_t a = r.u8(), b = r.u8();
    config.checksums = a & 1;
    family = (a & 2) ? 6 : 4;
    listen_mode = (a & 4) == 0;
    config.defer_acks = a & 8;
    config.accept_any_address = (a & 16) == 0;
    dual_stack = family == 6 && (a & 32);
    if (a & 64) {  // small buffers: windows close, persist timer, backpressure
      config.recv_buffer = 1024u << (b & 3);
      config.send_buffer = 512u << ((b >> 2) & 3);
    }
    static const uint32_t mtus[8] = {65536, 1500, 1280, 9000, 576, 256, 65535, 2000};
    config.mtu = mtus[(b >> 4) & 7];
    if (a & 128) {
      config.time_wait = 2000000;
      config.syn_timeout = 5000000;
      config.rto_initial = 200000;
    }
    for (int i = 0; i < 16; ++i) config.isn_secret[i] = uint8_t(i * 13 + 5);
    link.mtu = config.mtu < 256 ? 256 : config.mtu;
    stack = new Stack(config, link);
    if (!config.accept_any_address) {
      stack->add_address(addr(4, 1));
      stack->add_address(addr(6, 1));
    }
    for (int k = 0; k < kConns; ++k) {
      PeerConn& c = conns[k];
      c.family = (dual_stack && (k & 1)) ? 4 : family;
      if (listen_mode) {
        c.stack_ep = Endpoint{addr(c.family, 1), kServicePort};
        c.peer_ep = Endpoint{addr(c.family, 2), uint16_t(40000 + k)};
      } else {
        c.stack_ep = Endpoint{addr(c.family, 1), uint16_t(50000 + k)};
        c.peer_ep = Endpoint{addr(c.family, 2), kServicePort};
      }
      c.peer_nxt = 0x10000000u * uint32_t(k + 1) + r.u8();
    }
    if (listen_mode) {
      Endpoint l;
      if (dual_stack) {
        l = Endpoint{IpAddr::v6_any(), kServicePort};
      } else if (b & 0x80) {
        l = Endpoint{family == 4 ? IpAddr::v4_any() : IpAddr::v6_any(), kServicePort};
      } else {
        l = Endpoint{addr(family, 1), kServicePort};
      }
      int id = stack->listen(l, 1 + (b & 3), false);
      FUZZ_CHECK(id > 0, "listen() = %d", id);
      listener = SocketId(id);
      socks[listener] = AppSock{Kind::Listener};
    } else {
      do_connect(0);
    }
    service();
  }

  void do_connect(int k) {
    PeerConn& c = conns[k];
    int id = stack->connect(c.stack_ep, c.peer_ep, kPeerLink, now);
    TRACE("connect(%d) = %d\n", k, id);
    if (id > 0) {
      FUZZ_CHECK(socks.count(SocketId(id)) == 0, "connect() returned live id %d", id);
      AppSock s{Kind::Conn};
      s.conn = k;
      socks[SocketId(id)] = s;
    } else {
      FUZZ_CHECK(id == -EADDRINUSE, "connect() = %d", id);
    }
  }

  // --- after every step ---

  void check_counters() {
    const Counters& c = stack->counters();
#define MONO(f) FUZZ_CHECK(c.f >= last_counters.f, "counter " #f " went back")
    MONO(packets_in);
    MONO(packets_out);
    MONO(bytes_in);
    MONO(bytes_out);
    MONO(segments_retransmitted);
    MONO(retransmission_timeouts);
    MONO(packets_malformed);
    MONO(packets_no_socket);
    MONO(packets_link_full);
    MONO(resets_in);
    MONO(resets_out);
    MONO(connections_opened);
#undef MONO
    last_counters = c;
  }

  void drain_events() {
    Event e;
    int guard = 0;
    while (stack->next_event(&e)) {
      FUZZ_CHECK(++guard < 100000, "event queue does not drain");
      TRACE("event type=%d socket=%u error=%d\n", int(e.type), e.socket, e.error);
      FUZZ_CHECK(e.socket != 0, "event for socket 0");
      auto it = socks.find(e.socket);
      FUZZ_CHECK(it != socks.end(), "event %d for unknown socket %u", int(e.type), e.socket);
      AppSock& s = it->second;
      if (e.type == EventType::Error) {
        FUZZ_CHECK(e.error == -ECONNREFUSED || e.error == -ECONNRESET ||
                       e.error == -ETIMEDOUT || e.error == -EPIPE,
                   "Error event with error %d", e.error);
      } else {
        FUZZ_CHECK(e.error == 0, "event %d with error %d", int(e.type), e.error);
      }
      if (e.type == EventType::Closed) {
        FUZZ_CHECK(s.closed, "Closed for socket %u the app did not close", e.socket);
        socks.erase(it);
        if (e.socket == listener) listener = 0;
        continue;
      }
      FUZZ_CHECK(!s.closed, "event %d for socket %u after close()", int(e.type), e.socket);
      switch (e.type) {
        case EventType::Acceptable:
          FUZZ_CHECK(s.kind == Kind::Listener, "Acceptable for a connection");
          break;
        case EventType::Connected:
          FUZZ_CHECK(s.kind == Kind::Conn && !s.connected, "Connected twice / on listener");
          s.connected = true;
          break;
        case EventType::Readable:
          FUZZ_CHECK(s.kind == Kind::Conn, "Readable on listener");
          FUZZ_CHECK(!s.eof, "Readable after PeerClosed on %u", e.socket);
          break;
        case EventType::PeerClosed:
          FUZZ_CHECK(s.kind == Kind::Conn, "PeerClosed on listener");
          FUZZ_CHECK(!s.eof, "PeerClosed twice on %u", e.socket);
          FUZZ_CHECK(stack->recv_available(e.socket) == 0, "PeerClosed with data unread");
          s.eof = true;
          break;
        case EventType::Writable:
          FUZZ_CHECK(s.kind == Kind::Conn, "Writable on listener");
          break;
        default:
          break;
      }
    }
  }

  void check_sent() {
    for (auto& out : link.sent) {
      const std::vector<uint8_t>& b = out.bytes;
      FUZZ_CHECK(out.to == kPeerLink || out.to == kPeerLink + 1, "packet to unknown link %u",
                 out.to);
      FUZZ_CHECK(b.size() <= link.mtu, "sent %zu bytes over mtu %zu", b.size(), link.mtu);
      IpHeader ip;
      IpParse pr = parse_ip(b.data(), b.size(), config.checksums, &ip);
      FUZZ_CHECK(pr == IpParse::Ok, "stack sent a packet that does not parse (%d, %zu bytes)",
                 int(pr), b.size());
      FUZZ_CHECK(ip.header_len + ip.payload_len == b.size(), "IP length %zu+%zu != %zu",
                 ip.header_len, ip.payload_len, b.size());
      const uint8_t* t = b.data() + ip.header_len;
      if (config.checksums) {
        FUZZ_CHECK(tcp_checksum_ok(t, ip.payload_len, ip.src, ip.dst), "bad TCP checksum out");
      }
      TcpHeader th;
      FUZZ_CHECK(parse_tcp(t, ip.payload_len, &th), "stack sent a bad TCP header");
      size_t plen = ip.payload_len - th.header_len;
      FUZZ_CHECK(!((th.flags & kSyn) && (th.flags & (kRst | kFin))), "SYN with RST/FIN out");
      TRACE("out: flags=%02x seq=%u ack=%u win=%u len=%zu sport=%u dport=%u\n", th.flags, th.seq,
            th.ack, th.window, plen, th.src_port, th.dst_port);
      for (int k = 0; k < kConns; ++k) {
        PeerConn& c = conns[k];
        if (!(ip.dst == c.peer_ep.addr) || th.dst_port != c.peer_ep.port ||
            th.src_port != c.stack_ep.port || !(ip.src == c.stack_ep.addr)) {
          continue;
        }
        if (th.flags & kRst) break;
        uint32_t len = uint32_t(plen) + ((th.flags & kSyn) ? 1 : 0) + ((th.flags & kFin) ? 1 : 0);
        uint32_t end = th.seq + len;
        if (th.flags & kSyn) {
          c.stack_iss = th.seq;
          c.iss_known = true;
          c.stack_nxt = end;
          c.stack_seen = true;
          c.last_ack = th.seq + 1;
          c.acked_any = false;
          c.ack_seen = false;  // a new incarnation may start anywhere
        } else if (!c.stack_seen || int32_t(end - c.stack_nxt) > 0) {
          c.stack_nxt = end;
          c.stack_seen = true;
        }
        if (th.options.has_timestamp) c.ts_echo = th.options.ts_val;
        if ((th.flags & kAck) && !(th.flags & kSyn) && !tx_unchecked) {
          FUZZ_CHECK(!c.ack_seen || int32_t(th.ack - c.stack_ack) >= 0,
                     "conn %d: the stack's ACK went back from %u to %u", k, c.stack_ack, th.ack);
          c.stack_ack = th.ack;
          c.ack_seen = true;
        }
        c.stack_win = th.window;
        if (plen && c.iss_known && !tx_unchecked) {
          const uint8_t* p = t + th.header_len;
          uint32_t data_seq = th.seq + ((th.flags & kSyn) ? 1 : 0);
          for (size_t j = 0; j < plen; ++j) {
            uint8_t want = uint8_t(data_seq + uint32_t(j) - (c.stack_iss + 1));
            FUZZ_CHECK(p[j] == want,
                       "conn %d: stack sent byte %02x at seq %u, app wrote %02x (iss %u)", k,
                       p[j], data_seq + uint32_t(j), want, c.stack_iss);
          }
        }
        break;
      }
    }
    link.sent.clear();
  }

  // `time_moved`: the record advanced the clock, so deadlines may be due.
  void service(bool time_moved = false) {
    drain_events();
    if (config.defer_acks) stack->flush(now);
    Micros at = stack->poll_at();
    // Without a clock step, whatever the stack scheduled must lie ahead:
    // poll(now) already ran at this `now`.
    FUZZ_CHECK(time_moved || g_allow_past_deadline || at == kNever || at >= now,
               "poll_at() = %llu is before now = %llu without time passing",
               (unsigned long long)at, (unsigned long long)now);
    stack->poll(now);
    at = stack->poll_at();
    FUZZ_CHECK(at == kNever || at > now, "after poll(%llu), poll_at() = %llu",
               (unsigned long long)now, (unsigned long long)at);
    drain_events();
    check_sent();
    check_counters();
  }

  // --- records ---

  uint64_t fed_ = 0;

  void advance(FuzzInput& r) {
    uint8_t m = r.u8();
    Micros before = now;
    switch (m & 7) {
      case 0: now += r.u16(); break;
      case 1: now += Micros(r.u8()) * 1000; break;
      case 2: now += Micros(r.u8()) * 1000000; break;
      case 3:
      case 4: {
        Micros at = stack->poll_at();
        if (at != kNever && at > now) now = at;
        else now += 1000000;
        if ((m & 7) == 4) now += r.u8();
        break;
      }
      case 5: now += Micros(r.u16()) * 1000; break;
      case 6: now += 1; break;
      default: now += Micros(r.u8()) * 60000000; break;
    }
    FUZZ_CHECK(now >= before, "time overflow");
    // Before poll, a deadline in the past would mean a timer nobody fired.
    TRACE("now = %llu, poll_at = %llu\n", (unsigned long long)now,
          (unsigned long long)stack->poll_at());
  }

  void feed(const std::vector<uint8_t>& pkt, LinkAddr from) {
    // Without checksums every other packet arrives as a gathering link
    // delivers it (Stack::input with the headers and a two-piece payload):
    // the same bytes must get the same treatment.
    size_t headers = 0, total = 0;
    if (!config.checksums && (++fed_ & 1) && gather_split(pkt, &headers, &total)) {
      const size_t payload = total - headers, first = payload / 3;
      // Exact-size heap copies: ASan flags any read past a piece.
      uint8_t* h = new uint8_t[headers];
      uint8_t* a = new uint8_t[first ? first : 1];
      uint8_t* b = new uint8_t[payload - first ? payload - first : 1];
      std::memcpy(h, pkt.data(), headers);
      std::memcpy(a, pkt.data() + headers, first);
      std::memcpy(b, pkt.data() + headers + first, payload - first);
      Payload pl;
      pl.data[0] = a;
      pl.len[0] = first;
      pl.data[1] = b;
      pl.len[1] = payload - first;
      stack->input(from, h, headers, pl, now);
      delete[] h;
      delete[] a;
      delete[] b;
      return;
    }
    // An exact-size heap copy: ASan flags any read past the packet.
    uint8_t* p = new uint8_t[pkt.size() ? pkt.size() : 1];
    if (!pkt.empty()) std::memcpy(p, pkt.data(), pkt.size());
    stack->input(from, p, pkt.size(), now);
    delete[] p;
  }

  // Where a packet's headers end and its IP datagram ends, when it is well
  // formed enough to be split there (else it goes in whole).
  static bool gather_split(const std::vector<uint8_t>& pkt, size_t* headers, size_t* total) {
    if (pkt.empty()) return false;
    const uint8_t* p = pkt.data();
    size_t ip = 0;
    if (p[0] >> 4 == 4) {
      ip = size_t(p[0] & 15) * 4;
      if (pkt.size() < ip + 20 || ip < 20) return false;
      *total = size_t(p[2]) << 8 | p[3];
    } else if (p[0] >> 4 == 6) {
      ip = 40;
      if (pkt.size() < ip + 20) return false;
      *total = 40 + (size_t(p[4]) << 8 | p[5]);
    } else {
      return false;
    }
    const size_t doff = size_t(p[ip + 12] >> 4) * 4;
    *headers = ip + doff;
    return doff >= 20 && *headers <= *total && *total <= pkt.size() && *headers <= 120;
  }

  void raw_packet(FuzzInput& r) {
    uint8_t m = r.u8();
    size_t len = r.u8();
    if (m & 1) len = len << 8 | r.u8();
    len &= 0x7ff;
    std::vector<uint8_t> pkt;
    if (m & 2) {
      // Valid IP header for conn k, raw TCP bytes after it.
      PeerConn& c = conns[(m >> 2) & 3];
      size_t ipl = ip_header_len(c.family);
      pkt.resize(ipl + len);
      size_t got = r.take(pkt.data() + ipl, len);
      pkt.resize(ipl + got);
      emit_ip(pkt.data(), c.peer_ep.addr, c.stack_ep.addr, got, true);
      if ((m & 16) && got >= kTcpHeaderLen) {
        fill_tcp_checksum(pkt.data() + ipl, got, c.peer_ep.addr, c.stack_ep.addr);
      }
    } else {
      pkt.resize(len);
      pkt.resize(r.take(pkt.data(), len));
    }
    rx_tainted = true;
    TRACE("raw packet %zu bytes\n", pkt.size());
    feed(pkt, (m & 32) ? kPeerLink + 1 : kPeerLink);
  }

  void template_packet(FuzzInput& r) {
    uint8_t m = r.u8();
    PeerConn& c = conns[m & 3];
    static const uint8_t flag_choices[8] = {kSyn,       kSyn | kAck, kAck, kAck | kPsh,
                                            kFin | kAck, kRst,       kRst | kAck, 0};
    uint8_t fsel = (m >> 2) & 7;
    uint8_t flags = fsel == 7 ? uint8_t(r.u8() & 0x3f) : flag_choices[fsel];
    uint8_t sq = r.u8();
    TcpHeader h;
    h.src_port = c.peer_ep.port;
    h.dst_port = c.stack_ep.port;
    // seq: exact / small delta / around the stack's view / random
    switch (sq & 3) {
      case 0: h.seq = c.peer_nxt; break;
      case 1: h.seq = c.peer_nxt + uint32_t(int32_t(int8_t(r.u8())) * 64); break;
      case 2: h.seq = c.peer_nxt + uint32_t(int32_t(int16_t(r.u16()))); break;
      default: h.seq = r.u32(); break;
    }
    switch ((sq >> 2) & 3) {
      case 0: h.ack = c.stack_nxt; break;
      case 1: {  // duplicate / partial ACKs: from the last ACK we sent
        uint8_t d = r.u8();
        h.ack = c.last_ack + ((d & 0x80) ? uint32_t(d & 0x7f) * 256 : uint32_t(d & 0x7f));
        if (int32_t(h.ack - c.stack_nxt) > 0) h.ack = c.stack_nxt;
        break;
      }
      case 2: h.ack = c.stack_nxt + uint32_t(int32_t(int16_t(r.u16())) * 16); break;
      default: h.ack = r.u32(); break;
    }
    switch ((sq >> 4) & 3) {
      case 0: h.window = 65535; break;
      case 1: h.window = r.u16(); break;
      case 2: h.window = 0; break;
      default: h.window = uint16_t(r.u8() << 4); break;
    }
    bool advance_seq = (sq & 3) == 0 && !(sq & 0x40);
    uint8_t om = (sq & 0x80) ? r.u8() : 0;
    TcpOptions& o = h.options;
    uint8_t raw_opts[40];
    size_t raw_opts_len = 0;
    if (om & 0x80) {
      raw_opts_len = size_t(om & 0x0f) * 4;
      if (raw_opts_len > 40) raw_opts_len = 40;
      size_t got = r.take(raw_opts, raw_opts_len);
      std::memset(raw_opts + got, 0, raw_opts_len - got);
      rx_tainted = true;  // a bogus option could still be accepted
    } else {
      if (om & 1) o.mss = uint16_t(r.u8() << 4 | 8);
      if (om & 2) o.window_scale = int8_t(r.u8() % 16);
      if (om & 4) o.sack_permitted = true;
      if (om & 8) {
        o.has_timestamp = true;
        o.ts_val = c.ts_clock += (om & 0x40) ? r.u8() : 1;
        o.ts_ecr = (om & 0x20) ? r.u32() : c.ts_echo;
      }
      if (om & 0x10) {
        uint8_t sb = r.u8();
        o.sack_count = uint8_t(1 + (sb & 3));
        if (o.has_timestamp && o.sack_count > 3) o.sack_count = 3;
        for (uint8_t i = 0; i < o.sack_count; ++i) {
          uint32_t left = (sb & 4) ? c.stack_nxt - uint32_t(r.u8()) * 64
                                    : c.last_ack + uint32_t(r.u8()) * 64;
          o.sack[i].left = left;
          o.sack[i].right = left + uint32_t(r.u8()) * 16;
        }
      }
    }
    // Payload: pattern byte(seq) = uint8_t(seq).
    uint8_t pl = r.u8();
    size_t plen = (pl & 0x80) ? size_t(pl & 0x7f) * 256 + r.u8() : pl & 0x3f;
    size_t ipl = ip_header_len(c.family);
    size_t hl = raw_opts_len ? kTcpHeaderLen + raw_opts_len : kTcpHeaderLen + tcp_options_len(o);
    size_t tcpl = hl + plen;
    if (ipl + tcpl > 65535) {
      plen = 65535 - ipl - hl;
      tcpl = hl + plen;
    }
    std::vector<uint8_t> pkt(ipl + tcpl);
    emit_ip(pkt.data(), c.peer_ep.addr, c.stack_ep.addr, tcpl, true);
    uint8_t* t = pkt.data() + ipl;
    if (raw_opts_len) {
      TcpHeader bare = h;
      bare.options = TcpOptions{};
      emit_tcp(t, bare);
      t[12] = uint8_t((hl / 4) << 4);
      std::memcpy(t + kTcpHeaderLen, raw_opts, raw_opts_len);
    } else {
      emit_tcp(t, h);
    }
    t[13] = flags;
    uint32_t data_seq = h.seq + ((flags & kSyn) ? 1 : 0);
    for (size_t j = 0; j < plen; ++j) t[hl + j] = uint8_t(data_seq + uint32_t(j));
    fill_tcp_checksum(t, tcpl, c.peer_ep.addr, c.stack_ep.addr);
    // Mangling after the checksums.
    uint8_t mg = (pl & 0x40) ? r.u8() : 0;
    if (mg) {
      rx_tainted = true;
      switch (mg & 3) {
        case 0: {
          size_t at = r.u16() % pkt.size();
          pkt[at] ^= uint8_t(r.u8() | 1);
          break;
        }
        case 1: pkt.resize(pkt.size() - (r.u16() % pkt.size())); break;
        case 2: pkt.resize(pkt.size() + (r.u8() & 0x3f), 0); break;
        default: {  // lie in the IP length field
          uint16_t v = r.u16();
          if (c.family == 4) store16(pkt.data() + 2, v);
          else store16(pkt.data() + 4, v);
          if (c.family == 4 && config.checksums) {
            store16(pkt.data() + 10, 0);
            uint16_t cs = uint16_t(~ones_sum(pkt.data(), kIpv4HeaderLen));
            std::memcpy(pkt.data() + 10, &cs, 2);
          }
          break;
        }
      }
    }
    TRACE("in: conn=%d flags=%02x seq=%u ack=%u win=%u len=%zu size=%zu\n", m & 3, flags, h.seq,
          h.ack, h.window, plen, pkt.size());
    LinkAddr from = (m & 0x80) ? kPeerLink + 1 : kPeerLink;
    feed(pkt, from);
    if ((flags & kAck) && !mg && (int32_t(h.ack - c.last_ack) > 0 || !c.acked_any)) {
      c.last_ack = h.ack;
      c.acked_any = true;
    }
    if (advance_seq && !mg && !(flags & kRst)) {
      c.peer_nxt = h.seq + uint32_t(plen) + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
    }
  }

  // Picks the n-th live connection socket (any kind when `any`).
  SocketId pick(uint8_t n, bool any) {
    std::vector<SocketId> ids;
    for (auto& [id, s] : socks) {
      if (!s.closed && (any || s.kind == Kind::Conn)) ids.push_back(id);
    }
    if (ids.empty()) return 0;
    return ids[n % ids.size()];
  }

  void app(FuzzInput& r) {
    uint8_t op = r.u8();
    SocketId s = pick(r.u8(), (op & 0x0f) == 2 || (op & 0x0f) == 4);
    switch (op & 0x0f) {
      case 0:
      case 1: {  // send
        if (!s) break;
        size_t n = (op & 0x10) ? size_t(r.u16()) : r.u8();
        AppSock& a = socks[s];
        scratch.resize(n);
        for (size_t j = 0; j < n; ++j) scratch[j] = uint8_t(a.tx_off + j);
        long got = stack->send(s, scratch.data(), n, now);
        TRACE("send(%u, %zu) = %ld\n", s, n, got);
        FUZZ_CHECK(got == long(n) || got < 0, "send() accepted %ld of %zu", got, n);
        if (got > 0) a.tx_off += uint64_t(got);
        break;
      }
      case 2:  // close (listener or connection)
        if (!s) break;
        TRACE("close(%u)\n", s);
        stack->close(s, now);
        socks[s].closed = true;
        break;
      case 3:
        if (!s) break;
        TRACE("shutdown(%u)\n", s);
        {
          int rc = stack->shutdown_write(s, now);
          FUZZ_CHECK(rc == 0 || rc == -ENOTCONN, "shutdown_write = %d", rc);
        }
        break;
      case 4:
        if (!s) break;
        TRACE("abort(%u)\n", s);
        stack->abort(s, now);
        socks[s].closed = true;
        break;
      case 5:
        if (s) stack->set_nodelay(s, op & 0x10);
        break;
      case 6:
        if (s) {
          TRACE("set_keepalive(%u, %d)\n", s, (op & 0x10) != 0);
          stack->set_keepalive(s, op & 0x10, Micros(r.u8()) * 100000, Micros(r.u8()) * 100000,
                               r.u8() & 7);
        }
        break;
      case 7: {  // accept
        if (!listener) break;
        int id = stack->accept(listener);
        TRACE("accept() = %d\n", id);
        if (id > 0) {
          FUZZ_CHECK(socks.count(SocketId(id)) == 0, "accept() returned live id %d", id);
          AppSock a{Kind::Conn};
          Endpoint rem;
          FUZZ_CHECK(stack->remote_endpoint(SocketId(id), &rem), "accepted id has no remote");
          for (int k = 0; k < kConns; ++k) {
            if (rem == conns[k].peer_ep) a.conn = k;
          }
          socks[SocketId(id)] = a;
        } else {
          FUZZ_CHECK(id == -EAGAIN, "accept() = %d", id);
        }
        break;
      }
      case 8:
        if (!listen_mode) do_connect(r.u8() & 3);
        break;
      case 9:
        stack->link_down((op & 0x10) ? kPeerLink + 1 : kPeerLink, now);
        break;
      case 10:
        link.full = op & 0x10;
        if (link.full) tx_unchecked = true;
        break;
      default: {  // recv
        if (!s) break;
        static const size_t caps[8] = {1, 7, 100, 1460, 4096, 65536, 0, 1 << 20};
        size_t cap = caps[(op >> 4) & 7];
        size_t avail = stack->recv_available(s);
        scratch.resize(cap ? cap : 1);
        size_t n = stack->recv(s, scratch.data(), cap, now);
        TRACE("recv(%u, %zu) = %zu (avail %zu)\n", s, cap, n, avail);
        FUZZ_CHECK(n <= cap, "recv returned %zu > cap %zu", n, cap);
        FUZZ_CHECK(n <= avail, "recv returned %zu > recv_available %zu", n, avail);
        FUZZ_CHECK(n == (avail < cap ? avail : cap), "recv returned %zu, avail %zu cap %zu", n,
                   avail, cap);
        AppSock& a = socks[s];
        if (n && !rx_tainted) {
          if (!a.rx_started) {
            a.rx_started = true;
            a.rx_next = scratch[0];
          }
          for (size_t j = 0; j < n; ++j) {
            FUZZ_CHECK(scratch[j] == a.rx_next, "socket %u: received byte %02x, expected %02x",
                       s, scratch[j], a.rx_next);
            ++a.rx_next;
          }
        }
        break;
      }
    }
    SocketInfo info;
    if (s && stack->info(s, &info)) {
      FUZZ_CHECK(info.state <= uint8_t(TcpState::TimeWait), "bad state %u", info.state);
    }
  }

  void run(FuzzInput& r) {
    setup(r);
    int steps = 0;
    while (!r.done() && ++steps < 400) {
      uint8_t rec = r.u8();
      bool moved = false;
      switch (rec & 3) {
        case 0: advance(r); moved = true; break;
        case 1: template_packet(r); break;
        case 2: app(r); break;
        default:
          if (rec & 4) raw_packet(r);
          else template_packet(r);
          break;
      }
      service(moved);
    }
    // Let everything time out: an idle stack must end with no timers, or at
    // least poll_at() must keep moving forward.
    for (int i = 0; i < 64; ++i) {
      Micros at = stack->poll_at();
      if (at == kNever) break;
      FUZZ_CHECK(at > now || at == now, "poll_at %llu < now %llu", (unsigned long long)at,
                 (unsigned long long)now);
      now = at;
      service(true);
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput r(data, size);
  Harness h;
  h.run(r);
  return 0;
}

#ifdef SIDESTEP_FUZZ_STANDALONE
// Replays files (or every file of directories) given on the command line.
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

// Each input runs in a child process, so one failing input (an abort from an
// invariant or a sanitizer) does not hide the others; returns 1 on failure.
static int replay(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    std::perror(path.c_str());
    return 1;
  }
  std::vector<uint8_t> buf;
  uint8_t chunk[4096];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
  std::fclose(f);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
    std::fflush(stderr);
    std::exit(0);  // runs LeakSanitizer and coverage dumps at exit
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) {
    std::perror("fork/waitpid");
    return 1;
  }
  bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::fprintf(stderr, "%s %s (%zu bytes)\n", ok ? "ok  " : "FAIL", path.c_str(), buf.size());
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  int files = 0, errors = 0;
  for (int i = 1; i < argc; ++i) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      std::perror(argv[i]);
      ++errors;
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      DIR* d = opendir(argv[i]);
      std::vector<std::string> names;
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') names.push_back(e->d_name);
      }
      closedir(d);
      std::sort(names.begin(), names.end());
      for (auto& name : names) {
        errors += replay(std::string(argv[i]) + "/" + name);
        ++files;
      }
    } else {
      errors += replay(argv[i]);
      ++files;
    }
  }
  std::fprintf(stderr, "stack_input_fuzzer: replayed %d input(s), %d failed\n", files, errors);
  return errors ? 1 : 0;
}
#endif
