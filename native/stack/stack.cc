// Stack: the public API over Stack::Impl — socket table, demux by 4-tuple and
// by listening endpoint, listeners and their queues, the event queue, timers.
#include "stack.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "stack_impl.h"

namespace sidestep::stack {

using namespace wire;

// --- small public types ---

IpAddr IpAddr::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddr r;
  r.family = 4;
  r.bytes[0] = a;
  r.bytes[1] = b;
  r.bytes[2] = c;
  r.bytes[3] = d;
  return r;
}

IpAddr IpAddr::v4_any() {
  IpAddr r;
  r.family = 4;
  return r;
}

IpAddr IpAddr::v6_any() {
  IpAddr r;
  r.family = 6;
  return r;
}

bool IpAddr::is_unspecified() const {
  size_t n = family == 4 ? 4 : 16;
  for (size_t i = 0; i < n; ++i) {
    if (bytes[i]) return false;
  }
  return true;
}

bool IpAddr::operator==(const IpAddr& o) const {
  if (family != o.family) return false;
  return std::memcmp(bytes, o.bytes, family == 4 ? 4 : 16) == 0;
}

const char* tcp_state_name(TcpState s) {
  switch (s) {
    case TcpState::Closed: return "CLOSED";
    case TcpState::Listen: return "LISTEN";
    case TcpState::SynSent: return "SYN_SENT";
    case TcpState::SynReceived: return "SYN_RECEIVED";
    case TcpState::Established: return "ESTABLISHED";
    case TcpState::FinWait1: return "FIN_WAIT_1";
    case TcpState::FinWait2: return "FIN_WAIT_2";
    case TcpState::CloseWait: return "CLOSE_WAIT";
    case TcpState::Closing: return "CLOSING";
    case TcpState::LastAck: return "LAST_ACK";
    case TcpState::TimeWait: return "TIME_WAIT";
  }
  return "?";
}

// --- hashing ---

namespace {

size_t put_addr(uint8_t* p, const IpAddr& a) {
  p[0] = a.family;
  std::memcpy(p + 1, a.bytes, 16);
  return 17;
}

}  // namespace

size_t KeyedHash::operator()(const TupleKey& k) const {
  uint8_t b[38];
  size_t n = put_addr(b, k.local);
  n += put_addr(b + n, k.remote);
  store16(b + n, k.local_port);
  store16(b + n + 2, k.remote_port);
  return size_t(siphash(key, b, n + 4));
}

size_t KeyedHash::operator()(const ListenKey& k) const {
  uint8_t b[19];
  size_t n = put_addr(b, k.addr);
  store16(b + n, k.port);
  return size_t(siphash(key, b, n + 2));
}

// --- Impl: sockets ---

Stack::Impl::Impl(const Config& c, Link& l)
    : config(c),
      link(l),
      gather(!c.checksums && l.gathers()),
      connections(64, KeyedHash{hash_key}),
      listeners(16, KeyedHash{hash_key}) {
  // The demux key derives from the ISN secret: flooding one hash bucket
  // needs the secret.
  uint8_t tag[8] = {'d', 'e', 'm', 'u', 'x', 0, 0, 0};
  uint64_t a = siphash(config.isn_secret, tag, 8);
  tag[7] = 1;
  uint64_t b = siphash(config.isn_secret, tag, 8);
  std::memcpy(hash_key, &a, 8);
  std::memcpy(hash_key + 8, &b, 8);
  if (config.mtu < 256) config.mtu = 256;
  config.recv_buffer = std::clamp<uint32_t>(config.recv_buffer, 1024, 1u << 30);
  if (config.send_buffer == 0) config.send_buffer = 1;
  if (config.rto_min == 0) config.rto_min = 1;
  if (config.rto_max < config.rto_min) config.rto_max = config.rto_min;
  slots.resize(1);
}

SocketId Stack::Impl::allocate_id() {
  SocketId id;
  if (!free_ids.empty()) {
    id = free_ids.back();
    free_ids.pop_back();
  } else {
    slots.emplace_back();
    id = SocketId(slots.size() - 1);
  }
  ++slots[id].generation;
  return id;
}

void Stack::Impl::reschedule(Tcb& t) {
#ifdef SIDESTEP_CHECK_INVARIANTS  // fuzz builds: after anything that touched t
  if (!t.score.consistent(t.snd_una, t.snd_max)) std::abort();
#endif
  // Only a deadline that moved earlier needs a new entry; one that moved
  // later (an RTO restarted by every ACK) is corrected when its entry reaches
  // the top, so the heap stays small under load.
  Micros d = t.dead ? kNever : t.next_deadline();
  if (d >= t.scheduled_at) return;
  t.scheduled_at = d;
  timer_heap.push_back(TimerEntry{d, t.id, slots[t.id].generation});
  std::push_heap(timer_heap.begin(), timer_heap.end(), std::greater<>());
}

