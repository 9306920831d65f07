// The pieces of a TCP connection: sequence arithmetic, the send and receive
// buffers (circular, memcpy in and out), the out-of-order range list, the
// sender's SACK scoreboard, the congestion controller and the transmission
// control block itself. The state machine that drives a Tcb lives in tcp.cc;
// SACK loss recovery in recovery.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "stack.h"
#include "wire.h"

namespace sidestep::stack {

// How long a connection the app closed may wait in FIN-WAIT-2 for the peer's
// FIN (Linux tcp_fin_timeout).
inline constexpr Micros kOrphanFinWait2 = 60000000;

inline bool seq_lt(uint32_t a, uint32_t b) { return int32_t(a - b) < 0; }
inline bool seq_le(uint32_t a, uint32_t b) { return int32_t(a - b) <= 0; }
inline bool seq_gt(uint32_t a, uint32_t b) { return int32_t(a - b) > 0; }
inline bool seq_ge(uint32_t a, uint32_t b) { return int32_t(a - b) >= 0; }

// Send buffers of the first size, kept for the next message: a
// request/response connection's buffer is freed whenever everything is
// acknowledged and taken again for its next write, and 50 such connections
// overflowed malloc's per-thread cache into its slow paths. One per stack
// (it outlives the stack's sockets), bounded.
class SmallBuffers {
 public:
  static constexpr size_t kBytes = 1024;
  SmallBuffers() = default;
  ~SmallBuffers();
  SmallBuffers(const SmallBuffers&) = delete;
  SmallBuffers& operator=(const SmallBuffers&) = delete;
  uint8_t* take();
  void give(uint8_t* p);

 private:
  static constexpr size_t kKept = 256;
  std::vector<uint8_t*> free_;
};

// Bytes the application queued and the peer has not acknowledged yet. It grows
// on demand (send() always copies everything; backpressure is the caller's
// business); once everything is acknowledged a small buffer is freed (an idle
// connection holds none), a large one is kept for the stream that needed it.
class SendBuffer {
 public:
  // `limit`: the socket's send buffer size (Config::send_buffer). Memory
  // doubles up to it; past it (Node's one write over the mark, or a writer
  // that ignores backpressure) it grows by a quarter at a time — doubling a
  // 256 KiB ring for a 200-byte overshoot would hold 512 KiB and, for a bulk
  // stream, spread the copies over twice the cache.
  explicit SendBuffer(size_t limit = SIZE_MAX, SmallBuffers* small = nullptr) : limit_(limit), small_(small) {}
  ~SendBuffer();
  SendBuffer(const SendBuffer&) = delete;
  SendBuffer& operator=(const SendBuffer&) = delete;
  size_t size() const { return size_; }
  // Memory of its own (lent memory is the link's).
  size_t allocated() const { return external_ ? 0 : cap_; }
  // Memory a link lent for the connection's bytes (see SendMemory), from its
  // first data byte `seq_base`. Only before the first push. Bytes go there
  // once more than kOwnBytes are queued, or move_to_lent() says so; until
  // then they stay in our own memory and leave in frames (a small write
  // rides in its frame anyway), so a request/response connection never
  // touches a page of the lent ring: the page each side touched for its
  // first byte was a third of an idle connection's memory (issue 16).
  void lend(const SendMemory& m, uint32_t seq_base);
  // Whether a link lent memory (in use or not).
  bool lent() const { return lent_ring_ != nullptr; }
  // Whether the bytes are in the lent memory.
  bool external() const { return external_; }
  // Moves the bytes queued in own memory into the lent ring (a lent
  // connection's bytes not yet sent must outlive the process: the peer
  // finishes its stream from there). No-op without lent memory or in it.
  void move_to_lent();
  // Copies what fits (everything in own memory; up to the lent ring's free
  // room) and returns how much that was.
  size_t push(const uint8_t* data, size_t n);
  bool full() const { return external_ && size_ == cap_ && !can_grow(); }
  // Drops acknowledged bytes; a small buffer left empty is given back.
  void pop(size_t n);
  // Copies `n` bytes starting `offset` bytes after the oldest one.
  void peek(size_t offset, uint8_t* out, size_t n) const;
  // Where those bytes are (two pieces when they wrap), for a link that
  // carries them by reference.
  void pieces(size_t offset, size_t n, Payload* out) const;
  // Whether push(n) / pop(n) would move or free the memory (a gathering
  // link must let go of its references first).
  bool moves_on_push(size_t n) const { return !external_ && n > 0 && (size_ + n > cap_ || to_lent_on_push(n)); }
  bool frees_on_pop(size_t n) const;

