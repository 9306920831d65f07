// Maps N 2 MiB-aligned regions and writes each once: argv N, huge (1: ask
// for a transparent huge page), and a third argument to unmap each region
// after use (the next one then reuses that memory). Prints ms per region.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const int n = atoi(argv[1]), huge = atoi(argv[2]), unmap = argc > 3;
  const size_t region = 2u << 20;
  const double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    char* p = mmap(0, 2 * region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    char* a = (char*)(((uintptr_t)p + region - 1) & ~(uintptr_t)(region - 1));
    if (huge) madvise(a, region, MADV_HUGEPAGE);
    memset(a, 1, region);
    if (unmap) munmap(p, 2 * region);
  }
  printf("%d regions, %s pages, %s: %.2f ms per 2 MiB\n", n, huge ? "huge" : "4 KiB",
         unmap ? "each unmapped after use (recycled)" : "kept (all fresh)", (now_ms() - t0) / n);
  return 0;
}
