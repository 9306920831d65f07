// The public face of sidestep's TCP/IP stack: IPv4/IPv6 + TCP, pure C++.
//
// The stack knows nothing of Node, of I/O or of clocks (DESIGN.md §3, smoltcp's
// habit): IP packets come in through input(), IP packets go out through the Link
// the caller supplies, time is passed in as `now`, and the caller asks poll_at()
// when it must call poll() next. Everything the application must hear about is
// queued as an Event and drained with next_event().
//
// Every byte handed to input() is untrusted (it may sit in memory shared with a
// hostile peer and change while we read it): headers are copied into plain
// structs before they are validated, and only validated lengths are used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sidestep::stack {

// Monotonic time in microseconds, supplied by the caller.
using Micros = uint64_t;
inline constexpr Micros kNever = UINT64_MAX;

// Opaque next-hop identifier chosen by the link (the fabric uses the peer
// stack's slot; a TAP link ignores it). A connection remembers the LinkAddr its
// packets came from / were first sent to, like a neighbour-table entry.
using LinkAddr = uint32_t;

// Socket identifiers are small positive integers; 0 is never a valid socket.
using SocketId = uint32_t;

struct IpAddr {
  uint8_t family = 0;   // 4 or 6 (0 = unspecified)
  uint8_t bytes[16] = {};  // IPv4 uses bytes[0..3]

  static IpAddr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
  static IpAddr v4_any();   // 0.0.0.0
  static IpAddr v6_any();   // ::
  bool is_unspecified() const;  // 0.0.0.0 or ::
  bool operator==(const IpAddr& o) const;
  bool operator!=(const IpAddr& o) const { return !(*this == o); }
};

struct Endpoint {
  IpAddr addr;
  uint16_t port = 0;
  bool operator==(const Endpoint& o) const { return addr == o.addr && port == o.port; }
};

// A transport payload in up to two pieces (a send buffer is a ring).
struct Payload {
  const uint8_t* data[2] = {nullptr, nullptr};
  size_t len[2] = {0, 0};
  size_t size() const { return len[0] + len[1]; }
};

// Memory a link lends a connection for its unacknowledged bytes, where the
// peer can read them too (the fabric: so a peer can finish the stream of a
// process that vanished). A ring of `capacity` bytes (a power of two) in
// which the byte with sequence number s lives at (s - seq_base) % capacity;
// the stack stores in `published_end` (release) the sequence number after
// the last byte the application wrote, in `published_from` that of the
// first byte the ring holds (a few small writes stay in the stack's own
// memory and leave in frames only: SendBuffer::lend), and in
// `published_consumed` the sequence number up
// to which the application has read the peer's stream. Whenever every byte
// is acknowledged the stack moves seq_base to the next byte, stored in
// `published_base`, so the next bytes start at offset 0 again: a connection
// that sends a little at a time keeps touching the same few pages instead
// of sweeping its whole ring (each page it touches stays resident in both
// processes). For the same reason the stack uses only the ring's first
// `published_ring` bytes (a power of two, stored there), doubling that only
// when its bytes in flight need more and none of them has wrapped (so every
// byte keeps its place): a stream with 1 MiB in flight sweeps 1-2 MiB of
// the ring, not all of it. Positions are (s - seq_base) % *published_ring.
struct SendMemory {
  uint8_t* ring = nullptr;
  size_t capacity = 0;
  uint32_t* published_ring = nullptr;
  uint32_t* published_base = nullptr;
  uint32_t* published_end = nullptr;
  uint32_t* published_consumed = nullptr;
  // The first byte kept in the ring: those before it left in frames only
  // (SendBuffer::lend), so a peer finishing the stream must have them.
  uint32_t* published_from = nullptr;
  uint64_t cookie = 0;  // the link's own reference, given back at release
  // Offset of the next byte whenever the ring is empty (taken modulo the
  // part in use): the link spreads its rings' hot lines over cache sets.
  uint32_t stagger = 0;
};

