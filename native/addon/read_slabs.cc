// ReadSlabs (see read_slabs.h).
#include "read_slabs.h"

#include <cstdlib>

namespace sidestep::addon {

namespace {
// Slabs kept warm for reuse; more are freed. V8 collects the ArrayBuffers of
// delivered reads only every so often (about every 64 MiB of external memory),
// so a stream at full speed has that much in flight: a pool smaller than that
// hands out fresh memory, whose page faults cost more than the copy itself.
// (A 2 GiB transfer in one process settled at 96 slabs.)
constexpr size_t kKeepFree = 128;
}

struct ReadSlabs::Slab {
  uint8_t* mem;
  // Shared with the pool, so a finalizer that runs after the pool's owner is
  // gone (environment teardown) frees instead of recycling.
  std::shared_ptr<Pool> pool;
};

struct ReadSlabs::Pool {
  napi_env env;
  bool alive = true;
  std::vector<uint8_t*> free;

  uint8_t* take() {
    if (!free.empty()) {
      uint8_t* m = free.back();
      free.pop_back();
      return m;
    }
    int64_t ignored;
    napi_adjust_external_memory(env, static_cast<int64_t>(kSlabBytes), &ignored);
    return static_cast<uint8_t*>(std::malloc(kSlabBytes));
  }
  void give(uint8_t* m) {
    if (alive && free.size() < kKeepFree) {
      free.push_back(m);
      return;
    }
    if (alive) {
      int64_t ignored;
      napi_adjust_external_memory(env, -static_cast<int64_t>(kSlabBytes), &ignored);
    }
    std::free(m);
  }
};

ReadSlabs::ReadSlabs(napi_env env) : env_(env), pool_(std::make_shared<Pool>()) { pool_->env = env; }

ReadSlabs::~ReadSlabs() {
  retire_current();
  unpin();
  pool_->alive = false;
  for (uint8_t* m : pool_->free) std::free(m);
  pool_->free.clear();
}

void ReadSlabs::retire_current() {
  if (current_ref_) pinned_.push_back(current_ref_);
  current_ref_ = nullptr;
  current_ = nullptr;  // its ArrayBuffer's finalizer returns the memory
  fill_ = 0;
}

void ReadSlabs::unpin() {
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
  if (current_ && kSlabBytes - fill_ < want) retire_current();
  Span s;
  if (!current_) {
    uint8_t* mem = pool_->take();
    if (!mem) return s;
    napi_handle_scope scope;
    if (napi_open_handle_scope(env_, &scope) != napi_ok) {
      pool_->give(mem);
      return s;
    }
    auto* slab = new Slab{mem, pool_};
    napi_value ab;
    napi_status st = napi_create_external_arraybuffer(
        env_, mem, kSlabBytes,
        [](napi_env, void*, void* hint) {
          auto* sl = static_cast<Slab*>(hint);
          sl->pool->give(sl->mem);
          delete sl;
        },
        slab, &ab);
    if (st != napi_ok) {
      napi_close_handle_scope(env_, scope);
      pool_->give(mem);
      delete slab;
      return s;
    }
    napi_create_reference(env_, ab, 1, &current_ref_);
    napi_close_handle_scope(env_, scope);
    current_ = slab;
    fill_ = 0;
  }
  s.slab = current_ref_;
  s.data = current_->mem + fill_;
  s.capacity = kSlabBytes - fill_;
  s.offset = fill_;
  return s;
}

void ReadSlabs::commit(size_t used, bool packed) {
  fill_ += packed ? used : (used + 7) & ~size_t{7};
  if (fill_ >= kSlabBytes) retire_current();
}

}  // namespace sidestep::addon
