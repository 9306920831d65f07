// The per-event-loop runtime (see runtime.h): libuv integration of the
// fabric's need-wakeup protocol, and the translation of stack events into the
// few calls the JS handle layer understands.
#include "runtime.h"

#include <arpa/inet.h>
#include <sched.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidestep::addon {

namespace {
// Frames taken from the rings per rx_poll call, and rounds per wake-up while
// the rings stay full, before yielding to the rest of the event loop (then
// uv_idle brings us back).
constexpr size_t kRxBudget = 256;
constexpr int kMaxRounds = 32;
// Largest single read delivered to JS; Node's own reads are 64 KiB.
constexpr size_t kMaxDelivery = 256 * 1024;

template <class H>
H* NewHandle(void* owner) {
  H* h = new H();
  h->data = owner;
  return h;
}

template <class H>
void CloseHandle(H*& h) {
  if (!h) return;
  uv_handle_t* base = reinterpret_cast<uv_handle_t*>(h);
  base->data = nullptr;
  if (!uv_is_closing(base)) {
    uv_close(base, [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
  }
  h = nullptr;
}
}  // namespace

uint8_t* FabricLink::tx_reserve_headers(stack::LinkAddr to, size_t header_len, const stack::Payload& payload) {
  payload_ = {};
  for (int k = 0; k < 2; ++k) {
    payload_.data[k] = payload.data[k];
    payload_.len[k] = payload.len[k];
  }
  return reserved_ = fabric->tx_reserve_headers(to, header_len, payload_);
}

void FabricLink::tx_commit(stack::LinkAddr to, size_t len) {
  // The packet stays intact until the next reserve: copy it now (headers,
  // then the payload wherever it is).
  if (capture && reserved_) {
    timeval tv;
    ::gettimeofday(&tv, nullptr);
    const uint64_t us = uint64_t(tv.tv_sec) * 1000000u + uint64_t(tv.tv_usec);
    const size_t body = payload_.len[0] + payload_.len[1];
    std::vector<uint8_t> bytes(sizeof us + len + body);
    std::memcpy(bytes.data(), &us, sizeof us);
    std::memcpy(bytes.data() + sizeof us, reserved_, len);
    if (payload_.len[0]) std::memcpy(bytes.data() + sizeof us + len, payload_.data[0], payload_.len[0]);
    if (payload_.len[1]) std::memcpy(bytes.data() + sizeof us + len + payload_.len[0], payload_.data[1], payload_.len[1]);
    capture->emplace_back(to, std::move(bytes));
  }
  reserved_ = nullptr;
  payload_ = {};
  fabric->tx_commit(to, len);
}

bool FabricLink::send_memory(stack::LinkAddr to, const stack::Endpoint& local, const stack::Endpoint& remote,
                             uint32_t seq_base, stack::SendMemory* out) {
  link::SendSlot slot;
  if (!fabric->send_memory(to, local.addr.family, local.addr.bytes, local.port, remote.addr.bytes, remote.port,
                           seq_base, &slot))
    return false;
  out->ring = slot.ring;
  out->capacity = slot.capacity;
  out->published_end = &slot.descriptor->written_end;
  out->published_consumed = &slot.descriptor->consumed;
  out->cookie = slot.cookie;
  return true;
}

Runtime::Runtime(Napi::Env env) : env_(env) {
  napi_get_uv_event_loop(env, &loop_);
}

Runtime::~Runtime() { Detach(); }

stack::Micros Runtime::Now() const { return uv_hrtime() / 1000; }

int Runtime::Attach(const RuntimeConfig& config, Napi::Function on_event, std::string* why) {
  if (stack_) return 0;
  int err = link::Fabric::open(config.fabric, &fabric_, why);
  if (err < 0) return err;
  link_.fabric = fabric_.get();
  stack::Config sc = config.stack;
  sc.mtu = fabric_->mtu();
  sc.checksums = false;  // the fabric is trusted memory, not a wire
  // ACKs wait for the application's reply within the same pump (see Pump).
  sc.defer_acks = true;
  stack::Link* link = &link_;
  if (config.faults.enabled()) {
    faulty_ = std::make_unique<FaultyLink>(link_, config.faults, [this] { return Now(); });
    link = faulty_.get();
  }
  stack_ = std::make_unique<stack::Stack>(sc, *link);
  send_limit_ = sc.send_buffer;
  spin_us_ = config.spin_us;
  orphan_linger_us_ = config.orphan_linger_us;
  on_event_ = Napi::Persistent(on_event);
  async_context_ = std::make_unique<Napi::AsyncContext>(env_, "sidestep:fabric");
  slabs_ = std::make_unique<ReadSlabs>(env_);

  timer_ = NewHandle<uv_timer_t>(this);
  housekeeping_ = NewHandle<uv_timer_t>(this);
  idle_ = NewHandle<uv_idle_t>(this);
  uv_timer_init(loop_, timer_);
  uv_timer_init(loop_, housekeeping_);
  uv_idle_init(loop_, idle_);
  doorbell_ = NewHandle<uv_poll_t>(this);
  control_ = NewHandle<uv_poll_t>(this);
  const bool polled = uv_poll_init(loop_, doorbell_, fabric_->doorbell_fd()) == 0;
  if (!polled || uv_poll_init(loop_, control_, fabric_->control_fd()) != 0) {
    *why = "cannot poll the fabric's doorbell and control plane";
    // A handle libuv never initialised is freed, not closed.
    if (!polled) {
      delete doorbell_;
      doorbell_ = nullptr;
    }
    delete control_;
    control_ = nullptr;
    Detach();
    return -EIO;
  }
  // Neither timer keeps the process alive on its own: the doorbell's ref
  // follows the sockets, as a kernel socket's handle would.
  uv_unref(reinterpret_cast<uv_handle_t*>(timer_));
  uv_unref(reinterpret_cast<uv_handle_t*>(housekeeping_));
  uv_poll_start(doorbell_, UV_READABLE, OnDoorbell);
  // New pairs and hang-ups: a listener's ref (on the doorbell) already
  // keeps a server alive; peers alone never do.
  uv_poll_start(control_, UV_READABLE, OnControl);
  uv_unref(reinterpret_cast<uv_handle_t*>(control_));
  UpdateRef();
  // Arm need-wakeup before the first sleep.
  if (!fabric_->prepare_sleep()) uv_idle_start(idle_, OnIdle);
  return 0;
}

void Runtime::ArmClosePhase() {
  ++close_callbacks_;
  if (close_phase_ || !loop_) return;
  close_phase_ = new uv_idle_t();
  uv_idle_init(loop_, close_phase_);
  close_phase_->data = this;
  uv_close(reinterpret_cast<uv_handle_t*>(close_phase_), OnClosePhase);
}

void Runtime::OnClosePhase(uv_handle_t* h) {
  auto* self = static_cast<Runtime*>(h->data);
  delete reinterpret_cast<uv_idle_t*>(h);
  if (!self) return;  // detached meanwhile
  self->close_phase_ = nullptr;
  // One event per callback, each in its own callback scope: as for libuv
  // handles, the nextTicks and microtasks one close callback queues run
  // before the next one. (Those asked for meanwhile wait for the next phase.)
  size_t n = self->close_callbacks_;
  self->close_callbacks_ = 0;
  for (size_t i = 0; i < n && !self->on_event_.IsEmpty(); ++i) {
    self->Emit(kClosePhase, 0, 0, Napi::Value());
  }
}

void Runtime::Detach() {
  if (close_phase_) {
    close_phase_->data = nullptr;  // its callback only frees it now
    close_phase_ = nullptr;
  }
  CloseHandle(doorbell_);
  CloseHandle(control_);
  CloseHandle(timer_);
  CloseHandle(housekeeping_);
  CloseHandle(idle_);
  if (stack_) {
    // The process is leaving: close what it left open, as the kernel closes
    // the fds of an exiting process — FIN, or RST where data was never read.
    // Nothing runs after this, so only what the window lets out now is sent;
    // the peer learns the rest from our death (its pidfd watch).
    stack::Micros now = Now();
    link_.leaving = true;
    for (auto& [id, st] : sockets_) {
      if (!st.closed) stack_->close(id, now);
    }
  }
  orphans_.clear();
  sockets_.clear();
  draining_.clear();
  stack_.reset();
  faulty_.reset();
  fabric_.reset();  // closes every pair, name and port reservation
  slabs_.reset();
  on_event_.Reset();
  async_context_.reset();
}

void Runtime::Touch(SocketState& st) {
  // A closed socket's unacked data holds the process at most this long (a
  // peer that never reads again must not keep us alive forever).
  constexpr stack::Micros kLingerMax = 30 * 1000 * 1000;
  // (Bytes in memory the fabric lent are the peer's to finish if we go:
  // they hold nothing, as a kernel's send queue holds no process.)
  const bool unacked = !st.listener && stack_ && stack_->send_queued(st.id) > 0 && !stack_->send_lent(st.id) &&
                       (!st.closed || Now() - st.closed_at < kLingerMax);
  const bool active = unacked || (!st.closed && st.refed &&
                                  (st.listener || st.connecting || st.write_blocked ||
                                   st.shutdown_pending || (st.reading && !st.eof_delivered)));
  if (unacked && std::find(draining_.begin(), draining_.end(), st.id) == draining_.end())
    draining_.push_back(st.id);
  if (active == st.counted) return;
  st.counted = active;
  refs_ += active ? 1 : -1;
  UpdateRef();
}

void Runtime::UpdateRef() {
  if (!doorbell_) return;
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(doorbell_);
  if (refs_ > 0) uv_ref(h); else uv_unref(h);
}

void Runtime::ArmTimer() {
  if (!timer_ || !stack_) return;
  stack::Micros at = stack_->poll_at();
  if (faulty_) at = std::min(at, faulty_->next_release());
  if (at == timer_deadline_) return;
  timer_deadline_ = at;
  if (at == stack::kNever) {
    uv_timer_stop(timer_);
    return;
  }
  stack::Micros now = Now();
  // libuv timers have millisecond resolution: round up so we never fire early
  // and spin on a deadline that is still in the future.
  uint64_t ms = at > now ? (at - now + 999) / 1000 : 0;
  uv_timer_start(timer_, OnTimer, ms, 0);
}

void Runtime::OnDoorbell(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->fabric_) return;
  self->fabric_->doorbell_drain();
  self->Pump();
}

void Runtime::OnControl(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->fabric_) return;
  self->ControlPoll();
}