// The link below the stack: a NIC-like packet sink. TX is pulled into link
// memory: the stack asks for room, writes the IP packet in place, commits it.
class Link {
 public:
  virtual ~Link() = default;
  // Room for one IP packet of `len` bytes towards `to`, or nullptr when the
  // link is full (the packet is then lost, as on a NIC; TCP recovers).
  virtual uint8_t* tx_reserve(LinkAddr to, size_t len) = 0;
  // Publish the packet last reserved towards `to`; `len` <= the reserved size.
  virtual void tx_commit(LinkAddr to, size_t len) = 0;

  // Scatter-gather transmit, for a link that can carry the payload by
  // reference (a NIC that DMAs from host memory, two stacks in one address
  // space) and says so with gathers(), asked once when the Stack is made;
  // used only without checksums. Data packets then go through
  // tx_reserve_headers(): room for the IP and TCP headers only (`header_len`
  // bytes, then tx_commit(to, header_len)), the payload being `payload`,
  // pointers into the stack's send buffer; nullptr when the link is full,
  // as tx_reserve(). The pointers stay valid until tx_release(): before
  // moving or freeing send-buffer memory the stack calls it, and otherwise
  // it only overwrites bytes the peer has acknowledged, which a receiver
  // never reads again (they are below its rcv_nxt).
  virtual bool gathers() const { return false; }
  virtual uint8_t* tx_reserve_headers(LinkAddr to, size_t header_len, const Payload& payload) {
    (void)to, (void)header_len, (void)payload;
    return nullptr;
  }
  // Be done with every payload reference given so far (deliver or copy it).
  virtual void tx_release() {}

  // After tx_reserve*() returned nullptr: whether the link is full (waiting
  // helps: the stack retries at Stack::link_ready()) rather than gone.
  virtual bool tx_blocked(LinkAddr to) const {
    (void)to;
    return false;
  }

  // Whether the peer at `to` is idle, waiting for frames: one sent now wakes
  // it at once (a sleeping stack), where a busy peer would find it with
  // others. The stack then sends an ACK that opens half a window at once
  // rather than with the batch's others (ack_or_hold).
  virtual bool peer_idle(LinkAddr to) const {
    (void)to;
    return false;
  }

  // Lend a new connection towards `to` memory for its send buffer (see
  // SendMemory): false to let the stack use its own. The stack gives it back
  // with send_memory_release() when the connection is gone.
  virtual bool send_memory(LinkAddr to, const Endpoint& local, const Endpoint& remote, uint32_t seq_base,
                           SendMemory* out) {
    (void)to, (void)local, (void)remote, (void)seq_base, (void)out;
    return false;
  }
  virtual void send_memory_release(LinkAddr to, const SendMemory& m) { (void)to, (void)m; }
};

// Receive without the receive buffer: while a socket has a Reader, in-order
// bytes that arrive when nothing is waiting in its receive buffer are offered
// to the Reader as they are taken off the link, and what it takes is, for
// TCP, read by the application (the window stays open). That saves the copy
// into and out of the receive buffer when the application is reading anyway.
// What it doesn't take, and everything that arrives out of order or while
// older bytes wait, goes through the receive buffer as usual (Readable).
class Reader {
 public:
  virtual ~Reader() = default;
  // The next `len` bytes of socket `s`'s stream; returns how many it took.
  // Called from inside input(): it must not call back into the Stack.
  virtual size_t take(SocketId s, const uint8_t* data, size_t len) = 0;
};

