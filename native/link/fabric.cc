// The fabric: pairs, their rendezvous and control channels, and the data
// path over their rings (see fabric.h).
#include "link/fabric.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "link/control.h"
#include "link/doorbell.h"
#include "link/layout.h"
#include "link/pair.h"
#include "link/ring.h"
#include "link/sock_diag.h"

namespace sidestep::link {

using namespace layout;

// A sock_diag question, kept to ask again.
struct KernelQuery {
  uint8_t family = 0;
  uint8_t local[16] = {}, remote[16] = {};
  uint16_t local_port = 0, remote_port = 0;
};

namespace {

constexpr size_t kRxQuantum = 32;      // frames per pair per round-robin turn
constexpr uint32_t kMaxPairs = 65535;  // index bits of a LinkAddr
// How many names past the last one that answered a client tries: a cluster
// worker that died leaves a hole until another takes its name.
constexpr uint32_t kProbeMisses = 4;
constexpr uint32_t kMaxShares = 4096;  // names per listening socket
constexpr uint64_t kReprobeUs = 1000000;
// An acceptor that hasn't answered a Hello by then never will in time: the
// pair goes down and its connects move to the kernel (a stuck or busy server,
// or a squatter that accepts and says nothing, costs at most this).
constexpr uint64_t kWelcomeUs = 1000000;
constexpr uint64_t kPortIdleUs = 5000000;
constexpr uint64_t kShunUs = 5000000;
constexpr uint8_t kTcpListen = 10;

enum class Tag : uint64_t { Listener = 1, Channel = 2, Spare = 3 };
uint64_t tag(Tag t, uint32_t index, uint32_t generation) {
  return (uint64_t(t) << 56) | (uint64_t(generation & 0xffffff) << 32) | index;
}

std::string errno_text(int e) { return std::strerror(e); }

uint64_t mono_us() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

LinkAddr make_addr(uint32_t index, uint32_t generation) { return (generation << 16) | index; }
uint32_t index_of(LinkAddr a) { return a & 0xffff; }
uint32_t generation_of(LinkAddr a) { return a >> 16; }

}  // namespace

struct Pair {
  enum class Role { Loopback, Creator, Acceptor };
  // Creator: AwaitProof (its Prove sent, the region not yet) -> AwaitWelcome
  // (Hello sent) -> Up. Acceptor: AwaitHello (possibly proving) -> Up.
  enum class State { Free, AwaitHello, AwaitProof, AwaitWelcome, Up };
  Role role = Role::Loopback;
  State state = State::Free;
  uint32_t generation = 0;  // bumped each time the index is reused (never 0 in use)
  int channel = -1;         // control socket (-1: loopback)
  int peer_bell = -1;       // the peer's doorbell, ours to ring (loopback: our own)
  PeerCred peer;
  PairRegion region;
  RingView tx, rx;
  uint64_t tx_head = 0;     // ring_reserve()'s copy of the consumer's head
  uint64_t inode = 0;       // creator: the listening socket it serves
  uint32_t share = 0;       // creator: which of its names
  uint32_t connections = 0;
  uint64_t idle_since = 0;  // creator: when connections reached 0 (0: busy or never used)
  uint64_t created_at = 0;  // creator: when its Hello (or Prove) went (µs)
  // Creator, AwaitProof: the listener's backlog before we asked (the proof
  // must show another), and how to ask the kernel again.
  uint32_t backlog_before = 0;
  KernelQuery query;
  // Acceptor: which listener it came through, and whether it is proving.
  int listener_entry = -1;
  bool proving = false;
  bool tx_full = false;     // the last reservation found the ring full
  std::unique_ptr<SendArena> ours;    // our connections' send buffers on this pair
  std::unique_ptr<PeerArena> theirs;  // the peer's, read-only
};

struct Listener {
  int fd = -1;
  uint64_t inode = 0;
  uint32_t generation = 0;
  int kernel_fd = -1;        // our dup of the listening socket (-1: a cluster worker's, held by its primary)
  // Proofs go in rounds: one backlog value shown to every pair of the round
  // at once; pairs that ask meanwhile wait for the next round's value (a
  // client that read the backlog during a round must see it change).
  uint32_t backlog = 0;               // while a round runs: the backlog to put back
  std::vector<uint32_t> proving;      // the round's pairs still to say Checked
  std::vector<uint32_t> proof_queue;  // the next round's
  uint64_t proof_started = 0;
  bool round = false;
};

// The pairs a client reached for one listening socket (its shares).
struct Route {
  std::vector<LinkAddr> via;  // by share: 0 where none
  // By share: until when (µs) not to try it again — a name that answered
  // but never came up (a squatter, a server that can't prove itself): every
  // connect meanwhile goes straight to the kernel instead of waiting again.
  std::vector<uint64_t> shunned_until;
  uint32_t rotor = 0;
  uint64_t probed_at = 0;
};

struct Fabric::Impl {
  FabricConfig config;
  Doorbell bell;
  int epoll = -1;
  // Kept open so an accept() that hits the fd limit can still take the
  // pending channel off the queue (and close it): libuv's EMFILE trick.
  int spare_fd = -1;
  std::deque<Pair> pairs;              // [0] is the loopback (a deque: references stay valid)
  std::vector<uint32_t> free_pairs;
  std::vector<uint32_t> live;          // indices of pairs that may carry frames
  std::vector<Listener> listeners;
  std::unordered_map<uint64_t, Route> routes;  // listening socket inode -> pairs
  SockDiag diag;
  PortReservations ports;
  FabricCounters counters;
  uint32_t rx_next = 0;
  bool in_rx = false;
  struct {
    bool valid = false;
    LinkAddr to = 0;
    RingReservation r;
    FrameKind kind = FrameKind::Packet;
    size_t extra = 0;  // bytes in the frame beyond what the caller commits (a reference, a copied payload)
  } pending;
  // What dead pairs' peers still owed (their arenas), by the pair's address.
  std::unordered_map<LinkAddr, std::unique_ptr<PeerArena>> dead;
  // Our arenas of pairs that are gone, while connections still point into
  // them (until the stack releases their slots).
  std::unordered_map<LinkAddr, std::unique_ptr<SendArena>> retired;
  // Pairs that failed where they could not be closed at once (inside the
  // data path): closed, and reported, by the next control_poll().
  std::vector<uint32_t> failed;