const TimerEntry* Stack::Impl::next_timer() const {
  auto pop = [this] {
    std::pop_heap(timer_heap.begin(), timer_heap.end(), std::greater<>());
    timer_heap.pop_back();
  };
  while (!timer_heap.empty()) {
    TimerEntry e = timer_heap.front();
    const Slot& s = slots[e.id];
    if (s.kind != SlotKind::Tcb || s.generation != e.generation || s.tcb->dead ||
        s.tcb->scheduled_at != e.at) {
      pop();  // stale
      continue;
    }
    Tcb& t = *s.tcb;
    Micros d = t.next_deadline();
    if (d == e.at) return &timer_heap.front();
    pop();  // the deadline moved later (or went away): re-file it
    t.scheduled_at = d;
    if (d != kNever) {
      timer_heap.push_back(TimerEntry{d, e.id, e.generation});
      std::push_heap(timer_heap.begin(), timer_heap.end(), std::greater<>());
    }
  }
  return nullptr;
}

Tcb* Stack::Impl::tcb(SocketId s) const {
  if (s == 0 || s >= slots.size() || slots[s].kind != SlotKind::Tcb) return nullptr;
  return slots[s].tcb.get();
}

Listener* Stack::Impl::listener(SocketId s) const {
  if (s == 0 || s >= slots.size() || slots[s].kind != SlotKind::Listener) return nullptr;
  return slots[s].listener.get();
}

TupleKey Stack::Impl::key_of(const Tcb& t) const {
  return TupleKey{t.local.addr, t.remote.addr, t.local.port, t.remote.port};
}

Tcb* Stack::Impl::demux(const TupleKey& k) {
  if (Tcb* t = tcb(last_demux); t && t->in_table && key_of(*t) == k) return t;
  auto it = connections.find(k);
  if (it == connections.end()) return nullptr;
  last_demux = it->second;
  return tcb(it->second);
}

void Stack::Impl::table_insert(Tcb& t) {
  connections[key_of(t)] = t.id;
  t.in_table = true;
}

void Stack::Impl::table_remove(Tcb& t) {
  if (!t.in_table) return;
  connections.erase(key_of(t));
  t.in_table = false;
}

void Stack::Impl::emit(SocketId s, EventType type, int error) {
  uint8_t bit = uint8_t(1u << unsigned(type));
  bool coalesce = type == EventType::Readable || type == EventType::Writable ||
                  type == EventType::Acceptable;
  if (coalesce) {
    if (slots[s].queued_events & bit) return;
    slots[s].queued_events |= bit;
  }
  events.push_back(Event{type, s, error});
}

void Stack::Impl::finish(Tcb& t) {
  if (t.dead) return;
  t.state = TcpState::Closed;
  t.rtx_at = t.persist_at = t.delack_at = kNever;
  t.keepalive_at = t.linger_at = t.syn_deadline = kNever;
  table_remove(t);
  if (t.listener) {
    if (Listener* l = listener(t.listener)) {
      auto& p = l->pending;
      p.erase(std::remove(p.begin(), p.end(), t.id), p.end());
      auto& r = l->ready;
      r.erase(std::remove(r.begin(), r.end(), t.id), r.end());
    }
    t.listener = 0;
  }
  if (!t.accepted || t.app_closed) {
    t.dead = true;
    reap.push_back(t.id);
    if (t.accepted) emit(t.id, EventType::Closed);
  }
  // Otherwise the app still holds the id: close() frees it.
}

void Stack::Impl::fail(Tcb& t, int error) {
  if (t.dead) return;
  if (t.accepted && !t.app_closed && t.state != TcpState::Closed) {
    emit(t.id, EventType::Error, error);
  } else if (!t.accepted && t.listener && t.synchronized()) {
    // Established but not accepted yet: as on Linux, it stays in the accept
    // queue, failed; accept() hands it over and its Error follows. (A peer
    // that connects and resets at once has an accepted connection reset,
    // whether or not the listener's application got to accept it first.)
    Listener* l = listener(t.listener);
    if (l && std::find(l->ready.begin(), l->ready.end(), t.id) != l->ready.end()) {
      t.failed_before_accept = error;
      t.state = TcpState::Closed;
      t.rtx_at = t.persist_at = t.delack_at = kNever;
      t.keepalive_at = t.linger_at = t.syn_deadline = kNever;
      table_remove(t);
      return;
    }
  }
  finish(t);
}

