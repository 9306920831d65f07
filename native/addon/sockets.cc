// Runtime (see runtime.h): the socket calls the JS handle layer makes
// (connect, listen, write, read start/stop, shutdown, close, options).
#include "runtime.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidestep::addon {

SocketState* Runtime::Find(stack::SocketId id) {
  auto it = sockets_.find(id);
  return it == sockets_.end() ? nullptr : &it->second;
}

int Runtime::Connect(const stack::Endpoint& local, int bound_fd, const stack::Endpoint& remote, std::string* why) {
  if (!stack_) {
    *why = "fabric: not attached";
    return -ENETDOWN;
  }
  link::PortReservations& ports = fabric_->ports();
  // The local port: the one the application bound (Node's handle holds it;
  // we keep a dup), else one the kernel reserved for us whose 4-tuple
  // towards this peer is free in our stack.
  stack::Endpoint l = local;
  int port = -1;
  if (bound_fd >= 0 && local.port != 0) {
    if (!stack_->can_connect(l, remote)) {
      *why = "fabric: that 4-tuple is in use";
      return -EADDRINUSE;
    }
    port = ports.adopt(bound_fd, local.port);
  } else {
    stack::Endpoint probe = local;
    port = ports.take(
        local.addr.family, local.addr.bytes,
        [&](uint16_t p) {
          probe.port = p;
          return stack_->can_connect(probe, remote);
        },
        &l.port);
  }
  if (port < 0) {
    *why = std::string("fabric: no local port (") + std::strerror(-port) + ")";
    return port;
  }
  link::LinkAddr via = 0;
  int r = fabric_->route(l.addr.family, l.addr.bytes, l.port, remote.addr.bytes, remote.port, &via, why);
  if (r < 0) {
    ports.give_back(port);
    // Out of descriptors: the kernel connect we fall back to needs one.
    if (r == -EMFILE || r == -ENFILE) ports.release_unused();
    // Every reason starts with its kind (stats().fallbackReasons counts by it).
    static const char* const kinds[] = {"no-listener:", "ownership:", "peers:", "fabric:", "remote:"};
    if (std::none_of(std::begin(kinds), std::end(kinds), [&](const char* k) { return why->rfind(k, 0) == 0; }))
      *why = "fabric: " + *why;
    return r;
  }
  int id = stack_->connect(l, remote, via, Now());
  if (id < 0) {
    ports.give_back(port);
    *why = std::string("fabric: the stack refused the connect (") + std::strerror(-id) + ")";
    return id;
  }
  SocketState st;
  st.id = static_cast<stack::SocketId>(id);
  st.connecting = true;
  st.port = port;
  st.via = via;
  fabric_->hold(via, true);
  Touch(sockets_[static_cast<stack::SocketId>(id)] = st);
  AfterUserCall();
  return id;
}

int Runtime::Listen(const stack::Endpoint& local, int backlog, bool v6only, int kernel_fd, std::string* why) {
  if (!stack_) {
    *why = "fabric: not attached";
    return -ENETDOWN;
  }
  int id = stack_->listen(local, backlog, v6only);
  if (id < 0) {
    *why = std::string("the stack refused the listen (") + std::strerror(-id) + ")";
    return id;
  }
  int entry = fabric_->listener_add(kernel_fd, local.addr.family, local.addr.bytes, local.port, why);
  if (entry < 0) {
    stack_->close(static_cast<stack::SocketId>(id), Now());
    return entry;
  }
  SocketState st;
  st.id = static_cast<stack::SocketId>(id);
  st.listener = true;
  st.listener_entry = entry;
  Touch(sockets_[static_cast<stack::SocketId>(id)] = st);
  return id;
}

int Runtime::Write(stack::SocketId id, const uint8_t* data, size_t len) {
  const std::pair<const uint8_t*, size_t> one{data, len};
  return Send(id, &one, 1);
}

int Runtime::Writev(stack::SocketId id, const std::vector<std::pair<const uint8_t*, size_t>>& parts) {
  return Send(id, parts.data(), parts.size());
}

