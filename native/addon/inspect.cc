// Runtime (see runtime.h): what can be looked at from outside — stats(),
// packet capture, and the listings of connections and pairs.
#include "runtime.h"

#include <arpa/inet.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidestep::addon {

void Runtime::SetCapture(bool on) {
  capturing_ = on && stack_;
  link_.capture = capturing_ ? &captured_out_ : nullptr;
  if (!capturing_) {
    captured_.clear();
    captured_out_.clear();
  }
}

int32_t Runtime::PeerPid(uint32_t link) const {
  for (const link::PairInfo& info : fabric_->pairs())
    if (info.addr == link) return info.peer_pid;
  return 0;
}

void Runtime::Capture(uint32_t link, int32_t received, const uint8_t* p, size_t len, const link::Pieces* payload) {
  const size_t body = payload ? payload->len[0] + payload->len[1] : 0;
  Captured c{PeerPid(link), received, std::vector<uint8_t>(8 + len + body)};
  timeval tv;
  ::gettimeofday(&tv, nullptr);
  const uint64_t us = uint64_t(tv.tv_sec) * 1000000u + uint64_t(tv.tv_usec);
  std::memcpy(c.bytes.data(), &us, 8);
  std::memcpy(c.bytes.data() + 8, p, len);
  if (payload) {
    if (payload->len[0]) std::memcpy(c.bytes.data() + 8 + len, payload->data[0], payload->len[0]);
    if (payload->len[1]) std::memcpy(c.bytes.data() + 8 + len + payload->len[0], payload->data[1], payload->len[1]);
  }
  captured_.push_back(std::move(c));
}

Napi::Value Runtime::Pairs(Napi::Env env) {
  Napi::Array out = Napi::Array::New(env);
  if (!fabric_) return out;
  uint32_t i = 0;
  for (const link::PairInfo& p : fabric_->pairs()) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("link", Napi::Number::New(env, p.addr));
    o.Set("role", Napi::String::New(env, p.addr == fabric_->loopback() ? "loopback" : p.creator ? "connected" : "accepted"));
    o.Set("up", Napi::Boolean::New(env, p.up));
    o.Set("peerPid", Napi::Number::New(env, p.peer_pid));
    o.Set("peerUid", Napi::Number::New(env, p.peer_uid));
    o.Set("connections", Napi::Number::New(env, p.connections));
    o.Set("ringIn", Napi::Number::New(env, static_cast<double>(p.ring_in_used)));
    o.Set("ringOut", Napi::Number::New(env, static_cast<double>(p.ring_out_used)));
    out.Set(i++, o);
  }
  return out;
}

Napi::Value Runtime::Connections(Napi::Env env) {
  Napi::Array out = Napi::Array::New(env);
  if (!stack_) return out;
  uint32_t i = 0;
  char buf[INET6_ADDRSTRLEN];
  auto addr = [&](const stack::Endpoint& ep) {
    inet_ntop(ep.addr.family == 4 ? AF_INET : AF_INET6, ep.addr.bytes, buf, sizeof buf);
    return Napi::String::New(env, buf);
  };
  for (auto& [id, st] : sockets_) {
    stack::SocketInfo info;
    stack::Endpoint l, r;
    if (!stack_->info(id, &info) || !stack_->local_endpoint(id, &l)) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, id));
    o.Set("listener", Napi::Boolean::New(env, st.listener));
    o.Set("localAddress", addr(l));
    o.Set("localPort", Napi::Number::New(env, l.port));
    if (!st.listener && stack_->remote_endpoint(id, &r)) {
      o.Set("remoteAddress", addr(r));
      o.Set("remotePort", Napi::Number::New(env, r.port));
    }
    o.Set("state", Napi::String::New(env, stack::tcp_state_name(static_cast<stack::TcpState>(info.state))));
    o.Set("sendQueued", Napi::Number::New(env, info.send_queued));
    o.Set("recvQueued", Napi::Number::New(env, info.recv_queued));
    o.Set("sendWindow", Napi::Number::New(env, info.send_window));
    o.Set("recvWindow", Napi::Number::New(env, info.recv_window));
    o.Set("cwnd", Napi::Number::New(env, info.cwnd));
    o.Set("srttUs", Napi::Number::New(env, info.srtt_us));
    o.Set("retransmits", Napi::Number::New(env, info.retransmits));
    o.Set("bufferBytes", Napi::Number::New(env, info.buffer_bytes));
    o.Set("closedByApp", Napi::Boolean::New(env, st.closed));
    out.Set(i++, o);
  }
  return out;
}

Napi::Object Runtime::Stats(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  if (!stack_) return o;
  const stack::Counters& c = stack_->counters();
  const link::FabricCounters& f = fabric_->counters();
  auto set = [&](const char* k, uint64_t v) { o.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
  set("connectionsBypassed", connections_bypassed_);
  set("connectionsAccepted", connections_accepted_);
  set("segmentsIn", c.packets_in);
  set("segmentsOut", c.packets_out);
  set("bytesIn", c.bytes_in);
  set("bytesOut", c.bytes_out);
  set("retransmits", c.segments_retransmitted);
  set("retransmissionTimeouts", c.retransmission_timeouts);
  set("malformed", c.packets_malformed);
  set("resetsIn", c.resets_in);
  set("resetsOut", c.resets_out);
  set("ringDrops", f.drops_ring_full);
  set("peerGoneDrops", f.drops_peer_gone);
  set("framesIn", f.frames_in);
  set("framesOut", f.frames_out);
  set("doorbellsRung", f.doorbells_rung);
  set("doorbellsSuppressed", f.doorbells_suppressed);
  set("arms", f.arms);
  set("pairsCreated", f.pairs_created);
  set("pairsAccepted", f.pairs_accepted);
  set("pairsRefused", f.pairs_refused);
  set("pairsDown", f.pairs_down);
  set("pairsIdleClosed", f.pairs_idle_closed);
  set("pairs", fabric_->pairs().size() - 1);  // without the loopback
  set("portsReserved", fabric_->ports().held());
  set("connectionsFallbackLate", connections_fallback_late_);
  set("txBlocked", f.tx_blocked);
  set("framesByReference", f.frames_by_reference);
  set("sendSlots", f.send_slots);
  set("sendSlotsUnavailable", f.send_slots_unavailable);
  set("orphansFinished", orphans_finished_);
  set("orphansReset", orphans_reset_);
  set("orphanBytes", orphan_bytes_);
  set("deadArenas", fabric_->dead_arenas());
  set("wakeups", f.wakeups);
  set("fabricMalformed", f.drops_malformed);
  set("openSockets", sockets_.size());
  if (faulty_) {
    set("faultsDropped", faulty_->counters().dropped);
    set("faultsDuplicated", faulty_->counters().duplicated);
    set("faultsReordered", faulty_->counters().reordered);
    set("faultsDelayed", faulty_->counters().delayed);
  }
  if (slabs_) {
    set("readSlabs", slabs_->mapped());
    set("readSlabsFree", slabs_->free_slabs());
    set("readSlabBytes", slabs_->mapped_bytes());
    set("readSlabBytesFree", slabs_->free_bytes());
    set("readSlabsMade", slabs_->made());
    set("readsLoose", slabs_->loose());
  }
  set("spinsWon", spins_won_);
  set("spinsLost", spins_lost_);
  return o;
}

}  // namespace sidestep::addon