void Stack::Impl::release_child(Tcb& t) { finish(t); }

void Stack::Impl::reap_dead() {
  for (SocketId id : reap) {
    Slot& s = slots[id];
    if (s.kind != SlotKind::Tcb) continue;
    bool announced = s.tcb->accepted;  // a Closed event is queued: free the id when drained
    if (tx_refs_out && s.tcb->sndbuf.allocated()) release_tx_refs();
    if (s.tcb->send_memory.ring) link.send_memory_release(s.tcb->via, s.tcb->send_memory);
    if (s.tcb->streaming) --streaming;
    s.tcb.reset();
    if (announced) {
      s.kind = SlotKind::Reserved;
    } else {
      s.kind = SlotKind::Free;
      s.queued_events = 0;
      free_ids.push_back(id);
    }
  }
  reap.clear();
}

void Stack::Impl::child_established(Tcb& t) {
  Listener* l = listener(t.listener);
  if (!l) return;
  auto& p = l->pending;
  p.erase(std::remove(p.begin(), p.end(), t.id), p.end());
  l->ready.push_back(t.id);
  emit(l->id, EventType::Acceptable);
}

void Stack::Impl::close_listener(Listener& l, Micros now) {
  std::vector<SocketId> children(l.pending.begin(), l.pending.end());
  children.insert(children.end(), l.ready.begin(), l.ready.end());
  for (SocketId id : children) {
    if (Tcb* t = tcb(id)) {
      if (t->state != TcpState::Closed) send_rst(*t, now);
      finish(*t);
    }
  }
  listeners.erase(ListenKey{l.local.addr, l.local.port});
  SocketId id = l.id;
  slots[id].kind = SlotKind::Reserved;
  slots[id].listener.reset();
  emit(id, EventType::Closed);
}

bool Stack::Impl::is_local(const IpAddr& a) const {
  if (config.accept_any_address) return true;
  return std::find(addresses.begin(), addresses.end(), a) != addresses.end();
}

uint32_t Stack::Impl::make_isn(const Endpoint& local, const Endpoint& remote, Micros now) const {
  // RFC 6528: ISN = M + F(4-tuple, secret), M a 4 microsecond clock.
  uint8_t b[38];
  size_t n = put_addr(b, local.addr);
  n += put_addr(b + n, remote.addr);
  store16(b + n, local.port);
  store16(b + n + 2, remote.port);
  return uint32_t(siphash(config.isn_secret, b, n + 4)) + uint32_t(now / 4);
}

uint16_t Stack::Impl::mss_cap(uint8_t family) const {
  // The IPv4 total length and the IPv6 payload length are 16-bit fields.
  if (family == 4) return uint16_t(std::min<uint32_t>(config.mtu, 65535) - 40);
  return uint16_t(std::min<uint32_t>(config.mtu - 40, 65535) - 20);
}

// --- Stack ---

Stack::Stack(const Config& config, Link& link) : impl_(std::make_unique<Impl>(config, link)) {}
// The send buffers go with us: a gathering link must not keep pointers.
Stack::~Stack() { impl_->release_tx_refs(); }

void Stack::add_address(const IpAddr& addr) {
  auto& a = impl_->addresses;
  if (std::find(a.begin(), a.end(), addr) == a.end()) a.push_back(addr);
}

namespace {
// Addresses no TCP segment may carry: unspecified, broadcast or multicast
// (TCP is unicast only: never answer or reset those), or IPv4-mapped in an
// IPv6 header (::ffff:0:0/96, RFC 4291 2.5.5.2; Linux drops such SYNs too:
// it would alias an IPv4 peer).
bool unusable_addresses(const IpHeader& ip) {
  auto multi = [](const IpAddr& a) {
    return a.family == 4 ? a.bytes[0] >= 224 : a.bytes[0] == 0xff;
  };
  auto v4_mapped = [](const IpAddr& a) {
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return a.family == 6 && std::memcmp(a.bytes, prefix, 12) == 0;
  };
  return ip.src.is_unspecified() || ip.dst.is_unspecified() || multi(ip.src) || multi(ip.dst) ||
         v4_mapped(ip.src) || v4_mapped(ip.dst);
}

// TCP headers no segment may carry: port 0, a SYN with RST or FIN.
bool unusable_tcp(const TcpHeader& h) {
  return h.src_port == 0 || h.dst_port == 0 || ((h.flags & kSyn) && (h.flags & (kRst | kFin)));
}
}  // namespace