void Runtime::OnHousekeeping(uv_timer_t* h) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->fabric_) return;
  self->housekeeping_at_ = 0;
  self->fabric_->trim();
  if (self->fabric_->control_pending()) self->ControlPoll();
  self->ScheduleHousekeeping();
}

void Runtime::ScheduleHousekeeping() {
  // Only while the fabric has something to tidy: an idle stack has no timer.
  if (!housekeeping_ || !fabric_) return;
  const uint64_t in = fabric_->trim_in();
  if (in == UINT64_MAX) return;
  const uint64_t ms = (in + 999) / 1000 + 1;
  const uint64_t at = uv_now(loop_) + ms;
  if (housekeeping_at_ && housekeeping_at_ <= at) return;  // an earlier one is set
  housekeeping_at_ = at;
  uv_timer_start(housekeeping_, OnHousekeeping, ms, 0);
}

void Runtime::ControlPoll() {
  std::vector<link::LinkAddr> down;
  fabric_->control_poll(&down);
  const stack::Micros now = Now();
  for (link::LinkAddr link : down) {
    // A connection still in SYN-SENT when its pair went down never reached
    // the peer's application: it goes to the kernel before ours could
    // notice (JS reconnects it there, kFallback). Everything else on the
    // pair ends as a connection does whose peer vanished.
    const size_t first = fallbacks_.size();
    for (auto& [id, st] : sockets_) {
      if (st.via != link || !st.connecting || st.closed) continue;
      stack::SocketInfo info;
      if (!stack_->info(id, &info) || info.state != uint8_t(stack::TcpState::SynSent)) continue;
      st.connecting = false;
      st.closed = true;
      Touch(st);
      fallbacks_.push_back(id);
    }
    for (size_t k = first; k < fallbacks_.size(); ++k) stack_->abort(fallbacks_[k], now);
    AdoptOrphans(link, now);
    stack_->link_down(link, now);
  }
  // A pair that just came up may hold frames already (a new client's SYN
  // lands before we ever armed its ring): look now.
  Pump();
}