 private:
  // Lent memory: whether the ring in use may double now (see SendMemory).
  bool can_grow() const { return cap_ < max_cap_ && end_seq_ - base_seq_ <= cap_; }
  // What own memory holds of a lent connection before its bytes move there:
  // the fabric's largest payload carried inside a frame, and exactly one
  // first-size buffer, so own mode never grows past what SmallBuffers keeps.
  static constexpr size_t kOwnBytes = SmallBuffers::kBytes;
  bool to_lent_on_push(size_t n) const { return lent_ring_ && !external_ && size_ + n > kOwnBytes; }

  // Own memory of `cap` bytes, and back (from and to small_ at its size).
  uint8_t* allocate(size_t cap);
  void free_own(uint8_t* p, size_t cap);

  uint8_t* buf_ = nullptr;  // own (allocate()) or lent
  size_t limit_;
  SmallBuffers* small_;
  size_t cap_ = 0, head_ = 0, size_ = 0;
  size_t max_cap_ = 0;  // lent memory: the whole ring (cap_ is the part in use)
  bool external_ = false;
  uint32_t* published_ring_ = nullptr;
  uint32_t* published_base_ = nullptr;
  uint32_t* published_end_ = nullptr;
  uint32_t* published_from_ = nullptr;
  // Lent, not yet in use: the ring and its size.
  uint8_t* lent_ring_ = nullptr;
  size_t lent_capacity_ = 0;
  uint32_t end_seq_ = 0;
  uint32_t base_seq_ = 0;  // the byte at offset 0 (lent memory)
  uint32_t stagger_ = 0;   // lent memory: where an empty ring's next byte goes
};

// In-order bytes waiting for recv(), followed (in the same ring) by
// out-of-order bytes written at their offset; the SeqRanges list says which
// of those are valid. `capacity` is what the window may promise; memory is
// only allocated as data needs it (from 1 KiB for a small first segment,
// else 16 KiB, doubling), and a small buffer
// left empty is given back (release_if_idle), so an idle connection holds no
// buffer at all.
class ReceiveBuffer {
 public:
  explicit ReceiveBuffer(size_t capacity) : cap_(capacity) {}
  size_t capacity() const { return cap_; }
  size_t size() const { return size_; }
  size_t free_space() const { return cap_ - size_; }
  size_t allocated() const { return phys_; }
  // Writes bytes `offset` after the in-order tail; offset + n <= free_space().
  void write_at(size_t offset, const uint8_t* data, size_t n);
  // Makes `n` bytes after the tail (already written) readable.
  void commit(size_t n) { size_ += n; }
  size_t read(uint8_t* out, size_t cap);
  // Frees the memory when nothing is held in it (the caller knows no
  // out-of-order bytes are either) and it is small enough to reallocate
  // cheaply; large buffers of a busy stream are kept.
  void release_if_idle();

 private:
  void reserve(size_t bytes);  // physical room for `bytes` from head_
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_, phys_ = 0, head_ = 0, size_ = 0;
};

// Sorted, disjoint sequence ranges: what arrived beyond rcv_nxt (the
// receiver's reassembly, and the SACK blocks it sends).
class SeqRanges {
 public:
  static constexpr size_t kMaxRanges = 32;
  bool empty() const { return count_ == 0; }
  size_t count() const { return count_; }
  // Records [begin, end); false when there is no room for another range.
  bool add(uint32_t begin, uint32_t end);
  // Consumes the ranges that now touch `rcv_nxt`; returns the new rcv_nxt.
  uint32_t advance(uint32_t rcv_nxt);
  // SACK blocks (RFC 2018): the most recent range first, then the others.
  uint8_t sack_blocks(wire::SackBlock* out, uint8_t max) const;
  void clear() { count_ = 0; }
  // Forgets everything before `seq`.
  void discard_below(uint32_t seq);
  // The first gap at or after `from` that lies below some range: [*begin, *end).
  bool next_hole(uint32_t from, uint32_t* begin, uint32_t* end) const;