void Stack::input(LinkAddr from, const uint8_t* packet, size_t len, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  ++m.counters.packets_in;
  IpHeader ip;
  switch (parse_ip(packet, len, m.config.checksums, &ip)) {
    case IpParse::Malformed:
      ++m.counters.packets_malformed;
      return;
    case IpParse::NotTcp:
      return;
    case IpParse::Ok:
      break;
  }
  if (unusable_addresses(ip)) {
    ++m.counters.packets_malformed;
    return;
  }
  if (!m.is_local(ip.dst)) return;
  const uint8_t* tcp = packet + ip.header_len;
  if (m.config.checksums && !tcp_checksum_ok(tcp, ip.payload_len, ip.src, ip.dst)) {
    ++m.counters.packets_malformed;
    return;
  }
  Segment seg;
  seg.from = from;
  seg.src = ip.src;
  seg.dst = ip.dst;
  if (!parse_tcp(tcp, ip.payload_len, &seg.tcp) || unusable_tcp(seg.tcp)) {
    ++m.counters.packets_malformed;
    return;
  }
  seg.payload = tcp + seg.tcp.header_len;
  seg.payload_len = ip.payload_len - seg.tcp.header_len;
  m.deliver(seg, now);
}

void Stack::input(LinkAddr from, const uint8_t* header, size_t header_len, const Payload& payload,
                  Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  ++m.counters.packets_in;
  // Headers from a local copy (the link's memory may change under us), sized
  // so that parsing never reads past what the link gave.
  uint8_t h[128] = {};
  IpHeader ip;
  Segment seg;
  const size_t total = header_len + payload.size();
  bool ok = !m.config.checksums && header_len <= sizeof h && total >= header_len;
  if (ok) {
    std::memcpy(h, header, header_len);
    ok = parse_ip(h, total, false, &ip) == IpParse::Ok && ip.header_len + kTcpHeaderLen <= header_len &&
         ip.payload_len == total - ip.header_len &&
         parse_tcp(h + ip.header_len, header_len - ip.header_len, &seg.tcp) &&
         seg.tcp.header_len == header_len - ip.header_len;
  }
  if (!ok || unusable_addresses(ip) || unusable_tcp(seg.tcp)) {
    ++m.counters.packets_malformed;
    return;
  }
  if (!m.is_local(ip.dst)) return;
  seg.from = from;
  seg.src = ip.src;
  seg.dst = ip.dst;
  seg.payload = payload.data[0];
  seg.payload_len = payload.size();
  seg.payload2 = payload.data[1];
  seg.payload2_len = payload.len[1];
  m.deliver(seg, now);
}

void Stack::Impl::deliver(Segment& seg, Micros now) {
  Impl& m = *this;
  const LinkAddr from = seg.from;
  m.counters.bytes_in += seg.payload_len;

  if (Tcb* found = m.demux(TupleKey{seg.dst, seg.src, seg.tcp.dst_port, seg.tcp.src_port})) {
    Tcb& t = *found;
    if (t.via != from) return;  // another link cannot speak for this peer
    // RFC 1122 4.2.2.13 / RFC 6191: a new SYN may end TIME-WAIT when its
    // sequence number or its timestamp is newer than the old connection's.
    const TcpOptions& o = seg.tcp.options;
    bool reuse = t.state == TcpState::TimeWait && seg.has(kSyn) && !seg.has(kAck) &&
                 (seq_gt(seg.tcp.seq, t.rcv_nxt) ||
                  (t.ts_ok && o.has_timestamp && seq_gt(o.ts_val, t.ts_recent)));
    if (!reuse) {
      m.on_segment(t, seg, now);
      m.reschedule(t);
      m.reap_dead();
      return;
    }
    m.finish(t);
  }
  Listener* l = nullptr;
  auto find = [&](const IpAddr& a) -> Listener* {
    auto li = m.listeners.find(ListenKey{a, seg.tcp.dst_port});
    return li == m.listeners.end() ? nullptr : m.listener(li->second);
  };
  l = find(seg.dst);
  if (!l) l = find(seg.dst.family == 4 ? IpAddr::v4_any() : IpAddr::v6_any());
  if (!l && seg.dst.family == 4) {
    l = find(IpAddr::v6_any());
    if (l && l->v6only) l = nullptr;
  }
  if (l) {
    m.on_listen_segment(*l, seg, now);
  } else {
    ++m.counters.packets_no_socket;
    m.reply_rst(seg);
  }
  m.reap_dead();
}

void Stack::poll(Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  while (const TimerEntry* e = m.next_timer()) {
    if (e->at > now) break;
    Tcb& t = *m.slots[e->id].tcb;
    std::pop_heap(m.timer_heap.begin(), m.timer_heap.end(), std::greater<>());
    m.timer_heap.pop_back();
    t.scheduled_at = kNever;
    m.timers(t, now);
    m.reschedule(t);
  }
  m.reap_dead();
}

