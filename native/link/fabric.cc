// The fabric file: creation, attach and detach, slots and liveness, and the
// data path (tx/rx over the rings, the need-wakeup protocol).
#include "link/fabric.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>

#include "link/doorbell.h"
#include "link/layout.h"
#include "link/registry.h"
#include "link/ring.h"

namespace sidestep::link {

using namespace layout;

namespace {

constexpr char kShmDir[] = "/dev/shm/";
constexpr int kOpenAttempts = 100;
constexpr uint32_t kGenerationMask = 0xffffff;
constexpr size_t kRxQuantum = 32;  // frames per ring per round-robin turn

std::string errno_text(int e) { return std::strerror(e); }

uint64_t realtime_us() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

int set_lock(int fd, short type, off_t at) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = at;
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

// Whether another open file description holds a lock on byte `at`. (Our own
// locks never conflict with us, so this is false for our own slot.)
bool locked_by_other(int fd, off_t at) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = at;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return true;  // unsure: assume alive
  return fl.l_type != F_UNLCK;
}

int flock_retry(int fd, int op) {
  for (;;) {
    if (::flock(fd, op) == 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

uint32_t next_generation(uint32_t g) {
  g = (g + 1) & kGenerationMask;
  return g == 0 ? 1 : g;
}

// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot. With the
// pid it names a process unambiguously (pids are recycled). 0 if unknown.
uint64_t start_time_of(const char* stat_path) {
  FILE* f = std::fopen(stat_path, "re");
  if (!f) return 0;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');  // the command may contain spaces
  if (!p) return 0;
  unsigned long long v = 0;
  // After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
  // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime(22)
  if (std::sscanf(p + 1,
                  " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                  &v) != 1)
    return 0;
  return v;
}

uint64_t own_start_time() { return start_time_of("/proc/self/stat"); }

uint64_t start_time_of(int pid) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  return start_time_of(path);
}

// Whether `fd` (ours) is an eventfd: what pidfd_getfd() brought must be one
// before we ever write to it.
bool is_eventfd(int fd) {
  char path[48], target[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(path, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = 0;
  return std::strcmp(target, "anon_inode:[eventfd]") == 0;
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

int validate_config(const FabricConfig& c, std::string* why) {
  if (!valid_name(c.name)) {
    *why = "fabric name '" + c.name +
           "' is invalid: use 1-64 characters from [A-Za-z0-9._-], not starting with '.'";
    return -EINVAL;
  }
  if (c.mtu < 64 || c.mtu > (1u << 20)) {
    *why = "fabric mtu " + std::to_string(c.mtu) + " is out of range [64, 1048576]";
    return -EINVAL;
  }
  if (c.ring_bytes < kPage || c.ring_bytes > (1u << 26) || (c.ring_bytes & (c.ring_bytes - 1))) {
    *why = "fabric ring_bytes " + std::to_string(c.ring_bytes) +
           " must be a power of two in [4096, 67108864]";
    return -EINVAL;
  }
  if (2 * frame_bytes(c.mtu) > c.ring_bytes) {
    *why = "fabric ring_bytes " + std::to_string(c.ring_bytes) + " is too small for mtu " +
           std::to_string(c.mtu) + " (needs at least two frames of " +
           std::to_string(frame_bytes(c.mtu)) + " bytes)";
    return -EINVAL;
  }
  return 0;
}

// Differences between an existing header and the layout we would create.
std::string layout_mismatch(const FileHeader& h, const FileHeader& want, off_t file_size) {
  std::string d;
  auto field = [&](const char* name, uint64_t have, uint64_t wanted) {
    if (have == wanted) return;
    if (!d.empty()) d += ", ";
    d += std::string(name) + " " + std::to_string(have) + " (this stack: " +
         std::to_string(wanted) + ")";
  };
  if (h.magic != kMagic) return "not a sidestep fabric (bad magic)";
  field("layout version", h.layout_version, want.layout_version);
  field("max stacks", h.max_stacks, want.max_stacks);
  field("ring_bytes", h.ring_bytes, want.ring_bytes);
  field("mtu", h.mtu, want.mtu);
  field("slot size", h.slot_bytes, want.slot_bytes);
  field("registry entries", h.registry_entries, want.registry_entries);
  field("registry entry size", h.registry_entry_bytes, want.registry_entry_bytes);
  field("ring header size", h.ring_header_bytes, want.ring_header_bytes);
  field("rings offset", h.rings_offset, want.rings_offset);
  field("size", h.total_bytes, want.total_bytes);
  if (d.empty() && static_cast<uint64_t>(file_size) != want.total_bytes)
    field("file size", static_cast<uint64_t>(file_size), want.total_bytes);
  return d;
}

FileHeader header_for(const Geometry& g) {
  FileHeader h = {};
  h.magic = kMagic;
  h.layout_version = kLayoutVersion;
  h.max_stacks = kMaxStacks;
  h.ring_bytes = g.ring_bytes;
  h.mtu = g.mtu;
  h.slot_bytes = sizeof(Slot);
  h.registry_entries = kRegistryEntries;
  h.registry_entry_bytes = sizeof(RegistryEntry);
  h.ring_header_bytes = kRingHeaderBytes;
  h.total_bytes = g.total_bytes;
  h.rings_offset = g.rings_offset;
  return h;
}

}  // namespace

struct Fabric::Impl final : Liveness {
  FabricConfig config;
  std::string path;
  Geometry geo;
  int fd = -1;
  uint8_t* base = nullptr;
  FileHeader* header = nullptr;
  Slot* slots = nullptr;
  uint32_t slot = 0;
  uint32_t generation = 0;
  LinkAddr self = 0;
  bool attached = false;
  bool owns_file = false;  // the file passed the ownership checks: we may remove it
  pid_t owner_pid = ::getpid();
  Doorbell bell;
  std::optional<Registry> registry;
  std::optional<PortTable> ports;
  FabricCounters counters;
  // Generation of each peer for which ring[self][peer] has been allocated.
  uint32_t tx_ready[kMaxStacks] = {};
  uint64_t tx_head[kMaxStacks] = {};  // ring_reserve()'s copy of each peer's head
  // Per slot, a peer whose life the caller watches (a pidfd; see vouch()).
  LinkAddr vouched[kMaxStacks] = {};
  // Per slot, our reference to its owner's doorbell eventfd, taken once per
  // claim (generation); fd -1 with a generation set: use the datagram.
  struct PeerBell {
    uint32_t generation = 0;
    int fd = -1;
  } peer_bells[kMaxStacks];
  struct {
    bool valid = false;
    LinkAddr to = 0;
    RingReservation r;
  } pending;
  uint32_t rx_next = 0;  // round-robin start
  bool in_rx = false;

  ~Impl() { detach(); }

  RingView ring(uint32_t producer, uint32_t consumer) const {
    uint8_t* at = base + geo.ring_offset(producer, consumer);
    return RingView{reinterpret_cast<RingHeader*>(at), at + kRingHeaderBytes, geo.ring_bytes,
                    geo.mtu};
  }
  Slot& own() const { return slots[slot]; }
  void ring_peer(uint32_t peer, uint32_t peer_generation);
  int take_peer_eventfd(uint32_t peer, uint32_t peer_generation);
  void drop_peer_bells() {
    for (PeerBell& b : peer_bells) {
      if (b.fd >= 0) ::close(b.fd);
      b = PeerBell{};
    }
  }

  bool may_be_alive(LinkAddr a) const override {
    const uint32_t s = slot_of(a), g = generation_of(a);
    if (s >= kMaxStacks || g == 0) return false;
    if (a == self) return true;
    return load_acquire(&slots[s].generation) == g && load_relaxed(&slots[s].state) == kSlotLive;
  }
  bool alive(LinkAddr a) const override {
    if (a == self) return true;
    if (!may_be_alive(a)) return false;
    const uint32_t s = slot_of(a);
    if (s == slot) return false;  // our slot, another generation
    if (vouched[s] == a) return true;  // watched: its death is reported, no syscall
    if (!locked_by_other(fd, kSlotLockBase + s)) return false;
    // The lock may belong to a new owner that claimed the slot meanwhile.
    return load_acquire(&slots[s].generation) == generation_of(a);
  }

  void copy_to_mirror(LinkAddr mirror, const uint8_t* packet, size_t len, uint32_t dst_slot,
                      uint64_t sent_us);

  void mirror_counters() {
    const auto* c = reinterpret_cast<const uint64_t*>(&counters);
    for (size_t i = 0; i < kCounterWords; ++i) store_relaxed(&own().counters[i], c[i]);
  }

  int open_file(std::string* why);
  int initialise(bool truncate_first, std::string* why);
  int claim_slot(std::string* why);
  bool any_other_slot_live() const;
  void release_rings(uint64_t inbound_mask);
  void detach();
};

int Fabric::Impl::open_file(std::string* why) {
  for (int attempt = 0; attempt < kOpenAttempts; ++attempt) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      int e = errno;
      *why = "open(" + path + "): " + errno_text(e);
      return -e;
    }
    if (int r = flock_retry(fd, LOCK_EX); r < 0) {
      *why = "flock(" + path + "): " + errno_text(-r);
      return r;
    }
    struct stat held, named;
    if (::fstat(fd, &held) != 0) {
      int e = errno;
      *why = "fstat(" + path + "): " + errno_text(e);
      return -e;
    }
    // The last stack may have unlinked the file between our open and flock:
    // then the file we hold is an orphan and we must start over.
    if (::stat(path.c_str(), &named) != 0 || named.st_ino != held.st_ino ||
        named.st_dev != held.st_dev) {
      ::close(fd);
      fd = -1;
      continue;
    }
    if (!S_ISREG(held.st_mode)) {
      *why = path + " is not a regular file";
      return -EACCES;
    }
    if (held.st_uid != ::geteuid()) {
      *why = path + " is owned by uid " + std::to_string(held.st_uid) + ", not by us (uid " +
             std::to_string(::geteuid()) + "): refusing to share memory with another user";
      return -EACCES;
    }
    if (held.st_mode & 077) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(held.st_mode & 07777));
      *why = path + " has mode " + mode +
             ": other users could read or write it; refusing (remove the file or chmod 600)";
      return -EACCES;
    }
    owns_file = true;
    // A restrictive umask may have left us 0400/0200: fix it for later attachers.
    if ((held.st_mode & 0777) != 0600 && ::fchmod(fd, 0600) != 0) {
      int e = errno;
      *why = "fchmod(" + path + ", 0600): " + errno_text(e);
      return -e;
    }

    const FileHeader want = header_for(geo);
    FileHeader have = {};
    bool fresh = held.st_size == 0;
    if (!fresh) {
      ssize_t n = ::pread(fd, &have, sizeof(have), 0);
      if (n != static_cast<ssize_t>(sizeof(have))) have.magic = 0;
      std::string diff = layout_mismatch(have, want, held.st_size);
      if (!diff.empty()) {
        // A file left by stacks that all died (or whose creator died while
        // initialising) can be rebuilt; one with a live stack cannot.
        bool live = false;
        for (uint32_t s = 0; s < kMaxStacks && !live; ++s)
          live = locked_by_other(fd, kSlotLockBase + s);
        if (live) {
          *why = "fabric " + path + " has a different layout: " + diff +
                 "; every stack on one fabric must use the same settings (or use another fabric "
                 "name)";
          return -EINVAL;
        }
        if (int r = initialise(true, why); r < 0) return r;
        return 0;
      }
    } else {
      if (int r = initialise(false, why); r < 0) return r;
      return 0;
    }
    return 0;
  }
  *why = "could not open " + path + ": it kept being replaced";
  return -EAGAIN;
}

// Under the file flock.
int Fabric::Impl::initialise(bool truncate_first, std::string* why) {
  if (truncate_first && ::ftruncate(fd, 0) != 0) {
    int e = errno;
    *why = "ftruncate(" + path + ", 0): " + errno_text(e);
    return -e;
  }
  if (::ftruncate(fd, static_cast<off_t>(geo.total_bytes)) != 0) {
    int e = errno;
    *why = "ftruncate(" + path + ", " + std::to_string(geo.total_bytes) + "): " + errno_text(e);
    return -e;
  }
  // Reserve the metadata now: touching a hole of a full tmpfs is a SIGBUS,
  // an fallocate() failure is an error we can report.
  if (::fallocate(fd, 0, 0, static_cast<off_t>(geo.metadata_bytes)) != 0) {
    int e = errno;
    *why = "fallocate(" + path + "): " + errno_text(e) + " (is /dev/shm full?)";
    return -e;
  }
  FileHeader h = header_for(geo);
  h.magic = 0;
  if (::getrandom(&h.instance, sizeof(h.instance), GRND_NONBLOCK) != sizeof(h.instance)) {
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    h.instance = (uint64_t(ts.tv_sec) << 32) ^ uint64_t(ts.tv_nsec) ^ (uint64_t(::getpid()) << 16);
  }
  if (::pwrite(fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h))) {
    int e = errno;
    *why = "pwrite(" + path + "): " + errno_text(e);
    return -e;
  }
  const uint64_t magic = kMagic;
  if (::pwrite(fd, &magic, sizeof(magic), 0) != static_cast<ssize_t>(sizeof(magic))) {
    int e = errno;
    *why = "pwrite(" + path + "): " + errno_text(e);
    return -e;
  }
  return 0;
}

// Under the file flock.
int Fabric::Impl::claim_slot(std::string* why) {
  uint32_t s = 0;
  for (; s < kMaxStacks; ++s)
    if (set_lock(fd, F_WRLCK, kSlotLockBase + s) == 0) break;
  if (s == kMaxStacks) {
    *why = "fabric " + path + " is full: " + std::to_string(kMaxStacks) + " stacks are attached";
    return -EUSERS;
  }
  slot = s;
  Slot& me = own();
  generation = next_generation(load_relaxed(&me.generation));
  self = make_addr(slot, generation);
  uint64_t nonce = 0;
  if (::getrandom(&nonce, sizeof nonce, GRND_NONBLOCK) != sizeof nonce) {
    // No entropy yet (early boot): unpredictable enough for a name.
    nonce = uint64_t(::getpid()) * 0x9E3779B97F4A7C15ull ^ own_start_time() ^ uint64_t(::time(nullptr));
  }
  if (int r = bell.open(config.name, load_relaxed(&header->instance), slot, generation, nonce, why);
      r < 0) {
    set_lock(fd, F_UNLCK, kSlotLockBase + s);
    return r;
  }
  // Leftovers of a previous owner (killed, or exited cleanly) must not reach
  // us: frames in our inbound rings, its registrations and ports.
  const uint64_t mask = load_acquire(&me.inbound_mask);
  for (uint32_t p = 0; p < kMaxStacks; ++p)
    if (mask & (uint64_t{1} << p)) ring_discard(ring(p, slot));
  store_relaxed(&me.inbound_mask, uint64_t{0});
  store_relaxed(&me.armed, 0u);
  store_relaxed(&me.pid, static_cast<int32_t>(::getpid()));
  store_relaxed(&me.start_time, own_start_time());
  store_relaxed(&me.doorbell_nonce, nonce);  // published with the generation below
  store_relaxed(&me.doorbell_eventfd, static_cast<int32_t>(bell.fd()));
  for (size_t i = 0; i < kCounterWords; ++i) store_relaxed(&me.counters[i], uint64_t{0});
  size_t n = std::min(config.command.size(), kCommandBytes - 1);
  for (size_t i = 0; i < kCommandBytes; ++i)
    store_relaxed(&me.command[i], i < n ? config.command[i] : '\0');
  store_relaxed(&me.state, static_cast<uint32_t>(kSlotLive));
  // Publish last: whoever learns our LinkAddr sees a fully set-up slot.
  store_release(&me.generation, generation);
  registry.emplace(header, reinterpret_cast<RegistryEntry*>(base + geo.registry_offset),
                   reinterpret_cast<uint32_t*>(base + geo.rotors_offset), fd, this);
  ports.emplace(reinterpret_cast<uint32_t*>(base + geo.ports_offset), this);
  ports->release_slot(slot, self);
  registry->release_slot(slot, self);
  attached = true;
  return 0;
}

bool Fabric::Impl::any_other_slot_live() const {
  for (uint32_t s = 0; s < kMaxStacks; ++s)
    if (s != slot && locked_by_other(fd, kSlotLockBase + s)) return true;
  return false;
}

// Returns the memory of our rings to the system (under the file flock, our
// slot already marked free so no producer starts a new frame to us).
//  - Inbound rings ring[*][slot]: nobody will read them again.
//  - Outbound rings ring[slot][c]: only the drained ones. Frames a consumer
//    has not read yet stay deliverable (our generation is unchanged until the
//    slot is claimed again), like packets already on the wire when a host
//    shuts down; the next owner of the slot, or the file's removal, frees them.
// Only we ever set our bit in the consumers' masks, so we can clear it for the
// rings we punch (consumers then stop scanning, and re-faulting, them).
void Fabric::Impl::release_rings(uint64_t inbound_mask) {
  const int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  const off_t stride = static_cast<off_t>(geo.ring_stride);
  for (uint32_t p = 0; p < kMaxStacks; ++p)
    if (inbound_mask & (uint64_t{1} << p))
      ::fallocate(fd, mode, static_cast<off_t>(geo.ring_offset(p, slot)), stride);
  const uint64_t bit = uint64_t{1} << slot;
  for (uint32_t c = 0; c < kMaxStacks; ++c) {
    if (tx_ready[c] == 0 && !(load_relaxed(&slots[c].inbound_mask) & bit)) continue;
    const RingView r = ring(slot, c);
    if (ring_nonempty(r)) continue;
    if (load_relaxed(&slots[c].inbound_mask) & bit)
      __atomic_fetch_and(&slots[c].inbound_mask, ~bit, __ATOMIC_RELEASE);
    ::fallocate(fd, mode, static_cast<off_t>(geo.ring_offset(slot, c)), stride);
  }
}

void Fabric::Impl::detach() {
  if (fd < 0) return;
  drop_peer_bells();
  if (::getpid() != owner_pid) {
    // A fork()ed child destroying its copy: the slot, its lock and the file
    // description belong to the parent. Just drop our references.
    attached = false;
    owns_file = false;
  }
  if (attached) {
    flock_retry(fd, LOCK_EX);
    registry->release_slot(slot, 0);
    ports->release_slot(slot, 0);
    Slot& me = own();
    // Producers check the state before each frame: we are gone for them now,
    // without a syscall. The generation stays (see release_rings()).
    store_release(&me.state, static_cast<uint32_t>(kSlotFree));
    store_relaxed(&me.armed, 0u);
    const uint64_t inbound = __atomic_exchange_n(&me.inbound_mask, uint64_t{0}, __ATOMIC_ACQ_REL);
    store_relaxed(&me.pid, 0);
    store_relaxed(&me.doorbell_eventfd, int32_t{-1});
    bell.close();  // before the slot is free for someone else to claim
    if (any_other_slot_live())
      release_rings(inbound);
    else
      ::unlink(path.c_str());  // the memory goes with the last mapping
    set_lock(fd, F_UNLCK, kSlotLockBase + slot);
    attached = false;
  } else if (owns_file) {
    // open() failed half way (we still hold the flock): don't leave a file
    // behind that no stack uses.
    bool live = false;
    for (uint32_t s = 0; s < kMaxStacks && !live; ++s) live = locked_by_other(fd, kSlotLockBase + s);
    if (!live) ::unlink(path.c_str());
  }
  if (base) ::munmap(base, geo.total_bytes);
  base = nullptr;
  ::close(fd);  // drops the flock and any OFD lock
  fd = -1;
}

// ---- Fabric ----

Fabric::Fabric() : impl_(std::make_unique<Impl>()) {}
Fabric::~Fabric() = default;

int Fabric::open(const FabricConfig& config, std::unique_ptr<Fabric>* out, std::string* why) {
  std::string ignored;
  if (!why) why = &ignored;
  if (int r = validate_config(config, why); r < 0) return r;
  std::unique_ptr<Fabric> f(new Fabric());
  Impl& m = *f->impl_;
  m.config = config;
  m.path = std::string(kShmDir) + config.name;
  m.geo = Geometry::for_config(config.ring_bytes, config.mtu);
  if (int r = m.open_file(why); r < 0) return r;  // ~Impl closes the fd
  void* p = ::mmap(nullptr, m.geo.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                   m.fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    *why = "mmap(" + m.path + ", " + std::to_string(m.geo.total_bytes) + " bytes): " + errno_text(e);
    return -e;
  }
  m.base = static_cast<uint8_t*>(p);
  m.header = reinterpret_cast<FileHeader*>(m.base);
  m.slots = reinterpret_cast<Slot*>(m.base + m.geo.slots_offset);
  if (int r = m.claim_slot(why); r < 0) return r;
  flock_retry(m.fd, LOCK_UN);
  *out = std::move(f);
  return 0;
}

LinkAddr Fabric::self() const { return impl_->self; }
uint32_t Fabric::mtu() const { return impl_->geo.mtu; }

uint8_t* Fabric::tx_reserve(LinkAddr to, size_t len) {
  Impl& m = *impl_;
  m.pending.valid = false;
  if (len > m.geo.mtu) {
    ++m.counters.drops_malformed;
    m.mirror_counters();
    return nullptr;
  }
  if (!m.may_be_alive(to)) {
    ++m.counters.drops_peer_gone;
    m.mirror_counters();
    return nullptr;
  }
  const uint32_t peer = slot_of(to);
  const uint32_t peer_gen = generation_of(to);
  if (m.tx_ready[peer] != peer_gen) {
    // Back the ring with memory before touching it (see initialise()).
    if (::fallocate(m.fd, 0, static_cast<off_t>(m.geo.ring_offset(m.slot, peer)),
                    static_cast<off_t>(m.geo.ring_stride)) != 0) {
      ++m.counters.drops_ring_full;
      m.mirror_counters();
      return nullptr;
    }
    m.tx_ready[peer] = peer_gen;
    m.tx_head[peer] = 0;
  }
  bool repaired = false;
  const RingView r = m.ring(m.slot, peer);
  ReserveResult res = ring_reserve(r, len, &m.pending.r, &repaired, &m.tx_head[peer]);
  if (repaired) ++m.counters.drops_malformed;
  if (res != ReserveResult::kOk) {
    // A full ring is the moment to ask whether anyone is still reading it.
    if (m.alive(to))
      ++m.counters.drops_ring_full;
    else
      ++m.counters.drops_peer_gone;
    m.mirror_counters();
    return nullptr;
  }
  m.pending.valid = true;
  m.pending.to = to;
  return m.pending.r.payload;
}

void Fabric::tx_commit(LinkAddr to, size_t len, FrameKind kind) {
  Impl& m = *impl_;
  if (!m.pending.valid || m.pending.to != to || len > m.pending.r.len) return;
  m.pending.valid = false;
  const uint32_t peer = slot_of(to);
  const uint8_t* payload = m.pending.r.payload;
  // Capture: one relaxed load per packet while nobody captures. The send
  // time is taken before the packet is published, so no reaction to it can
  // carry an earlier time.
  const LinkAddr mirror = kind == FrameKind::Packet ? load_relaxed(&m.own().mirror) : 0;
  const uint64_t sent_us = mirror ? realtime_us() : 0;
  ring_commit(m.ring(m.slot, peer), m.pending.r, len, m.generation, generation_of(to),
              static_cast<uint32_t>(kind));
  ++m.counters.frames_out;
  m.counters.bytes_out += len;
  Slot& dst = m.slots[peer];
  const uint64_t bit = uint64_t{1} << m.slot;
  if (!(load_relaxed(&dst.inbound_mask) & bit))
    __atomic_fetch_or(&dst.inbound_mask, bit, __ATOMIC_RELEASE);
  // Need-wakeup, producer half. Why no wakeup is lost (Dekker style):
  //   producer: store tail (and mask bit); FENCE; load armed
  //   consumer: store armed = 1;           FENCE; load mask, tails
  // With a full fence between each side's store and its load, the two
  // stores cannot both be invisible to the other side's load. So either the
  // consumer's re-check in prepare_sleep() sees this frame (and does not
  // sleep), or we see armed == 1 here and ring. The exchange makes exactly
  // one producer ring per arming, the others count a suppressed doorbell.
  full_fence();
  if (load_relaxed(&dst.armed) != 0 && __atomic_exchange_n(&dst.armed, 0u, __ATOMIC_ACQ_REL) != 0) {
    m.ring_peer(peer, generation_of(to));
  } else {
    ++m.counters.doorbells_suppressed;
  }
  m.mirror_counters();
  if (mirror != 0) m.copy_to_mirror(mirror, payload, len, peer, sent_us);
}

void Fabric::Impl::copy_to_mirror(LinkAddr mirror, const uint8_t* packet, size_t len,
                                  uint32_t dst_slot, uint64_t us) {
  if (!may_be_alive(mirror) || slot_of(mirror) == dst_slot) {
    // The tool is gone (its slot moved on): stop copying.
    uint32_t expected = mirror;
    cas(&own().mirror, &expected, 0u);
    return;
  }
  // The packet just committed stays intact in its ring until we reserve in
  // that same ring again, and the mirror's ring is another one.
  const uint32_t peer = slot_of(mirror);
  if (tx_ready[peer] != generation_of(mirror)) {
    if (::fallocate(fd, 0, static_cast<off_t>(geo.ring_offset(slot, peer)),
                    static_cast<off_t>(geo.ring_stride)) != 0)
      return;
    tx_ready[peer] = generation_of(mirror);
    tx_head[peer] = 0;
  }
  // [u64 send time, CLOCK_REALTIME µs][packet]: copies reach the tool through
  // one ring per sender, so only the sender's clock gives the true order.
  const size_t total = len + sizeof(uint64_t);
  if (total > geo.mtu) return;
  RingReservation r;
  bool repaired = false;
  const RingView ring_view = ring(slot, peer);
  if (ring_reserve(ring_view, total, &r, &repaired, &tx_head[peer]) != ReserveResult::kOk) return;
  std::memcpy(r.payload, &us, sizeof us);
  std::memcpy(r.payload + sizeof us, packet, len);
  ring_commit(ring_view, r, total, generation, generation_of(mirror),
              static_cast<uint32_t>(FrameKind::Capture) | (dst_slot & 0xffu));
  Slot& dst = slots[peer];
  const uint64_t bit = uint64_t{1} << slot;
  if (!(load_relaxed(&dst.inbound_mask) & bit)) __atomic_fetch_or(&dst.inbound_mask, bit, __ATOMIC_RELEASE);
  full_fence();
  if (load_relaxed(&dst.armed) != 0 && __atomic_exchange_n(&dst.armed, 0u, __ATOMIC_ACQ_REL) != 0)
    ring_peer(peer, generation_of(mirror));
}

void Fabric::Impl::ring_peer(uint32_t peer, uint32_t peer_generation) {
  PeerBell& b = peer_bells[peer];
  if (b.generation != peer_generation) {
    if (b.fd >= 0) ::close(b.fd);
    b.generation = peer_generation;
    b.fd = take_peer_eventfd(peer, peer_generation);
  }
  ++counters.doorbells_rung;
  if (b.fd >= 0 && Doorbell::ring_eventfd(b.fd) == 0) return;
  ++counters.doorbells_fallback;
  bell.ring(peer, peer_generation, load_relaxed(&slots[peer].doorbell_nonce));
}

// Our own reference to the doorbell eventfd of the owner of `peer`'s slot,
// or -1 (then the datagram is used). Once per claim of that slot: a few
// syscalls, where ringing a datagram costs one on every ring.
int Fabric::Impl::take_peer_eventfd(uint32_t peer, uint32_t peer_generation) {
  if (!config.eventfd_doorbells) return -1;
  const Slot& s = slots[peer];
  const int32_t number = load_relaxed(&s.doorbell_eventfd);
  const int32_t pid = load_relaxed(&s.pid);
  const uint64_t start = load_relaxed(&s.start_time);
  if (number < 0 || pid <= 0 || load_acquire(&s.generation) != peer_generation) return -1;
  int fd = -1;
  if (pid == ::getpid()) {
    // Another stack of this process (a worker thread): the number is ours.
    fd = ::fcntl(number, F_DUPFD_CLOEXEC, 0);
  } else {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return -1;
    // The pidfd names whoever has the pid now; it must be the slot's owner
    // (the start time tells a recycled pid apart), or we'd take another
    // process's fd.
    if (start != 0 && start_time_of(pid) == start)
      fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, number, 0));
    ::close(pidfd);
  }
  if (fd < 0) return -1;
  // Still the same claim, and really an eventfd (never write to anything
  // else a stale or wrong number might name).
  if (load_acquire(&s.generation) != peer_generation || !is_eventfd(fd)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::vector<StackInfo> Fabric::stacks() const {
  const Impl& m = *impl_;
  std::vector<StackInfo> out;
  for (uint32_t s = 0; s < kMaxStacks; ++s) {
    const Slot& sl = m.slots[s];
    const LinkAddr a = make_addr(s, load_acquire(&sl.generation));
    if (!m.alive(a)) continue;
    StackInfo info;
    info.addr = a;
    info.pid = load_relaxed(&sl.pid);
    info.start_time = load_relaxed(&sl.start_time);
    char cmd[kCommandBytes];
    for (size_t i = 0; i < kCommandBytes; ++i) cmd[i] = load_relaxed(&sl.command[i]);
    cmd[kCommandBytes - 1] = 0;  // untrusted: always terminated
    info.command = cmd;
    auto* c = reinterpret_cast<uint64_t*>(&info.counters);
    for (size_t i = 0; i < kCounterWords; ++i) c[i] = load_relaxed(&sl.counters[i]);
    const uint64_t mask = load_acquire(&sl.inbound_mask);
    for (uint32_t p = 0; p < kMaxStacks; ++p) {
      if (!(mask & (uint64_t{1} << p))) continue;
      const RingView r = m.ring(p, s);
      const uint64_t used = load_acquire(&r.header->tail) - load_acquire(&r.header->head);
      if (used <= m.geo.ring_bytes) info.ring_occupancy += used;  // untrusted: skip nonsense
    }
    out.push_back(std::move(info));
  }
  return out;
}

int Fabric::set_mirror(LinkAddr stack, LinkAddr target) {
  Impl& m = *impl_;
  if (!m.alive(stack)) return -ESRCH;
  store_relaxed(&m.slots[slot_of(stack)].mirror, target);
  return 0;
}

size_t Fabric::rx_poll_impl(void (*fn)(void*, LinkAddr, const uint8_t*, size_t, uint32_t),
                            void* ctx, size_t budget) {
  Impl& m = *impl_;
  if (m.in_rx || budget == 0) return 0;  // no re-entrant polls from a callback
  const uint64_t mask = load_acquire(&m.own().inbound_mask);
  if (mask == 0) return 0;
  m.in_rx = true;
  struct Sink {
    void (*fn)(void*, LinkAddr, const uint8_t*, size_t, uint32_t);
    void* ctx;
    LinkAddr from;
  } sink{fn, ctx, 0};
  auto deliver = [](void* c, const uint8_t* p, size_t n, uint32_t kind) {
    auto* s = static_cast<Sink*>(c);
    s->fn(s->ctx, s->from, p, n, kind);
  };
  // Share the budget between the rings that hold something, so one busy
  // peer cannot starve the others within a call.
  size_t busy = 0;
  for (uint32_t p = 0; p < kMaxStacks; ++p)
    if ((mask & (uint64_t{1} << p)) && ring_nonempty(m.ring(p, m.slot))) ++busy;
  if (busy == 0) {
    m.in_rx = false;
    return 0;
  }
  const size_t share = std::max<size_t>(1, std::min(kRxQuantum, (budget + busy - 1) / busy));
  RingConsumeStats stats;
  size_t delivered = 0;
  bool progress = true;
  const uint32_t start = m.rx_next;
  while (progress && delivered < budget) {
    progress = false;
    for (uint32_t k = 0; k < kMaxStacks && delivered < budget; ++k) {
      const uint32_t p = (start + k) % kMaxStacks;
      if (!(mask & (uint64_t{1} << p))) continue;
      const RingView r = m.ring(p, m.slot);
      if (!ring_nonempty(r)) continue;
      const uint32_t src_gen = load_acquire(&m.slots[p].generation);
      sink.from = make_addr(p, src_gen);
      size_t quantum = std::min(share, budget - delivered);
      size_t n = ring_consume(r, src_gen, m.generation, quantum, deliver, &sink, &stats);
      if (n) {
        progress = true;
        delivered += n;
        m.rx_next = (p + 1) % kMaxStacks;  // the next call starts after the last ring served
      }
    }
  }
  m.in_rx = false;
  if (stats.frames || stats.malformed) {
    m.counters.frames_in += stats.frames;
    m.counters.bytes_in += stats.bytes;
    m.counters.drops_malformed += stats.malformed;
    m.mirror_counters();
  }
  return delivered;
}

bool Fabric::rx_pending() const {
  const Impl& m = *impl_;
  const uint64_t mask = load_acquire(&m.own().inbound_mask);
  for (uint32_t p = 0; p < kMaxStacks; ++p)
    if ((mask & (uint64_t{1} << p)) && ring_nonempty(m.ring(p, m.slot))) return true;
  return false;
}

int Fabric::doorbell_fd() const { return impl_->bell.fd(); }
int Fabric::doorbell_fallback_fd() const { return impl_->bell.fallback_fd(); }

void Fabric::doorbell_drain() {
  Impl& m = *impl_;
  if (m.bell.drain()) {
    ++m.counters.wakeups;
    m.mirror_counters();
  }
}

void Fabric::doorbell_fallback_drain() {
  Impl& m = *impl_;
  if (m.bell.drain_fallback() > 0) {
    ++m.counters.wakeups;
    m.mirror_counters();
  }
}

bool Fabric::prepare_sleep() {
  Impl& m = *impl_;
  // Need-wakeup, consumer half: see the comment in tx_commit().
  ++m.counters.arms;
  __atomic_store_n(&m.own().armed, 1u, __ATOMIC_SEQ_CST);
  full_fence();
  if (rx_pending()) {
    store_relaxed(&m.own().armed, 0u);
    return false;
  }
  return true;
}

void Fabric::disarm() { store_relaxed(&impl_->own().armed, 0u); }

int Fabric::listener_add(uint8_t family, const uint8_t addr[16], uint16_t port, bool v6only,
                          uint32_t share_key) {
  return impl_->registry->add(impl_->self, family, addr, port, v6only, share_key);
}

void Fabric::listener_remove(int entry) { impl_->registry->remove(impl_->self, entry); }

int Fabric::listener_lookup(uint8_t family, const uint8_t addr[16], uint16_t port,
                            LinkAddr* out) {
  return impl_->registry->lookup(family, addr, port, out);
}

int Fabric::port_claim(uint16_t want) { return impl_->ports->claim(impl_->self, want); }
void Fabric::port_release(uint16_t port) { impl_->ports->release(impl_->self, port); }

bool Fabric::peer_alive(LinkAddr peer) const { return impl_->alive(peer); }

void Fabric::vouch(LinkAddr peer, bool watched) {
  const uint32_t s = slot_of(peer);
  if (s >= kMaxStacks) return;
  if (watched) {
    impl_->vouched[s] = peer;
    return;
  }
  if (impl_->vouched[s] == peer) impl_->vouched[s] = 0;
  // The watch ends when the peer dies: let go of its eventfd too, so a
  // server outliving many clients holds no fd for each. (Taken again on the
  // next ring if the peer was only unwatched.)
  Impl::PeerBell& b = impl_->peer_bells[s];
  if (b.generation == generation_of(peer)) {
    if (b.fd >= 0) ::close(b.fd);
    b = Impl::PeerBell{};
  }
}

int Fabric::peer_pid(LinkAddr peer) const {
  const Impl& m = *impl_;
  if (!m.alive(peer)) return -1;
  if (peer == m.self) return static_cast<int>(::getpid());
  return load_relaxed(&m.slots[slot_of(peer)].pid);
}

const FabricCounters& Fabric::counters() const { return impl_->counters; }

}  // namespace sidestep::link