void Runtime::OnTimer(uv_timer_t* h) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->stack_) return;
  self->timer_deadline_ = stack::kNever;
  self->Pump();
}

void Runtime::OnIdle(uv_idle_t* h) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->stack_) return;
  uv_idle_stop(h);
  self->Pump();
}

void Runtime::Pump() {
  if (in_pump_ || !stack_) return;
  in_pump_ = true;
  fabric_->disarm();
  if (!shutdowns_.empty()) Dispatch();
  bool asleep = false;
  for (int round = 0; round < kMaxRounds && stack_; ++round) {
    stack::Micros now = Now();
    if (faulty_) faulty_->release(now);
    size_t n = fabric_->rx_poll(
        [&](link::LinkAddr from, const uint8_t* p, size_t len, const link::Pieces* payload) {
          if (!payload) {
            if (capturing_) Capture(from, 1, p, len, nullptr);
            stack_->input(from, p, len, now);
            return;
          }
          // Headers here, the payload still in the sender's send memory:
          // the stack copies it once, straight into the reader or its buffer.
          stack::Payload body;
          for (int k = 0; k < 2; ++k) {
            body.data[k] = payload->data[k];
            body.len[k] = payload->len[k];
          }
          if (capturing_) Capture(from, 1, p, len, payload);
          stack_->input(from, p, len, body, now);
        },
        kRxBudget);
    if (stack_->link_waiting()) stack_->link_ready(now);
    // Orphans' bytes go in as their windows open (the reads open them).
    bool fed = !orphans_.empty() && FeedOrphans(now);
    if (stack_->poll_at() <= now) stack_->poll(now);
    Dispatch();
    if (!stack_) break;
    if (!orphans_.empty() && FeedOrphans(Now())) fed = true;
    // JS has run (its callback scope closed, so nextTick'd writes are out):
    // an ACK no reply carried goes now.
    stack_->flush(Now());
    if (n == kRxBudget || fed) continue;  // the rings hold more: as libuv polls again after a full batch
    // One poll phase's worth, as libuv's: what JS just set off (a reply that
    // came straight back, a peer in this process, a completion) waits for
    // the next loop iteration, after this one's setImmediate and close
    // callbacks, as it would behind a kernel socket.
    if (!ready_.empty() || !shutdowns_.empty() || !fallbacks_.empty() || !held_connects_.empty() ||
        stack_->events_pending())
      break;
    if (Spin()) continue;  // SIDESTEP_SPIN_US: frames came while we watched
    asleep = fabric_->prepare_sleep();
    break;
  }
  if (stack_ && !draining_.empty()) {
    // Sockets held only by unacknowledged data: let go of those that drained.
    std::vector<stack::SocketId> draining;
    draining.swap(draining_);
    for (stack::SocketId id : draining)
      if (SocketState* st = Find(id)) Touch(*st);
  }
  if (stack_) {
    // Still busy: stay disarmed (producers need not ring) and come back after
    // the loop has served everything else once.
    if (!asleep && idle_) uv_idle_start(idle_, OnIdle);
    ArmTimer();
  }
  in_pump_ = false;
  // A pair that failed inside the data path (no fd will say so).
  if (fabric_ && fabric_->control_pending()) ControlPoll();
  ScheduleHousekeeping();
}