void Stack::flush(Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  ++m.rx_batch;
  m.rx_batch_receivers = 0;
  std::vector<std::pair<SocketId, uint32_t>> pending;
  pending.swap(m.ack_pending);
  for (auto [id, generation] : pending) {
    if (id >= m.slots.size() || m.slots[id].generation != generation) continue;
    Tcb* t = m.tcb(id);
    if (!t) continue;
    t->ack_deferred = false;
    // A data segment since input() carried the ACK already: nothing to do.
    if (!t->ack_now || t->dead || t->state == TcpState::Closed) continue;
    m.send_ack(*t, now);
    m.reschedule(*t);
  }
  m.reap_dead();
}

bool Stack::acks_held() const { return !impl_->ack_pending.empty(); }

Micros Stack::poll_at() const {
  const TimerEntry* e = impl_->next_timer();
  return e ? e->at : kNever;
}

bool Stack::events_pending() const { return impl_->events_head < impl_->events.size(); }
size_t Stack::events_queued() const { return impl_->events.size(); }
size_t Stack::events_taken() const { return impl_->events_head; }

void Stack::skip_unwanted_events() {
  Impl& m = *impl_;
  while (m.events_head < m.events.size()) {
    const Event& e = m.events[m.events_head];
    Slot& s = m.slots[e.socket];
    // Nothing but Closed is told about a socket the app gave up.
    const bool unwanted = e.type != EventType::Closed &&
                          (s.kind == SlotKind::Reserved || s.kind == SlotKind::Free ||
                           (s.kind == SlotKind::Tcb && s.tcb->app_closed));
    if (!unwanted) return;
    s.queued_events &= uint8_t(~(1u << unsigned(e.type)));
    ++m.events_head;
  }
}

bool Stack::next_event(Event* out) {
  Impl& m = *impl_;
  skip_unwanted_events();
  if (m.events_head < m.events.size()) {
    Event e = m.events[m.events_head++];
    Slot& s = m.slots[e.socket];
    s.queued_events &= uint8_t(~(1u << unsigned(e.type)));
    if (e.type == EventType::Closed) {
      s.kind = SlotKind::Free;
      s.queued_events = 0;
      m.free_ids.push_back(e.socket);
    }
    *out = e;
    return true;
  }
  m.events.clear();
  m.events_head = 0;
  return false;
}

int Stack::listen(const Endpoint& local, int backlog, bool v6only) {
  Impl& m = *impl_;
  if (local.addr.family != 4 && local.addr.family != 6) return -EAFNOSUPPORT;
  ListenKey k{local.addr, local.port};
  if (m.listeners.count(k)) return -EADDRINUSE;
  SocketId id = m.allocate_id();
  auto l = std::make_unique<Listener>();
  l->id = id;
  l->local = local;
  l->v6only = v6only;
  l->backlog = size_t(std::clamp(backlog, 1, 65535));
  m.slots[id].kind = SlotKind::Listener;
  m.slots[id].listener = std::move(l);
  m.listeners[k] = id;
  return int(id);
}

int Stack::accept(SocketId s) {
  Impl& m = *impl_;
  Listener* l = m.listener(s);
  if (!l) return -EINVAL;
  while (!l->ready.empty()) {
    SocketId id = l->ready.front();
    l->ready.pop_front();
    Tcb* t = m.tcb(id);
    if (!t || t->dead) continue;
    t->accepted = true;
    t->listener = 0;
    // Events held back while nobody knew the id.
    if (t->rcvbuf.size()) m.emit(id, EventType::Readable);
    if (t->fin_received && t->rcvbuf.size() == 0 && !t->eof_reported) {
      t->eof_reported = true;
      m.emit(id, EventType::PeerClosed);
    }
    if (t->failed_before_accept) m.emit(id, EventType::Error, t->failed_before_accept);
    return int(id);
  }
  return -EAGAIN;
}

bool Stack::can_connect(const Endpoint& local, const Endpoint& remote) const {
  const Impl& m = *impl_;
  auto it = m.connections.find(TupleKey{local.addr, remote.addr, local.port, remote.port});
  if (it == m.connections.end()) return true;
  const Tcb* old = m.tcb(it->second);
  return old && old->state == TcpState::TimeWait && old->app_closed;
}

