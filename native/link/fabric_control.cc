// The fabric's control plane: accepting and reading pairs' channels, the
// proof that a pair's acceptor holds the listening socket, listeners, and
// routes from a connect to a pair (see fabric.h).
#include "link/fabric_impl.h"

namespace sidestep::link {

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
      if (r == -EPIPE)
        hang_up(i, down);  // the peer's end closed
      else
        pair_down(i, down);  // a malformed message
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
        m.hang_up(index, down);
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

}  // namespace sidestep::link
