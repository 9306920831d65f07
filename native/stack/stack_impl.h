// Stack::Impl: the socket table, the demux maps, listeners, the event queue
// and the TCP state machine's entry points. Shared by stack.cc (public API,
// demux, events) and tcp.cc (segment processing, output, timers).
#pragma once

#include <deque>
#include <utility>
#include <memory>
#include <unordered_map>
#include <vector>

#include "stack.h"
#include "tcp.h"
#include "wire.h"

namespace sidestep::stack {

// One parsed incoming segment; `payload` points into the untrusted packet and
// only `payload_len` (validated) bytes of it are ever read.
struct Segment {
  LinkAddr from = 0;
  IpAddr src, dst;
  wire::TcpHeader tcp;
  const uint8_t* payload = nullptr;
  size_t payload_len = 0;
  // A gathered payload's second piece (see Link::tx_reserve_headers): the
  // last payload2_len of payload_len bytes are there, not after `payload`.
  const uint8_t* payload2 = nullptr;
  size_t payload2_len = 0;
  // Where byte `i` of the payload is, and how many follow it contiguously.
  std::pair<const uint8_t*, size_t> bytes_at(size_t i) const {
    const size_t first = payload_len - payload2_len;
    if (i < first) return {payload + i, first - i};
    return {payload2 + (i - first), payload_len - i};
  }
  bool has(uint8_t flag) const { return (tcp.flags & flag) != 0; }
  uint32_t seq_len() const {
    return uint32_t(payload_len) + has(wire::kSyn) + has(wire::kFin);
  }
};

struct TupleKey {
  IpAddr local, remote;
  uint16_t local_port, remote_port;
  bool operator==(const TupleKey& o) const {
    return local == o.local && remote == o.remote && local_port == o.local_port &&
           remote_port == o.remote_port;
  }
};

struct ListenKey {
  IpAddr addr;
  uint16_t port;
  bool operator==(const ListenKey& o) const { return addr == o.addr && port == o.port; }
};

struct KeyedHash {
  const uint8_t* key;
  size_t operator()(const TupleKey& k) const;
  size_t operator()(const ListenKey& k) const;
};

struct Listener {
  SocketId id = 0;
  Endpoint local;
  bool v6only = false;
  size_t backlog = 1;
  std::vector<SocketId> pending;  // SYN-RECEIVED children
  std::deque<SocketId> ready;     // ESTABLISHED, waiting for accept()
};

enum class SlotKind : uint8_t { Free, Listener, Tcb, Reserved };

struct Slot {
  SlotKind kind = SlotKind::Free;
  uint32_t generation = 0;    // bumped whenever the id is handed out again
  uint8_t queued_events = 0;  // bit per EventType already waiting in the queue
  std::unique_ptr<Tcb> tcb;
  std::unique_ptr<Listener> listener;
};

// A Tcb's earliest deadline. An entry goes stale when the Tcb dies or gets a
// newer entry; one whose deadline moved later is re-filed when it reaches
// the top. So poll_at() is exact and no timer costs a scan of all sockets.
struct TimerEntry {
  Micros at;
  SocketId id;
  uint32_t generation;
  bool operator>(const TimerEntry& o) const { return at > o.at; }
};

struct Stack::Impl {
  Impl(const Config& c, Link& l);

