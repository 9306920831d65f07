// A minimal unit-test harness for the native layers (no Node, no deps).
// TEST(name) registers a test; CHECK*/REQUIRE fail it with file:line. Any test
// binary includes this header in exactly one file with SIDESTEP_TEST_MAIN
// defined to get main(), which runs every test (or those whose names contain
// argv[1]) and ends with the line "N passed, N failed".
#pragma once

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace sidestep::testing {

struct TestCase {
  const char* name;
  void (*fn)();
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failures_in_current() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

}  // namespace sidestep::testing

#define SIDESTEP_CAT2(a, b) a##b
#define SIDESTEP_CAT(a, b) SIDESTEP_CAT2(a, b)
#define TEST(name)                                                                  \
  static void name();                                                               \
  static ::sidestep::testing::Register SIDESTEP_CAT(register_, name)(#name, &name); \
  static void name()

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++::sidestep::testing::failures_in_current();                                \
    }                                                                               \
  } while (0)

// Stops the current test on failure (later steps would only add noise).
#define REQUIRE(cond)                                                               \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++::sidestep::testing::failures_in_current();                                \
      return;                                                                       \
    }                                                                               \
  } while (0)

#define CHECK_EQ(a, b)                                                              \
  do {                                                                              \
    auto _va = (a);                                                                 \
    auto _vb = (b);                                                                 \
    if (!(_va == _vb)) {                                                            \
      std::fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %lld vs %lld\n", __FILE__, \
                   __LINE__, #a, #b, (long long)_va, (long long)_vb);               \
      ++::sidestep::testing::failures_in_current();                                \
    }                                                                               \
  } while (0)

#ifdef SIDESTEP_TEST_MAIN
int main(int argc, char** argv) {
  int passed = 0, failed = 0;
  for (auto& t : ::sidestep::testing::registry()) {
    if (argc > 1 && !std::strstr(t.name, argv[1])) continue;
    ::sidestep::testing::failures_in_current() = 0;
    t.fn();
    if (::sidestep::testing::failures_in_current() == 0) {
      ++passed;
      std::printf("ok %s\n", t.name);
    } else {
      ++failed;
      std::printf("not ok %s\n", t.name);
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
#endif