 private:
  struct Range {
    uint32_t begin, end;
  };
  Range ranges_[kMaxRanges];
  size_t count_ = 0;
  uint32_t last_begin_ = 0;  // start of the most recently merged range
};

// The sender's scoreboard (RFC 6675 section 3), kept while the peer speaks
// SACK: one record per segment sent and not yet cumulatively acknowledged, in
// sequence order, saying whether the peer SACKed it, whether we hold it lost,
// and whether a retransmission of it is in flight. Each record also carries
// the transmission number of its latest (re)transmission, so that loss is
// judged in transmission order: a segment is lost once kDupThresh segments
// sent after it have been delivered. For segments sent once that is RFC 6675's
// IsLost() (DupThresh SACKed segments above it); for a retransmission it is
// what RFC 6675 lacks, the detection of a lost retransmission (the idea of
// RACK, RFC 8985, counted in segments instead of time).
//
// Records live in a circular array that grows by doubling and is reused, so
// steady state allocates nothing. A hostile peer can't make it grow without
// bound by SACKing odd byte ranges: splits are refused beyond kMaxRecords.
class Scoreboard {
 public:
  static constexpr uint32_t kDupThresh = 3;
  static constexpr size_t kMaxRecords = 16384;

  bool empty() const { return count_ == 0; }
  size_t count() const { return count_; }
  // End of the highest recorded segment (valid when !empty()).
  uint32_t end() const { return count_ ? at(count_ - 1).end : 0; }
  // RFC 6675 SetPipe(): bytes in flight by the scoreboard (SACKed and lost
  // bytes are not; a retransmitted byte counts once more), over the records.
  uint32_t pipe() const { return pipe_; }
  uint32_t sacked_bytes() const { return sacked_; }
  // Some segment is held lost and not retransmitted since (NextSeg rule 1).
  bool has_lost() const { return lost_pending_ > 0; }

  // A transmission of [begin, end) (a FIN counts as its last byte). What lies
  // beyond the recorded end is a new segment; what lies within is a
  // retransmission of the records it covers.
  void on_transmit(uint32_t begin, uint32_t end);
  // Cumulative acknowledgement: records below `ack` are delivered and dropped.
  void on_ack(uint32_t ack);
  // One SACK block (already checked to lie above the cumulative ACK);
  // true when it SACKed something not SACKed before.
  bool on_sack(uint32_t left, uint32_t right);
  // Marks lost every unSACKed record whose latest transmission was followed
  // by kDupThresh delivered ones. Returns how many records it marked.
  uint32_t detect_losses();
  // Marks the first record lost unless it is SACKed or was ever
  // retransmitted (dupack threshold, NewReno's partial ACK). True if marked.
  bool mark_first_lost();
  // Retransmission timeout: every unSACKed record is lost. With
  // `forget_sacks` SACK marks are dropped too (the receiver may renege, RFC
  // 2018 section 8).
  void mark_all_lost(bool forget_sacks);
  // NextSeg rule (1): the first record held lost and not retransmitted;
  // with `holes`, rule (3) instead: the first one below a SACKed record that
  // was never retransmitted, lost or not. Cut to at most `max_len` bytes of
  // data (a FIN rides along; `data_end` is where the data ends).
  bool next_seg(bool holes, uint32_t max_len, uint32_t data_end, uint32_t* begin,
                uint32_t* end);
  void clear();
  // Recounts everything from the records: sorted, disjoint, within
  // [snd_una, snd_max], counters exact (checked by the fuzzer's builds).
  bool consistent(uint32_t snd_una, uint32_t snd_max) const;

