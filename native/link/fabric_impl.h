// Fabric's insides, shared by the files that implement it (see fabric.h):
// fabric.cc (opening, lifecycle, inspection), fabric_data.cc (the data path:
// transmit, send memory, receive) and fabric_control.cc (the control plane:
// rendezvous, channels, proofs, listeners, routes). Nothing outside
// native/link/fabric*.cc includes this.
#pragma once
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

namespace fabric_parts {

inline constexpr size_t kRxQuantum = 32;      // frames per pair per round-robin turn
inline constexpr uint32_t kMaxPairs = 65535;  // index bits of a LinkAddr
// How many names past the last one that answered a client tries: a cluster
// worker that died leaves a hole until another takes its name.
inline constexpr uint32_t kProbeMisses = 4;
inline constexpr uint32_t kMaxShares = 4096;  // names per listening socket
inline constexpr uint64_t kReprobeUs = 1000000;
// An acceptor that hasn't answered a Hello by then never will in time: the
// pair goes down and its connects move to the kernel (a stuck or busy server,
// or a squatter that accepts and says nothing, costs at most this).
inline constexpr uint64_t kWelcomeUs = 1000000;
inline constexpr uint64_t kPortIdleUs = 5000000;
inline constexpr uint64_t kShunUs = 5000000;
inline constexpr uint8_t kTcpListen = 10;

enum class Tag : uint64_t { Listener = 1, Channel = 2, Spare = 3 };
inline uint64_t tag(Tag t, uint32_t index, uint32_t generation) {
  return (uint64_t(t) << 56) | (uint64_t(generation & 0xffffff) << 32) | index;
}

inline std::string errno_text(int e) { return std::strerror(e); }

inline uint64_t mono_us() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

inline LinkAddr make_addr(uint32_t index, uint32_t generation) { return (generation << 16) | index; }
inline uint32_t index_of(LinkAddr a) { return a & 0xffff; }
inline uint32_t generation_of(LinkAddr a) { return a >> 16; }

}  // namespace fabric_parts
using namespace fabric_parts;

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
  uint32_t hangup_polls = 0;  // control polls that saw the peer gone, its frames still in rx
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

  // The peer hung up (exited, or was killed). Frames it wrote before that
  // may still wait in our ring, and a small write's bytes are in no other
  // memory of its (stack::SendBuffer::lend): the pair stays up until the
  // pump has taken them, and goes down at a later control poll (the
  // hang-up is level-triggered: reported again at each). Bounded, in case
  // the ring can't be emptied.
  void hang_up(uint32_t i, std::vector<LinkAddr>* down) {
    constexpr uint32_t kHangupPolls = 64;
    Pair& p = pairs[i];
    if (p.state == Pair::State::Up && p.rx.header && ring_nonempty(p.rx) && p.hangup_polls < kHangupPolls) {
      ++p.hangup_polls;
      return;
    }
    pair_down(i, down);
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

}  // namespace sidestep::link