struct Config {
  // Largest IP packet the link carries (the fabric's MTU; loopback's 64 KiB).
  uint32_t mtu = 65536;
  // Per-socket buffer sizes in bytes. recv_buffer bounds the advertised window;
  // send_buffer is the largest level at or above which send() still copies
  // but the caller should wait for a Writable event (backpressure;
  // send_blocked()). The send buffer is up to twice the window, so a writer
  // has the next window's bytes queued when an ACK opens it: the stack sends
  // them at once, without waiting for the application's next write (a 1 GiB
  // stream into a counting sink: ~1,000 -> ~750 wake-ups of the sender;
  // docs/performance.md, run AH).
  uint32_t recv_buffer = 1u << 20;
  uint32_t send_buffer = 2u << 20;
  // What all sockets together may queue before each one's limit shrinks
  // from send_buffer toward the window (min(recv_buffer, send_buffer)): the
  // limit is send_budget / (sockets holding half a window or more). Many
  // streams with 2 MiB each spread their copies over more memory than the
  // caches hold: 16 streams took 15% more CPU per MiB than with 1 MiB
  // (docs/performance.md, "Issue 16: the send budget").
  uint32_t send_budget = 4u << 20;
  // Compute and verify IPv4/TCP checksums (false on the trusted fabric; true on
  // a TAP device or NIC).
  bool checksums = false;
  // Timers.
  Micros rto_initial = 1000000;   // RFC 6298 (2.1): 1 s
  Micros rto_min = 200000;        // Linux-like lower bound
  Micros rto_max = 60000000;
  Micros delayed_ack = 40000;
  // Quick-ACK at start: the first this-many data segments of a connection are
  // acknowledged at once (as Linux's quickack mode), so the peer's slow start
  // isn't held back by delayed ACKs while its window is small.
  uint32_t quick_acks = 8;
  Micros time_wait = 60000000;    // 2*MSL; the fabric configures it shorter
  Micros syn_timeout = 75000000;  // give up a connect after this long
  // Secret for RFC 6528 ISNs; the caller fills it from a CSPRNG.
  uint8_t isn_secret[16] = {};
  // Accept packets for any destination address (the fabric routes by port and
  // only delivers what is ours). When false, only addresses added with
  // add_address() are ours.
  bool accept_any_address = true;
  // Hold the pure ACKs the stack decides to send at once until flush(), so
  // that a reply the application sends in between carries them instead:
  // one segment per request, not two. That covers the ACK input() owes a
  // pushed segment, the window update recv() sends when reading opened the
  // window (the first read after the handshake always does: a SYN-ACK's
  // window is unscaled), and an owed ACK a call such as set_nodelay() would
  // otherwise push out alone. The caller must call flush() after each batch
  // of input() and application work, and whenever acks_held() says one is
  // owed. The active opener's last handshake ACK is held too, so the first
  // bytes written on Connected carry it (a reset sent meanwhile sends it
  // first). (Delayed ACKs on their timer, and challenge and duplicate ACKs,
  // are never held.)
  bool defer_acks = false;
};

enum class EventType : uint8_t {
  Connected,   // active open completed (SYN-SENT -> ESTABLISHED)
  Acceptable,  // a listener has at least one established connection to accept()
  Readable,    // in-order data is waiting in the receive buffer
  Writable,    // send-buffered bytes fell below the socket's limit after having reached it (send_blocked())
  PeerClosed,  // FIN received and every byte before it has been recv()'d: EOF
  Error,       // connection failed or was reset; `error` is a negative errno
               // (-ECONNREFUSED, -ECONNRESET, -ETIMEDOUT, -EPIPE)
  Closed,      // the app called close()/abort() earlier and the stack has now
               // freed the connection (after FIN handshake / TIME_WAIT / RST);
               // the SocketId may be reused after this event
};

struct Event {
  EventType type;
  SocketId socket;
  int error;  // negative errno for Error, else 0
};

// Per-connection numbers for observability (sidestep stat, stats()).
struct SocketInfo {
  uint8_t state;  // TcpState value
  uint32_t send_queued;   // bytes in the send buffer (unsent + unacked)
  uint32_t recv_queued;   // bytes waiting for recv()
  uint32_t send_window;   // peer's advertised window (scaled)
  uint32_t recv_window;   // our advertised window (scaled)
  uint32_t cwnd;
  uint32_t srtt_us;
  uint32_t retransmits;
  uint32_t buffer_bytes;  // memory held by its send and receive buffers
  uint32_t snd_una, snd_nxt, rcv_nxt;  // sequence numbers
};

