// Local ports for bypassed connections, reserved in the kernel.
//
// Loopback connections of different processes share addresses, so a local
// port must be unique host-wide (per network namespace), or two clients of
// one server would present the same 4-tuple. The kernel already keeps that
// table: a port we hold by binding a kernel TCP socket to (address, port)
// without listening is one no other socket can bind, and one the kernel's
// own connect() never picks. So each reservation is such a socket; a stack
// keeps the ones its connections freed for the next ones (a port may serve
// connections to different peers at once: the stack refuses a 4-tuple that
// is still in use), and gives back what it has not needed for a while.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace sidestep::link {

class PortReservations {
 public:
  PortReservations() = default;
  PortReservations(const PortReservations&) = delete;
  PortReservations& operator=(const PortReservations&) = delete;
  ~PortReservations();

  // A reserved port on (family, addr) (4 or 16 bytes) that `usable` accepts
  // (the caller's 4-tuple towards its destination is free with it; else a
  // fresh one), as a handle >= 0 with *port set; a negative errno when the
  // kernel has none left (-EADDRNOTAVAIL) or can't bind that address.
  int take(uint8_t family, const uint8_t addr[16], const std::function<bool(uint16_t)>& usable, uint16_t* port);
  // A specific port: `fd` is a kernel socket already bound to it (Node's own
  // handle, bound by the application's `localPort`), which we keep as the
  // reservation (a dup of it). A handle >= 0 or a negative errno.
  int adopt(int fd, uint16_t port);
  // The connection that used `handle` is gone: keep the port for later ones.
  void give_back(int handle);
  // Close reservations nobody has taken since the last call (a stack calls
  // this now and then, while idle).
  void trim();
  // Close every reservation no connection uses, now (out of descriptors:
  // the kernel connect we fall back to needs one).
  void release_unused();
  size_t held() const { return held_; }
  // Whether some reservation serves no connection (trim() may close it).
  bool any_unused() const { return unused_ > 0; }

 private:
  struct Reservation {
    int fd = -1;
    uint8_t family = 0;
    uint8_t addr[16] = {};
    uint16_t port = 0;
    uint32_t users = 0;
    bool used_since_trim = false;
  };
  std::vector<Reservation> all_;
  std::vector<int> free_slots_;
  size_t held_ = 0;
  // Held reservations no connection uses (adopted ones never count): with
  // none, a take looks at a few shared ports only, and any_unused() is a
  // load — a stack holding 256 ports, each carrying connections, scanned
  // them all twice per connect (10,000 connections opened at 0.70x the
  // kernel's rate; ~10% of the client's time).
  size_t unused_ = 0;
  size_t cursor_ = 0;  // where the next take starts looking
  int store(Reservation r);
  void close_unused(size_t h);
};

}  // namespace sidestep::link
