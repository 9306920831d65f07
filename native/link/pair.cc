// Pair regions: see pair.h.
#include "link/pair.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sidestep::link {

using namespace layout;

namespace {
constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW;
std::string text(const char* what, int e) { return std::string(what) + ": " + std::strerror(e); }
}  // namespace

PairRegion::~PairRegion() {
  unmap();
  close_fd();
}

void PairRegion::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void PairRegion::unmap() {
  if (base_) ::munmap(base_, geo_.total_bytes);
  base_ = nullptr;
}

RingView PairRegion::ring(int index) const {
  uint8_t* at = base_ + geo_.ring_offset(index);
  return RingView{reinterpret_cast<RingHeader*>(at), at + kRingHeaderBytes, geo_.ring_bytes, geo_.mtu};
}

int PairRegion::create(uint32_t ring_bytes, uint32_t mtu, std::string* why) {
  if (!Geometry::valid(ring_bytes, mtu)) {
    *why = "pair region: ring_bytes " + std::to_string(ring_bytes) + " / mtu " + std::to_string(mtu) + " out of bounds";
    return -EINVAL;
  }
  geo_ = Geometry::for_settings(ring_bytes, mtu);
  fd_ = ::memfd_create("sidestep-pair", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd_ < 0) {
    int e = errno;
    *why = text("memfd_create", e);
    return -e;
  }
  // Sparse: pages are memory only once a ring has carried that far.
  if (::ftruncate(fd_, static_cast<off_t>(geo_.total_bytes)) != 0 ||
      ::fcntl(fd_, F_ADD_SEALS, kSeals | F_SEAL_SEAL) != 0) {
    int e = errno;
    *why = text("pair region ftruncate/seal", e);
    close_fd();
    return -e;
  }
  void* p = ::mmap(nullptr, geo_.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    *why = text("pair region mmap", e);
    close_fd();
    return -e;
  }
  base_ = static_cast<uint8_t*>(p);
  auto* h = reinterpret_cast<PairHeader*>(base_);
  h->magic = kMagic;
  h->layout_version = kLayoutVersion;
  h->ring_bytes = ring_bytes;
  h->mtu = mtu;
  h->total_bytes = geo_.total_bytes;
  return 0;
}

int PairRegion::create_private(uint32_t ring_bytes, uint32_t mtu, std::string* why) {
  if (!Geometry::valid(ring_bytes, mtu)) {
    *why = "loopback region: settings out of bounds";
    return -EINVAL;
  }
  geo_ = Geometry::for_settings(ring_bytes, mtu);
  void* p = ::mmap(nullptr, geo_.total_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    *why = text("loopback region mmap", e);
    return -e;
  }
  base_ = static_cast<uint8_t*>(p);
  return 0;
}

int PairRegion::adopt(int fd, uint32_t ring_bytes, uint32_t mtu, uint64_t bytes, std::string* why) {
  fd_ = fd;
  if (!Geometry::valid(ring_bytes, mtu)) {
    *why = "pair region: the peer's ring_bytes " + std::to_string(ring_bytes) + " / mtu " + std::to_string(mtu) + " are out of bounds";
    close_fd();
    return -EPROTO;
  }
  geo_ = Geometry::for_settings(ring_bytes, mtu);
  struct stat st;
  const int seals = ::fcntl(fd_, F_GET_SEALS);
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode) || seals < 0 ||
      (static_cast<unsigned>(seals) & kSeals) != kSeals) {
    // Not a sealed memfd: its owner could truncate it under us (SIGBUS).
    *why = "pair region: the peer's descriptor is not a memfd sealed against shrinking and growing";
    close_fd();
    return -EPROTO;
  }
  if (static_cast<uint64_t>(st.st_size) != geo_.total_bytes || bytes != geo_.total_bytes) {
    *why = "pair region: size " + std::to_string(st.st_size) + ", expected " + std::to_string(geo_.total_bytes);
    close_fd();
    return -EPROTO;
  }
  void* p = ::mmap(nullptr, geo_.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    *why = text("pair region mmap", e);
    close_fd();
    return -e;
  }
  base_ = static_cast<uint8_t*>(p);
  close_fd();
  const auto* h = reinterpret_cast<const PairHeader*>(base_);
  if (load_relaxed(&h->magic) != kMagic || load_relaxed(&h->layout_version) != kLayoutVersion ||
      load_relaxed(&h->ring_bytes) != ring_bytes || load_relaxed(&h->mtu) != mtu ||
      load_relaxed(&h->total_bytes) != geo_.total_bytes) {
    *why = "pair region: its header does not describe the region the peer announced";
    unmap();
    return -EPROTO;
  }
  return 0;
}

}  // namespace sidestep::link
