// The price of a wake-up between two processes, without Node or sidestep:
// a ping-pong in which each side sleeps in epoll_wait until the other rings
// it, with either doorbell sidestep can use — an eventfd (one write() to
// ring, one read() to reset) or an abstract unix datagram (one sendto(), and
// recv() until EAGAIN). Prints round-trip percentiles for both, interleaved.
//   make -C native/bench wake        (or: cc -O2 wake_bench.c && ./a.out)
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kRounds = 20000, kPairs = 3 };

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

struct bell { int use_eventfd, rx, tx, peer_efd; struct sockaddr_un peer; socklen_t peer_len; };

static void ring(struct bell* b) {
  if (b->use_eventfd) {
    uint64_t one = 1;
    if (write(b->peer_efd, &one, 8) != 8) abort();
  } else {
    char c = 1;
    sendto(b->tx, &c, 1, MSG_DONTWAIT, (struct sockaddr*)&b->peer, b->peer_len);
  }
}

static void sleep_until_rung(int ep, struct bell* b) {
  struct epoll_event e;
  while (epoll_wait(ep, &e, 1, -1) != 1) {}
  if (b->use_eventfd) {
    uint64_t v;
    if (read(b->rx, &v, 8) != 8) abort();
  } else {
    char buf[16];
    while (recv(b->rx, buf, sizeof buf, MSG_DONTWAIT) > 0) {}
  }
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static void run(int use_eventfd) {
  int efd[2] = {eventfd(0, EFD_NONBLOCK), eventfd(0, EFD_NONBLOCK)};
  double* rtt = malloc(sizeof(double) * kRounds);
  pid_t pid = fork();
  int me = pid == 0 ? 1 : 0;
  struct bell b = {use_eventfd, -1, -1, efd[1 - me], {0}, 0};
  struct sockaddr_un self;
  if (use_eventfd) {
    b.rx = efd[me];
  } else {
    // Names from the parent's pid, known to both sides.
    pid_t parent = pid == 0 ? getppid() : getpid();
    memset(&self, 0, sizeof self);
    self.sun_family = AF_UNIX;
    snprintf(self.sun_path + 1, sizeof self.sun_path - 1, "sidestep-wake-bench/%d/%d", (int)parent, me);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(self.sun_path + 1));
    b.rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    b.tx = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (bind(b.rx, (struct sockaddr*)&self, len) != 0) abort();
    b.peer = self;
    snprintf(b.peer.sun_path + 1, sizeof b.peer.sun_path - 1, "sidestep-wake-bench/%d/%d", (int)parent, 1 - me);
    b.peer_len = len;
    usleep(50000);  // both names bound before the first ring
  }
  int ep = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN};
  epoll_ctl(ep, EPOLL_CTL_ADD, b.rx, &e);
  for (int i = 0; i < kRounds; i++) {
    if (me == 0) {
      double t0 = now_us();
      ring(&b);
      sleep_until_rung(ep, &b);
      rtt[i] = now_us() - t0;
    } else {
      sleep_until_rung(ep, &b);
      ring(&b);
    }
  }
  if (me == 1) _exit(0);
  waitpid(pid, NULL, 0);
  qsort(rtt, kRounds, sizeof(double), cmp);
  printf("%-16s round trip p50 %5.1f us  p90 %5.1f us  p99 %5.1f us\n",
         use_eventfd ? "eventfd" : "unix datagram", rtt[kRounds / 2], rtt[kRounds * 9 / 10],
         rtt[kRounds * 99 / 100]);
  free(rtt);
  close(ep);
  close(efd[0]);
  close(efd[1]);
  if (b.tx >= 0) close(b.tx);
  if (!use_eventfd) close(b.rx);
}

int main(void) {
  for (int i = 0; i < kPairs; i++) {
    run(0);
    run(1);
  }
  return 0;
}