 private:
  enum : uint8_t { kSacked = 1, kLost = 2, kRetrans = 4, kEverRetrans = 8 };
  struct Record {
    uint32_t begin, end;
    uint64_t order;  // transmission number of the latest (re)transmission
    uint8_t flags;
  };
  static uint32_t contribution(const Record& r);
  // Lost and neither SACKed nor retransmitted since: NextSeg's candidates.
  static bool pending(uint8_t flags) { return (flags & (kSacked | kLost | kRetrans)) == kLost; }
  void account(const Record& r);
  void unaccount(const Record& r);
  Record& at(size_t i) { return ring_[(head_ + i) & (cap_ - 1)]; }
  const Record& at(size_t i) const { return ring_[(head_ + i) & (cap_ - 1)]; }
  // Index of the first record ending after `seq` (count_ if none).
  size_t find(uint32_t seq) const;
  // Splits record i at `seq` (inside it); false at the size limit.
  bool split(size_t i, uint32_t seq, size_t limit = kMaxRecords);
  void reserve_one();
  void push_back(const Record& r);
  void set_flags(Record& r, uint8_t flags);
  void delivered(uint64_t order);

  std::unique_ptr<Record[]> ring_;
  size_t cap_ = 0, head_ = 0, count_ = 0;
  uint64_t next_order_ = 0;
  uint64_t latest_[kDupThresh] = {};  // newest delivered orders, descending
  uint32_t pipe_ = 0, sacked_ = 0;
  size_t lost_pending_ = 0;
  uint32_t pending_from_ = 0;  // no pending record begins before (while any)
};

// NewReno congestion window (RFC 5681 slow start / congestion avoidance; the
// fast recovery bookkeeping of RFC 6582 is in the Tcb). A small interface so
// another algorithm can replace it.
class CongestionControl {
 public:
  void init(uint32_t mss);
  uint32_t window() const { return cwnd_; }
  uint32_t ssthresh() const { return ssthresh_; }
  // New data acknowledged outside recovery.
  void on_ack(uint32_t acked, uint32_t mss);
  // Three duplicate ACKs: returns the window to use during recovery.
  void on_fast_retransmit(uint32_t flight, uint32_t mss);
  // A loss found by the SACK scoreboard (RFC 6675): ssthresh = cwnd = half
  // the flight, no inflation (the pipe accounts for what left the network).
  void on_sack_recovery(uint32_t flight, uint32_t mss);
  void on_recovery_dupack(uint32_t mss) { cwnd_ += mss; }
  void on_partial_ack(uint32_t acked, uint32_t mss);
  void on_recovery_exit(uint32_t flight, uint32_t mss);
  // Retransmission timeout; `first` is false for a repeated timeout.
  void on_timeout(uint32_t flight, uint32_t mss, bool first);

 private:
  uint32_t cwnd_ = 0;
  uint32_t ssthresh_ = UINT32_MAX;
  uint32_t acked_in_ca_ = 0;
};

// Transmission control block: everything one connection remembers.
struct Tcb {
  SocketId id = 0;
  TcpState state = TcpState::Closed;
  Endpoint local, remote;
  LinkAddr via = 0;

  // Ownership: the listener whose queue holds this connection (0 once
  // accepted or for active opens); whether the app knows the id; whether the
  // app gave it up; whether it is in the demux table; freed at the next reap.
  SocketId listener = 0;
  bool accepted = false;
  int failed_before_accept = 0;  // negative errno: failed in the accept queue
  bool app_closed = false;
  bool in_table = false;
  bool dead = false;

  // Send sequence space (RFC 9293 3.3.1); snd_max is the highest sequence
  // ever sent (BSD), snd_nxt goes back to snd_una on a timeout.
  uint32_t iss = 0, snd_una = 0, snd_nxt = 0, snd_max = 0;
  uint32_t snd_wnd = 0, max_snd_wnd = 0, snd_wl1 = 0, snd_wl2 = 0;
  SendBuffer sndbuf;
  uint32_t sndbuf_seq = 0;  // sequence number of sndbuf's oldest byte
  SendMemory send_memory;   // lent by the link (ring == nullptr: none)
  bool link_waiting = false;  // in link_waiters: something to send when the link has room
  bool fin_queued = false;  // shutdown_write(): FIN at sndbuf's end

  // Receive sequence space.
  uint32_t irs = 0, rcv_nxt = 0, rcv_adv = 0;
  ReceiveBuffer rcvbuf;
  SeqRanges ooo;  // received out of order
  bool fin_received = false;
  bool orphaned = false;  // the peer vanished; the link feeds what it still owed
  bool rcv_fin_pending = false;  // FIN seen beyond a hole
  uint32_t rcv_fin_seq = 0;
  bool eof_reported = false;

