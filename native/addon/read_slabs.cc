// ReadSlabs (see read_slabs.h).
#include "read_slabs.h"

#include <algorithm>
#include <sys/mman.h>

#include <cstdint>

namespace sidestep::addon {

namespace {
// Free slabs kept warm for reuse, in bytes; more are freed. A stream at full
// speed has about two semi-spaces' worth of slabs in JS's hands (see
// invite_young_collection()): a pool smaller than that hands out fresh
// memory, whose page faults cost more than the copy itself.
constexpr size_t kKeepFreeBytes = 128u << 20;
// Of which small slabs: their reads come from request/response traffic, whose
// slabs come back a few at a time, not a stream's semi-spaces' worth. (An
// HTTP server under 10 connections kept 43 free small slabs, 11 MiB, made in
// one early burst: its RSS 1.49x the kernel's.)
constexpr size_t kKeepFreeSmallBytes = 4u << 20;
// An idle process keeps this much in free slabs (four large ones): once no
// slab has been taken for kTrimAfterMs, the free ones beyond are unmapped.
// (After a 1 GiB transfer a receiver otherwise held ~43 MiB more than in
// kernel mode.)
constexpr size_t kIdleKeepBytes = 8u << 20;
constexpr uint64_t kTrimAfterMs = 2000;
// A window (a slab's ArrayBuffer) older than this is let go at the end of
// the dispatch, and the slab's next reads get a new one: see unpin().
constexpr uint64_t kWindowMs = 5;
// A small slab's window (request/response reads) lives 1 ms: a busy HTTP
// server scavenges every few ms, and a window alive across two scavenges is
// promoted, its slab then held until a mark-compact (an HTTP server under 10
// connections held ~40 small slabs, RSS 1.31x the kernel's; 1.07x with 1 ms).
constexpr uint64_t kSmallWindowMs = 1;
// Slab memory mapped (32 large slabs) beyond which, with none free, reads go
// to loose memory instead of a fresh slab (reserve_loose()).
constexpr size_t kLooseAfterBytes = 64u << 20;

// A slab is plain 4 KiB pages. Huge pages (MADV_HUGEPAGE) were tried and
// dropped: a fresh huge page is zeroed whole at its first touch, and on a VM
// whose host backs guest memory lazily that cost ~2 ms per slab — most of a
// short-lived reader's slabs are fresh (24 processes echoing 16 MiB each
// spent 20% of the machine in clear_page_erms, 1.31x the kernel's wall time
// against 1.12x without; docs/performance.md). Streaming readers reuse their
// slabs, so they gain little from huge pages (bulk within noise).
uint8_t* map_slab(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}

void unmap_slab(uint8_t* m, size_t bytes) { ::munmap(m, bytes); }
}

struct ReadSlabs::Slab {
  uint8_t* mem;
  size_t bytes;  // kSlabBytes or kSmallSlabBytes
  // Shared with the pool, so a finalizer that runs after the pool's owner is
  // gone (environment teardown) frees instead of recycling.
  std::shared_ptr<Pool> pool;
  size_t windows = 0;    // its ArrayBuffers V8 has not collected yet
  bool retired = false;  // no more reads go into it

  // Runs on the JS thread (Node calls an external buffer's finalizer there).
  static void WindowCollected(napi_env, void*, void* hint);
  void free();
};

struct ReadSlabs::Pool {
  bool alive = true;
  std::vector<uint8_t*> free_large, free_small;
  size_t mapped = 0, mapped_bytes = 0;
  size_t free_bytes = 0;
  uint64_t made = 0;            // slabs ever mapped (fresh memory, page faults)
  uint64_t takes = 0;           // since the trim timer last looked
  uv_timer_t* trim = nullptr;   // while ReadSlabs lives (it closes the handle)

  std::vector<uint8_t*>& free_of(size_t bytes) { return bytes == kSlabBytes ? free_large : free_small; }
  bool any_free(size_t bytes) const { return !(bytes == kSlabBytes ? free_large : free_small).empty(); }
  size_t free_count() const { return free_large.size() + free_small.size(); }