  ~Impl() {
    for (uint32_t i = 0; i < pairs.size(); ++i)
      if (pairs[i].state != Pair::State::Free) close_pair(i);
    for (Listener& l : listeners) {
      if (l.fd >= 0) ::close(l.fd);
      if (l.kernel_fd >= 0) ::close(l.kernel_fd);
    }
    if (epoll >= 0) ::close(epoll);
    if (spare_fd >= 0) ::close(spare_fd);
  }

  Pair* find(LinkAddr a) {
    const uint32_t i = index_of(a);
    if (i >= pairs.size() || pairs[i].state == Pair::State::Free || pairs[i].generation != generation_of(a))
      return nullptr;
    return &pairs[i];
  }
  const Pair* find(LinkAddr a) const { return const_cast<Impl*>(this)->find(a); }
  LinkAddr addr_of(uint32_t i) const { return make_addr(i, pairs[i].generation); }

  int new_pair(uint32_t* out, std::string* why) {
    uint32_t i;
    if (!free_pairs.empty()) {
      i = free_pairs.back();
      free_pairs.pop_back();
    } else if (pairs.size() < kMaxPairs) {
      i = static_cast<uint32_t>(pairs.size());
      pairs.emplace_back();
    } else {
      *why = "fabric: " + std::to_string(kMaxPairs) + " pairs are in use";
      return -ENOSPC;
    }
    Pair& p = pairs[i];
    p.generation = (p.generation + 1) & 0xffff;
    if (p.generation == 0) p.generation = 1;
    *out = i;
    return 0;
  }

  void set_rings(Pair& p) {
    // Ring 0 carries creator -> acceptor; the loopback uses ring 0 both ways.
    p.tx = p.region.ring(p.role == Pair::Role::Acceptor ? 1 : 0);
    p.rx = p.region.ring(p.role == Pair::Role::Creator ? 1 : 0);
    p.tx_head = 0;
  }

