// The interop test binary's main(): skips (exit 0, one line) when the
// machine cannot host the tests — not root, no /dev/net/tun, or no network
// namespaces — and otherwise runs every TEST in native/interop/test (or those
// whose names contain argv[1]) with check.h's runner.
#define main sidestep_run_tests
#define SIDESTEP_TEST_MAIN
#include "check.h"
#undef main

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace {

// Can a child create a network namespace and a TUN device inside it?
const char* probe() {
  if (geteuid() != 0) return "not root";
  if (access("/dev/net/tun", R_OK | W_OK) != 0) return "/dev/net/tun is missing";
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(1);
    int fd = open("/dev/net/tun", O_RDWR);
    _exit(fd < 0 ? 2 : 0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "namespace probe crashed";
  if (WEXITSTATUS(status) == 1) return "cannot create a network namespace (unshare CLONE_NEWNET)";
  if (WEXITSTATUS(status) == 2) return "cannot open /dev/net/tun inside a network namespace";
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* why = probe()) {
    std::printf("skip: interop tests need root, /dev/net/tun and network namespaces: %s\n", why);
    return 0;
  }
  return sidestep_run_tests(argc, argv);
}
