// SendBuffer: bytes come out exactly as they went in, in order, across wraps
// and growth; and the ring places new bytes at a position that shares the
// source's alignment within a cache line whenever it is free to choose (empty,
// or growing), so a stream written from one region copies mutually aligned.
#include <cstdint>
#include <vector>

#include "check.h"
#include "stack/tcp.h"

using namespace sidestep::stack;

namespace {

size_t line_offset(const void* p) { return reinterpret_cast<uintptr_t>(p) & 63; }

// Every byte in the buffer, read back through pieces() and through peek().
std::vector<uint8_t> contents(const SendBuffer& b) {
  std::vector<uint8_t> out(b.size()), peeked(b.size());
  Payload p;
  b.pieces(0, b.size(), &p);
  size_t at = 0;
  for (int i = 0; i < 2; ++i) {
    std::copy(p.data[i], p.data[i] + p.len[i], out.begin() + ptrdiff_t(at));
    at += p.len[i];
  }
  b.peek(0, peeked.data(), peeked.size());
  CHECK(out == peeked);
  return out;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7 + (i >> 8));
  return v;
}

}  // namespace

TEST(send_buffer_starts_an_empty_ring_aligned_with_the_source) {
  std::vector<uint8_t> src = pattern(200000, 3);
  for (size_t skew : {0u, 1u, 17u, 63u}) {
    SendBuffer b;
    b.push(src.data() + skew, 5000);  // first allocation
    Payload p;
    b.pieces(0, 1, &p);
    CHECK_EQ(line_offset(p.data[0]), line_offset(src.data() + skew));
    b.pop(5000);  // empty, memory kept (large enough)
    b.push(src.data() + skew + 5, 100);  // a new start, aligned again
    b.pieces(0, 1, &p);
    CHECK_EQ(line_offset(p.data[0]), line_offset(src.data() + skew + 5));
    CHECK(contents(b) == std::vector<uint8_t>(src.begin() + ptrdiff_t(skew + 5),
                                              src.begin() + ptrdiff_t(skew + 105)));
  }
}

TEST(send_buffer_keeps_bytes_in_order_and_aligns_the_tail_when_it_grows) {
  std::vector<uint8_t> src = pattern(1 << 20, 9);
  std::vector<uint8_t> expect;
  SendBuffer b;
  size_t at = 0, popped = 0;
  // Contiguous writes of awkward sizes, partial acknowledgements: the ring
  // wraps, then grows while wrapped; each write must land aligned with its
  // source (the stream is contiguous, so the ring stays in step).
  for (size_t n : {3000u, 20000u, 7u, 40000u, 65536u, 1u, 100000u, 131072u, 5u}) {
    b.push(src.data() + at, n);
    expect.insert(expect.end(), src.begin() + ptrdiff_t(at), src.begin() + ptrdiff_t(at + n));
    Payload p;
    b.pieces(b.size() - n, 1, &p);
    CHECK_EQ(line_offset(p.data[0]), line_offset(src.data() + at));
    at += n;
    size_t ack = b.size() / 3;
    b.pop(ack);
    popped += ack;
    CHECK(contents(b) == std::vector<uint8_t>(expect.begin() + ptrdiff_t(popped), expect.end()));
  }
  CHECK(b.allocated() >= 256u << 10);  // it did grow
}

TEST(send_buffer_doubles_up_to_its_limit_then_grows_by_quarters) {
  std::vector<uint8_t> src = pattern(1 << 20, 5);
  SendBuffer b(256u << 10);
  b.push(src.data(), 64u << 10);
  CHECK_EQ(b.allocated(), size_t(64u << 10));
  b.push(src.data() + (64u << 10), 192u << 10);
  CHECK_EQ(b.allocated(), size_t(256u << 10));  // doubled to the limit
  b.push(src.data() + (256u << 10), 212);  // one write's overshoot
  CHECK_EQ(b.allocated(), size_t(320u << 10));  // not 512 KiB
  b.push(src.data() + (256u << 10) + 212, 300000);
  CHECK(b.allocated() >= b.size());
  CHECK_EQ(b.allocated() % 64, size_t(0));
  CHECK(b.allocated() < b.size() + b.size() / 4 + 64);
  CHECK(contents(b) == std::vector<uint8_t>(src.begin(), src.begin() + ptrdiff_t(b.size())));
  SendBuffer unlimited;
  unlimited.push(src.data(), (256u << 10) + 212);
  CHECK_EQ(unlimited.allocated(), size_t(512u << 10));
}