void Runtime::AdoptOrphans(uint32_t link, stack::Micros now) {
  // The peer's send memory outlives it: each of its connections with us is
  // finished from there, as Linux finishes the streams of a dead process —
  // unless it left bytes we sent it unread (or still on their way), when
  // Linux resets instead (link_down does, below).
  bool any = false;
  for (const link::PeerArena::Live& l : fabric_->orphans(link)) {
    const link::SlotDescriptor& d = l.descriptor;
    if (d.family != 4 && d.family != 6) continue;
    stack::Endpoint ours, theirs;  // its local is our remote
    ours.addr.family = theirs.addr.family = d.family;
    std::memcpy(ours.addr.bytes, d.remote, 16);
    std::memcpy(theirs.addr.bytes, d.local, 16);
    ours.port = d.remote_port;
    theirs.port = d.local_port;
    const stack::SocketId id = stack_->find(ours, theirs);
    SocketState* st = id ? Find(id) : nullptr;
    stack::SocketInfo info;
    if (!st || st->closed || stack_->link_of(id) != link || !stack_->info(id, &info)) continue;
    const uint32_t owed = d.written_end - info.rcv_nxt;
    // Untrusted: a stream that claims more than its ring holds, or bytes
    // before what we already have, is reset.
    if (owed > l.capacity || d.written_end - d.seq_base > (uint32_t(1) << 31) + l.capacity) continue;
    if (d.consumed != info.snd_nxt) continue;  // it had not read everything we sent
    Orphan o;
    o.id = id;
    o.via = link;
    o.ring = l.ring;
    o.capacity = l.capacity;
    o.seq_base = d.seq_base;
    o.end = d.written_end;
    o.progress_at = now;
    stack_->orphan(id, now);
    orphans_.push_back(o);
    any = true;
  }
  if (!any) fabric_->release_orphans(link);
}

