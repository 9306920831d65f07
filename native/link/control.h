// The control channel between two stacks, and the rendezvous that creates it.
//
// Rendezvous in the abstract unix-socket namespace: the kernel scopes those
// names to the network namespace, exactly as it scopes loopback addresses,
// and removes a name when its socket closes, whatever ended the process. A
// stack serving the kernel listening socket with inode I binds
//     "\0<fabric>/L<I>.<k>"      (SOCK_SEQPACKET, listening)
// with the lowest free k (the workers of a cluster share I). A client that
// the kernel's own lookup (sock_diag.h) sends to I connects to those names,
// checks who answered (SO_PEERCRED, then /proc: the peer must hold I, or be
// a child of the process that does), and sends a Hello with the pair region
// and its doorbell (SCM_RIGHTS); the acceptor answers Welcome with its own
// doorbell. Names carry no trust: a squatter costs at worst a fallback.
//
// Messages are small fixed structs, one per datagram (SEQPACKET keeps
// boundaries), with at most kMaxFds descriptors; everything received is
// validated. A peer's death hangs up the channel: that is the liveness
// signal, no pidfd or ptrace needed.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sidestep::link {

inline constexpr uint32_t kControlMagic = 0x4c525443;  // "CTRL"
inline constexpr size_t kMaxFds = 2;

enum class ControlType : uint32_t {
  Hello = 1,    // creator -> acceptor: fds [region memfd, creator's doorbell]
  Welcome = 2,  // acceptor -> creator: fds [acceptor's doorbell]
  Refuse = 3,   // acceptor -> creator: the pair won't be used (reason text)
  Segment = 4,  // either way: fds [a segment of the sender's arena]; reserved = its
                // index, ring_bytes = slots, region_bytes = its size, mtu = slot_bytes >> 12
  // Where the creator can't see whether the acceptor holds the listening
  // socket (another uid's or pid namespace's /proc), it asks for proof
  // before any memory leaves it: Prove; the acceptor moves that socket's
  // backlog to a new random value (only its holder can; one value per
  // round for every client asking at once) and answers Proved{reserved =
  // that value}; the creator sees that value, not the one it saw before
  // asking, in the kernel's table (sock_diag), says Checked (the acceptor
  // puts the backlog back when the round's last one did), and only then
  // sends its Hello.
  Prove = 5,
  Proved = 6,
  Checked = 7,
};

struct ControlMessage {
  uint32_t magic = kControlMagic;
  uint32_t type = 0;
  uint32_t layout_version = 0;
  uint32_t ring_bytes = 0;
  uint32_t mtu = 0;
  uint32_t reserved = 0;
  uint64_t region_bytes = 0;
  char text[96] = {};  // Refuse: why (NUL-terminated)
};

// Who is at the other end of a unix socket, as the kernel says.
struct PeerCred {
  int pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// The abstract name of listener `inode`'s k-th server, for `fabric`.
std::string listener_name(const std::string& fabric, uint64_t inode, uint32_t k);

// A listening socket bound to `name` (abstract), non-blocking; SEQPACKET
// for control channels, STREAM for inspection (shim/inspect.ts). Returns
// the fd or a negative errno (-EADDRINUSE: the name is taken).
int control_listen(const std::string& name, int type = SOCK_SEQPACKET);
// Connects to `name` without blocking: the fd, -ECONNREFUSED/-ENOENT when
// nobody listens there, -EAGAIN when its backlog is full, another -errno.
int control_connect(const std::string& name, int type = SOCK_SEQPACKET);
// Accepts one pending channel (non-blocking, close-on-exec): fd or -errno.
int control_accept(int listen_fd);
int peer_cred(int fd, PeerCred* out);

// Sends one message with `nfds` descriptors. 0 or a negative errno.
int control_send(int fd, const ControlMessage& m, const int* fds, size_t nfds);
// Receives one message: 1 and the message (with its descriptors in fds,
// *nfds of them, each ours to close), 0 when none is waiting, -EPIPE when
// the peer hung up, another negative errno (a malformed message: the
// descriptors that came with it are closed).
int control_recv(int fd, ControlMessage* m, int* fds, size_t* nfds);

}  // namespace sidestep::link