  void watch(int fd, uint64_t t) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = t;
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev);
  }

  // Forget a pair entirely: its memory, its channel, its doorbell.
  void close_pair(uint32_t i) {
    Pair& p = pairs[i];
    if (p.role == Pair::Role::Acceptor && p.listener_entry >= 0 &&
        static_cast<size_t>(p.listener_entry) < listeners.size())
      proof_done(listeners[p.listener_entry], i);
    if (p.channel >= 0) {
      ::epoll_ctl(epoll, EPOLL_CTL_DEL, p.channel, nullptr);
      ::close(p.channel);
    }
    if (p.peer_bell >= 0 && p.peer_bell != bell.fd()) ::close(p.peer_bell);
    if (p.ours && p.ours->in_use() > 0) retired[addr_of(i)] = std::move(p.ours);
    if (p.role == Pair::Role::Creator) {
      auto it = routes.find(p.inode);
      if (it != routes.end())
        for (LinkAddr& v : it->second.via)
          if (v == addr_of(i)) v = 0;
    }
    const uint32_t generation = p.generation;
    p.~Pair();
    new (&p) Pair();
    p.generation = generation;
    live.erase(std::remove(live.begin(), live.end(), i), live.end());
    if (i != 0) free_pairs.push_back(i);
  }

  void pair_down(uint32_t i, std::vector<LinkAddr>* down) {
    if (pairs[i].role == Pair::Role::Creator &&
        (pairs[i].state == Pair::State::AwaitWelcome || pairs[i].state == Pair::State::AwaitProof)) {
      // It never came up: don't make the next connects wait for it again.
      Route& rt = routes[pairs[i].inode];
      if (rt.shunned_until.size() <= pairs[i].share) rt.shunned_until.resize(pairs[i].share + 1, 0);
      rt.shunned_until[pairs[i].share] = mono_us() + kShunUs;
    }
    if (pairs[i].state == Pair::State::Up || pairs[i].state == Pair::State::AwaitWelcome ||
        pairs[i].state == Pair::State::AwaitProof) {
      ++counters.pairs_down;
      // What the peer still owed its connections stays readable for them.
      if (pairs[i].theirs && !pairs[i].theirs->live().empty()) dead[addr_of(i)] = std::move(pairs[i].theirs);
      if (down) down->push_back(addr_of(i));
    } else {
      ++counters.pairs_refused;
    }
    close_pair(i);
  }

  // Messages the data path needs before it can go on: a Welcome (the
  // acceptor armed before we read it: it is already in our socket, sent
  // before it ever armed) or a Segment a frame names (sent before that
  // frame). Pairs must not disappear here: a failure is left for
  // control_poll().
  void take_messages(uint32_t i) {
    Pair& p = pairs[i];
    for (;;) {
      ControlMessage msg;
      int fds[kMaxFds];
      size_t nfds = 0;
      int r = control_recv(p.channel, &msg, fds, &nfds);
      if (r == 0) return;
      if (r > 0 && accept_welcome(p, msg, fds, nfds)) continue;
      const int seg = r > 0 ? accept_segment(p, msg, fds, nfds) : -1;
      if (seg > 0) continue;
      if (seg == 0)
        for (size_t k = 0; k < nfds; ++k) ::close(fds[k]);
      failed.push_back(i);
      return;
    }
  }

  // 1: a segment of the peer's arena, mapped; 0: not a Segment message
  // (descriptors untouched); -1: a bad one (its descriptor closed).
  int accept_segment(Pair& p, const ControlMessage& msg, int* fds, size_t nfds) {
    if (p.state != Pair::State::Up || msg.type != static_cast<uint32_t>(ControlType::Segment) || nfds != 1)
      return 0;
    if (!p.theirs) p.theirs = std::make_unique<PeerArena>();
    std::string why;
    return p.theirs->adopt(msg.reserved, fds[0], msg.ring_bytes, uint64_t(msg.mtu) << 12, msg.region_bytes, &why) == 0
               ? 1
               : -1;
  }

  bool accept_welcome(Pair& p, const ControlMessage& msg, int* fds, size_t nfds) {
    if (p.state != Pair::State::AwaitWelcome || msg.type != static_cast<uint32_t>(ControlType::Welcome) ||
        nfds != 1 || !Doorbell::is_eventfd(fds[0]))
      return false;
    // Ringing must never block us, whatever the peer made its eventfd.
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    p.peer_bell = fds[0];
    p.state = Pair::State::Up;
    return true;
  }

  void ring_peer(Pair& p, uint32_t i) {
    if (p.peer_bell < 0 && p.role == Pair::Role::Creator) take_messages(i);
    if (p.peer_bell < 0) return;
    ++counters.doorbells_rung;
    Doorbell::ring(p.peer_bell);
  }

  int accept_channels();
  void read_channel(uint32_t i, std::vector<LinkAddr>* down);
  int on_hello(uint32_t i, const ControlMessage& m, int* fds, size_t nfds, std::string* why);
  int open_channel(const KernelSocket& ks, const KernelQuery& q, uint32_t share, LinkAddr* out, std::string* why);
  int send_hello(Pair& p, std::string* why);
  // The proof exchange (control.h's Prove): the creator's and the acceptor's halves.
  bool on_proof_message(uint32_t i, const ControlMessage& msg, std::string* why);
  void start_round(Listener& l);
  void proof_done(Listener& l, uint32_t i);
  void end_proof(Listener& l);
  int verify_peer(int fd, uint64_t inode, uint32_t uid, PeerCred* cred, std::string* why);
  uint8_t* reserve_on(Pair& p, size_t len, RingReservation* r);
};

// ---- opening ----

Fabric::Fabric() : impl_(std::make_unique<Impl>()) {}
Fabric::~Fabric() = default;

int Fabric::open(const FabricConfig& config, std::unique_ptr<Fabric>* out, std::string* why) {
  std::string ignored;
  if (!why) why = &ignored;
  if (config.name.empty() || config.name.size() > 64) {
    *why = "fabric name must be 1-64 characters";
    return -EINVAL;
  }
  if (!Geometry::valid(config.ring_bytes, config.mtu)) {
    *why = "fabric ring_bytes " + std::to_string(config.ring_bytes) + " / mtu " + std::to_string(config.mtu) +
           " out of bounds (ring_bytes a power of two from 64 KiB holding two frames)";
    return -EINVAL;
  }
  if (config.send_slot_bytes < layout::kPage || config.send_slot_bytes > (uint64_t(1) << 30) ||
      (config.send_slot_bytes & (config.send_slot_bytes - 1))) {
    *why = "fabric send_slot_bytes " + std::to_string(config.send_slot_bytes) + " must be a power of two from 4 KiB to 1 GiB";
    return -EINVAL;
  }
  std::unique_ptr<Fabric> f(new Fabric());
  Impl& m = *f->impl_;
  m.config = config;
  if (int r = m.bell.open(); r < 0) {
    *why = "doorbell eventfd(): " + errno_text(-r);
    return r;
  }
  m.epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (m.epoll < 0) {
    int e = errno;
    *why = "epoll_create1: " + errno_text(e);
    return -e;
  }
  m.spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // The loopback: index 0, private memory, our own doorbell.
  m.pairs.emplace_back();
  Pair& lo = m.pairs[0];
  lo.generation = 1;
  lo.role = Pair::Role::Loopback;
  if (int r = lo.region.create_private(config.ring_bytes, config.mtu, why); r < 0) return r;
  lo.state = Pair::State::Up;
  lo.peer_bell = m.bell.fd();
  lo.peer.pid = static_cast<int>(::getpid());
  lo.peer.uid = ::geteuid();
  m.set_rings(lo);
  m.live.push_back(0);
  *out = std::move(f);
  return 0;
}

