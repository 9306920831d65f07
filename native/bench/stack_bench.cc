// The stack alone, without Node and without the fabric: two Stacks in one
// process joined by an in-memory link, one bulk stream a -> b. Prints the
// per-segment cost and the throughput next to memcpy's on this machine, in
// the same run (issue 3's performance goal: within 2x of memcpy at 64 KiB
// segments).
//
// Time is real (the stacks' timers run as in the addon: poll() when due), so
// a stall on a delayed ACK or a persist timer costs what it costs in a real
// process instead of hanging or hiding. Each run is repeated for two socket
// buffer sizes: 256 KiB (what one process needs when the round trip is a
// function call: the copies stay in cache) and 4 MiB (the data streams
// through memory, as a fabric receiver's would).
//
//   make -C native/bench run            # 2 GiB at the fabric's 64 KiB MTU, then at 1500
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "stack/stack.h"

using namespace sidestep::stack;

namespace {

using Clock = std::chrono::steady_clock;

// Packets in flight one way: a pool of buffers, FIFO, no allocation once warm.
class Queue {
 public:
  uint8_t* reserve(size_t len) {
    if (free_.empty()) free_.emplace_back();
    cur_ = std::move(free_.back());
    free_.pop_back();
    cur_.resize(len);
    return cur_.data();
  }
  void commit(size_t len) {
    cur_.resize(len);
    q_.push_back(std::move(cur_));
  }
  // Delivers every queued packet to `to`.
  size_t drain(Stack& to, Micros now) {
    size_t n = 0;
    while (!q_.empty()) {
      std::vector<uint8_t> p = std::move(q_.front());
      q_.pop_front();
      to.input(1, p.data(), p.size(), now);
      free_.push_back(std::move(p));
      ++n;
    }
    return n;
  }

 private:
  std::vector<uint8_t> cur_;
  std::deque<std::vector<uint8_t>> q_;
  std::vector<std::vector<uint8_t>> free_;
};

struct End final : Link {
  Queue* out;
  uint8_t* tx_reserve(LinkAddr, size_t len) override { return out->reserve(len); }
  void tx_commit(LinkAddr, size_t len) override { out->commit(len); }
};

Endpoint ep(uint8_t last, uint16_t port) {
  Endpoint e;
  e.addr = IpAddr::v4(127, 0, 0, last);
  e.port = port;
  return e;
}

struct Result {
  double seconds;
  uint64_t segments;
};

// The receiving application, reading as bytes arrive (Stack::set_reader):
// one copy into its own memory, as a Node read into a slab.
struct SinkReader final : Reader {
  std::vector<uint8_t>* sink;
  size_t at = 0, received = 0;
  size_t take(SocketId, const uint8_t* data, size_t len) override {
    size_t n = std::min(len, sink->size() - at);
    std::memcpy(sink->data() + at, data, n);
    at = at + n == sink->size() ? 0 : at + n;
    received += n;
    return n;
  }
};

Micros micros_since(Clock::time_point t0) {
  return Micros(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
}

Result run(size_t total, uint32_t mtu, uint32_t window, bool direct) {
  const Clock::time_point epoch = Clock::now();
  Config c;
  c.mtu = mtu;
  c.checksums = false;
  c.recv_buffer = window;
  c.send_buffer = window;
  for (int i = 0; i < 16; ++i) c.isn_secret[i] = uint8_t(i + 1);
  Queue ab, ba;
  End ea, eb;
  ea.out = &ab;
  eb.out = &ba;
  Stack a(c, ea), b(c, eb);
  Micros now = 1000000 + micros_since(epoch);
  int l = b.listen(ep(1, 80), 16, false);
  int cs = a.connect(ep(1, 40000), ep(1, 80), 1, now);
  if (l <= 0 || cs <= 0) std::abort();
  for (int i = 0; i < 4; ++i) {
    ab.drain(b, now);
    ba.drain(a, now);
  }
  int ss = b.accept(SocketId(l));
  if (ss <= 0) std::abort();
  Event e;
  // The application writes 64 KiB at a time and reads what is there.
  std::vector<uint8_t> chunk(64 << 10, 0x5a), sink(window);
  size_t sent = 0, received = 0;
  SinkReader reader;
  reader.sink = &sink;
  if (direct) b.set_reader(SocketId(ss), &reader);
  uint64_t segments = 0;
  const uint64_t packets_before = a.counters().packets_out;
  auto t0 = Clock::now();
  while (received < total) {
    while (sent < total && a.send_queued(SocketId(cs)) < window) {
      size_t n = std::min(chunk.size(), total - sent);
      a.send(SocketId(cs), chunk.data(), n, now);
      sent += n;
    }
    ab.drain(b, now);
    while (size_t n = b.recv(SocketId(ss), sink.data(), sink.size(), now)) received += n;
    received += reader.received;
    reader.received = 0;
    ba.drain(a, now);
    while (a.next_event(&e) || b.next_event(&e)) {
    }
    now = 1000000 + micros_since(epoch);
    if (a.poll_at() <= now) a.poll(now);
    if (b.poll_at() <= now) b.poll(now);
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  segments = a.counters().packets_out - packets_before;
  return {secs, segments};
}

// memcpy of 64 KiB blocks, walking through `span` bytes of memory: with a
// small span the blocks stay in cache; with a large one each copy goes to
// memory, as the stack's copies of a bulk stream do.
double memcpy_gbps(size_t total, size_t span) {
  std::vector<uint8_t> src(span, 1), dst(span);
  const size_t block = 64 << 10;
  auto t0 = Clock::now();
  for (size_t done = 0, off = 0; done < total; done += block, off = (off + block) % span) {
    std::memcpy(dst.data() + off, src.data() + off, block);
    asm volatile("" : : "r"(dst.data()) : "memory");  // keep the copy
  }
  return double(total) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  size_t total = size_t(argc > 1 ? std::atoll(argv[1]) : 2048) << 20;
  double hot = memcpy_gbps(total, 64 << 10);
  double mc = memcpy_gbps(total, 64 << 20);
  std::printf("memcpy of 64 KiB blocks: %.2f GB/s in cache, %.2f GB/s through 64 MiB of memory\n", hot, mc);
  for (uint32_t mtu : {65536u, 1500u}) {
    for (uint32_t window : {256u << 10, 4u << 20}) for (bool direct : {false, true}) {
      size_t bytes = mtu == 1500 ? total / 8 : total;
      Result r = run(bytes, mtu, window, direct);
      double gbps = double(bytes) / r.seconds / 1e9;
      std::printf("stack, MTU %5u, buffers %4u KiB, %s: %.2f GB/s for %zu MiB, %llu data segments, %.0f ns per segment; "
                  "time per byte %.2fx one memcpy in cache, %.2fx one memcpy through memory\n",
                  mtu, window >> 10, direct ? "direct receive" : "recv()        ", gbps, bytes >> 20, (unsigned long long)r.segments,
                  r.seconds * 1e9 / double(r.segments), hot / gbps, mc / gbps);
    }
  }
  return 0;
}