bool Runtime::FeedOrphans(stack::Micros now) {
  constexpr size_t kChunk = 256 * 1024;
  bool fed = false;
  for (size_t k = 0; k < orphans_.size();) {
    Orphan& o = orphans_[k];
    stack::SocketInfo info;
    bool done = !stack_->info(o.id, &info);  // freed: the application closed it
    if (!done) {
      const uint32_t at = stack_->receive_point(o.id);
      const uint32_t left = o.end - at;
      if (left > 0 && left <= o.capacity) {
        const size_t len = std::min<size_t>(left, kChunk);
        const size_t pos = (at - o.seq_base) & (o.capacity - 1);
        stack::Payload p;
        p.data[0] = o.ring + pos;
        p.len[0] = std::min<size_t>(len, o.capacity - pos);
        if (p.len[0] < len) {
          p.data[1] = o.ring;
          p.len[1] = len - p.len[0];
        }
        const size_t took = stack_->feed(o.id, p, len == left, now);
        if (took) {
          fed = true;
          o.progress_at = now;
          orphan_bytes_ += took;
          if (took == left) o.fin_fed = true;
        }
      } else if (left == 0 && !o.fin_fed) {
        stack_->feed(o.id, stack::Payload{}, true, now);
        o.fin_fed = fed = true;
      } else if (left > o.capacity) {
        stack_->reset_by_peer(o.id, now);  // the stream went where its memory can't follow
        ++orphans_reset_;
        done = true;
      }
      if (!done && o.fin_fed) {
        ++orphans_finished_;
        done = true;
      } else if (!done && now - o.progress_at > orphan_linger_us_) {
        stack_->reset_by_peer(o.id, now);
        ++orphans_reset_;
        done = true;
      }
    }
    if (done) {
      const uint32_t via = o.via;
      orphans_[k] = orphans_.back();
      orphans_.pop_back();
      if (std::none_of(orphans_.begin(), orphans_.end(), [&](const Orphan& x) { return x.via == via; }))
        fabric_->release_orphans(via);
      continue;
    }
    ++k;
  }
  return fed;
}