  Config config;
  Link& link;
  // The link holds references into send buffers (tx_reserve_headers) not
  // yet released: move or free send-buffer memory only after tx_release().
  bool tx_refs_out = false;
  // Data goes out by reference (Link::gathers(), no checksums): asked once,
  // not on every packet.
  const bool gather;
  void release_tx_refs() {
    if (!tx_refs_out) return;
    tx_refs_out = false;
    link.tx_release();
  }
  // Everything after parsing: demux and the state machine.
  void deliver(Segment& seg, Micros now);
  Counters counters;
  SmallBuffers small_buffers;  // before slots: outlives the sockets' buffers
  std::vector<Slot> slots;  // index = SocketId; slot 0 unused
  std::vector<SocketId> free_ids;
  std::unordered_map<TupleKey, SocketId, KeyedHash> connections;
  // The connection the last segment went to: a bulk stream's next segment
  // almost always goes there too, and comparing its 4-tuple is cheaper than
  // hashing it (SipHash) and probing the table. Checked against the Tcb's
  // own tuple and table membership, so it never needs invalidating.
  SocketId last_demux = 0;
  std::unordered_map<ListenKey, SocketId, KeyedHash> listeners;
  std::vector<IpAddr> addresses;
  std::vector<Event> events;
  size_t events_head = 0;
  std::vector<SocketId> reap;
  // Config::defer_acks: connections with an ACK owed until flush().
  std::vector<std::pair<SocketId, uint32_t>> ack_pending;
  // The input since the last flush(), and how many connections took data
  // in it (ack_or_hold: one alone may send its half-window ACK early).
  uint32_t rx_batch = 1;
  uint32_t rx_batch_receivers = 0;
  // Connections that found the link full (Link::tx_blocked), with their
  // slot's generation: link_ready() lets them try again.
  std::vector<std::pair<SocketId, uint32_t>> link_waiters;
  // Sockets whose send buffer holds half a window or more (Tcb::streaming),
  // among which Config::send_budget is shared. (Half: a stream held at a
  // window's limit dips under it with every ACK, and counted only above it,
  // 16 streams looked like two or three most of the time.)
  size_t streaming = 0;
  size_t send_window() const { return std::min(config.recv_buffer, config.send_buffer); }
  size_t send_limit() const {
    const size_t share = config.send_budget / (streaming ? streaming : 1);
    return std::max(send_window(), std::min<size_t>(config.send_buffer, share));
  }
  // Bytes of a lent connection still in own memory and not yet sent go to
  // the lent ring (SendBuffer::lend): they must outlive the process.
  void keep_unsent_lent(Tcb& t) {
    if (!t.sndbuf.lent() || t.sndbuf.external() || t.sndbuf.size() == 0) return;
    if (!seq_lt(t.snd_max, t.sndbuf_seq + uint32_t(t.sndbuf.size()))) return;
    release_tx_refs();
    t.sndbuf.move_to_lent();
  }
  // After the socket's send buffer grew or shrank.
  void note_send_level(Tcb& t) {
    const bool s = t.sndbuf.size() >= send_window() / 2;
    if (s == t.streaming) return;
    t.streaming = s;
    if (s)
      ++streaming;
    else
      --streaming;
  }
  // The link lends the connection its send memory (Link::send_memory).
  void lend_send_memory(Tcb& t) {
    if (link.send_memory(t.via, t.local, t.remote, t.iss + 1, &t.send_memory))
      t.sndbuf.lend(t.send_memory, t.iss + 1);
  }
  // Where the application has read the peer's stream to, for a link that
  // lent memory (so a peer that finishes our stream after we vanished
  // knows whether we left its bytes unread).
  static void publish_consumed(Tcb& t) {
    if (t.send_memory.published_consumed)
      __atomic_store_n(t.send_memory.published_consumed, t.rcv_nxt - uint32_t(t.rcvbuf.size()), __ATOMIC_RELAXED);
  }
  Micros clock = 0;  // the latest `now` the caller gave us (for calls without one)
  mutable std::vector<TimerEntry> timer_heap;  // min-heap on `at`
  uint8_t hash_key[16];