  // Negotiated options.
  uint16_t mss = 536;          // peer's MSS, capped by ours
  uint32_t rcv_mss = 536;      // largest segment the peer sent us
  uint8_t snd_wscale = 0, rcv_wscale = 0;
  bool ws_ok = false, ts_ok = false, sack_ok = false;
  uint32_t ts_recent = 0;
  uint32_t ts_offset = 0;  // added to our millisecond timestamp clock
  Micros ts_recent_age = 0;

  // Acknowledgement policy.
  bool ack_now = false;
  uint32_t quick_acks_left = 0;  // Config::quick_acks, counted down
  uint32_t snd_sml = 0;  // end of the last runt sent (Nagle, Minshall)
  bool ack_deferred = false;  // listed in Impl::ack_pending
  bool handshake_ack_held = false;  // our SYN-SENT side's last handshake ACK, held for flush()
  uint32_t unacked_bytes = 0;  // received since our last ACK
  uint32_t rx_batch = 0;  // the Impl::rx_batch it last took data in

  // RTT / RTO (RFC 6298).
  Micros srtt = 0, rttvar = 0, rto = 0;
  bool rtt_valid = false;
  bool rtt_timing = false;
  uint32_t rtt_seq = 0;
  Micros rtt_start = 0;
  uint32_t backoff = 0;      // consecutive timeouts
  Micros syn_sent_at = 0;

  // Congestion control and loss recovery: NewReno (RFC 6582) without SACK,
  // RFC 6675 with it. `recover` is RFC 6582's recover / RFC 6675's
  // RecoveryPoint.
  CongestionControl cc;
  uint32_t dupacks = 0;
  bool in_recovery = false;
  uint32_t recover = 0;
  Scoreboard score;  // only while sack_ok

  // Timers (kNever = off).
  Micros rtx_at = kNever, persist_at = kNever, delack_at = kNever;
  Micros keepalive_at = kNever, linger_at = kNever, syn_deadline = kNever;
  uint32_t persist_backoff = 0;

  // Socket options.
  bool nodelay = false;
  Reader* reader = nullptr;  // direct receive (stack.h), while the app reads
  bool keepalive = false;
  Micros ka_idle = 0, ka_interval = 0;
  uint32_t ka_count = 0, ka_probes = 0;
  Micros last_rx = 0;

  // The deadline under which this Tcb sits in the stack's timer heap.
  Micros scheduled_at = kNever;

  Micros last_oow_ack = kNever;  // last ACK for an out-of-window segment

  bool writable_armed = false;
  bool streaming = false;  // counted in Stack::Impl::streaming
  uint32_t retransmits = 0;

  Tcb(size_t recv_capacity, size_t send_limit, SmallBuffers* small)
      : sndbuf(send_limit, small), rcvbuf(recv_capacity) {}

  Micros next_deadline() const {
    Micros t = rtx_at;
    if (persist_at < t) t = persist_at;
    if (delack_at < t) t = delack_at;
    if (keepalive_at < t) t = keepalive_at;
    if (linger_at < t) t = linger_at;
    if (syn_deadline < t) t = syn_deadline;
    return t;
  }
  uint32_t flight() const { return snd_nxt - snd_una; }
  // RFC 6675 pipe: the scoreboard's, plus whatever was sent beyond its
  // records (all of the flight when it has none).
  uint32_t pipe() const {
    uint32_t tracked = score.empty() ? snd_una : score.end();
    return score.pipe() + (seq_gt(snd_max, tracked) ? snd_max - tracked : 0);
  }
  uint32_t data_end() const { return sndbuf_seq + uint32_t(sndbuf.size()); }
  // Bytes queued but not yet sent.
  uint32_t unsent() const {
    return seq_lt(snd_nxt, data_end()) ? data_end() - snd_nxt : 0;
  }
  bool fin_sent() const { return fin_queued && seq_gt(snd_max, data_end()); }
  bool synchronized() const {
    return state != TcpState::Closed && state != TcpState::Listen &&
           state != TcpState::SynSent && state != TcpState::SynReceived;
  }
};

// A keyed 64-bit PRF (SipHash-2-4) for ISNs (RFC 6528) and demux hashing.
uint64_t siphash(const uint8_t key[16], const uint8_t* data, size_t len);

}  // namespace sidestep::stack
