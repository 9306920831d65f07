// The TCP state machine (RFC 9293) with RFC 6298 timers, RFC 7323 window
// scaling and timestamps, RFC 5681 congestion control, RFC 5961 blind-attack
// defences, RFC 2018 SACK blocks as a receiver, and the ACK processing of
// loss recovery: NewReno (RFC 6582, with RFC 3042 limited transmit) when the
// peer has no SACK, RFC 6675 (recovery.cc) when it has. Every entry point is
// a Stack::Impl method: segments in, segments (through put()) and events out.
#include <algorithm>
#include <cerrno>

#include "stack_impl.h"

namespace sidestep::stack {

using namespace wire;

namespace {

constexpr uint32_t kMinMss = 88;               // Linux's floor: no 1-byte segments
constexpr uint32_t kMaxRetries = 15;           // like tcp_retries2
constexpr uint32_t kSynAckRetries = 5;         // like tcp_synack_retries
constexpr Micros kPawsIdle = 1000000000;       // ts_recent goes stale (RFC 7323 5.5)
constexpr Micros kOutOfWindowAckInterval = 500000;  // like tcp_invalid_ratelimit

uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

}  // namespace

uint64_t siphash(const uint8_t key[16], const uint8_t* data, size_t len) {
  uint64_t k0, k1;
  std::memcpy(&k0, key, 8);
  std::memcpy(&k1, key + 8, 8);
  uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
  auto round = [&] {
    v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
    v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
    v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
    v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
  };
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t m;
    std::memcpy(&m, data + i, 8);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  uint64_t b = uint64_t(len) << 56;
  for (size_t j = 0; i + j < len; ++j) b |= uint64_t(data[i + j]) << (8 * j);
  v3 ^= b;
  round();
  round();
  v0 ^= b;
  v2 ^= 0xff;
  round();
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

// --- CongestionControl (NewReno) ---

void CongestionControl::init(uint32_t mss) {
  cwnd_ = std::min(10 * mss, std::max(2 * mss, 14600u));  // RFC 6928
  ssthresh_ = UINT32_MAX;
  acked_in_ca_ = 0;
}

void CongestionControl::on_ack(uint32_t acked, uint32_t mss) {
  if (cwnd_ < ssthresh_) {
    cwnd_ += std::min(acked, 2 * mss);  // RFC 3465 byte counting, L = 2
  } else {
    acked_in_ca_ += acked;
    if (acked_in_ca_ >= cwnd_) {
      acked_in_ca_ -= cwnd_;
      cwnd_ += mss;
    }
  }
  if (cwnd_ > (1u << 30)) cwnd_ = 1u << 30;
}

void CongestionControl::on_fast_retransmit(uint32_t flight, uint32_t mss) {
  ssthresh_ = std::max(flight / 2, 2 * mss);
  cwnd_ = ssthresh_ + 3 * mss;
}

void CongestionControl::on_sack_recovery(uint32_t flight, uint32_t mss) {
  ssthresh_ = std::max(flight / 2, 2 * mss);
  cwnd_ = ssthresh_;
}

void CongestionControl::on_partial_ack(uint32_t acked, uint32_t mss) {
  cwnd_ = (cwnd_ > acked ? cwnd_ - acked : 0) + mss;
}

void CongestionControl::on_recovery_exit(uint32_t flight, uint32_t mss) {
  cwnd_ = std::min(ssthresh_, std::max(flight, mss) + mss);
  acked_in_ca_ = 0;
}

void CongestionControl::on_timeout(uint32_t flight, uint32_t mss, bool first) {
  if (first) ssthresh_ = std::max(flight / 2, 2 * mss);
  cwnd_ = mss;
  acked_in_ca_ = 0;
}

// --- output ---

uint8_t Stack::Impl::our_window_shift() const {
  uint8_t s = 0;
  while (s < 14 && (uint64_t(config.recv_buffer) >> s) > 65535) ++s;
  return s;
}

uint32_t Stack::Impl::data_room(const Tcb& t) const {
  TcpOptions o;
  o.has_timestamp = t.ts_ok;
  if (t.sack_ok && !t.ooo.empty()) {
    o.sack_count = uint8_t(std::min<size_t>(t.ooo.count(), t.ts_ok ? 3 : 4));
  }
  return t.mss - uint32_t(tcp_options_len(o));
}

uint16_t Stack::Impl::window_field(Tcb& t, bool syn) {
  uint32_t free = uint32_t(t.rcvbuf.free_space());
  if (syn) {  // never scaled (RFC 7323 2.2)
    uint32_t w = std::min<uint32_t>(free, 65535);
    if (t.state == TcpState::SynReceived && seq_gt(t.rcv_nxt + w, t.rcv_adv)) {
      t.rcv_adv = t.rcv_nxt + w;
    }
    return uint16_t(w);
  }
  uint32_t scale = t.rcv_wscale;
  uint32_t w = std::min<uint32_t>(free >> scale, 65535);
  uint32_t edge = t.rcv_nxt + (w << scale);
  if (seq_lt(edge, t.rcv_adv)) {
    // Rounding must not move the right edge we already offered back.
    uint32_t need = t.rcv_adv - t.rcv_nxt;
    w = std::min<uint32_t>((need + (1u << scale) - 1) >> scale, 65535);
    edge = t.rcv_nxt + (w << scale);
  }
  if (seq_gt(edge, t.rcv_adv)) t.rcv_adv = edge;
  return uint16_t(w);
}

bool Stack::Impl::put(LinkAddr to, const IpAddr& src, const IpAddr& dst, const TcpHeader& h,
                      const SendBuffer* data, size_t offset, size_t len) {
  size_t ip_len = ip_header_len(src.family);
  size_t tcp_len = kTcpHeaderLen + tcp_options_len(h.options) + len;
  size_t total = ip_len + tcp_len;
  // A link that carries the payload by reference gets only the headers.
  const bool by_reference = gather && len > 0;
  Payload payload;
  if (by_reference) data->pieces(offset, len, &payload);
  const size_t reserved = by_reference ? total - len : total;
  uint8_t* p = by_reference ? link.tx_reserve_headers(to, reserved, payload) : link.tx_reserve(to, total);
  if (!p) {
    ++counters.packets_link_full;
    return false;
  }
  emit_ip(p, src, dst, tcp_len, config.checksums);
  size_t hl = emit_tcp(p + ip_len, h);
  if (by_reference) {
    tx_refs_out = true;
  } else if (len) {
    data->peek(offset, p + ip_len + hl, len);
  }
  if (config.checksums) fill_tcp_checksum(p + ip_len, tcp_len, src, dst);
  link.tx_commit(to, reserved);
  ++counters.packets_out;
  counters.bytes_out += len;
  if (h.flags & kRst) ++counters.resets_out;
  return true;
}

bool Stack::Impl::transmit(Tcb& t, uint32_t seq, uint8_t flags, uint32_t len, Micros now) {
  TcpHeader h;
  h.src_port = t.local.port;
  h.dst_port = t.remote.port;
  h.seq = seq;
  h.flags = flags;
  h.ack = (flags & kAck) ? t.rcv_nxt : 0;
  TcpOptions& o = h.options;
  bool syn = flags & kSyn;
  if (syn) {
    o.mss = mss_cap(t.local.addr.family);
    bool offer = t.state == TcpState::SynSent;
    if (offer || t.ws_ok) o.window_scale = int8_t(t.rcv_wscale);
    o.sack_permitted = offer || t.sack_ok;
    if (offer || t.ts_ok) {
      o.has_timestamp = true;
      o.ts_val = ts_clock(t, now);
      o.ts_ecr = offer ? 0 : t.ts_recent;
    }
  } else if (!(flags & kRst)) {
    if (t.ts_ok) {
      o.has_timestamp = true;
      o.ts_val = ts_clock(t, now);
      o.ts_ecr = t.ts_recent;
    }
    if (t.sack_ok && !t.ooo.empty() && (flags & kAck)) {
      o.sack_count = t.ooo.sack_blocks(o.sack, t.ts_ok ? 3 : 4);
    }
  }
  h.window = (flags & kRst) ? 0 : window_field(t, syn);
  if (!put(t.via, t.local.addr, t.remote.addr, h, &t.sndbuf, seq - t.sndbuf_seq, len)) {
    // A full link (not a gone one) gets a second chance when it has room,
    // rather than a retransmission timeout later.
    if (!t.link_waiting && link.tx_blocked(t.via)) {
      t.link_waiting = true;
      link_waiters.emplace_back(t.id, slots[t.id].generation);
    }
    return false;
  }
  if (t.sack_ok && !(flags & (kSyn | kRst)) && (len || (flags & kFin))) {
    t.score.on_transmit(seq, seq + len + ((flags & kFin) ? 1 : 0));  // every data segment
  }
  if (flags & kAck) {
    t.handshake_ack_held = false;
    t.ack_now = false;
    t.delack_at = kNever;
    t.unacked_bytes = 0;
  }
  return true;
}

void Stack::Impl::send_syn(Tcb& t, Micros now) {
  if (t.backoff == 0) {
    t.rtt_timing = true;
    t.rtt_seq = t.iss;
    t.rtt_start = now;
  } else {
    t.rtt_timing = false;  // Karn: never time a retransmitted segment
  }
  uint8_t flags = kSyn | (t.state == TcpState::SynReceived ? kAck : 0);
  transmit(t, t.iss, flags, 0, now);
}

uint32_t Stack::Impl::acceptable_seq(const Tcb& t) const {
  // A segment without data carries snd_max, not snd_nxt (BSD tcp_output):
  // after a timeout snd_nxt went back to snd_una, below what the peer has
  // already received, and an ACK there would be dropped as old.
  return t.snd_max;
}

void Stack::Impl::send_rst(Tcb& t, Micros now) {
  if (t.handshake_ack_held) send_ack(t, now);  // the peer accepts, then sees the reset
  transmit(t, acceptable_seq(t), kRst | kAck, 0, now);
}

void Stack::Impl::send_dupack(Tcb& t, const Segment& seg, Micros now) {
  // An ACK for an unacceptable segment without data is rate limited, so two
  // confused ends cannot ping-pong ACKs forever (Linux tcp_oow_rate_limited,
  // RFC 5961 7).
  bool carries_data = seg.seq_len() > 0 && !seg.has(kSyn);
  if (!carries_data) {
    if (t.last_oow_ack != kNever && now - t.last_oow_ack < kOutOfWindowAckInterval) return;
    t.last_oow_ack = now;
  }
  send_ack(t, now);
}

void Stack::Impl::reply_rst(const Segment& seg) {
  if (seg.has(kRst)) return;
  TcpHeader h;
  h.src_port = seg.tcp.dst_port;
  h.dst_port = seg.tcp.src_port;
  if (seg.has(kAck)) {
    h.seq = seg.tcp.ack;
    h.flags = kRst;
  } else {
    h.seq = 0;
    h.ack = seg.tcp.seq + seg.seq_len();
    h.flags = kRst | kAck;
  }
  put(seg.from, seg.dst, seg.src, h, nullptr, 0, 0);
}

void Stack::Impl::retransmit_first(Tcb& t, Micros now) {
  if (seq_lt(t.snd_una, t.sndbuf_seq)) return;
  uint32_t avail = t.data_end() - t.snd_una;
  if (!t.fin_queued && avail == 0) return;
  uint32_t len = std::min({avail, data_room(t), std::max<uint32_t>(t.snd_wnd, 1)});
  bool fin = t.fin_queued && len == avail;
  uint8_t flags = kAck | (fin ? kFin : 0) | (len && len == avail ? kPsh : 0);
  if (!transmit(t, t.snd_una, flags, len, now)) return;
  ++counters.segments_retransmitted;
  ++t.retransmits;
  uint32_t end = t.snd_una + len + fin;
  if (seq_lt(t.snd_nxt, end)) t.snd_nxt = end;
  if (seq_lt(t.snd_max, end)) t.snd_max = end;
}

void Stack::Impl::output(Tcb& t, Micros now) {
  if (t.dead || t.state == TcpState::Closed || t.orphaned) return;
  bool can_send = t.state == TcpState::Established || t.state == TcpState::CloseWait ||
                  t.state == TcpState::FinWait1 || t.state == TcpState::LastAck ||
                  t.state == TcpState::Closing;
  if (can_send) {
    // With SACK, what the scoreboard holds lost goes first (RFC 6675
    // NextSeg rule 1), then new data while the pipe leaves room.
    if (t.sack_ok) retransmit_lost(t, now, false, false);
    uint32_t room = data_room(t);
    for (;;) {
      uint32_t unsent = t.unsent();
      bool fin_wanted = t.fin_queued && seq_le(t.snd_nxt, t.data_end());
      uint32_t cwnd = t.cc.window();
      // Limited transmit (RFC 3042): the first two duplicate ACKs each let
      // one new segment out, so a small window still reaches three dupacks.
      // (With SACK the pipe does that: a SACKed segment left the network.)
      if (!t.sack_ok && !t.in_recovery && t.dupacks > 0 && t.dupacks < 3) {
        cwnd += t.dupacks * t.mss;
      }
      uint32_t flight = t.flight();
      uint32_t in_network = t.sack_ok ? t.pipe() : flight;
      uint32_t usable = std::min(t.snd_wnd > flight ? t.snd_wnd - flight : 0,
                                 cwnd > in_network ? cwnd - in_network : 0);
      uint32_t len = std::min({unsent, room, usable});
      bool fin = fin_wanted && len == unsent;
      if (len == 0 && !fin) break;
      if (len < room && len < unsent) {
        // Window-limited runt: sender SWS avoidance (RFC 9293 3.8.6.2.1);
        // the persist timer sends it if nothing else will.
        if (flight > 0 || len < t.max_snd_wnd / 2) break;
      } else if (len < room && !fin && !t.nodelay && seq_gt(t.snd_sml, t.snd_una)) {
        // Nagle with Minshall's refinement (as Linux): hold a runt only while
        // an earlier runt is unacknowledged, so the tail of a message that
        // ends just past a full segment goes out at once instead of waiting
        // for the receiver's delayed ACK.
        break;
      }
      uint8_t flags = kAck | (fin ? kFin : 0) | (len && len == unsent ? kPsh : 0);
      if (!transmit(t, t.snd_nxt, flags, len, now)) {
        if (t.rtx_at == kNever) t.rtx_at = now + t.rto;  // link full: try again later
        break;
      }
      if (seq_lt(t.snd_nxt, t.snd_max)) {  // going back over lost data after a timeout
        ++counters.segments_retransmitted;
        ++t.retransmits;
      }
      if (!t.rtt_timing && len && t.snd_nxt == t.snd_max) {
        t.rtt_timing = true;
        t.rtt_seq = t.snd_nxt;
        t.rtt_start = now;
      }
      // The end of the latest runt: shorter than a segment can carry after
      // its options (`room`), not than the MSS, or every full segment with
      // timestamps would count as one and hold the tail of a message until
      // the receiver's delayed ACK (issue 3's 40 ms stall).
      if (len < room) t.snd_sml = t.snd_nxt + len;
      t.snd_nxt += len + fin;
      if (seq_gt(t.snd_nxt, t.snd_max)) t.snd_max = t.snd_nxt;
      if (t.rtx_at == kNever) t.rtx_at = now + t.rto;
      t.persist_at = kNever;
      if (fin) break;
    }
    // RFC 6675 NextSeg rule 3: in recovery with no new data to send (or no
    // window for it), holes below SACKed data go again before they are
    // known lost.
    if (t.sack_ok && t.in_recovery &&
        (t.unsent() == 0 || seq_ge(t.snd_nxt, t.snd_una + t.snd_wnd))) {
      retransmit_lost(t, now, false, true);
    }
    if (t.unsent() > 0 && t.flight() == 0 && t.rtx_at == kNever && t.persist_at == kNever) {
      Micros d = std::min<Micros>(t.rto << std::min<uint32_t>(t.persist_backoff, 20),
                                  config.rto_max);
      t.persist_at = now + d;
    }
  }
  if (t.ack_now && t.state != TcpState::SynSent && t.state != TcpState::SynReceived) {
    ack_or_hold(t, now);
  }
}

void Stack::Impl::ack_or_hold(Tcb& t, Micros now) {
  // An ACK for half a window goes at once, held or not, when its sender is
  // idle (it filled the window and sleeps until we answer) and no other
  // connection took data since the last flush: it then sends the next bytes
  // while we take the rest, where an ACK at the flush made the two sides
  // take turns (a 2 GiB counting sink: the receiver slept 1,800 times, now
  // ~700, and ran 10-20% faster). Several streams keep a sender busy, and
  // one wake-up per batch for all their ACKs costs it less (16 streams took
  // 10% more CPU per MiB without the second condition).
  const bool early = t.unacked_bytes >= t.rcvbuf.capacity() / 2 && rx_batch_receivers == 1 &&
                     link.peer_idle(t.via);
  if (!config.defer_acks || early) {
    send_ack(t, now);
    return;
  }
  // Held until flush(): a reply the application sends first carries it.
  t.ack_now = true;
  if (!t.ack_deferred) {
    t.ack_deferred = true;
    ack_pending.emplace_back(t.id, slots[t.id].generation);
  }
}

// --- input ---

void Stack::Impl::start_connection(Tcb& t, const TcpOptions& peer, Micros now) {
  t.quick_acks_left = config.quick_acks;
  uint32_t cap = mss_cap(t.local.addr.family);
  uint32_t peer_mss = peer.mss ? peer.mss : (t.local.addr.family == 4 ? 536 : 1220);
  t.mss = uint16_t(std::max(std::min(cap, peer_mss), kMinMss));
  t.rcv_mss = std::min<uint32_t>(536, cap);
  t.ws_ok = peer.window_scale >= 0;
  t.snd_wscale = t.ws_ok ? uint8_t(peer.window_scale) : 0;
  t.rcv_wscale = t.ws_ok ? our_window_shift() : 0;
  t.ts_ok = peer.has_timestamp;
  if (t.ts_ok) {
    t.ts_recent = peer.ts_val;
    t.ts_recent_age = now;
  }
  t.sack_ok = peer.sack_permitted;
  // What our SYN (or the SYN-ACK about to go) offered, unscaled.
  t.rcv_adv = t.rcv_nxt + std::min<uint32_t>(uint32_t(t.rcvbuf.free_space()), 65535);
}

void Stack::Impl::rtt_sample(Tcb& t, Micros r) {
  if (!t.rtt_valid) {
    t.srtt = r;
    t.rttvar = r / 2;
    t.rtt_valid = true;
  } else {
    Micros d = t.srtt > r ? t.srtt - r : r - t.srtt;
    t.rttvar = (3 * t.rttvar + d) / 4;
    t.srtt = (7 * t.srtt + r) / 8;
  }
  Micros rto = t.srtt + std::max<Micros>(1, 4 * t.rttvar);
  t.rto = std::clamp(rto, config.rto_min, config.rto_max);
}

void Stack::Impl::on_syn_sent(Tcb& t, const Segment& seg, Micros now) {
  const TcpHeader& h = seg.tcp;
  if (seg.has(kAck) && (seq_le(h.ack, t.iss) || seq_gt(h.ack, t.snd_max))) {
    reply_rst(seg);
    return;
  }
  if (seg.has(kRst)) {
    if (seg.has(kAck)) {
      ++counters.resets_in;
      fail(t, -ECONNREFUSED);
    }
    return;
  }
  if (!seg.has(kSyn)) return;
  t.irs = h.seq;
  t.rcv_nxt = h.seq + 1;
  publish_consumed(t);
  start_connection(t, h.options, now);
  t.snd_wnd = h.window;  // a SYN's window is never scaled
  t.max_snd_wnd = t.snd_wnd;
  t.snd_wl1 = h.seq;
  t.snd_wl2 = h.ack;
  if (!seg.has(kAck)) {  // simultaneous open
    t.state = TcpState::SynReceived;
    send_syn(t, now);
    return;
  }
  // RTT is timed in microseconds on the caller's clock (one segment at a
  // time, Karn's rule); the millisecond timestamp clock is too coarse for
  // the fabric's tens of microseconds, and serves PAWS.
  if (t.rtt_timing) {
    rtt_sample(t, now - t.rtt_start);
  } else if (!t.rtt_valid) {
    t.rto = config.rto_initial;
  }
  t.rtt_timing = false;
  t.snd_una = h.ack;
  t.state = t.fin_queued ? TcpState::FinWait1 : TcpState::Established;
  ++counters.connections_opened;
  t.syn_deadline = kNever;
  t.rtx_at = kNever;
  t.backoff = 0;
  t.cc.init(t.mss);
  arm_keepalive(t, now);
  emit(t.id, EventType::Connected);
  t.ack_now = true;
  // Data queued while connecting carries the ACK. Otherwise it goes at once
  // or, with defer_acks, at flush(): what the application writes on
  // 'connect' carries it then (one frame fewer per connection, and the peer
  // learns of the connection and its first bytes together). Until it lands
  // the peer has no connection to accept, so a reset sent meanwhile sends it
  // first (send_rst): an application that resets right after connecting
  // resets an accepted connection, as with the kernel.
  output(t, now);
  if (t.ack_now) t.handshake_ack_held = true;
}

void Stack::Impl::on_listen_segment(Listener& l, const Segment& seg, Micros now) {
  if (seg.has(kRst)) return;
  if (seg.has(kAck)) {
    reply_rst(seg);
    return;
  }
  if (!seg.has(kSyn)) return;
  if (l.pending.size() >= l.backlog || l.ready.size() >= l.backlog) return;  // client retries
  SocketId id = allocate_id();
  auto owned = std::make_unique<Tcb>(config.recv_buffer, config.send_buffer, &small_buffers);
  Tcb& t = *owned;
  slots[id].kind = SlotKind::Tcb;
  slots[id].tcb = std::move(owned);
  t.id = id;
  t.local = Endpoint{seg.dst, seg.tcp.dst_port};
  t.remote = Endpoint{seg.src, seg.tcp.src_port};
  t.via = seg.from;
  t.listener = l.id;
  t.state = TcpState::SynReceived;
  t.irs = seg.tcp.seq;
  t.rcv_nxt = seg.tcp.seq + 1;
  t.iss = make_isn(t.local, t.remote, now);
  t.snd_una = t.snd_sml = t.iss;
  t.ts_offset = ts_offset_for(t);
  t.snd_nxt = t.snd_max = t.iss + 1;
  t.sndbuf_seq = t.iss + 1;
  t.recover = t.iss;
  lend_send_memory(t);
  publish_consumed(t);
  start_connection(t, seg.tcp.options, now);
  t.snd_wnd = t.max_snd_wnd = seg.tcp.window;
  t.snd_wl1 = seg.tcp.seq;
  t.snd_wl2 = t.iss;
  t.rto = config.rto_initial;
  t.last_rx = now;
  table_insert(t);
  l.pending.push_back(id);
  send_syn(t, now);
  t.rtx_at = now + t.rto;
  reschedule(t);
}

void Stack::Impl::arm_keepalive(Tcb& t, Micros since) {
  if (t.keepalive && (t.state == TcpState::Established || t.state == TcpState::CloseWait)) {
    // Idle since `since` (the last segment received); a connection already
    // idle longer than that probes at once — but never at a time before the
    // latest `now` we were given (poll_at() must not lie in the past; found
    // by the fuzzer).
    t.keepalive_at = std::max(since + t.ka_idle, clock);
  } else {
    t.keepalive_at = kNever;
  }
}

void Stack::Impl::on_segment(Tcb& t, const Segment& seg, Micros now) {
  if (t.state == TcpState::SynSent) {
    on_syn_sent(t, seg, now);
    return;
  }
  if (t.state == TcpState::Closed || t.dead) return;
  const TcpHeader& h = seg.tcp;
  if (t.state == TcpState::SynReceived && seg.has(kSyn) && !seg.has(kAck) && h.seq == t.irs) {
    send_syn(t, now);  // our SYN-ACK was lost: the peer repeats its SYN
    return;
  }
  t.last_rx = now;
  t.ka_probes = 0;
  if (t.keepalive_at != kNever) arm_keepalive(t, now);

  // PAWS (RFC 7323 5.3).
  if (t.ts_ok && h.options.has_timestamp && !seg.has(kRst) &&
      seq_lt(h.options.ts_val, t.ts_recent) && now - t.ts_recent_age < kPawsIdle) {
    send_dupack(t, seg, now);
    return;
  }

  // Sequence acceptability (RFC 9293 3.10.7.4).
  uint32_t wnd = seq_gt(t.rcv_adv, t.rcv_nxt) ? t.rcv_adv - t.rcv_nxt : 0;
  uint32_t len = seg.seq_len();
  auto in_window = [&](uint32_t s) { return seq_ge(s, t.rcv_nxt) && seq_lt(s, t.rcv_nxt + wnd); };
  bool acceptable = len == 0 ? (wnd == 0 ? h.seq == t.rcv_nxt : in_window(h.seq))
                             : (wnd > 0 && (in_window(h.seq) || in_window(h.seq + len - 1)));
  bool ack_only = false;
  if (!acceptable) {
    if (wnd == 0 && h.seq == t.rcv_nxt && !seg.has(kSyn)) {
      ack_only = true;  // a zero window still takes ACKs and RSTs
      if (len) t.ack_now = true;
    } else {
      if (!seg.has(kRst)) {
        if (t.state == TcpState::TimeWait && seg.has(kFin)) t.linger_at = now + config.time_wait;
        send_dupack(t, seg, now);
      }
      return;
    }
  }

  if (seg.has(kRst)) {
    if (h.seq != t.rcv_nxt) {
      send_dupack(t, seg, now);  // RFC 5961 3.2 challenge ACK
      return;
    }
    ++counters.resets_in;
    if (t.state == TcpState::SynReceived && t.listener) {
      release_child(t);
    } else if (t.state == TcpState::TimeWait) {
      finish(t);
    } else {
      // As Linux's tcp_reset(): a reset after the peer's FIN (CLOSE_WAIT) is
      // EPIPE, e.g. our write into a connection the peer already closed.
      fail(t, t.state == TcpState::SynReceived ? -ECONNREFUSED
              : t.state == TcpState::CloseWait  ? -EPIPE
                                                : -ECONNRESET);
    }
    return;
  }
  if (seg.has(kSyn)) {
    send_dupack(t, seg, now);  // RFC 5961 4.2 challenge ACK
    return;
  }
  if (!seg.has(kAck)) return;

  if (t.state == TcpState::SynReceived) {
    if (!seq_gt(h.ack, t.snd_una) || seq_gt(h.ack, t.snd_max)) {
      reply_rst(seg);
      return;
    }
    t.state = t.fin_queued ? TcpState::FinWait1 : TcpState::Established;
    ++counters.connections_opened;
    t.snd_wnd = uint32_t(h.window) << t.snd_wscale;
    t.max_snd_wnd = t.snd_wnd;
    t.snd_wl1 = h.seq;
    t.snd_wl2 = h.ack;
    t.syn_deadline = kNever;
    t.cc.init(t.mss);
    arm_keepalive(t, now);
    if (t.listener) {
      child_established(t);
    } else {
      emit(t.id, EventType::Connected);
    }
  }

  if (!on_ack(t, seg, now)) {
    output(t, now);
    return;
  }

  // RFC 7323 4.3: remember the timestamp of the segment covering rcv_nxt.
  if (t.ts_ok && h.options.has_timestamp && seq_le(h.seq, t.rcv_nxt)) {
    t.ts_recent = h.options.ts_val;
    t.ts_recent_age = now;
  }

  // A zero window refuses data but still takes a bare FIN (as Linux does).
  if ((!ack_only || seg.payload_len == 0) && (seg.payload_len > 0 || seg.has(kFin))) {
    if (t.state == TcpState::Established || t.state == TcpState::FinWait1 ||
        t.state == TcpState::FinWait2) {
      on_data(t, seg, now);
      if (t.dead || t.state == TcpState::Closed) return;
    } else {
      t.ack_now = true;
    }
  }
  output(t, now);
}

bool Stack::Impl::on_ack(Tcb& t, const Segment& seg, Micros now) {
  const TcpHeader& h = seg.tcp;
  uint32_t ack = h.ack;
  if (seq_gt(ack, t.snd_max)) {
    t.ack_now = true;  // acks something never sent
    return false;
  }
  if (seq_lt(ack, t.snd_una - t.max_snd_wnd)) {
    t.ack_now = true;  // RFC 5961 5.2 challenge ACK
    return false;
  }
  uint32_t scaled_wnd = uint32_t(h.window) << t.snd_wscale;
  bool sacked_new = false;  // this ACK SACKed bytes not SACKed before
  if (t.sack_ok) {
    for (uint8_t i = 0; i < h.options.sack_count; ++i) {
      const SackBlock& b = h.options.sack[i];
      // Only blocks above the cumulative ACK and within what we sent count
      // (a D-SACK block, below it, is ignored).
      if (seq_lt(ack, b.left) && seq_lt(b.left, b.right) && seq_le(b.right, t.snd_max)) {
        sacked_new |= t.score.on_sack(b.left, b.right);
      }
    }
  }
  if (seq_gt(ack, t.snd_una)) {
    uint32_t acked = ack - t.snd_una;
    if (t.rtt_timing && seq_gt(ack, t.rtt_seq)) rtt_sample(t, now - t.rtt_start);
    if (t.rtt_timing && seq_gt(ack, t.rtt_seq)) t.rtt_timing = false;
    if (seq_gt(ack, t.sndbuf_seq)) {
      uint32_t n = std::min<uint32_t>(ack - t.sndbuf_seq, uint32_t(t.sndbuf.size()));
      if (tx_refs_out && t.sndbuf.frees_on_pop(n)) release_tx_refs();
      t.sndbuf.pop(n);
      note_send_level(t);
      t.sndbuf_seq += n;
    }
    t.snd_una = ack;
    if (seq_lt(t.snd_nxt, ack)) t.snd_nxt = ack;
    if (t.sack_ok) t.score.on_ack(ack);
    t.backoff = 0;
    if (t.in_recovery) {
      if (seq_ge(ack, t.recover)) {
        t.in_recovery = false;
        t.cc.on_recovery_exit(t.snd_max - t.snd_una, t.mss);
      } else if (t.sack_ok) {
        // RFC 6675 needs SACK blocks to call the next hole lost; NewReno's
        // partial-ACK rule (RFC 6582 3.2 step 5) still holds when they
        // went missing: the hole now at snd_una is lost (unless it was
        // resent already) and goes at once.
        if (t.score.mark_first_lost()) retransmit_lost(t, now, true, false);
      } else {
        t.cc.on_partial_ack(acked, t.mss);  // RFC 6582 3.2 step 5
        retransmit_first(t, now);
      }
    } else {
      t.cc.on_ack(acked, t.mss);
    }
    t.dupacks = 0;
    t.rtx_at = t.snd_una == t.snd_max ? kNever : now + t.rto;
    if (t.writable_armed && t.sndbuf.size() < send_limit()) {
      t.writable_armed = false;
      if (t.accepted && !t.app_closed) emit(t.id, EventType::Writable);
    }
    if (t.fin_queued && ack == t.data_end() + 1) {
      switch (t.state) {
        case TcpState::FinWait1:
          t.state = TcpState::FinWait2;
          if (t.app_closed) t.linger_at = now + kOrphanFinWait2;
          break;
        case TcpState::Closing:
          enter_time_wait(t, now);
          break;
        case TcpState::LastAck:
          finish(t);
          return false;
        default:
          break;
      }
    }
  } else if (t.sack_ok) {
    // Duplicate ACK as RFC 6675 2 counts them: one that SACKs new data,
    // whatever its window or payload (Linux changes its window in the
    // ACKs it sends for out-of-order data).
    if (ack == t.snd_una && sacked_new && t.snd_una != t.snd_max) {
      ++t.dupacks;
      if (t.dupacks >= Scoreboard::kDupThresh && !t.in_recovery) t.score.mark_first_lost();
    }
  } else if (ack == t.snd_una && seg.payload_len == 0 && !seg.has(kFin) &&
             scaled_wnd == t.snd_wnd && t.snd_wnd > 0 && t.snd_una != t.snd_max) {
    // Duplicate ACK (RFC 5681 2), NewReno recovery (RFC 6582).
    ++t.dupacks;
    if (t.dupacks == 3 && !t.in_recovery && seq_gt(ack, t.recover)) {
      t.in_recovery = true;
      t.recover = t.snd_max;
      t.cc.on_fast_retransmit(t.snd_max - t.snd_una, t.mss);
      t.rtt_timing = false;
      retransmit_first(t, now);
      t.rtx_at = now + t.rto;
    } else if (t.dupacks > 3 && t.in_recovery) {
      t.cc.on_recovery_dupack(t.mss);  // window inflation: one new segment out
    }
  }
  // Window update (RFC 9293 3.10.7.4, SND.WL1/SND.WL2).
  if (seq_lt(t.snd_wl1, h.seq) || (t.snd_wl1 == h.seq && seq_le(t.snd_wl2, ack))) {
    t.snd_wnd = scaled_wnd;
    t.snd_wl1 = h.seq;
    t.snd_wl2 = ack;
    if (t.snd_wnd > t.max_snd_wnd) t.max_snd_wnd = t.snd_wnd;
    if (t.snd_wnd > 0 && t.persist_at != kNever) {
      t.persist_at = kNever;
      t.persist_backoff = 0;
      // A refused window probe is sent again as ordinary data.
      if (t.rtx_at == kNever) t.snd_nxt = t.snd_una;
    }
  }
  // RFC 6675 4: a loss the scoreboard now shows starts recovery, once per
  // window (not again before everything outstanding at the last start, or
  // at the last timeout, is acknowledged).
  if (t.sack_ok && !t.score.empty()) {
    t.score.detect_losses();
    if (t.score.has_lost() && !t.in_recovery && seq_ge(t.snd_una, t.recover)) {
      enter_sack_recovery(t, now);
    }
  }
  return true;
}

void Stack::Impl::on_data(Tcb& t, const Segment& seg, Micros now) {
  uint32_t seq = seg.tcp.seq;
  size_t start = 0;  // of the bytes to take, in the segment's payload
  uint32_t n = uint32_t(seg.payload_len);
  bool fin = seg.has(kFin);
  if (seq_lt(seq, t.rcv_nxt)) {
    uint32_t d = t.rcv_nxt - seq;
    if (d >= n) {
      fin = fin && d == n;
      n = 0;
      t.ack_now = true;
    } else {
      start = d;
      n -= d;
    }
    seq = t.rcv_nxt;
  }
  if (t.app_closed && n > 0) {
    send_rst(t, now);  // new data nobody will ever read (Linux does the same)
    finish(t);
    return;
  }
  uint32_t off = seq - t.rcv_nxt;
  size_t room = t.rcvbuf.free_space();
  if (n > 0 && off + uint64_t(n) > room) {
    n = off >= room ? 0 : uint32_t(room - off);
    fin = false;
    t.ack_now = true;
  }
  bool readable = false;
  if (n > 0) {
    // The n bytes from `start` in the segment: one piece, or two when a
    // gathering link carried them from a send buffer that wrapped.
    // Direct receive: the next bytes of the stream, nothing older waiting
    // and nothing beyond them buffered out of order.
    uint32_t taken = 0;
    if (off == 0 && t.reader && t.accepted && !t.app_closed && t.rcvbuf.size() == 0 && t.ooo.empty()) {
      while (taken < n) {
        auto [p, len] = seg.bytes_at(start + taken);
        len = std::min<size_t>(len, n - taken);
        const size_t k = std::min(t.reader->take(t.id, p, len), len);
        taken += uint32_t(k);
        if (k < len) break;
      }
    }
    for (uint32_t done = taken; done < n;) {
      auto [p, len] = seg.bytes_at(start + done);
      len = std::min<size_t>(len, n - done);
      t.rcvbuf.write_at(off + (done - taken), p, len);  // what the reader took isn't buffered
      done += uint32_t(len);
    }
    if (n > t.rcv_mss) t.rcv_mss = std::min<uint32_t>(n, mss_cap(t.local.addr.family));
    if (off == 0) {
      bool had_holes = !t.ooo.empty();
      uint32_t end = t.ooo.advance(seq + n);
      t.rcvbuf.commit(end - t.rcv_nxt - taken);
      t.rcv_nxt = end;
      publish_consumed(t);
      t.unacked_bytes += n;
      if (t.rx_batch != rx_batch) {
        t.rx_batch = rx_batch;
        ++rx_batch_receivers;
      }
      const bool quick = t.quick_acks_left > 0;
      if (quick) --t.quick_acks_left;
      if (quick || had_holes || seg.has(kPsh) || t.unacked_bytes >= 2 * t.rcv_mss ||
          config.delayed_ack == 0) {
        t.ack_now = true;
      } else if (t.delack_at == kNever) {
        t.delack_at = now + config.delayed_ack;
      }
      readable = t.rcvbuf.size() > 0;
    } else {
      t.ooo.add(seq, seq + n);
      t.ack_now = true;  // out of order: duplicate ACK with SACK at once
    }
  }
  if (fin) {
    t.rcv_fin_pending = true;
    t.rcv_fin_seq = seq + n;
    t.ack_now = true;
  }
  if (readable && t.accepted && !t.app_closed) emit(t.id, EventType::Readable);
  if (t.rcv_fin_pending && t.rcv_nxt == t.rcv_fin_seq) apply_fin(t, now);
}

void Stack::Impl::apply_fin(Tcb& t, Micros now) {
  t.rcv_fin_pending = false;
  t.rcv_nxt += 1;
  t.fin_received = true;
  t.ack_now = true;
  switch (t.state) {
    case TcpState::Established:
      t.state = TcpState::CloseWait;
      break;
    case TcpState::FinWait1:
      t.state = TcpState::Closing;
      break;
    case TcpState::FinWait2:
      enter_time_wait(t, now);
      break;
    default:
      break;
  }
  if (t.accepted && !t.app_closed && t.rcvbuf.size() == 0 && !t.eof_reported) {
    t.eof_reported = true;
    emit(t.id, EventType::PeerClosed);
  }
}

void Stack::Impl::enter_time_wait(Tcb& t, Micros now) {
  t.state = TcpState::TimeWait;
  t.rtx_at = t.persist_at = t.keepalive_at = kNever;
  t.linger_at = now + config.time_wait;
}

void Stack::Impl::recved(Tcb& t, Micros now) {
  if (t.state != TcpState::Established && t.state != TcpState::FinWait1 &&
      t.state != TcpState::FinWait2) {
    return;
  }
  uint32_t scale = t.rcv_wscale;
  uint32_t w = std::min<uint32_t>(uint32_t(t.rcvbuf.free_space()) >> scale, 65535);
  uint32_t edge = t.rcv_nxt + (w << scale);
  if (!seq_gt(edge, t.rcv_adv)) return;
  uint32_t grown = edge - t.rcv_adv;
  uint32_t threshold = std::min<uint32_t>(uint32_t(t.rcvbuf.capacity() / 2), 2 * t.rcv_mss);
  // lwIP tcp_recved: window update. Held with the ACKs under defer_acks:
  // the application reads, then usually answers (the first read after a
  // SYN-ACK's unscaled window always opens it this far).
  if (grown >= threshold) ack_or_hold(t, now);
}

// --- timers ---

void Stack::Impl::timers(Tcb& t, Micros now) {
  if (t.dead || t.state == TcpState::Closed) return;
  if (t.syn_deadline <= now) {
    t.syn_deadline = kNever;
    if (t.state == TcpState::SynSent || t.state == TcpState::SynReceived) {
      fail(t, -ETIMEDOUT);
      return;
    }
  }
  if (t.linger_at <= now) {
    t.linger_at = kNever;
    finish(t);  // TIME-WAIT over, or an orphan gave up in FIN-WAIT-2
    return;
  }
  if (t.rtx_at <= now) {
    on_rto(t, now);
    if (t.dead || t.state == TcpState::Closed) return;
  }
  if (t.persist_at <= now) {
    on_persist(t, now);
    if (t.dead || t.state == TcpState::Closed) return;
  }
  if (t.delack_at <= now) {
    t.delack_at = kNever;
    if (t.synchronized()) send_ack(t, now);
  }
  if (t.keepalive_at <= now) on_keepalive(t, now);
}

void Stack::Impl::on_rto(Tcb& t, Micros now) {
  t.rtx_at = kNever;
  if (t.state == TcpState::SynSent || t.state == TcpState::SynReceived) {
    if (t.state == TcpState::SynReceived && t.listener && t.backoff >= kSynAckRetries) {
      release_child(t);
      return;
    }
    ++t.backoff;
    t.rto = std::min(t.rto * 2, config.rto_max);
    ++t.retransmits;
    ++counters.segments_retransmitted;
    send_syn(t, now);
    t.rtx_at = now + t.rto;
    return;
  }
  if (t.snd_una == t.snd_max) {
    output(t, now);  // nothing outstanding: the link was full, try again
    return;
  }
  if (t.snd_wnd == 0 && t.snd_max - t.snd_una <= 1 && seq_lt(t.snd_una, t.data_end())) {
    // Only a window probe is outstanding: that is the persist timer's job.
    t.persist_at = now + std::min<Micros>(t.rto, config.rto_max);
    return;
  }
  if (t.backoff >= kMaxRetries) {
    fail(t, -ETIMEDOUT);
    return;
  }
  ++counters.retransmission_timeouts;
  t.cc.on_timeout(t.snd_max - t.snd_una, t.mss, t.backoff == 0);
  ++t.backoff;
  t.rto = std::min(t.rto * 2, config.rto_max);
  t.in_recovery = false;
  t.recover = t.snd_max;
  t.dupacks = 0;
  t.rtt_timing = false;
  if (t.sack_ok && !t.score.empty() && t.score.end() == t.snd_max) {
    // RFC 6675 5.1: everything not SACKed is lost and goes again in slow
    // start, lost segments first. SACK marks survive a first timeout; a
    // repeated one forgets them (the receiver may renege, RFC 2018 8).
    t.score.mark_all_lost(t.backoff > 1);
    retransmit_lost(t, now, true, false);
  } else {
    t.score.clear();  // (a scoreboard missing segments rebuilds as they go again)
    t.snd_nxt = t.snd_una;  // go back N
    retransmit_first(t, now);
  }
  t.rtx_at = now + t.rto;
}

void Stack::Impl::on_persist(Tcb& t, Micros now) {
  t.persist_at = kNever;
  if (!t.synchronized() || t.state == TcpState::TimeWait) return;
  uint32_t avail = seq_lt(t.snd_una, t.data_end()) ? t.data_end() - t.snd_una : 0;
  if (avail == 0) return;
  if (t.snd_wnd > 0 && t.flight() == 0) {
    // Override sender SWS avoidance: send what the window takes.
    uint32_t len = std::min({t.unsent(), t.snd_wnd, data_room(t)});
    if (len && transmit(t, t.snd_nxt, kAck | kPsh, len, now)) {
      t.snd_nxt += len;
      if (seq_gt(t.snd_nxt, t.snd_max)) t.snd_max = t.snd_nxt;
      if (t.rtx_at == kNever) t.rtx_at = now + t.rto;
    }
    return;
  }
  // A peer that answers probes may keep its window shut forever (RFC 9293
  // 3.8.6.1); one that stopped answering is gone (Linux tcp_probe_timer).
  if (t.persist_backoff >= kMaxRetries && now - t.last_rx > config.rto_max) {
    fail(t, -ETIMEDOUT);
    return;
  }
  // Zero-window probe: one byte beyond the window.
  if (transmit(t, t.snd_una, kAck, 1, now)) {
    if (seq_lt(t.snd_nxt, t.snd_una + 1)) t.snd_nxt = t.snd_una + 1;
    if (seq_lt(t.snd_max, t.snd_nxt)) t.snd_max = t.snd_nxt;
  }
  ++t.persist_backoff;
  t.persist_at =
      now + std::min<Micros>(t.rto << std::min<uint32_t>(t.persist_backoff, 20), config.rto_max);
}

void Stack::Impl::on_keepalive(Tcb& t, Micros now) {
  t.keepalive_at = kNever;
  if (!t.keepalive ||
      (t.state != TcpState::Established && t.state != TcpState::CloseWait)) {
    return;
  }
  if (t.snd_una != t.snd_max) {
    t.keepalive_at = now + t.ka_interval;  // the retransmission timer is watching
    return;
  }
  if (t.ka_probes == 0 && now - t.last_rx < t.ka_idle) {
    t.keepalive_at = t.last_rx + t.ka_idle;
    return;
  }
  if (t.ka_probes >= t.ka_count) {
    fail(t, -ETIMEDOUT);
    return;
  }
  transmit(t, t.snd_una - 1, kAck, 0, now);  // RFC 1122 4.2.3.6: elicits an ACK
  ++t.ka_probes;
  t.keepalive_at = now + t.ka_interval;
}

}  // namespace sidestep::stack