enum class TcpState : uint8_t {
  Closed, Listen, SynSent, SynReceived, Established, FinWait1, FinWait2,
  CloseWait, Closing, LastAck, TimeWait,
};
const char* tcp_state_name(TcpState s);

struct Counters {
  uint64_t packets_in = 0, packets_out = 0;
  uint64_t bytes_in = 0, bytes_out = 0;          // TCP payload bytes
  uint64_t segments_retransmitted = 0;
  uint64_t retransmission_timeouts = 0;  // data RTOs (not SYN retries, not probes)
  uint64_t packets_malformed = 0;   // dropped: bad header/option/length/checksum
  uint64_t packets_no_socket = 0;   // no listener/connection matched (RST sent)
  uint64_t packets_link_full = 0;   // tx_reserve returned nullptr
  uint64_t resets_in = 0, resets_out = 0;
  uint64_t connections_opened = 0;  // active + passive, reached ESTABLISHED
};

class Stack {
 public:
  Stack(const Config& config, Link& link);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  // An address this stack owns (used when Config::accept_any_address is false).
  void add_address(const IpAddr& addr);

  // One IP packet from the link. Malformed packets are dropped and counted.
  void input(LinkAddr from, const uint8_t* packet, size_t len, Micros now);
  // One IP packet whose payload came apart from its headers (a gathering
  // link, see Link::tx_reserve_headers): `header` is the IP and TCP headers
  // exactly, `payload` the bytes after them. Only without checksums.
  void input(LinkAddr from, const uint8_t* header, size_t header_len, const Payload& payload,
             Micros now);
  // Fire every timer due at `now` (retransmit, delayed ACK, persist,
  // keepalive, TIME_WAIT, SYN timeout).
  void poll(Micros now);
  // Earliest time poll() has work; kNever when the stack is idle.
  // Whether next_event() has something (a call the app made queued events
  // that no packet will come to announce).
  bool events_pending() const;
  Micros poll_at() const;
  // Send the ACKs held back by Config::defer_acks that no data segment has
  // carried since.
  void flush(Micros now);
  // Some ACK is held for flush() (Config::defer_acks).
  bool acks_held() const;
  // Drain the event queue, oldest first. Returns false when empty.
  bool next_event(Event* out);
  // Positions in the event queue (until next_event() empties it): how many
  // events were queued so far, and how many next_event() has looked at. An
  // application that records events_queued() when something else happens
  // (bytes handed straight to a reader) can put it in order among them.
  size_t events_queued() const;
  size_t events_taken() const;
  // Passes over the events next_event() would not return (for sockets the
  // application closed meanwhile), so events_taken() is the position of the
  // next event it will return.
  void skip_unwanted_events();

  // Whether connect(local, remote, ...) would find its 4-tuple free (or held
  // only by a TIME-WAIT connection of ours that it may take over).
  bool can_connect(const Endpoint& local, const Endpoint& remote) const;

  // Passive open. Returns the listener's SocketId or a negative errno
  // (-EADDRINUSE if the same endpoint already listens). Unspecified addresses
  // match any destination address of their family; an IPv6 "::" listener also
  // takes IPv4 unless v6only.
  int listen(const Endpoint& local, int backlog, bool v6only);
  // Next established connection of a listener: SocketId, or -EAGAIN. One
  // that failed while it waited (reset by its peer) is handed over too, and
  // its Error event follows, as Linux's accept() does.
  int accept(SocketId listener);
  // Active open: sends SYN towards `via`. The caller chooses the local port
  // (port allocation across processes is the fabric's business). Returns the
  // SocketId or a negative errno (-EADDRINUSE when the 4-tuple is taken).
  int connect(const Endpoint& local, const Endpoint& remote, LinkAddr via, Micros now);