int Runtime::Send(stack::SocketId id, const std::pair<const uint8_t*, size_t>* parts, size_t count) {
  SocketState* st = Find(id);
  if (!st || st->closed || !stack_) return -EBADF;
  if (st->error) return st->error == -ECONNRESET ? -ECONNRESET : -EPIPE;
  stack::Micros now = Now();
  // The pieces of one write go out together, as full segments (the
  // kernel's writev: an http response's headers and body in one segment,
  // not two): every piece but the write's last says more follows.
  size_t last = count;
  while (last > 0 && parts[last - 1].second == 0) --last;
  bool held = false;  // a piece went in with `more` and nothing pushed it yet
  for (size_t i = 0; i < last; ++i) {
    auto [p, n] = parts[i];
    if (n == 0) continue;
    // Behind bytes that wait already, or past what the lent memory holds:
    // kept here, in order, until ACKs make room (as libuv queues a write).
    if (!st->overflow.empty()) {
      st->overflow.insert(st->overflow.end(), p, p + n);
      continue;
    }
    const bool more = i + 1 < last;
    long r = stack_->send(id, p, n, now, more);
    if (r < 0) return static_cast<int>(r);
    held = more && static_cast<size_t>(r) == n;
    if (static_cast<size_t>(r) < n) {
      st = Find(id);
      if (!st) return 0;
      st->overflow.assign(p + r, p + n);
      st->overflow_at = 0;
    }
  }
  if (held && stack_) stack_->push(id, now);
  // A send makes no events (those come with ACKs, from the pump), so unlike
  // other calls it needs no extra turn of the loop: only the timer (and a
  // flush, should an ACK it could not carry be held).
  if (!in_pump_) {
    ArmTimer();
    FlushSoon();
  }
  st = Find(id);
  if (!st || !stack_) return 0;
  if (!st->overflow.empty() || stack_->send_blocked(id)) {
    st->write_blocked = true;
    Touch(*st);
    return 1;
  }
  return 0;
}

void Runtime::PushOverflow(stack::SocketId id, SocketState& st) {
  while (st.overflow_at < st.overflow.size()) {
    long r = stack_->send(id, st.overflow.data() + st.overflow_at, st.overflow.size() - st.overflow_at, Now());
    if (r <= 0) {
      if (r < 0) st.overflow.clear();  // the connection failed: its error comes as an event
      break;
    }
    st.overflow_at += static_cast<size_t>(r);
  }
  if (st.overflow_at >= st.overflow.size()) {
    std::vector<uint8_t>().swap(st.overflow);
    st.overflow_at = 0;
  }
}

int Runtime::ReadStart(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st || st->closed) return -EBADF;
  st->reading = true;
  Touch(*st);
  if (stack_) stack_->set_reader(id, this);
  // A dead peer's stream goes on as this socket reads again.
  if (!orphans_.empty() && idle_) uv_idle_start(idle_, OnIdle);
  if (stack_ && (stack_->recv_available(id) > 0 || (st->eof && !st->eof_delivered) ||
                 (st->error && !st->error_delivered && !st->eof_delivered))) {
    // Deliver from the loop, never from inside readStart (Node expects reads
    // to arrive asynchronously, as libuv delivers them).
    ready_.push_back(id);
    if (idle_) uv_idle_start(idle_, OnIdle);
  }
  return 0;
}

int Runtime::ReadStop(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st) return -EBADF;
  st->reading = false;
  Touch(*st);
  if (stack_) stack_->set_reader(id, nullptr);
  return 0;
}

int Runtime::Shutdown(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st || st->closed || !stack_) return -ENOTCONN;
  int r = stack_->shutdown_write(id, Now());
  if (r == 0) {
    shutdowns_.push_back(id);
    st->shutdown_pending = true;
    Touch(*st);
  }
  AfterUserCall();
  return r;
}

void Runtime::Close(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st || st->closed || !stack_) return;
  st->closed = true;
  st->closed_at = Now();
  st->reading = false;
  stack_->set_reader(id, nullptr);
  Touch(*st);
  if (st->listener && st->listener_entry >= 0) {
    fabric_->listener_remove(st->listener_entry);
    st->listener_entry = -1;
  }
  // A kernel socket closed with data in its receive queue resets (RFC 2525
  // 2.17); the stack does so for its own receive buffer. A kernel's queue
  // would also hold: bytes the stack handed over that JS has not been given
  // yet (a handler of an earlier read closed the socket), and what the
  // peer's application wrote that has not reached us: in flight, or still
  // in its send buffer (loopback takes a write whole, within a window far
  // larger than ours). A TLS server that failed a client's
  // handshake on its first read sent a FIN, and the client, which had
  // written 800 KiB, saw a clean end instead of ECONNRESET.
  if (!st->listener && (UndeliveredReads(id) || ArrivedUnread(id)))
    stack_->abort(id, Now());
  else
    stack_->close(id, Now());
  AfterUserCall();
}

bool Runtime::UndeliveredReads(stack::SocketId id) const {
  for (size_t k = direct_reads_emitted_; k < direct_reads_.size(); ++k)
    if (direct_reads_[k].id == id) return true;
  return false;
}

