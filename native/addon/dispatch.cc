// Runtime (see runtime.h): stack events become JS calls, one callback scope
// each, in the order they happened; reads are carved from read slabs.
#include "runtime.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

namespace sidestep::addon {

namespace {
// Largest single read delivered to JS: a kernel socket's never exceed the
// 64 KiB buffer libuv reads into (Node's suggested size), and a program may
// count on it ('data' chunks, onread).
constexpr size_t kMaxDelivery = 64 * 1024;
}  // namespace

void Runtime::Emit(int32_t kind, uint32_t id, int32_t arg, Napi::Value data, size_t offset) {
  if (!async_context_ || on_event_.IsEmpty()) return;  // detached by an earlier event's handler
  Napi::Env env = env_;
  // Each event as in its own callback scope, as Node gives each libuv
  // callback (MakeCallback): the nextTicks and microtasks one event's
  // handlers queue run before the next event is delivered. (A TLS socket a
  // server destroys in its 'connection' handler closes in a microtask: bytes
  // for it that the same pump found must not reach it first. An http
  // response that ends frees its socket in a nextTick, before that socket's
  // EOF.) When the sink runs the tick queue itself after each event, the
  // events of one dispatch share one scope, opened in the caller's handle
  // scope (which outlives it): the same order, without a native scope's
  // open and close per event, nor the slow pop of an async stack JS pushed
  // onto (Node then stores the JS resource array's length through the
  // runtime), ~0.3 µs an event.
  std::optional<Napi::CallbackScope> own_scope;
  if (!ticks_in_js_)
    own_scope.emplace(env, *async_context_);
  else if (!shared_scope_)
    shared_scope_.emplace(env, *async_context_);
  Napi::HandleScope handle_scope(env);
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
  // throw from a kernel socket's callback (process 'uncaughtException'),
  // then the end of its scope, which runs what the handler queued.
  napi_value exception = nullptr;
  if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
  EndSharedScope();
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
    // (No more than one read's worth: a loose reservation is a buffer of
    // that size.)
    ReadSlabs::Span span = slabs_->reserve(std::min(len - taken, kMaxDelivery));
    if (!span.data) break;  // no memory: the rest waits in the receive buffer
    // Pieces of one stream that land next to each other are one read, up to
    // kMaxDelivery.
    DirectRead* join = direct_reads_.empty() ? nullptr : &direct_reads_.back();
    if (join && !(join->id == id && join->slab == span.slab && join->offset + join->len == span.offset &&
                  join->events_before == stack_->events_queued() && join->len < kMaxDelivery))
      join = nullptr;
    const size_t n = std::min({len - taken, span.capacity, kMaxDelivery - (join ? join->len : 0)});
    std::memcpy(span.data, data + taken, n);
    slabs_->commit(n, /*packed=*/true);
    if (join)
      join->len += n;
    else
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
  EndSharedScope();
  in_dispatch_ = false;
}

}  // namespace sidestep::addon
