// What the kernel knows about TCP sockets in our network namespace, asked
// through NETLINK_SOCK_DIAG (inet_diag), unprivileged. The fabric trusts
// these facts, never names: the process that answers the rendezvous for a
// listener must be the one that holds the kernel's listening socket.
#pragma once

#include <cstdint>
#include <string>

namespace sidestep::link {

struct KernelSocket {
  uint8_t family = 0;  // 4 or 6: the socket's own family (a dual-stack :: listener is 6)
  uint8_t state = 0;   // TCP_LISTEN (10), TCP_ESTABLISHED (1), ...
  uint32_t uid = 0;    // owner, as our user namespace sees it
  uint64_t inode = 0;  // the socket's inode (unique among live sockets)
  uint32_t backlog = 0;  // a listener's backlog (what its holder last gave listen())
};

// The backlog a listening socket's holder sets to prove it holds it (see
// control.h's Prove): `was` moved by 1 + nonce % 1024, up unless that passes
// net.core.somaxconn (the kernel would cut it), else down.
uint32_t proof_backlog(uint32_t was, uint32_t nonce);

class SockDiag {
 public:
  SockDiag() = default;
  SockDiag(const SockDiag&) = delete;
  SockDiag& operator=(const SockDiag&) = delete;
  ~SockDiag();

  // The socket the kernel would hand a TCP segment from (src, src_port) to
  // (dst, dst_port): an established one with exactly that 4-tuple, else the
  // listener (exact address, then wildcard; among SO_REUSEPORT listeners
  // the one the kernel would pick for that 4-tuple). family 4 or 6,
  // addresses of 4 or 16 bytes. Returns 0, -ENOENT when no socket would take
  // it, or another negative errno (and *why) when the kernel can't be asked.
  int lookup(uint8_t family, const uint8_t dst[16], uint16_t dst_port, const uint8_t src[16],
             uint16_t src_port, KernelSocket* out, std::string* why);

 private:
  int open(std::string* why);
  int fd_ = -1;
  uint32_t seq_ = 0;
};

// The inode of the socket `fd` refers to, or 0.
uint64_t socket_inode(int fd);

// Whether process `pid` holds the socket `inode` among its open files:
// 1 yes, 0 no, -EACCES when we may not look (another user's process; the
// caller then trusts the uid alone), another negative errno otherwise.
int process_holds_socket(int pid, uint64_t inode);

// The parent of `pid` (from /proc/<pid>/stat), or -1.
int parent_of(int pid);

}  // namespace sidestep::link