LinkAddr Fabric::loopback() const { return impl_->addr_of(0); }
uint32_t Fabric::mtu() const { return impl_->config.mtu; }
const FabricCounters& Fabric::counters() const { return impl_->counters; }
PortReservations& Fabric::ports() { return impl_->ports; }
int Fabric::doorbell_fd() const { return impl_->bell.fd(); }
int Fabric::control_fd() const { return impl_->epoll; }

// ---- transmit ----

namespace {
constexpr size_t kRefBytes = sizeof(SlotRef);
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
  // second piece, if any, the start of that same slot's ring).
  SlotRef ref;
  bool by_ref = p->ours && p->ours->locate(payload.data[0], payload.len[0], &ref);
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

void Fabric::doorbell_drain() {
  if (impl_->bell.drain()) ++impl_->counters.wakeups;
}

bool Fabric::prepare_sleep() {
  Impl& m = *impl_;
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

// ---- the control plane ----

int Fabric::Impl::accept_channels() {
  int accepted = 0;
  for (size_t li = 0; li < listeners.size(); ++li) {
    Listener& l = listeners[li];
    if (l.fd < 0) continue;
    for (;;) {
      int fd = control_accept(l.fd);
      if (fd == -EMFILE || fd == -ENFILE) {
        // Out of descriptors: take the channel off the queue with the
        // spare and close it (the client sees the hang-up and uses the
        // kernel), rather than spin on a readable listener.
        // (accept4 says EMFILE before it looks at the queue: an empty
        // queue shows only here, and then we are done.)
        if (spare_fd >= 0) {
          ::close(spare_fd);
          int drop = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (drop >= 0) ::close(drop);
          spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          if (drop < 0) break;
          ++counters.pairs_refused;
          continue;
        }
        break;
      }
      if (fd < 0) break;  // EAGAIN: done
      PeerCred cred;
      std::string why;
      uint32_t i = 0;
      if (peer_cred(fd, &cred) != 0 || (config.same_uid_only && cred.uid != ::geteuid()) ||
          new_pair(&i, &why) != 0) {
        ::close(fd);
        ++counters.pairs_refused;
        continue;
      }
      Pair& p = pairs[i];
      p.role = Pair::Role::Acceptor;
      p.state = Pair::State::AwaitHello;
      p.channel = fd;
      p.peer = cred;
      p.listener_entry = static_cast<int>(li);
      live.push_back(i);
      watch(fd, tag(Tag::Channel, i, p.generation));
      ++accepted;
    }
  }
  return accepted;
}

int Fabric::Impl::on_hello(uint32_t i, const ControlMessage& m, int* fds, size_t nfds, std::string* why) {
  Pair& p = pairs[i];
  if (m.type != static_cast<uint32_t>(ControlType::Hello) || nfds != 2 ||
      m.layout_version != kLayoutVersion) {
    for (size_t k = 0; k < nfds; ++k) ::close(fds[k]);
    *why = m.layout_version != kLayoutVersion ? "the peer speaks another layout version" : "expected a Hello with two descriptors";
    return -EPROTO;
  }
  if (!Doorbell::is_eventfd(fds[1])) {
    ::close(fds[0]);
    ::close(fds[1]);
    *why = "the peer's doorbell is not an eventfd";
    return -EPROTO;
  }
  // Ringing must never block us, whatever the peer made its eventfd.
  ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  p.peer_bell = fds[1];
  if (int r = p.region.adopt(fds[0], m.ring_bytes, m.mtu, m.region_bytes, why); r < 0) return r;
  set_rings(p);
  ControlMessage welcome;
  welcome.type = static_cast<uint32_t>(ControlType::Welcome);
  welcome.layout_version = kLayoutVersion;
  const int mine = bell.fd();
  // Sent before this pair is ever armed (the creator relies on it).
  if (int r = control_send(p.channel, welcome, &mine, 1); r < 0) {
    *why = "sending the Welcome: " + errno_text(-r);
    return r;
  }
  p.state = Pair::State::Up;
  ++counters.pairs_accepted;
  return 0;
}

void Fabric::Impl::read_channel(uint32_t i, std::vector<LinkAddr>* down) {
  for (;;) {
    Pair& p = pairs[i];
    if (p.state == Pair::State::Free || p.channel < 0) return;
    ControlMessage msg;
    int fds[kMaxFds];
    size_t nfds = 0;
    int r = control_recv(p.channel, &msg, fds, &nfds);
    if (r == 0) return;
    if (r < 0) {
      pair_down(i, down);
      return;
    }
    std::string why;
    const auto type = static_cast<ControlType>(msg.type);
    if (type == ControlType::Prove || type == ControlType::Proved || type == ControlType::Checked) {
      for (size_t k = 0; k < nfds; ++k) ::close(fds[k]);
      if (nfds == 0 && on_proof_message(i, msg, &why)) continue;
      pair_down(i, down);
      return;
    }
    if (p.state == Pair::State::AwaitHello) {
      if (on_hello(i, msg, fds, nfds, &why) < 0) {
        ControlMessage refuse;
        refuse.type = static_cast<uint32_t>(ControlType::Refuse);
        std::snprintf(refuse.text, sizeof refuse.text, "%s", why.c_str());
        control_send(p.channel, refuse, nullptr, 0);
        pair_down(i, down);
        return;
      }
      continue;
    }
    if (accept_welcome(p, msg, fds, nfds)) continue;
    const int seg = accept_segment(p, msg, fds, nfds);
    if (seg > 0) continue;
    // A Refuse, a bad segment, or anything out of turn: this pair is over.
    if (seg == 0)
      for (size_t k = 0; k < nfds; ++k) ::close(fds[k]);
    pair_down(i, down);
    return;
  }
}

void Fabric::control_poll(std::vector<LinkAddr>* down) {
  Impl& m = *impl_;
  std::vector<uint32_t> failed;
  failed.swap(m.failed);
  for (uint32_t i : failed)
    if (m.pairs[i].state != Pair::State::Free) m.pair_down(i, down);
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(m.epoll, events, 64, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (int k = 0; k < n; ++k) {
      const uint64_t t = events[k].data.u64;
      const auto kind = static_cast<Tag>(t >> 56);
      const uint32_t index = static_cast<uint32_t>(t & 0xffffffffu);
      const uint32_t generation = static_cast<uint32_t>((t >> 32) & 0xffffff);
      if (kind == Tag::Listener) {
        m.accept_channels();
        continue;
      }
      if (kind != Tag::Channel || index >= m.pairs.size() || m.pairs[index].generation != generation ||
          m.pairs[index].state == Pair::State::Free)
        continue;
      // Messages first (a Refuse explains a hang-up that follows it).
      m.read_channel(index, down);
      Pair& p = m.pairs[index];
      if (p.state != Pair::State::Free && p.generation == generation &&
          (events[k].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
        m.pair_down(index, down);
    }
    if (n < 64) return;
  }
}

// ---- proof of holding the listening socket (control.h: Prove) ----

void Fabric::Impl::end_proof(Listener& l) {
  if (!l.round) return;
  if (l.kernel_fd >= 0) ::listen(l.kernel_fd, static_cast<int>(l.backlog));  // as it was
  for (uint32_t i : l.proving)
    if (i < pairs.size()) pairs[i].proving = false;
  l.proving.clear();
  l.round = false;
  if (!l.proof_queue.empty()) start_round(l);
}

void Fabric::Impl::proof_done(Listener& l, uint32_t i) {
  if (i < pairs.size()) pairs[i].proving = false;
  l.proving.erase(std::remove(l.proving.begin(), l.proving.end(), i), l.proving.end());
  l.proof_queue.erase(std::remove(l.proof_queue.begin(), l.proof_queue.end(), i), l.proof_queue.end());
  if (l.round && l.proving.empty()) end_proof(l);
}

void Fabric::Impl::start_round(Listener& l) {
  std::vector<uint32_t> asking;
  asking.swap(l.proof_queue);
  // The backlog as it is now: our socket's own line in the kernel's table.
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  KernelSocket ks;
  uint8_t addr[16] = {}, any[16] = {};
  uint8_t family = 0;
  uint16_t port = 0;
  std::string why;
  bool ok = ::getsockname(l.kernel_fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0;
  if (ok && ss.ss_family == AF_INET) {
    family = 4;
    std::memcpy(addr, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, 4);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  } else if (ok) {
    family = 6;
    std::memcpy(addr, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, 16);
    port = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  uint32_t nonce = 0;
  if (::getrandom(&nonce, sizeof nonce, GRND_NONBLOCK) != sizeof nonce) nonce = static_cast<uint32_t>(mono_us());
  ok = ok && diag.lookup(family, addr, port, any, 0, &ks, &why) == 0 && ks.inode == l.inode;
  const uint32_t shown = ok ? proof_backlog(ks.backlog, nonce) : 0;
  ok = ok && shown != ks.backlog && ::listen(l.kernel_fd, static_cast<int>(shown)) == 0;
  if (!ok) {
    for (uint32_t i : asking) failed.push_back(i);  // they fall back (control_poll)
    return;
  }
  l.backlog = ks.backlog;
  l.round = true;
  l.proof_started = mono_us();
  ControlMessage proved;
  proved.type = static_cast<uint32_t>(ControlType::Proved);
  proved.layout_version = kLayoutVersion;
  proved.reserved = shown;
  for (uint32_t i : asking) {
    if (i >= pairs.size() || pairs[i].state != Pair::State::AwaitHello || pairs[i].role != Pair::Role::Acceptor)
      continue;
    if (control_send(pairs[i].channel, proved, nullptr, 0) != 0) {
      failed.push_back(i);
      continue;
    }
    pairs[i].proving = true;
    l.proving.push_back(i);
  }
  if (l.proving.empty()) end_proof(l);
}

bool Fabric::Impl::on_proof_message(uint32_t i, const ControlMessage& msg, std::string* why) {
  Pair& p = pairs[i];
  const auto type = static_cast<ControlType>(msg.type);
  if (p.role == Pair::Role::Acceptor && p.state == Pair::State::AwaitHello && type == ControlType::Prove) {
    if (p.listener_entry < 0 || static_cast<size_t>(p.listener_entry) >= listeners.size()) return false;
    Listener& l = listeners[p.listener_entry];
    // A worker whose primary holds the socket can't prove (its client
    // falls back).
    if (l.kernel_fd < 0) {
      *why = "can't prove holding the listening socket";
      return false;
    }
    l.proof_queue.push_back(i);
    if (!l.round) start_round(l);
    return true;
  }
  if (p.role == Pair::Role::Acceptor && type == ControlType::Checked) {
    if (p.listener_entry >= 0 && static_cast<size_t>(p.listener_entry) < listeners.size())
      proof_done(listeners[p.listener_entry], i);
    return true;
  }
  if (p.role == Pair::Role::Creator && p.state == Pair::State::AwaitProof && type == ControlType::Proved) {
    // The kernel's table must now show the backlog only the holder could set.
    KernelSocket ks;
    const KernelQuery& q = p.query;
    // (A value other than the one we saw before asking: a squatter can only
    // claim the backlog as it is.)
    if (diag.lookup(q.family, q.remote, q.remote_port, q.local, q.local_port, &ks, why) != 0 ||
        ks.inode != p.inode || ks.backlog != msg.reserved || msg.reserved == p.backlog_before) {
      *why = "ownership: the peer could not prove it holds the listening socket";
      return false;
    }
    ControlMessage checked;
    checked.type = static_cast<uint32_t>(ControlType::Checked);
    checked.layout_version = kLayoutVersion;
    if (control_send(p.channel, checked, nullptr, 0) != 0) return false;
    return send_hello(p, why) == 0;
  }
  return false;
}

// ---- listeners ----

int Fabric::listener_add(int kernel_fd, uint8_t family, const uint8_t addr[16], uint16_t port, std::string* why) {
  Impl& m = *impl_;
  uint64_t inode = kernel_fd >= 0 ? socket_inode(kernel_fd) : 0;
  if (inode == 0) {
    // A cluster worker's listener is its primary's socket: ask the kernel
    // which one takes connections to this address.
    KernelSocket ks;
    const uint8_t any[16] = {};
    int r = m.diag.lookup(family, addr, port, any, 0, &ks, why);
    if (r < 0 || ks.state != kTcpListen) {
      if (r == -ENOENT || (r == 0 && ks.state != kTcpListen)) *why = "the kernel has no listening socket there";
      return r < 0 ? r : -ENOENT;
    }
    if (ks.uid != ::geteuid()) {
      *why = "the kernel's listening socket there belongs to uid " + std::to_string(ks.uid);
      return -EACCES;
    }
    inode = ks.inode;
  }
  for (uint32_t k = 0; k < kMaxShares; ++k) {
    int fd = control_listen(listener_name(m.config.name, inode, k));
    if (fd == -EADDRINUSE) continue;  // a fellow worker's, or a squatter's
    if (fd < 0) {
      *why = "binding the rendezvous name: " + errno_text(-fd);
      return fd;
    }
    uint32_t entry = 0;
    while (entry < m.listeners.size() && m.listeners[entry].fd >= 0) ++entry;
    if (entry == m.listeners.size()) m.listeners.emplace_back();
    Listener& l = m.listeners[entry];
    l.fd = fd;
    l.inode = inode;
    l.generation++;
    // Our own reference to the listening socket, to prove we hold it to
    // clients that can't look (Prove); Node may close its handle first.
    l.kernel_fd = kernel_fd >= 0 ? ::fcntl(kernel_fd, F_DUPFD_CLOEXEC, 0) : -1;
    l.round = false;
    m.watch(fd, tag(Tag::Listener, entry, l.generation));
    return static_cast<int>(entry);
  }
  *why = "every rendezvous name of this listener is taken";
  return -EADDRINUSE;
}

void Fabric::listener_remove(int entry) {
  Impl& m = *impl_;
  if (entry < 0 || static_cast<size_t>(entry) >= m.listeners.size()) return;
  Listener& l = m.listeners[entry];
  if (l.fd < 0) return;
  ::epoll_ctl(m.epoll, EPOLL_CTL_DEL, l.fd, nullptr);
  ::close(l.fd);  // the name is gone with it
  m.end_proof(l);
  if (l.kernel_fd >= 0) ::close(l.kernel_fd);
  l.fd = l.kernel_fd = -1;
  l.inode = 0;
}

// ---- connecting ----

int Fabric::Impl::verify_peer(int fd, uint64_t inode, uint32_t uid, PeerCred* cred, std::string* why) {
  if (peer_cred(fd, cred) != 0) {
    *why = "ownership: SO_PEERCRED failed";
    return -EPROTO;
  }
  if (cred->uid != uid) {
    *why = "ownership: the rendezvous for listener " + std::to_string(inode) + " was answered by uid " +
           std::to_string(cred->uid) + ", but the kernel's listening socket belongs to uid " + std::to_string(uid);
    return -EACCES;
  }
  if (config.same_uid_only && cred->uid != ::geteuid()) {
    *why = "peers: the listener runs as uid " + std::to_string(cred->uid) + " and SIDESTEP_PEERS=same-uid";
    return -EACCES;
  }
  // The process must hold the listening socket, or be a child of the one
  // that does (a cluster worker, its primary holding the socket). Where we
  // may not look (another uid's process, another pid namespace, a process
  // that made itself non-dumpable), it must prove it (1: see Prove).
  if (cred->pid <= 0) return 1;
  int holds = process_holds_socket(cred->pid, inode);
  if (holds == 0) {
    const int parent = parent_of(cred->pid);
    if (parent > 1) {
      const int by_parent = process_holds_socket(parent, inode);
      if (by_parent != 0) holds = by_parent;
    }
  }
  if (holds == 0) {
    *why = "ownership: pid " + std::to_string(cred->pid) + " answered the rendezvous for listener " +
           std::to_string(inode) + " but neither it nor its parent holds that socket";
    return -EACCES;
  }
  return holds == 1 ? 0 : 1;
}

int Fabric::Impl::send_hello(Pair& p, std::string* why) {
  ControlMessage hello;
  hello.type = static_cast<uint32_t>(ControlType::Hello);
  hello.layout_version = kLayoutVersion;
  hello.ring_bytes = config.ring_bytes;
  hello.mtu = config.mtu;
  hello.region_bytes = p.region.geometry().total_bytes;
  const int fds[2] = {p.region.fd(), bell.fd()};
  if (int r = control_send(p.channel, hello, fds, 2); r < 0) {
    *why = "fabric: sending the Hello: " + errno_text(-r);
    return r;
  }
  p.region.close_fd();
  p.state = Pair::State::AwaitWelcome;
  p.created_at = mono_us();
  return 0;
}

int Fabric::Impl::open_channel(const KernelSocket& ks, const KernelQuery& q, uint32_t share, LinkAddr* out,
                               std::string* why) {
  const uint64_t inode = ks.inode;
  int fd = control_connect(listener_name(config.name, inode, share));
  if (fd < 0) {
    if (fd == -EAGAIN) *why = "fabric: the listener's rendezvous queue is full";
    else if (fd != -ECONNREFUSED && fd != -ENOENT) *why = "fabric: rendezvous connect: " + errno_text(-fd);
    return fd;
  }
  PeerCred cred;
  const int verified = verify_peer(fd, inode, ks.uid, &cred, why);
  if (verified < 0) {
    ::close(fd);
    return verified;
  }
  uint32_t i = 0;
  if (int r = new_pair(&i, why); r < 0) {
    ::close(fd);
    return r;
  }
  Pair& p = pairs[i];
  p.role = Pair::Role::Creator;
  p.channel = fd;
  p.peer = cred;
  p.inode = inode;
  p.share = share;
  auto fail = [&](int r) {
    p.state = Pair::State::AwaitWelcome;  // so close_pair frees it
    close_pair(i);
    return r;
  };
  if (int r = p.region.create(config.ring_bytes, config.mtu, why); r < 0) return fail(r);
  set_rings(p);
  if (verified == 0) {
    if (int r = send_hello(p, why); r < 0) return fail(r);
  } else {
    // Nothing of ours leaves until it proves it holds the socket; our SYN
    // waits in the region meanwhile.
    ControlMessage prove;
    prove.type = static_cast<uint32_t>(ControlType::Prove);
    prove.layout_version = kLayoutVersion;
    if (int r = control_send(fd, prove, nullptr, 0); r < 0) {
      *why = "fabric: asking for proof: " + errno_text(-r);
      return fail(r);
    }
    p.backlog_before = ks.backlog;
    p.query = q;
    p.state = Pair::State::AwaitProof;
    p.created_at = mono_us();
    ++counters.pairs_proved;
  }
  live.push_back(i);
  watch(fd, tag(Tag::Channel, i, p.generation));
  ++counters.pairs_created;
  *out = addr_of(i);
  return 0;
}

int Fabric::route(uint8_t family, const uint8_t local[16], uint16_t local_port, const uint8_t remote[16],
                  uint16_t remote_port, LinkAddr* via, std::string* why) {
  Impl& m = *impl_;
  KernelSocket ks;
  int r = m.diag.lookup(family, remote, remote_port, local, local_port, &ks, why);
  if (r == -ENOENT || (r == 0 && ks.state != kTcpListen)) {
    *why = "no-listener: the kernel has no listening socket there";
    return -ENOENT;
  }
  if (r < 0) {
    *why = "fabric: " + *why;
    return r;
  }
  for (const Listener& l : m.listeners) {
    if (l.fd >= 0 && l.inode == ks.inode) {
      *via = loopback();
      return 0;
    }
  }
  Route& rt = m.routes[ks.inode];  // (nothing below erases routes)
  const uint64_t now = mono_us();
  // Probe when we have no live pair for this listener, and otherwise now and
  // then for servers that came since (a cluster's new workers).
  const bool none = std::none_of(rt.via.begin(), rt.via.end(), [&](LinkAddr v) { return v != 0 && m.find(v); });
  const bool probe = none || now - rt.probed_at >= kReprobeUs;
  std::string last_why;
  int last_err = 0;
  if (probe) {
    rt.probed_at = now;
    uint32_t misses = 0;
    for (uint32_t k = 0; k < kMaxShares && misses < kProbeMisses; ++k) {
      if (k < rt.via.size() && rt.via[k] != 0) {
        misses = 0;
        continue;
      }
      if (k < rt.shunned_until.size() && now < rt.shunned_until[k]) {
        misses = 0;
        last_why = "ownership: the rendezvous for that listener was answered but the pair never came up (retried in a few seconds)";
        continue;
      }
      LinkAddr a = 0;
      std::string w;
      KernelQuery q;
      q.family = family;
      std::memcpy(q.local, local, family == 4 ? 4 : 16);
      std::memcpy(q.remote, remote, family == 4 ? 4 : 16);
      q.local_port = local_port;
      q.remote_port = remote_port;
      int e = m.open_channel(ks, q, k, &a, &w);
      if (e == -ECONNREFUSED || e == -ENOENT) {
        ++misses;
        continue;
      }
      misses = 0;
      if (e < 0) {
        last_why = w;
        last_err = e;
        continue;
      }
      if (rt.via.size() <= k) rt.via.resize(k + 1, 0);
      rt.via[k] = a;
    }
  }
  // Spread connections over the listener's servers (a cluster's workers).
  const size_t n = rt.via.size();
  for (size_t t = 0; t < n; ++t) {
    LinkAddr a = rt.via[(rt.rotor + t) % n];
    if (a == 0 || !m.find(a)) continue;
    rt.rotor = static_cast<uint32_t>((rt.rotor + t + 1) % n);
    *via = a;
    return 0;
  }
  *why = last_why.empty() ? "no-listener: the listening socket there is not served by a sidestep process" : last_why;
  return last_err == -EMFILE || last_err == -ENFILE ? last_err : -ENOENT;
}

void Fabric::hold(LinkAddr via, bool on) {
  Impl& m = *impl_;
  Pair* p = m.find(via);
  if (!p) return;
  if (on) {
    ++p->connections;
    p->idle_since = 0;
  } else if (p->connections > 0 && --p->connections == 0) {
    p->idle_since = mono_us();
  }
}

void Fabric::trim() {
  Impl& m = *impl_;
  const uint64_t now_us = mono_us();
  for (uint32_t i = 1; i < m.pairs.size(); ++i) {
    Pair& p = m.pairs[i];
    if (p.role == Pair::Role::Creator &&
        (p.state == Pair::State::AwaitWelcome || p.state == Pair::State::AwaitProof) &&
        now_us - p.created_at >= kWelcomeUs) {
      m.failed.push_back(i);  // reported down at the next control_poll()
      continue;
    }
    if (p.role != Pair::Role::Creator || p.state == Pair::State::Free || p.connections != 0) continue;
    if (p.idle_since == 0) {
      p.idle_since = now_us;  // created, never used yet: give it the same grace
      continue;
    }
    if (now_us - p.idle_since < m.config.idle_close_us) continue;
    ++m.counters.pairs_idle_closed;
    m.close_pair(i);  // the acceptor sees the hang-up; it has no connection on it either
  }
  for (Listener& l : m.listeners)
    if (l.round && now_us - l.proof_started >= kWelcomeUs) m.end_proof(l);
  for (auto it = m.routes.begin(); it != m.routes.end();) {
    const bool empty = std::all_of(it->second.via.begin(), it->second.via.end(), [](LinkAddr v) { return v == 0; });
    if (empty && now_us - it->second.probed_at >= kReprobeUs) it = m.routes.erase(it); else ++it;
  }
  m.ports.trim();
}

bool Fabric::control_pending() const { return !impl_->failed.empty(); }

uint64_t Fabric::trim_in() const {
  const Impl& m = *impl_;
  const uint64_t now = mono_us();
  uint64_t at = UINT64_MAX;
  for (uint32_t i = 1; i < m.pairs.size(); ++i) {
    const Pair& p = m.pairs[i];
    if (p.role != Pair::Role::Creator || p.state == Pair::State::Free) continue;
    if (p.state == Pair::State::AwaitWelcome || p.state == Pair::State::AwaitProof)
      at = std::min(at, p.created_at + kWelcomeUs);
    else if (p.connections == 0) at = std::min(at, (p.idle_since ? p.idle_since : now) + m.config.idle_close_us);
  }
  if (m.ports.any_unused()) at = std::min(at, now + kPortIdleUs);
  for (const Listener& l : m.listeners)
    if (l.round) at = std::min(at, l.proof_started + kWelcomeUs);
  return at == UINT64_MAX ? UINT64_MAX : (at > now ? at - now : 0);
}

bool Fabric::awaiting_welcome(LinkAddr addr) const {
  const Pair* p = impl_->find(addr);
  return p && (p->state == Pair::State::AwaitWelcome || p->state == Pair::State::AwaitProof);
}

std::vector<PairInfo> Fabric::pairs() const {
  const Impl& m = *impl_;
  std::vector<PairInfo> out;
  for (uint32_t i = 0; i < m.pairs.size(); ++i) {
    const Pair& p = m.pairs[i];
    if (p.state == Pair::State::Free) continue;
    PairInfo info;
    info.addr = m.addr_of(i);
    info.creator = p.role == Pair::Role::Creator;
    info.up = p.state == Pair::State::Up;
    info.peer_pid = p.peer.pid;
    info.peer_uid = p.peer.uid;
    info.connections = p.connections;
    if (p.state != Pair::State::AwaitHello) {
      info.ring_in_used = ring_used(p.rx);
      info.ring_out_used = ring_used(p.tx);
    }
    out.push_back(info);
  }
  return out;
}

}  // namespace sidestep::link