  uint8_t* take(size_t bytes) {
    ++takes;
    std::vector<uint8_t*>& list = free_of(bytes);
    if (!list.empty()) {
      uint8_t* m = list.back();
      list.pop_back();
      free_bytes -= bytes;
      return m;
    }
    uint8_t* m = map_slab(bytes);
    if (m) {
      ++mapped;
      mapped_bytes += bytes;
      ++made;
    }
    return m;
  }
  void give(uint8_t* m, size_t bytes) {
    const bool room = bytes == kSlabBytes || (free_small.size() + 1) * kSmallSlabBytes <= kKeepFreeSmallBytes;
    if (alive && room && free_bytes + bytes <= kKeepFreeBytes) {
      free_of(bytes).push_back(m);
      free_bytes += bytes;
      arm_trim();
      return;
    }
    release(m, bytes);
  }
  // (Not reported to V8 as external memory: V8 already counts a slab while
  // its ArrayBuffer lives, and counting it twice only brought on more full
  // collections.)
  void release(uint8_t* m, size_t bytes) {
    unmap_slab(m, bytes);
    --mapped;
    mapped_bytes -= bytes;
  }
  // Unmap free slabs, large ones first, until at most `keep` bytes are free.
  void release_free_beyond(size_t keep) {
    for (std::vector<uint8_t*>* list : {&free_large, &free_small}) {
      const size_t bytes = list == &free_large ? kSlabBytes : kSmallSlabBytes;
      while (free_bytes > keep && !list->empty()) {
        release(list->back(), bytes);
        list->pop_back();
        free_bytes -= bytes;
      }
    }
  }
  // More free slabs than an idle process keeps: look again every
  // kTrimAfterMs, and trim once a whole period went by without a take.
  void arm_trim() {
    if (!trim || free_bytes <= kIdleKeepBytes || uv_is_active(reinterpret_cast<uv_handle_t*>(trim))) return;
    takes = 0;
    uv_timer_start(trim, OnTrim, kTrimAfterMs, kTrimAfterMs);
  }
  static void OnTrim(uv_timer_t* t) {
    auto* p = static_cast<Pool*>(t->data);
    if (!p) return;
    if (p->takes == 0) p->release_free_beyond(kIdleKeepBytes);
    p->takes = 0;
    if (p->free_bytes <= kIdleKeepBytes) uv_timer_stop(t);
  }
};

void ReadSlabs::Slab::WindowCollected(napi_env, void*, void* hint) {
  auto* sl = static_cast<Slab*>(hint);
  if (--sl->windows == 0 && sl->retired) sl->free();
}

void ReadSlabs::Slab::free() {
  pool->give(mem, bytes);
  delete this;
}

ReadSlabs::ReadSlabs(napi_env env) : env_(env), pool_(std::make_shared<Pool>()) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop) {
    loop_ = loop;
    auto* t = new uv_timer_t();
    uv_timer_init(loop, t);
    uv_unref(reinterpret_cast<uv_handle_t*>(t));  // never keeps the process alive
    t->data = pool_.get();
    pool_->trim = t;
  }
}

