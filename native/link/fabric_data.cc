// The fabric's data path: frames onto a pair's ring (by reference into our
// send arena where the stack lends it), send memory, and the receive poll
// with its doorbells (see fabric.h).
#include "link/fabric_impl.h"

namespace sidestep::link {

// ---- transmit ----

namespace {
constexpr size_t kRefBytes = sizeof(SlotRef);
// Payloads up to this size are copied into the frame (see tx_reserve_headers).
constexpr size_t kInlinePayloadBytes = 1024;
}

// Room for `len` bytes on `to`'s ring: on a full ring, the need-room flag
// (the consumer rings us back once it freed some) and one more look, so a
// consumer that emptied the ring meanwhile can't leave us waiting.
uint8_t* Fabric::Impl::reserve_on(Pair& p, size_t len, RingReservation* r) {
  bool repaired = false;
  p.tx_full = false;
  if (ring_reserve(p.tx, len, r, &repaired, &p.tx_head) != ReserveResult::kOk) {
    __atomic_store_n(&p.tx.header->blocked, 1u, __ATOMIC_SEQ_CST);
    full_fence();
    if (ring_reserve(p.tx, len, r, &repaired, &p.tx_head) != ReserveResult::kOk) {
      // Not a drop: the stack keeps the segment and sends it when we say
      // there is room (Stack::link_ready).
      ++counters.tx_blocked;
      p.tx_full = true;
      return nullptr;
    }
  }
  if (repaired) ++counters.drops_malformed;
  return r->payload;
}

uint8_t* Fabric::tx_reserve(LinkAddr to, size_t len) {
  Impl& m = *impl_;
  m.pending.valid = false;
  Pair* p = m.find(to);
  if (!p || p->state == Pair::State::AwaitHello) {
    ++m.counters.drops_peer_gone;
    return nullptr;
  }
  // An accepted pair has the creator's MTU; TCP's MSS keeps us within it.
  if (len > p->tx.mtu) {
    ++m.counters.drops_malformed;
    return nullptr;
  }
  uint8_t* at = m.reserve_on(*p, len, &m.pending.r);
  if (!at) return nullptr;
  m.pending = {true, to, m.pending.r, FrameKind::Packet, 0};
  return at;
}

uint8_t* Fabric::tx_reserve_headers(LinkAddr to, size_t header_len, const Pieces& payload) {
  Impl& m = *impl_;
  m.pending.valid = false;
  Pair* p = m.find(to);
  if (!p || p->state == Pair::State::AwaitHello) {
    ++m.counters.drops_peer_gone;
    return nullptr;
  }
  const size_t n = payload.len[0] + payload.len[1];
  // By reference when the payload is one range of one of our slots (its
  // second piece, if any, the start of that same slot's ring) — unless it
  // is small: then the bytes ride in the frame, after its headers. The
  // receiver reads one run of lines from our ring instead of a second from
  // our arena, and the arena's lines stay in our cache (only an orphaned
  // stream ever reads them). By reference, an http exchange took a
  // cross-core miss more per message on each side.
  SlotRef ref;
  bool by_ref = n > kInlinePayloadBytes && p->ours && p->ours->locate(payload.data[0], payload.len[0], &ref);
  if (by_ref && payload.len[1]) {
    SlotRef second;
    by_ref = p->ours->locate(payload.data[1], payload.len[1], &second) && second.segment == ref.segment &&
             second.slot == ref.slot && second.offset == 0 && ref.offset + payload.len[0] == p->ours->slot_bytes();
  }
  if (by_ref) {
    ref.len = static_cast<uint32_t>(n);
    uint8_t* at = m.reserve_on(*p, kRefBytes + header_len, &m.pending.r);
    if (!at) return nullptr;
    std::memcpy(at, &ref, kRefBytes);
    m.pending = {true, to, m.pending.r, FrameKind::Reference, kRefBytes};
    return at + kRefBytes;
  }
  if (header_len + n > p->tx.mtu) {
    ++m.counters.drops_malformed;
    return nullptr;
  }
  uint8_t* at = m.reserve_on(*p, header_len + n, &m.pending.r);
  if (!at) return nullptr;
  std::memcpy(at + header_len, payload.data[0], payload.len[0]);
  if (payload.len[1]) std::memcpy(at + header_len + payload.len[0], payload.data[1], payload.len[1]);
  m.pending = {true, to, m.pending.r, FrameKind::Packet, n};
  return at;
}

void Fabric::tx_commit(LinkAddr to, size_t len) {
  Impl& m = *impl_;
  if (!m.pending.valid || m.pending.to != to) return;
  // The frame is what the caller wrote plus what we put beside it (the
  // reference before, or the copied payload after, its headers).
  const size_t frame = len + m.pending.extra;
  if (frame > m.pending.r.len) return;
  m.pending.valid = false;
  Pair* p = m.find(to);
  if (!p) return;
  ring_commit(p->tx, m.pending.r, frame, static_cast<uint32_t>(m.pending.kind));
  ++m.counters.frames_out;
  m.counters.bytes_out += frame;
  if (m.pending.kind == FrameKind::Reference) ++m.counters.frames_by_reference;
  // Need-wakeup, producer half. Why no wakeup is lost (Dekker style):
  //   producer: store tail;      FENCE; load armed
  //   consumer: store armed = 1; FENCE; load tail
  // With a full fence between each side's store and its load, the two
  // stores cannot both be invisible to the other side's load: either the
  // consumer's re-check in prepare_sleep() sees this frame (and does not
  // sleep), or we see armed == 1 here and ring. The exchange makes one
  // producer ring per arming.
  full_fence();
  uint32_t* armed = &p->tx.header->armed;
  if (load_relaxed(armed) != 0 && exchange(armed, 0u) != 0)
    m.ring_peer(*p, index_of(to));
  else
    ++m.counters.doorbells_suppressed;
}

bool Fabric::tx_blocked(LinkAddr to) const {
  const Pair* p = impl_->find(to);
  return p && p->tx_full;
}

bool Fabric::peer_asleep(LinkAddr to) const {
  const Pair* p = impl_->find(to);
  return p && p->tx.header && load_relaxed(&p->tx.header->armed) != 0;
}

// ---- send memory ----

bool Fabric::send_memory(LinkAddr to, uint8_t family, const uint8_t local[16], uint16_t local_port,
                         const uint8_t remote[16], uint16_t remote_port, uint32_t seq_base, SendSlot* out) {
  Impl& m = *impl_;
  Pair* p = m.find(to);
  // (Not before the acceptor proved itself: nothing of ours may reach it yet.)
  if (!p || p->role == Pair::Role::Loopback || p->state == Pair::State::AwaitHello ||
      p->state == Pair::State::AwaitProof)
    return false;
  if (!p->ours) p->ours = std::make_unique<SendArena>(m.config.send_slot_bytes);
  int segment_fd = -1;
  uint32_t segment = 0;
  std::string why;
  if (p->ours->allocate(load_acquire(&p->tx.header->head), out, &segment_fd, &segment, &why) != 0) {
    ++m.counters.send_slots_unavailable;
    return false;
  }
  if (segment_fd >= 0) {
    // Before any frame names it (the peer reads its channel first when a
    // frame names a segment it hasn't seen).
    ControlMessage msg;
    msg.type = static_cast<uint32_t>(ControlType::Segment);
    msg.layout_version = kLayoutVersion;
    msg.reserved = segment;
    msg.ring_bytes = kArenaSlots;
    msg.mtu = static_cast<uint32_t>(p->ours->slot_bytes() >> 12);
    msg.region_bytes = p->ours->segment_bytes();
    const int r = control_send(p->channel, msg, &segment_fd, 1);
    ::close(segment_fd);
    if (r < 0) {
      // The peer will never see this segment: none of its slots may be used.
      p->ours->release(out->cookie, ~uint64_t(0) >> 2);
      ++m.counters.send_slots_unavailable;
      return false;
    }
  }
  SlotDescriptor* d = out->descriptor;
  d->family = family;
  d->local_port = local_port;
  d->remote_port = remote_port;
  std::memcpy(d->local, local, 16);
  std::memcpy(d->remote, remote, 16);
  d->seq_base = seq_base;
  d->consumed = 0;
  d->ring_bytes = static_cast<uint32_t>(out->capacity);  // until the stack says how much it uses
  d->ring_from = seq_base;
  store_release(&d->written_end, seq_base);
  // Odd: in use, published last.
  store_release(&d->generation, load_relaxed(&d->generation) | 1u);
  ++m.counters.send_slots;
  return true;
}

void Fabric::send_memory_release(LinkAddr to, uint64_t cookie) {
  Impl& m = *impl_;
  Pair* p = m.find(to);
  if (p && p->ours) {
    p->ours->release(cookie, load_relaxed(&p->tx.header->tail));
    return;
  }
  // A pair that went down: its memory goes with the last connection in it.
  auto it = m.retired.find(to);
  if (it == m.retired.end()) return;
  it->second->release(cookie, 0);
  if (it->second->in_use() == 0) m.retired.erase(it);
}

std::vector<PeerArena::Live> Fabric::orphans(LinkAddr addr) const {
  auto it = impl_->dead.find(addr);
  return it == impl_->dead.end() ? std::vector<PeerArena::Live>{} : it->second->live();
}

void Fabric::release_orphans(LinkAddr addr) { impl_->dead.erase(addr); }
size_t Fabric::dead_arenas() const { return impl_->dead.size(); }

// ---- receive ----

size_t Fabric::rx_poll_impl(void (*fn)(void*, LinkAddr, const uint8_t*, size_t, const Pieces*), void* ctx,
                            size_t budget) {
  Impl& m = *impl_;
  if (m.in_rx || budget == 0) return 0;  // no re-entrant polls from a callback
  m.in_rx = true;
  struct Sink {
    void (*fn)(void*, LinkAddr, const uint8_t*, size_t, const Pieces*);
    void* ctx;
    LinkAddr from;
    Fabric::Impl* m;
    uint32_t index;
    uint64_t unresolved;
  } sink{fn, ctx, 0, &m, 0, 0};
  auto deliver = [](void* c, const uint8_t* p, size_t n, uint32_t kind) {
    auto* s = static_cast<Sink*>(c);
    const uint32_t k = kind & 0xff00u;
    if (k == static_cast<uint32_t>(FrameKind::Packet)) {
      s->fn(s->ctx, s->from, p, n, nullptr);
      return;
    }
    if (k != static_cast<uint32_t>(FrameKind::Reference) || n < kRefBytes) return;
    SlotRef ref;
    std::memcpy(&ref, p, kRefBytes);  // a copy: the sender may rewrite it
    Pair& pair = s->m->pairs[s->index];
    Pieces payload;
    if (!pair.theirs || !pair.theirs->has(ref.segment)) s->m->take_messages(s->index);
    if (!pair.theirs || !pair.theirs->resolve(ref, &payload)) {
      ++s->unresolved;  // names nothing we map: dropped (TCP resends or the pair fails)
      return;
    }
    s->fn(s->ctx, s->from, p + kRefBytes, n - kRefBytes, &payload);
  };
  // Share the budget between the pairs that hold something, so one busy
  // peer cannot starve the others within a call.
  std::vector<uint32_t>& live = m.live;
  size_t busy = 0;
  for (uint32_t i : live)
    if (m.pairs[i].state != Pair::State::AwaitHello && m.pairs[i].state != Pair::State::AwaitProof &&
        ring_nonempty(m.pairs[i].rx))
      ++busy;
  if (busy == 0) {
    m.in_rx = false;
    return 0;
  }
  const size_t share = std::max<size_t>(1, std::min(kRxQuantum, (budget + busy - 1) / busy));
  RingConsumeStats stats;
  size_t delivered = 0;
  bool progress = true;
  const size_t n = live.size();
  const uint32_t start = m.rx_next % n;
  while (progress && delivered < budget) {
    progress = false;
    for (size_t k = 0; k < n && delivered < budget && k < live.size(); ++k) {
      const uint32_t i = live[(start + k) % live.size()];
      Pair& p = m.pairs[i];
      if (p.state == Pair::State::AwaitHello || p.state == Pair::State::AwaitProof || !ring_nonempty(p.rx)) continue;
      sink.from = m.addr_of(i);
      sink.index = i;
      size_t got = ring_consume(p.rx, std::min(share, budget - delivered), deliver, &sink, &stats);
      if (got) {
        progress = true;
        delivered += got;
        m.rx_next = static_cast<uint32_t>((start + k + 1) % n);
        // Need-room, consumer half: a producer that found this ring full
        // waits for our word that there is room again (see reserve_on).
        full_fence();
        uint32_t* blocked = &p.rx.header->blocked;
        if (load_relaxed(blocked) != 0 && exchange(blocked, 0u) != 0) m.ring_peer(p, i);
      }
    }
  }
  m.in_rx = false;
  m.counters.frames_in += stats.frames;
  m.counters.bytes_in += stats.bytes;
  m.counters.drops_malformed += stats.malformed + sink.unresolved;
  return delivered;
}

bool Fabric::rx_pending() const {
  const Impl& m = *impl_;
  for (uint32_t i : m.live) {
    const Pair& p = m.pairs[i];
    if (p.state != Pair::State::AwaitHello && p.state != Pair::State::AwaitProof && ring_nonempty(p.rx)) return true;
  }
  return false;
}

bool Fabric::peer_written_end(LinkAddr from, uint8_t family, const uint8_t local[16], uint16_t local_port,
                              const uint8_t remote[16], uint16_t remote_port, uint32_t* out) const {
  const Pair* p = impl_->find(from);
  return p && p->theirs && p->theirs->written_end(family, local, local_port, remote, remote_port, out);
}

void Fabric::doorbell_drain() {
  if (impl_->bell.drain()) ++impl_->counters.wakeups;
}

bool Fabric::prepare_sleep() {
  Impl& m = *impl_;
  // Frames already waiting: no sleep, so no arming. (Arming anyway and
  // taking it back opens a window in which a producer rings for nothing: a
  // write() on its side, a wake-up on ours.)
  if (rx_pending()) return false;
  // Need-wakeup, consumer half: see tx_commit().
  ++m.counters.arms;
  for (uint32_t i : m.live) {
    Pair& p = m.pairs[i];
    if (p.state == Pair::State::AwaitHello) continue;
    __atomic_store_n(&p.rx.header->armed, 1u, __ATOMIC_SEQ_CST);
  }
  full_fence();
  if (rx_pending()) {
    disarm();
    return false;
  }
  return true;
}

void Fabric::disarm() {
  Impl& m = *impl_;
  for (uint32_t i : m.live) {
    Pair& p = m.pairs[i];
    if (p.state == Pair::State::AwaitHello) continue;
    if (load_relaxed(&p.rx.header->armed) != 0) store_relaxed(&p.rx.header->armed, 0u);
  }
}

}  // namespace sidestep::link