bool Runtime::ArrivedUnread(stack::SocketId id) const {
  stack::SocketInfo info;
  stack::Endpoint ours, theirs;
  if (!stack_->info(id, &info) || !stack_->local_endpoint(id, &ours) || !stack_->remote_endpoint(id, &theirs))
    return false;
  const auto state = stack::TcpState(info.state);
  if (state != stack::TcpState::Established && state != stack::TcpState::FinWait1 &&
      state != stack::TcpState::FinWait2)
    return false;  // the peer's FIN came: it has nothing more to send
  // How far the peer's application has written: its send buffer's end (a
  // peer in this stack), or its send arena's slot (the peer's view: its
  // local is our remote).
  uint32_t written = 0;
  bool known = false;
  const link::LinkAddr via = stack_->link_of(id);
  if (via == fabric_->loopback()) {
    stack::SocketInfo peer;
    const stack::SocketId p = stack_->find(theirs, ours);
    if (p && stack_->info(p, &peer)) {
      written = peer.snd_una + peer.send_queued;
      known = true;
    }
  } else if (ours.addr.family == theirs.addr.family) {
    known = fabric_->peer_written_end(via, theirs.addr.family, theirs.addr.bytes, theirs.port, ours.addr.bytes,
                                      ours.port, &written);
  }
  return known && int32_t(written - info.rcv_nxt) > 0;
}

void Runtime::Reset(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st || st->closed || !stack_) return;
  stack_->abort(id, Now());
  Close(id);
}

size_t Runtime::Queued(stack::SocketId id) {
  SocketState* st = Find(id);
  if (!st || !stack_) return 0;
  return stack_->send_queued(id) + (st->overflow.size() - st->overflow_at);
}

int Runtime::SetNoDelay(stack::SocketId id, bool on) {
  if (!stack_ || !Find(id)) return -EBADF;
  int r = stack_->set_nodelay(id, on);
  // An ACK owed to the peer is held, not pushed out alone: Node calls this
  // on accept, just before the reply that will carry it.
  if (!in_pump_) FlushSoon();
  return r;
}

void Runtime::FlushSoon() {
  // Held ACKs go at the pump's flush; outside a pump, one comes at the next
  // turn of the loop (after JS wrote whatever could carry them).
  if (stack_ && idle_ && stack_->acks_held()) uv_idle_start(idle_, OnIdle);
}

int Runtime::SetKeepAlive(stack::SocketId id, bool on, uint32_t delay_ms) {
  if (!stack_ || !Find(id)) return -EBADF;
  // What libuv (uv_tcp_keepalive) sets on Node's kernel sockets: idle = the
  // delay, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 10, so a silent peer ends the
  // connection with ETIMEDOUT after delay + 10 s in both modes. A zero delay
  // fails libuv's TCP_KEEPIDLE and leaves the kernel's defaults
  // (tcp_keepalive_time 2 h, _intvl 75 s, _probes 9).
  if (delay_ms == 0) return stack_->set_keepalive(id, on, 7200000000ull, 75000000ull, 9);
  return stack_->set_keepalive(id, on, delay_ms * 1000ull, 1000000ull, 10);
}

void Runtime::Ref(stack::SocketId id, bool on) {
  SocketState* st = Find(id);
  if (!st || st->closed || st->refed == on) return;
  st->refed = on;
  Touch(*st);
}

bool Runtime::Endpoints(stack::SocketId id, bool local, stack::Endpoint* out) {
  if (!stack_) return false;
  bool ok = local ? stack_->local_endpoint(id, out) : stack_->remote_endpoint(id, out);
  if (ok && !local) {
    // getpeername as Linux answers it: ENOTCONN while the handshake is
    // under way and once the connection is gone (reset, or fully closed:
    // the socket is CLOSE then, its TIME_WAIT lives elsewhere), so Node's
    // remoteAddress of a connection reset before it was asked is undefined.
    stack::SocketInfo info;
    if (!stack_->info(id, &info)) return false;
    switch (static_cast<stack::TcpState>(info.state)) {
      case stack::TcpState::Closed:
      case stack::TcpState::Listen:
      case stack::TcpState::SynSent:
      case stack::TcpState::TimeWait:
        return false;
      default:
        break;
    }
  }
  SocketState* st = Find(id);
  if (ok && st && st->v4_mapped && out->addr.family == 4) {
    uint8_t v4[4];
    std::memcpy(v4, out->addr.bytes, 4);
    out->addr = stack::IpAddr{};
    out->addr.family = 6;
    out->addr.bytes[10] = out->addr.bytes[11] = 0xff;
    std::memcpy(out->addr.bytes + 12, v4, 4);
  }
  return ok;
}

void Runtime::AfterUserCall() {
  // Work the stack queued while JS called in (events such as an immediate
  // reset) is delivered from the loop, not re-entrantly.
  if (!in_pump_ && idle_) uv_idle_start(idle_, OnIdle);
  if (!in_pump_) ArmTimer();
}

}  // namespace sidestep::addon
