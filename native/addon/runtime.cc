// The per-event-loop runtime (see runtime.h), its loop driver: attaching to
// the fabric, libuv's handles (doorbell, control channel, timers, idle, the
// close phase) and the pump that takes frames into the stack. The rest of
// Runtime is split by job: dispatch.cc (stack events to JS), sockets.cc (the
// socket calls JS makes), orphans.cc (a dead peer's streams), inspect.cc
// (stats, capture, connection and pair listings).
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
  out->published_ring = &slot.descriptor->ring_bytes;
  out->published_base = &slot.descriptor->seq_base;
  out->published_end = &slot.descriptor->written_end;
  out->published_consumed = &slot.descriptor->consumed;
  out->published_from = &slot.descriptor->ring_from;
  out->cookie = slot.cookie;
  out->stagger = slot.stagger;
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
  spin_us_ = config.spin_us;
  ticks_in_js_ = config.ticks_in_js;
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
  Napi::HandleScope handle_scope(self->env_);  // (the shared scope's resource lives in it)
  for (size_t i = 0; i < n && !self->on_event_.IsEmpty(); ++i) {
    self->Emit(kClosePhase, 0, 0, Napi::Value());
  }
  self->EndSharedScope();
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
  // A timer already set to fire no later stays as it is, even when nothing
  // is due any more: it fires, finds nothing (OnTimer), and this sets it
  // again for what is due then. Restarting it to the letter cost a stop and
  // a start per round trip (each send arms the retransmission timer, each
  // ACK clears it); a timer that fires early costs one pump per
  // retransmission timeout.
  if (at == stack::kNever || at >= timer_deadline_) return;
  timer_deadline_ = at;
  stack::Micros now = Now();
  // libuv timers have millisecond resolution: round up so we never fire early
  // and spin on a deadline that is still in the future.
  uint64_t ms = at > now ? (at - now + 999) / 1000 : 0;
  uv_timer_start(timer_, OnTimer, ms, 0);
}

void Runtime::OnDoorbell(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<Runtime*>(h->data);
  if (!self || !self->fabric_) return;
  // The eventfd is read after the pump, not before: its read() is then off
  // the path from a frame's arrival to the answer JS sends (a ping-pong's
  // round trip is two such paths). Level-triggered, it stays readable
  // meanwhile; the pump reads it before it arms (see Pump).
  self->doorbell_unread_ = true;
  self->Pump();
  self->DrainDoorbell();
}

void Runtime::DrainDoorbell() {
  // Never between arming and sleeping: a ring for a frame the re-check
  // missed would be eaten. Pump clears the flag before it arms.
  if (!doorbell_unread_ || !fabric_) return;
  doorbell_unread_ = false;
  fabric_->doorbell_drain();
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
  const uint64_t slabs_made = slabs_ ? slabs_->made() : 0;
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
    if (n == kRxBudget || fed) {
      // The rings hold more: as libuv polls again after a full batch. But
      // read memory JS let go of returns to the pool only between loop
      // iterations (Node runs an external buffer's finalizer from the loop,
      // not inside the scavenge that freed it): a pump that had to map fresh
      // slabs stops here and comes back next iteration (below), after they
      // did. Otherwise 24 echoing streams took ~160 fresh 2 MiB slabs for
      // 384 MiB, most of the echo server's time zeroing pages.
      if (slabs_ && slabs_->made() != slabs_made) break;
      continue;
    }
    // One poll phase's worth, as libuv's: what JS just set off (a reply that
    // came straight back, a peer in this process, a completion) waits for
    // the next loop iteration, after this one's setImmediate and close
    // callbacks, as it would behind a kernel socket.
    if (!ready_.empty() || !shutdowns_.empty() || !fallbacks_.empty() || !held_connects_.empty() ||
        stack_->events_pending())
      break;
    if (Spin()) continue;  // SIDESTEP_SPIN_US: frames came while we watched
    DrainDoorbell();
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

}  // namespace sidestep::addon
