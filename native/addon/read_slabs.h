// Memory for the bytes a read hands to JavaScript. Allocating an ArrayBuffer
// per read costs a zero-filled allocation (for large reads an mmap and its
// page faults) every time; instead reads are carved out of 2 MiB slabs,
// exposed to JS as external ArrayBuffers ("windows", each over the part of
// the slab not yet used when it was made, a new one every few ms), and a
// read is delivered as (window, offset, length) — the shape Node's own
// stream reads have (streamBaseState[kArrayBufferOffset]). A slab goes back
// to the pool when V8 has collected all its windows, that is when no Buffer
// views it any more (in scavenges, as V8 frees Node's own read buffers: see
// invite_young_collection and unpin); the
// pool keeps free slabs warm while reads stream and gives all but a few back
// to the system once none has been taken for a while. When JS holds many
// slabs and none is free, reads get memory of their own, as a kernel
// socket's do, rather than a fresh slab (see reserve_loose()).
#pragma once

#include <node_api.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace sidestep::addon {

class ReadSlabs {
 public:
  // Two sizes of slab. Reads of a stream go into large ones; a slab taken
  // for a small read (request/response traffic) is small: a slab returns
  // only once V8 collected every read in it, and a server's many small reads
  // kept several large slabs in JS's hands — ~14 MiB of an HTTP server's RSS
  // under 50 connections, 1.27x the kernel's RSS (docs/performance.md).
  static constexpr size_t kSlabBytes = 2 << 20;
  static constexpr size_t kSmallSlabBytes = 256 << 10;
  // A slab taken for a reservation below this is small.
  static constexpr size_t kSmallReadBytes = 16 << 10;

  explicit ReadSlabs(napi_env env);
  ~ReadSlabs();
  ReadSlabs(const ReadSlabs&) = delete;
  ReadSlabs& operator=(const ReadSlabs&) = delete;

  struct Span {
    uint8_t* data = nullptr;
    size_t capacity = 0;
    napi_ref slab = nullptr;  // the slab's ArrayBuffer (see value())
    size_t offset = 0;        // where `data` starts in it
  };
  // Room for up to `want` bytes (all of it when want <= kSlabBytes). Needs
  // no handle scope: it opens its own when it makes a new slab.
  Span reserve(size_t want);
  // The first `used` bytes of the last reservation now belong to JS. Reads
  // are kept 8-byte aligned unless `packed` (direct receive: consecutive
  // pieces of one stream stay contiguous, so they coalesce into one read).
  void commit(size_t used, bool packed = false);
  // A Span's slab as a JS value (needs an open handle scope). Valid until
  // unpin(): a slab that fills up stays referenced until then, so a read
  // reserved in it can still be handed to JS.
  static napi_value value(napi_env env, napi_ref slab);
  // Let go of the slabs that filled up since the last call (their memory
  // returns to the pool once JS drops every read in them).
  void unpin();

  // For stats(): slabs mapped (in JS's hands, current, or free) and free.
  size_t mapped() const;
  size_t free_slabs() const;
  // The same in bytes (slabs come in two sizes).
  size_t mapped_bytes() const;
  size_t free_bytes() const;
  // Slabs mapped so far (each fresh: its pages fault in zeroed).
  uint64_t made() const;
  // Reads given memory of their own instead (see reserve_loose()).
  uint64_t loose() const { return loose_made_; }

 private:
  struct Pool;
  struct Slab;
  void retire_current();
  void retire_window();
  bool open_window(size_t want);
  void invite_young_collection();
  Span reserve_loose(size_t want);

  napi_env env_;
  std::shared_ptr<Pool> pool_;
  uv_loop_t* loop_ = nullptr;
  Slab* current_ = nullptr;  // the slab reads go into
  size_t fill_ = 0;          // how much of it they used
  size_t current_bytes_ = 0;  // its size
  // The ArrayBuffer reads in it are delivered in: a window over the slab's
  // memory from window_start_ to window_end_, made at window_born_ (loop ms).
  napi_ref window_ref_ = nullptr;
  size_t window_start_ = 0;
  size_t window_end_ = 0;
  uint64_t window_born_ = 0;
  // How much of the last window reads used: the next one spans about twice
  // that (see open_window()).
  size_t last_window_used_ = kSlabBytes;
  std::vector<napi_ref> pinned_;
  bool loose_ = false;  // the last reservation was loose memory
  uint64_t loose_made_ = 0;
};

}  // namespace sidestep::addon