  // --- sockets (stack.cc)
  SocketId allocate_id();
  Tcb* tcb(SocketId s) const;
  Listener* listener(SocketId s) const;
  TupleKey key_of(const Tcb& t) const;
  // The connection in the demux table under `k`, or nullptr.
  Tcb* demux(const TupleKey& k);
  void table_insert(Tcb& t);
  void table_remove(Tcb& t);
  void emit(SocketId s, EventType type, int error = 0);
  // Moves the Tcb to CLOSED and schedules it to be freed; the app hears
  // Closed if it already gave the socket up.
  void finish(Tcb& t);
  // Connection failure: Error event (if the app still owns it), then finish.
  void fail(Tcb& t, int error);
  void reap_dead();
  // Call after anything that may have moved t's timers.
  void reschedule(Tcb& t);
  // The valid top of the timer heap (stale entries dropped, moved ones
  // re-filed), or nullptr. Logically const: poll_at() uses it.
  const TimerEntry* next_timer() const;
  void close_listener(Listener& l, Micros now);
  void child_established(Tcb& t);
  void release_child(Tcb& t);
  bool is_local(const IpAddr& a) const;
  uint32_t make_isn(const Endpoint& local, const Endpoint& remote, Micros now) const;
  // RFC 7323 timestamps tick in milliseconds (§5.4 wants 1 ms to 1 s, so a
  // peer's PAWS check survives long idle periods), from a per-connection
  // offset (§7.1: the raw clock would tell the host's uptime).
  static uint32_t ts_clock(const Tcb& t, Micros now) { return uint32_t(now / 1000) + t.ts_offset; }
  uint32_t ts_offset_for(const Tcb& t) const { return t.iss * 0x9E3779B1u + 0x7F4A7C15u; }
  uint16_t mss_cap(uint8_t family) const;

  // --- TCP (tcp.cc)
  void on_segment(Tcb& t, const Segment& seg, Micros now);
  void on_listen_segment(Listener& l, const Segment& seg, Micros now);
  void reply_rst(const Segment& seg);
  void on_syn_sent(Tcb& t, const Segment& seg, Micros now);
  // False when the segment must be dropped (after an ACK is queued).
  bool on_ack(Tcb& t, const Segment& seg, Micros now);
  void on_data(Tcb& t, const Segment& seg, Micros now);
  void apply_fin(Tcb& t, Micros now);
  void output(Tcb& t, Micros now);
  bool transmit(Tcb& t, uint32_t seq, uint8_t flags, uint32_t len, Micros now);
  void send_syn(Tcb& t, Micros now);
  uint32_t acceptable_seq(const Tcb& t) const;
  void send_ack(Tcb& t, Micros now) { transmit(t, acceptable_seq(t), wire::kAck, 0, now); }
  // A pure ACK owed now: sent, or with Config::defer_acks held for flush().
  void ack_or_hold(Tcb& t, Micros now);
  void send_dupack(Tcb& t, const Segment& seg, Micros now);
  void send_rst(Tcb& t, Micros now);
  void retransmit_first(Tcb& t, Micros now);
  // SACK recovery (recovery.cc): resends what the scoreboard holds lost
  // (or with `holes`, NextSeg rule 3: unSACKed holes below SACKed data)
  // while the pipe leaves room; one segment regardless when `force`.
  void retransmit_lost(Tcb& t, Micros now, bool force, bool holes);
  void enter_sack_recovery(Tcb& t, Micros now);
  void timers(Tcb& t, Micros now);
  void on_rto(Tcb& t, Micros now);
  void on_persist(Tcb& t, Micros now);
  void on_keepalive(Tcb& t, Micros now);
  void rtt_sample(Tcb& t, Micros rtt);
  void enter_time_wait(Tcb& t, Micros now);
  void arm_keepalive(Tcb& t, Micros since);
  uint16_t window_field(Tcb& t, bool syn);
  void recved(Tcb& t, Micros now);
  void start_connection(Tcb& t, const wire::TcpOptions& peer, Micros now);
  uint32_t data_room(const Tcb& t) const;
  uint8_t our_window_shift() const;
  // Writes one whole packet to the link; payload (if any) comes from `data`.
  bool put(LinkAddr to, const IpAddr& src, const IpAddr& dst, const wire::TcpHeader& h,
           const SendBuffer* data, size_t offset, size_t len);
};

}  // namespace sidestep::stack
