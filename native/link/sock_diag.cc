// inet_diag lookups and /proc checks: see sock_diag.h.
#include "link/sock_diag.h"

#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sidestep::link {

SockDiag::~SockDiag() {
  if (fd_ >= 0) ::close(fd_);
}

int SockDiag::open(std::string* why) {
  if (fd_ >= 0) return 0;
  fd_ = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd_ < 0) {
    int e = errno;
    *why = std::string("socket(NETLINK_SOCK_DIAG): ") + std::strerror(e);
    return -e;
  }
  // A reply that never comes (it always does) must not hang a connect.
  timeval tv{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return 0;
}

int SockDiag::lookup(uint8_t family, const uint8_t dst[16], uint16_t dst_port, const uint8_t src[16],
                     uint16_t src_port, KernelSocket* out, std::string* why) {
  if (int r = open(why); r < 0) return r;
  struct {
    nlmsghdr nh;
    inet_diag_req_v2 req;
  } msg;
  std::memset(&msg, 0, sizeof msg);
  msg.nh.nlmsg_len = sizeof msg;
  msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nh.nlmsg_flags = NLM_F_REQUEST;  // one socket, not a dump
  msg.nh.nlmsg_seq = ++seq_;
  msg.req.sdiag_family = family == 4 ? AF_INET : AF_INET6;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  // In inet_diag's terms the socket we look for is the "source" and the
  // would-be peer the "destination".
  msg.req.id.idiag_sport = htons(dst_port);
  msg.req.id.idiag_dport = htons(src_port);
  std::memcpy(msg.req.id.idiag_src, dst, family == 4 ? 4 : 16);
  std::memcpy(msg.req.id.idiag_dst, src, family == 4 ? 4 : 16);
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  for (;;) {
    if (::send(fd_, &msg, sizeof msg, 0) == static_cast<ssize_t>(sizeof msg)) break;
    if (errno == EINTR) continue;
    int e = errno;
    *why = std::string("sock_diag send: ") + std::strerror(e);
    return -e;
  }
  alignas(nlmsghdr) uint8_t buf[1024];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      *why = std::string("sock_diag recv: ") + std::strerror(e);
      return -e;
    }
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<size_t>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq_) continue;  // a late answer to an earlier question
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return -EIO;
        int e = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        if (e == ENOENT) return -ENOENT;
        *why = std::string("sock_diag: ") + std::strerror(e);
        return -e;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        return -EIO;
      const auto* m = reinterpret_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      out->family = m->idiag_family == AF_INET ? 4 : 6;
      out->state = m->idiag_state;
      out->uid = m->idiag_uid;
      out->inode = m->idiag_inode;
      out->backlog = m->idiag_wqueue;  // a listener's sk_max_ack_backlog
      return 0;
    }
  }
}

uint32_t proof_backlog(uint32_t was, uint32_t nonce) {
  uint32_t somaxconn = 4096;
  if (FILE* f = std::fopen("/proc/sys/net/core/somaxconn", "re")) {
    unsigned v = 0;
    if (std::fscanf(f, "%u", &v) == 1 && v > 0) somaxconn = v;
    std::fclose(f);
  }
  const uint32_t step = 1 + nonce % 1024;
  if (was + step <= somaxconn) return was + step;
  return was > step ? was - step : was + step;  // (a backlog of 0 or 1 near the cap: can't prove)
}

uint64_t socket_inode(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  return st.st_ino;
}

int process_holds_socket(int pid, uint64_t inode) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR* d = ::opendir(path);
  if (!d) return errno == EACCES || errno == EPERM ? -EACCES : -errno;
  char want[48];
  const int want_len = std::snprintf(want, sizeof want, "socket:[%llu]", static_cast<unsigned long long>(inode));
  int found = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char link[320], target[64];
    std::snprintf(link, sizeof link, "%s/%s", path, e->d_name);
    ssize_t n = ::readlink(link, target, sizeof target);
    if (n == want_len && std::memcmp(target, want, static_cast<size_t>(n)) == 0) {
      found = 1;
      break;
    }
  }
  ::closedir(d);
  return found;
}

int parent_of(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "re");
  if (!f) return -1;
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');  // the command may contain anything
  int ppid = -1;
  if (!p || std::sscanf(p + 1, " %*c %d", &ppid) != 1) return -1;
  return ppid;
}

}  // namespace sidestep::link