ReadSlabs::~ReadSlabs() {
  retire_current();
  unpin();
  pool_->alive = false;
  if (uv_timer_t* t = pool_->trim) {
    pool_->trim = nullptr;
    t->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  pool_->release_free_beyond(0);
}

size_t ReadSlabs::mapped() const { return pool_->mapped; }
size_t ReadSlabs::free_slabs() const { return pool_->free_count(); }
size_t ReadSlabs::mapped_bytes() const { return pool_->mapped_bytes; }
size_t ReadSlabs::free_bytes() const { return pool_->free_bytes; }
uint64_t ReadSlabs::made() const { return pool_->made; }

// V8 frees an ArrayBuffer that dies young in a scavenge, but it decides
// whether young ArrayBuffers' memory calls for one only when it allocates a
// backing store itself (Heap::AllocateExternalBackingStore: a scavenge once
// the young generation's ArrayBuffers hold twice the maximum semi-space).
// A slab's memory is ours, so making slabs never asks; with little else
// allocated per read (reads coalesce), the young generation rarely fills,
// and only V8's external-memory limit collected slabs: by a full
// mark-compact every ~64 MiB, with ~250 MiB of slabs in JS's hands at
// once. Allocating a one-byte buffer of V8's with each slab lets V8 ask,
// as it does for every read of a kernel socket; slabs then go back to the
// pool in scavenges. (A 1 GiB transfer over 16 streams into a counting
// sink: mark-compacts 16 -> 0-1, scavenges 2 -> ~45, 1.3-1.8 -> 2.9-3.5 GB/s,
// receiver CPU 0.8 -> 0.35 s; see docs/performance.md.)
void ReadSlabs::invite_young_collection() {
  void* data;
  napi_value ignored;
  napi_create_arraybuffer(env_, 1, &data, &ignored);
}

void ReadSlabs::retire_window() {
  if (!window_ref_) return;
  pinned_.push_back(window_ref_);
  window_ref_ = nullptr;
  last_window_used_ = fill_ - window_start_;
}

void ReadSlabs::retire_current() {
  retire_window();
  if (Slab* sl = current_) {
    current_ = nullptr;
    sl->retired = true;
    // Otherwise the last window's finalizer returns the memory.
    if (sl->windows == 0) sl->free();
  }
  fill_ = 0;
  current_bytes_ = 0;
}

// A window lives as long as JS holds any read in it. One that stayed
// current across scavenges (a slab fills slowly with small reads: an HTTP
// server's requests) would be promoted to the old generation, and only a
// full collection, rare under such load, would return its slab — an HTTP
// server under 50 connections held 17 slabs (34 MiB). So a window gets
// kWindowMs, and the slab's next reads get a new window over its remaining
// memory: each ArrayBuffer dies young. (One window per 5 ms costs nothing
// next to the reads; a window per dispatch would cost a round trip ~1 µs.)
void ReadSlabs::unpin() {
  const uint64_t life = current_bytes_ == kSlabBytes ? kWindowMs : kSmallWindowMs;
  if (window_ref_ && loop_ && uv_now(loop_) - window_born_ >= life) retire_window();
  for (napi_ref r : pinned_) napi_delete_reference(env_, r);
  pinned_.clear();
}

napi_value ReadSlabs::value(napi_env env, napi_ref slab) {
  napi_value v = nullptr;
  napi_get_reference_value(env, slab, &v);
  return v;
}

ReadSlabs::Span ReadSlabs::reserve(size_t want) {
  if (want > kSlabBytes) want = kSlabBytes;
  // Each reservation says what its commit() does: a slab reservation left
  // uncommitted (a read that found nothing) must not make the next one's
  // commit count as loose, nor the reverse.
  loose_ = false;
  if (current_ && current_bytes_ - fill_ < want) retire_current();
  Span s;
  if (!current_) {
    const size_t bytes = want < kSmallReadBytes ? kSmallSlabBytes : kSlabBytes;
    if (!pool_->any_free(bytes) && pool_->mapped_bytes >= kLooseAfterBytes) return reserve_loose(want);
    uint8_t* mem = pool_->take(bytes);
    if (!mem) return s;
    current_ = new Slab{mem, bytes, pool_};
    fill_ = 0;
    current_bytes_ = bytes;
  }
  // A read that doesn't fit the window gets a new one (where the slab has
  // room for it).
  if (window_ref_ && (fill_ >= window_end_ || window_end_ - fill_ < want)) retire_window();
  if (!window_ref_ && !open_window(want)) return s;
  s.slab = window_ref_;
  s.data = current_->mem + fill_;
  s.capacity = window_end_ - fill_;
  s.offset = fill_ - window_start_;
  return s;
}

// A window spans what its reads are likely to use, not the slab's whole
// rest: V8 counts each ArrayBuffer's length as external memory, and one
// made every kWindowMs over ~2 MiB added ~400 MiB/s of it under ping-pong
// traffic — a mark-compact every ~100 ms (1-4 ms pauses with 10,000 idle
// connections held: the scale case's p99.9 at 12x the kernel's). Twice
// what the last window used, at least kMinWindow: small under request/
// response traffic, the whole slab under a stream.
bool ReadSlabs::open_window(size_t want) {
  constexpr size_t kMinWindow = 64 << 10;
  const size_t rest = current_bytes_ - fill_;
  const size_t len = std::min(rest, std::max({want, kMinWindow, 2 * last_window_used_}));
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return false;
  // Ask first, as V8 does before each allocation of its own: the window's
  // bytes, once accounted, may cross the external-memory limit and start
  // major marking, during which newer V8s (separate_gc_phases, Node 26)
  // no longer scavenge on request.
  invite_young_collection();
  napi_value ab;
  bool ok = napi_create_external_arraybuffer(env_, current_->mem + fill_, len,
                                             Slab::WindowCollected, current_, &ab) == napi_ok &&
            napi_create_reference(env_, ab, 1, &window_ref_) == napi_ok;
  if (ok) {
    ++current_->windows;
    window_start_ = fill_;
    window_end_ = fill_ + len;
    window_born_ = loop_ ? uv_now(loop_) : 0;
  } else {
    window_ref_ = nullptr;  // (an ArrayBuffer made without a reference is collected, finalized, counted)
  }
  napi_close_handle_scope(env_, scope);
  return ok;
}

// A slab returns only once every read in it is collected, so reads of many
// streams interleaved in one slab keep it as long as the slowest of them:
// the ones still in a Readable's buffer or a pipe's hands at a scavenge
// survive it, and pin their slabs — nearly every recent slab when 24 echo
// streams interleave (an echo server then mapped ~60 fresh slabs for 384
// MiB, 40% of its CPU zeroing huge pages). Once kLooseAfterBytes of slabs
// are mapped and none of the size wanted is free, a read gets a buffer of
// its own from Node's allocator
// (uninitialized, malloc'd, reused as soon as V8 frees it), as a kernel
// socket's reads do: it pins only itself, and V8 counts it toward its own
// scavenges, which bring the slabs back.
ReadSlabs::Span ReadSlabs::reserve_loose(size_t want) {
  Span s;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) return s;
  void* data = nullptr;
  napi_value buf, ab;
  size_t offset = 0;
  napi_ref ref = nullptr;
  if (napi_create_buffer(env_, want, &data, &buf) == napi_ok &&
      napi_get_typedarray_info(env_, buf, nullptr, nullptr, nullptr, &ab, &offset) == napi_ok &&
      napi_create_reference(env_, ab, 1, &ref) == napi_ok) {
    pinned_.push_back(ref);  // (let go of at unpin(), as a window)
    s.data = static_cast<uint8_t*>(data);
    s.capacity = want;
    s.slab = ref;
    s.offset = offset;
    loose_ = true;
    ++loose_made_;
  }
  napi_close_handle_scope(env_, scope);
  return s;
}

void ReadSlabs::commit(size_t used, bool packed) {
  if (loose_) {
    loose_ = false;
    return;
  }
  fill_ += packed ? used : (used + 7) & ~size_t{7};
  if (fill_ >= current_bytes_) retire_current();
}

}  // namespace sidestep::addon