int Stack::connect(const Endpoint& local, const Endpoint& remote, LinkAddr via, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  if ((local.addr.family != 4 && local.addr.family != 6) ||
      local.addr.family != remote.addr.family || local.addr.is_unspecified() ||
      remote.addr.is_unspecified() || local.port == 0 || remote.port == 0) {
    return -EINVAL;
  }
  TupleKey k{local.addr, remote.addr, local.port, remote.port};
  auto it = m.connections.find(k);
  if (it != m.connections.end()) {
    Tcb* old = m.tcb(it->second);
    if (!old || old->state != TcpState::TimeWait || !old->app_closed) return -EADDRINUSE;
    m.finish(*old);  // reuse a TIME-WAIT 4-tuple, as Linux does with timestamps
    m.reap_dead();
  }
  SocketId id = m.allocate_id();
  auto owned = std::make_unique<Tcb>(m.config.recv_buffer, m.config.send_buffer, &m.small_buffers);
  Tcb& t = *owned;
  m.slots[id].kind = SlotKind::Tcb;
  m.slots[id].tcb = std::move(owned);
  t.id = id;
  t.local = local;
  t.remote = remote;
  t.via = via;
  t.accepted = true;
  t.state = TcpState::SynSent;
  t.iss = m.make_isn(local, remote, now);
  t.snd_sml = t.iss;
  t.ts_offset = m.ts_offset_for(t);
  t.snd_una = t.iss;
  t.snd_nxt = t.snd_max = t.iss + 1;
  t.sndbuf_seq = t.iss + 1;
  t.recover = t.iss;
  m.lend_send_memory(t);
  t.rcv_wscale = m.our_window_shift();
  t.mss = m.mss_cap(local.addr.family);
  t.rto = m.config.rto_initial;
  t.syn_deadline = now + m.config.syn_timeout;
  t.last_rx = now;
  m.table_insert(t);
  m.send_syn(t, now);
  t.rtx_at = now + t.rto;
  m.reschedule(t);
  return int(id);
}

long Stack::send(SocketId s, const uint8_t* data, size_t len, Micros now, bool more) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->app_closed) return -EBADF;
  if (t->fin_queued) return -EPIPE;
  if (t->orphaned) {
    // Bytes for a peer that is gone: its kernel would take this write and
    // answer it with an RST (after its FIN: EPIPE on the next write).
    m.fail(*t, t->fin_received ? -EPIPE : -ECONNRESET);
    m.reap_dead();
    return long(len);
  }
  switch (t->state) {
    case TcpState::SynSent:
    case TcpState::SynReceived:
    case TcpState::Established:
    case TcpState::CloseWait:
      break;
    default:
      return -EPIPE;
  }
  if (len == 0) return 0;
  if (m.tx_refs_out && t->sndbuf.moves_on_push(len)) m.release_tx_refs();
  const size_t took = t->sndbuf.push(data, len);
  m.note_send_level(*t);
  if (t->sndbuf.size() >= m.send_limit() || t->sndbuf.full()) t->writable_armed = true;
  if (more && took == len) return long(took);
  m.output(*t, now);
  m.keep_unsent_lent(*t);
  m.reschedule(*t);
  m.reap_dead();
  return long(took);
}

void Stack::push(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->orphaned) return;
  m.output(*t, now);
  m.keep_unsent_lent(*t);
  m.reschedule(*t);
  m.reap_dead();
}

size_t Stack::send_queued(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t ? t->sndbuf.size() : 0;
}

bool Stack::send_blocked(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t && t->writable_armed;
}

bool Stack::send_full(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t && t->sndbuf.full();
}

void Stack::link_ready(Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  std::vector<std::pair<SocketId, uint32_t>> waiters;
  waiters.swap(m.link_waiters);
  for (auto [id, generation] : waiters) {
    if (id >= m.slots.size() || m.slots[id].generation != generation) continue;
    Tcb* t = m.tcb(id);
    if (!t || t->dead) continue;
    t->link_waiting = false;
    if (t->state == TcpState::SynSent || t->state == TcpState::SynReceived)
      m.send_syn(*t, now);
    else
      m.output(*t, now);
    m.reschedule(*t);
  }
  m.reap_dead();
}

bool Stack::link_waiting() const { return !impl_->link_waiters.empty(); }

size_t Stack::recv(SocketId s, uint8_t* out, size_t cap, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t) return 0;
  size_t n = t->rcvbuf.read(out, cap);
  if (n) {
    Impl::publish_consumed(*t);
    m.recved(*t, now);
  }
  if (t->rcvbuf.size() == 0 && t->ooo.empty()) t->rcvbuf.release_if_idle();
  if (t->fin_received && t->rcvbuf.size() == 0 && !t->eof_reported && !t->app_closed) {
    t->eof_reported = true;
    m.emit(s, EventType::PeerClosed);
  }
  m.reschedule(*t);
  m.reap_dead();
  return n;
}

size_t Stack::recv_available(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t ? t->rcvbuf.size() : 0;
}

