// The fabric: opening it, its lifecycle (holds, trims) and what it shows
// (see fabric.h; the data path is fabric_data.cc, the control plane
// fabric_control.cc).
#include "link/fabric_impl.h"

namespace sidestep::link {

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