bool Runtime::Spin() {
  if (spin_us_ == 0) return false;
  // Spin only while a reply is imminent: we sent something since the last
  // decision (a peer is likely to answer), and recent spins paid off. An
  // idle process never spins; one whose peers answer slowly backs off.
  const uint64_t sent = fabric_->counters().frames_out;
  const bool sent_since = sent != spin_sent_mark_;
  spin_sent_mark_ = sent;
  if (!sent_since) return false;
  if (spin_skip_ > 0) {
    --spin_skip_;
    return false;
  }
  // Still disarmed: peers don't ring while we watch. The stack's own timers
  // are not due sooner than the spin ends (checked by the caller's loop).
  stack::Micros end = Now() + spin_us_;
  stack::Micros due = stack_->poll_at();
  if (due < end) end = due;
  for (uint32_t i = 1;; ++i) {
    if (fabric_->rx_pending()) {
      ++spins_won_;
      spin_losses_ = 0;
      return true;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
    // On a machine with fewer free cores than spinners, the peer we wait for
    // may need this very core: let it run — but not in the first stretch of
    // the spin, where a reply usually lands: a sched_yield() costs ~1 µs on
    // this VM, and one every 16 pauses put that much on most round trips.
    if ((i & 63) == 0) sched_yield();
    if (Now() >= end) break;
  }
  ++spins_lost_;
  // Consecutive losses: skip the next 1, 2, 4 ... 64 chances to spin.
  spin_skip_ = 1u << std::min<uint32_t>(spin_losses_, 6);
  ++spin_losses_;
  return false;
}

SocketState* Runtime::Find(stack::SocketId id) {
  auto it = sockets_.find(id);
  return it == sockets_.end() ? nullptr : &it->second;
}

void Runtime::Emit(int32_t kind, uint32_t id, int32_t arg, Napi::Value data, size_t offset) {
  if (!async_context_ || on_event_.IsEmpty()) return;  // detached by an earlier event's handler
  Napi::Env env = env_;
  Napi::HandleScope handle_scope(env);
  // Each event in its own callback scope, as Node gives each libuv callback
  // (MakeCallback): the nextTicks and microtasks one event's handlers queue
  // run before the next event is delivered. (A TLS socket a server destroys
  // in its 'connection' handler closes in a microtask: bytes for it that the
  // same pump found must not reach it first. An http response that ends
  // frees its socket in a nextTick, before that socket's EOF.)
  Napi::CallbackScope callback_scope(env, *async_context_);
  napi_value argv[5] = {
      Napi::Number::New(env, kind), Napi::Number::New(env, id), Napi::Number::New(env, arg),
      data.IsEmpty() ? env.Undefined() : data, Napi::Number::New(env, static_cast<double>(offset))};
  // Raw N-API from here: node-addon-api turns a failed call into a
  // Napi::Error, and making one (or wrapping a thrown primitive) needs JS to
  // run. A worker being terminated (process.exit() with workers alive) can't:
  // its loop still runs our callbacks, and that path aborted the process.
  napi_value recv = nullptr;
  napi_value result = nullptr;
  napi_get_undefined(env, &recv);
  if (napi_call_function(env, recv, on_event_.Value(), 5, argv, &result) == napi_ok) return;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;  // the env is going away
  // An exception from user code in an event handler: the same fate as a
  // throw from a kernel socket's callback (process 'uncaughtException').
  napi_value exception = nullptr;
  if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
}

void Runtime::DeliverReads(stack::SocketId id, SocketState& st) {
  stack::Micros now = Now();
  while (stack_ && st.reading && !st.closed) {
    size_t avail = stack_->recv_available(id);
    if (avail == 0) break;
    size_t n = avail < kMaxDelivery ? avail : kMaxDelivery;
    ReadSlabs::Span span = slabs_->reserve(n);
    if (!span.data) break;
    size_t got = stack_->recv(id, span.data, std::min(n, span.capacity), now);
    if (got == 0) break;
    slabs_->commit(got);
    Emit(kData, id, static_cast<int32_t>(got), Napi::Value(env_, ReadSlabs::value(env_, span.slab)),
         span.offset);
    // JS may have closed or paused the socket inside the callback.
    if (!Find(id)) return;
  }
  if (!stack_ || !st.reading || st.closed) return;
  if (st.eof && !st.eof_delivered && stack_->recv_available(id) == 0) {
    // Like libuv, stop reading at EOF: nothing (not even a later reset) is
    // reported through reads after it.
    st.eof_delivered = true;
    st.reading = false;
    stack_->set_reader(id, nullptr);
    Touch(st);
    Emit(kEof, id, 0, Napi::Value());
    return;
  }
  if (st.error && !st.error_delivered && !st.eof_delivered && stack_->recv_available(id) == 0) {
    st.error_delivered = true;
    Emit(kError, id, st.error, Napi::Value());
  }
}

size_t Runtime::take(stack::SocketId id, const uint8_t* data, size_t len) {
  // Attached only while JS reads (ReadStart; detached by ReadStop, Close and
  // EOF), so every packet is spared a socket lookup here.
  size_t taken = 0;
  while (taken < len) {
    ReadSlabs::Span span = slabs_->reserve(len - taken);
    if (!span.data) break;  // no memory: the rest waits in the receive buffer
    size_t n = std::min(len - taken, span.capacity);
    std::memcpy(span.data, data + taken, n);
    slabs_->commit(n, /*packed=*/true);
    if (!direct_reads_.empty()) {
      DirectRead& last = direct_reads_.back();
      if (last.id == id && last.slab == span.slab && last.offset + last.len == span.offset &&
          last.events_before == stack_->events_queued()) {
        last.len += n;
        taken += n;
        continue;
      }
    }
    direct_reads_.push_back({id, span.slab, span.offset, n, stack_->events_queued()});
    taken += n;
  }
  return taken;
}

void Runtime::EmitDirectReads(size_t events_before) {
  // These bytes are the application's already (the stack counted them
  // read): they are delivered even if JS paused the socket meanwhile, as
  // bytes libuv read before a readStop are; only a closed socket drops them.
  // They go out in the order things happened: before any stack event that
  // followed them (this socket's EOF or reset, another socket's accept or
  // EOF), after those that preceded them. take() runs only inside the pump's
  // rx_poll, never during a dispatch, so the list can't grow under us; it
  // keeps its capacity from pump to pump.
  while (direct_reads_emitted_ < direct_reads_.size()) {
    const DirectRead& r = direct_reads_[direct_reads_emitted_];
    if (r.events_before > events_before) return;
    ++direct_reads_emitted_;
    SocketState* st = Find(r.id);
    if (!st || st->closed || !stack_) continue;
    Emit(kData, r.id, static_cast<int32_t>(r.len), Napi::Value(env_, ReadSlabs::value(env_, r.slab)),
         r.offset);
  }
  direct_reads_.clear();
  direct_reads_emitted_ = 0;
}

void Runtime::CompleteConnect(stack::SocketId id, SocketState& st) {
  st.connecting = false;
  Touch(st);
  ++connections_bypassed_;
  Emit(kConnect, id, 0, Napi::Value());
}

void Runtime::ReleaseHeldConnect(stack::SocketId id) {
  auto it = std::find_if(held_connects_.begin(), held_connects_.end(), [id](const HeldConnect& h) { return h.id == id; });
  if (it == held_connects_.end()) return;
  held_connects_.erase(it);
  SocketState* st = Find(id);
  if (st && st->connecting && !st->closed) CompleteConnect(id, *st);
}

void Runtime::Dispatch() {
  if (in_dispatch_) return;
  in_dispatch_ = true;
  Napi::HandleScope handle_scope(env_);
  // Shutdowns first: libuv completes one at the next poll phase, before the
  // peer could possibly have answered it.
  std::vector<stack::SocketId> shutdowns;
  shutdowns.swap(shutdowns_);
  for (stack::SocketId id : shutdowns) {
    SocketState* st = Find(id);
    if (!st || !stack_) continue;
    st->shutdown_pending = false;
    Touch(*st);
    Emit(kShutdown, id, 0, Napi::Value());
  }
  // Connects that go to the kernel after all.
  std::vector<stack::SocketId> fallbacks;
  fallbacks.swap(fallbacks_);
  for (stack::SocketId id : fallbacks) {
    ++connections_fallback_late_;
    Emit(kFallback, id, -ECONNREFUSED, Napi::Value());
  }
  stack::Event ev;
  for (;;) {
    // Bytes taken straight off the ring before the next event: first. (Not
    // between next_event() and handling what it returned: a Closed event
    // frees its id there, and JS run in between could be given that id.)
    // Their place is before the next event next_event() will return: past
    // the events it would skip (sockets JS closed meanwhile, perhaps in the
    // handlers of these very reads, so look again after them).
    while (!direct_reads_.empty() && stack_) {
      stack_->skip_unwanted_events();
      const size_t next = stack_->events_taken();
      EmitDirectReads(next);
      if (!stack_) break;
      stack_->skip_unwanted_events();
      if (stack_->events_taken() == next) break;
    }
    if (!stack_ || !stack_->next_event(&ev)) break;
    // Anything more for a socket whose connect is held: the connect first.
    if (!held_connects_.empty()) ReleaseHeldConnect(ev.socket);
    SocketState* st = Find(ev.socket);
    switch (ev.type) {
      case stack::EventType::Connected:
        if (st && st->connecting) {
          if (stack_->link_of(ev.socket) == fabric_->loopback()) {
            // Both ends in this process: the kernel's listener is ready
            // before the client's connect completes (the client's fd joins
            // epoll after the listener was woken), so Node sees
            // 'connection' first. Held until the end of the next dispatch,
            // which takes in the handshake's last ACK and so the
            // listener's accept (or sooner, if more comes for the socket).
            held_connects_.push_back({ev.socket, dispatches_});
            break;
          }
          CompleteConnect(ev.socket, *st);
        }
        break;
      case stack::EventType::Error:
        if (!st || st->closed) break;
        if (st->connecting) {
          st->connecting = false;
          Touch(*st);
          st->error = ev.error;
          st->error_delivered = true;
          Emit(kConnect, ev.socket, ev.error, Napi::Value());
        } else if (!st->error) {
          st->error = ev.error;
          if (st->write_blocked) {
            // A writer waiting for room learns of the failure through its write.
            st->write_blocked = false;
            Touch(*st);
            Emit(kWritable, ev.socket, ev.error, Napi::Value());
            st = Find(ev.socket);
          }
          if (st && st->reading) DeliverReads(ev.socket, *st);
        }
        break;
      case stack::EventType::Readable:
        if (st && st->reading) DeliverReads(ev.socket, *st);
        break;
      case stack::EventType::PeerClosed:
        if (st && !st->closed) {
          st->eof = true;
          if (st->reading) DeliverReads(ev.socket, *st);
        }
        break;
      case stack::EventType::Writable:
        if (st && st->write_blocked && !st->closed) {
          // The write completes once what the lent memory could not take
          // went in (a write that still doesn't fit waits for the next).
          if (!st->overflow.empty()) PushOverflow(ev.socket, *st);
          if (!st->overflow.empty()) break;
          st->write_blocked = false;
          Touch(*st);
          Emit(kWritable, ev.socket, 0, Napi::Value());
        }
        break;
      case stack::EventType::Acceptable: {
        if (!st || st->closed) break;
        for (;;) {
          int c = stack_->accept(ev.socket);
          if (c <= 0) break;
          SocketState cs;
          cs.id = static_cast<stack::SocketId>(c);
          stack::Endpoint listener_ep, conn_ep;
          if (stack_->local_endpoint(ev.socket, &listener_ep) &&
              stack_->local_endpoint(static_cast<stack::SocketId>(c), &conn_ep))
            cs.v4_mapped = listener_ep.addr.family == 6 && conn_ep.addr.family == 4;
          cs.via = stack_->link_of(static_cast<stack::SocketId>(c));
          fabric_->hold(cs.via, true);
          sockets_[static_cast<stack::SocketId>(c)] = cs;
          ++connections_accepted_;
          // Counted once Node starts reading it (readStart), as libuv would.
          Emit(kAccept, ev.socket, c, Napi::Value());
          if (!stack_ || !Find(ev.socket)) break;
        }
        break;
      }
      case stack::EventType::Closed:
        if (st) {
          if (st->counted) {
            --refs_;
            UpdateRef();
          }
          if (st->port >= 0) fabric_->ports().give_back(st->port);
          if (st->via) fabric_->hold(st->via, false);
          sockets_.erase(ev.socket);
        }
        break;
    }
  }
  while (!held_connects_.empty() && stack_ && held_connects_.front().held_at != dispatches_)
    ReleaseHeldConnect(held_connects_.front().id);
  if (!stack_) held_connects_.clear();
  ++dispatches_;
  // Bytes taken after the last event (or with none at all).
  if (!direct_reads_.empty()) EmitDirectReads(SIZE_MAX);
  // Captured packets, in the order they passed.
  for (auto& [to, bytes] : captured_out_) captured_.push_back({PeerPid(to), 0, std::move(bytes)});
  captured_out_.clear();
  std::vector<Captured> captured;
  captured.swap(captured_);
  for (Captured& c : captured) {
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env_, c.bytes.size());
    std::memcpy(ab.Data(), c.bytes.data(), c.bytes.size());
    Emit(kCapture, static_cast<uint32_t>(c.peer_pid), c.received, ab);
    if (!stack_) break;
  }
  // Sockets that resumed reading with data (or EOF) already buffered.
  std::vector<stack::SocketId> ready;
  ready.swap(ready_);
  for (stack::SocketId id : ready) {
    SocketState* st = Find(id);
    if (st && st->reading && stack_) DeliverReads(id, *st);
  }
  if (slabs_) slabs_->unpin();
  in_dispatch_ = false;
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
    std::vector<uint16_t> busy;
    for (;;) {
      port = ports.take(local.addr.family, local.addr.bytes, busy, &l.port);
      if (port < 0 || stack_->can_connect(l, remote)) break;
      ports.give_back(port);
      busy.push_back(l.port);
    }
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
  for (size_t i = 0; i < count; ++i) {
    auto [p, n] = parts[i];
    if (n == 0) continue;
    // Behind bytes that wait already, or past what the lent memory holds:
    // kept here, in order, until ACKs make room (as libuv queues a write).
    if (!st->overflow.empty()) {
      st->overflow.insert(st->overflow.end(), p, p + n);
      continue;
    }
    long r = stack_->send(id, p, n, now);
    if (r < 0) return static_cast<int>(r);
    if (static_cast<size_t>(r) < n) {
      st = Find(id);
      if (!st) return 0;
      st->overflow.assign(p + r, p + n);
      st->overflow_at = 0;
    }
  }
  // A send makes no events (those come with ACKs, from the pump), so unlike
  // other calls it needs no extra turn of the loop: only the timer (and a
  // flush, should an ACK it could not carry be held).
  if (!in_pump_) {
    ArmTimer();
    FlushSoon();
  }
  st = Find(id);
  if (!st || !stack_) return 0;
  if (!st->overflow.empty() || stack_->send_queued(id) >= send_limit_) {
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
  stack_->close(id, Now());
  AfterUserCall();
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
    set("readSlabsMade", slabs_->made());
  }
  set("spinsWon", spins_won_);
  set("spinsLost", spins_lost_);
  return o;
}

}  // namespace sidestep::addon