  // Queue bytes to send (the caller applies backpressure with
  // send_blocked()/Writable). Copies all of them into the stack's own memory;
  // into memory the link lent (Link::send_memory) only what fits, the caller
  // keeping the rest until Writable. Returns bytes accepted or a negative
  // errno (-EPIPE after shutdown/reset; data queued in SYN-SENT is sent once
  // established). With `more` (MSG_MORE: the next piece of the same write
  // follows), nothing is transmitted yet: a gathered write goes out as full
  // segments, as the kernel's writev does, not one segment per piece. The
  // caller ends with a send without it, or push().
  long send(SocketId s, const uint8_t* data, size_t len, Micros now, bool more = false);
  // Transmits what sends with `more` left queued.
  void push(SocketId s, Micros now);
  size_t send_queued(SocketId s) const;
  // Whether the socket's send buffer reached its limit (see
  // Config::send_budget) or its lent memory is full: the caller waits for
  // Writable, which comes once it is below the limit again.
  bool send_blocked(SocketId s) const;
  // Whether the send buffer can't take another byte (lent memory, full).
  bool send_full(SocketId s) const;

  // The link said it was full (Link::tx_blocked) and has room again:
  // connections that had something to send try now.
  void link_ready(Micros now);
  bool link_waiting() const;
  // Take up to `cap` in-order bytes; reopens the window as the app consumes
  // (sends a window update when it grew significantly). Returns bytes copied,
  // 0 if none available.
  size_t recv(SocketId s, uint8_t* out, size_t cap, Micros now);
  size_t recv_available(SocketId s) const;

  // Half-close: FIN after all queued data.
  int shutdown_write(SocketId s, Micros now);
  // The app is done with the socket (close(2)). Unread received data -> RST;
  // otherwise an orderly FIN exchange continues in the background. The id
  // stays reserved until the Closed event.
  void close(SocketId s, Micros now);
  // Abortive close: send RST, free at once (Closed event follows).
  void abort(SocketId s, Micros now);

  int set_nodelay(SocketId s, bool on);
  // Attach (or with nullptr detach) a Reader; see Reader above.
  int set_reader(SocketId s, Reader* reader);
  int set_keepalive(SocketId s, bool on, Micros idle, Micros interval, uint32_t count);

  bool local_endpoint(SocketId s, Endpoint* out) const;
  bool remote_endpoint(SocketId s, Endpoint* out) const;
  LinkAddr link_of(SocketId s) const;
  // The stack behind `link` is gone (its process died): every connection
  // whose next hop is `link` fails with -ECONNRESET, without sending anything
  // (except those being finished as orphans, below).
  void link_down(LinkAddr link, Micros now);  // next hop of a connection

  // ---- finishing the stream of a peer that vanished ----
  // As a kernel finishes the streams of a process that died, a link that
  // still holds what the peer of `s` had written (Link::send_memory) hands
  // the rest over: orphan() turns `s` into a connection whose peer sends
  // nothing more by itself (no ACK is awaited, nothing is sent to it; the
  // application's close frees it at once), feed() delivers the next bytes of
  // its stream, as far as the receive window lets them (returns how many),
  // and, with `fin` once they all went in, its end.
  SocketId find(const Endpoint& local, const Endpoint& remote) const;
  void orphan(SocketId s, Micros now);
  size_t feed(SocketId s, const Payload& bytes, bool fin, Micros now);
  // The sequence number the stream of `s` continues at (rcv_nxt).
  uint32_t receive_point(SocketId s) const;
  // Ends `s` with ECONNRESET (a peer that had not read what it was sent, or
  // an orphan nobody reads).
  void reset_by_peer(SocketId s, Micros now);
  // Whether the unacknowledged bytes of `s` outlive us: in memory its link
  // lent, or (a few small ones, SendBuffer::lend) sent already, in frames
  // the link holds. The peer can finish the stream without us.
  bool send_lent(SocketId s) const;
  bool info(SocketId s, SocketInfo* out) const;
  const Counters& counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidestep::stack