int Stack::shutdown_write(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->app_closed) return -EBADF;
  if (t->state == TcpState::Closed) return -ENOTCONN;
  if (t->fin_queued) return 0;
  t->fin_queued = true;
  if (t->state == TcpState::Established) t->state = TcpState::FinWait1;
  if (t->state == TcpState::CloseWait) t->state = TcpState::LastAck;
  m.output(*t, now);
  m.reschedule(*t);
  m.reap_dead();
  return 0;
}

void Stack::close(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  if (Listener* l = m.listener(s)) {
    m.close_listener(*l, now);
    m.reap_dead();
    return;
  }
  Tcb* t = m.tcb(s);
  if (!t || t->app_closed) return;
  t->app_closed = true;
  if (t->state == TcpState::Closed || t->state == TcpState::SynSent || t->orphaned) {
    m.finish(*t);  // (an orphan's peer is gone: nothing to say goodbye to)
  } else if (t->rcvbuf.size() > 0) {
    m.send_rst(*t, now);  // RFC 2525 2.17: unread data means data loss
    m.finish(*t);
  } else {
    if (!t->fin_queued) {
      t->fin_queued = true;
      if (t->state == TcpState::Established) t->state = TcpState::FinWait1;
      if (t->state == TcpState::CloseWait) t->state = TcpState::LastAck;
    }
    if (t->state == TcpState::FinWait2) t->linger_at = now + kOrphanFinWait2;
    t->keepalive_at = kNever;
    m.output(*t, now);
  }
  m.reschedule(*t);
  m.reap_dead();
}

void Stack::abort(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  if (Listener* l = m.listener(s)) {
    m.close_listener(*l, now);
    m.reap_dead();
    return;
  }
  Tcb* t = m.tcb(s);
  if (!t || t->dead) return;
  if (t->state != TcpState::Closed && t->state != TcpState::SynSent &&
      t->state != TcpState::TimeWait) {
    m.send_rst(*t, now);
  }
  t->app_closed = true;
  m.finish(*t);
  m.reschedule(*t);
  m.reap_dead();
}

int Stack::set_reader(SocketId s, Reader* reader) {
  Tcb* t = impl_->tcb(s);
  if (!t) return -EBADF;
  t->reader = reader;
  return 0;
}

int Stack::set_nodelay(SocketId s, bool on) {
  Impl& m = *impl_;
  Tcb* t = m.tcb(s);
  if (!t) return -EBADF;
  t->nodelay = on;
  if (on) {  // like Linux, turning Nagle off pushes what it was holding
    m.output(*t, m.clock);
    m.reschedule(*t);
    m.reap_dead();
  }
  return 0;
}

int Stack::set_keepalive(SocketId s, bool on, Micros idle, Micros interval, uint32_t count) {
  Impl& m = *impl_;
  Tcb* t = m.tcb(s);
  if (!t) return -EBADF;
  t->keepalive = on;
  t->ka_idle = idle ? idle : 7200000000ull;
  t->ka_interval = interval ? interval : 75000000ull;
  t->ka_count = count ? count : 9;
  t->ka_probes = 0;
  m.arm_keepalive(*t, t->last_rx);
  m.reschedule(*t);
  return 0;
}

bool Stack::local_endpoint(SocketId s, Endpoint* out) const {
  if (Tcb* t = impl_->tcb(s)) {
    *out = t->local;
    return true;
  }
  if (Listener* l = impl_->listener(s)) {
    *out = l->local;
    return true;
  }
  return false;
}

bool Stack::remote_endpoint(SocketId s, Endpoint* out) const {
  Tcb* t = impl_->tcb(s);
  if (!t) return false;
  *out = t->remote;
  return true;
}

LinkAddr Stack::link_of(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t ? t->via : 0;
}

void Stack::link_down(LinkAddr link, Micros) {
  Impl& m = *impl_;
  for (size_t i = 1; i < m.slots.size(); ++i) {
    Slot& s = m.slots[i];
    if (s.kind != SlotKind::Tcb || s.tcb->dead) continue;
    Tcb& t = *s.tcb;
    // After the peer's FIN its socket would answer our next segment with an
    // RST, which ends a CLOSE_WAIT connection with EPIPE (see tcp.cc).
    if (t.via == link && t.state != TcpState::Closed && !t.orphaned)
      m.fail(t, t.state == TcpState::CloseWait ? -EPIPE : -ECONNRESET);
    m.reschedule(t);
  }
  m.reap_dead();
}

SocketId Stack::find(const Endpoint& local, const Endpoint& remote) const {
  const Impl& m = *impl_;
  auto it = m.connections.find(TupleKey{local.addr, remote.addr, local.port, remote.port});
  return it == m.connections.end() ? 0 : it->second;
}

void Stack::orphan(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->dead || t->orphaned) return;
  t->orphaned = true;
  // Nothing more goes to the peer, nothing more is awaited from it: what we
  // sent it (a FIN included) counts as taken, as its kernel would have.
  t->rtx_at = t->persist_at = t->keepalive_at = t->delack_at = kNever;
  t->ack_now = false;
  t->snd_una = t->snd_nxt = t->snd_max;
  t->sndbuf.pop(t->sndbuf.size());
  m.note_send_level(*t);
  t->sndbuf_seq = t->snd_max;
  switch (t->state) {
    case TcpState::FinWait1: t->state = TcpState::FinWait2; break;
    case TcpState::Closing:
    case TcpState::LastAck: m.finish(*t); break;
    default: break;
  }
  m.reschedule(*t);
  m.reap_dead();
}

size_t Stack::feed(SocketId s, const Payload& bytes, bool fin, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->dead || !t->orphaned || t->fin_received) return 0;
  const size_t n = bytes.size();
  size_t took = 0;
  // As a segment's in-order bytes: to the reader while nothing waits, else
  // into the receive buffer as far as the window goes.
  auto piece = [&](size_t at, size_t* len) {
    const size_t first = bytes.len[0];
    if (at < first) {
      *len = first - at;
      return bytes.data[0] + at;
    }
    *len = bytes.len[1] - (at - first);
    return bytes.data[1] + (at - first);
  };
  if (t->reader && t->accepted && !t->app_closed && t->rcvbuf.size() == 0) {
    while (took < n) {
      size_t len;
      const uint8_t* p = piece(took, &len);
      const size_t k = std::min(t->reader->take(t->id, p, len), len);
      took += k;
      if (k < len) break;
    }
  }
  size_t buffered = 0;
  while (took + buffered < n && buffered < t->rcvbuf.free_space()) {
    size_t len;
    const uint8_t* p = piece(took + buffered, &len);
    len = std::min(len, t->rcvbuf.free_space() - buffered);
    t->rcvbuf.write_at(buffered, p, len);
    buffered += len;
  }
  t->rcvbuf.commit(buffered);
  t->rcv_nxt += uint32_t(took + buffered);
  t->last_rx = now;
  m.counters.bytes_in += took + buffered;
  if (buffered && t->accepted && !t->app_closed) m.emit(t->id, EventType::Readable);
  if (fin && took + buffered == n) m.apply_fin(*t, now);
  if (t->state == TcpState::TimeWait) m.finish(*t);  // nobody to wait for
  m.reschedule(*t);
  m.reap_dead();
  return took + buffered;
}

uint32_t Stack::receive_point(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t ? t->rcv_nxt : 0;
}

void Stack::reset_by_peer(SocketId s, Micros now) {
  Impl& m = *impl_;
  m.clock = now;
  Tcb* t = m.tcb(s);
  if (!t || t->dead || t->state == TcpState::Closed) return;
  ++m.counters.resets_in;
  m.fail(*t, -ECONNRESET);
  m.reschedule(*t);
  m.reap_dead();
}

bool Stack::send_lent(SocketId s) const {
  Tcb* t = impl_->tcb(s);
  return t && t->sndbuf.lent();
}

bool Stack::info(SocketId s, SocketInfo* out) const {
  const Impl& m = *impl_;
  if (m.listener(s)) {
    *out = SocketInfo{};
    out->state = uint8_t(TcpState::Listen);
    return true;
  }
  Tcb* t = m.tcb(s);
  if (!t) return false;
  out->state = uint8_t(t->state);
  out->send_queued = uint32_t(std::min<size_t>(t->sndbuf.size(), UINT32_MAX));
  out->recv_queued = uint32_t(t->rcvbuf.size());
  out->send_window = t->snd_wnd;
  out->recv_window = seq_gt(t->rcv_adv, t->rcv_nxt) ? t->rcv_adv - t->rcv_nxt : 0;
  out->cwnd = t->cc.window();
  out->srtt_us = uint32_t(std::min<Micros>(t->srtt, UINT32_MAX));
  out->retransmits = t->retransmits;
  out->buffer_bytes = uint32_t(std::min<size_t>(t->sndbuf.allocated() + t->rcvbuf.allocated(), UINT32_MAX));
  out->snd_una = t->snd_una;
  out->snd_nxt = t->snd_nxt;
  out->rcv_nxt = t->rcv_nxt;
  return true;
}

const Counters& Stack::counters() const { return impl_->counters; }

}  // namespace sidestep::stack
