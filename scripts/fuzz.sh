#!/usr/bin/env bash
# npm run fuzz [-- SECONDS]: runs the stack's segment-input fuzzer (libFuzzer,
# ASan + UBSan, one process) for SECONDS (default 60). Installs nothing: it
# needs clang++ with the libFuzzer runtime. Exit status: 0 no crash, 1 crash
# (the input is in .native-tests/fuzz-artifacts/), 2 toolchain missing.
# Replay the regressions without clang: npm run test:fuzz-regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
case "$secs" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds]" >&2; exit 2 ;; esac
CLANGXX="${CLANGXX:-clang++}"
if ! command -v "$CLANGXX" >/dev/null 2>&1; then
  echo "fuzz: $CLANGXX not found. Install clang with libFuzzer, e.g. on Debian 12:" >&2
  echo "  apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
# clang without the libFuzzer runtime (libclang-rt-*-dev) fails to link.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <cstdint>' '#include <cstddef>' \
  'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' > "$probe/p.cc"
if ! "$CLANGXX" -fsanitize=fuzzer,address,undefined "$probe/p.cc" -o "$probe/p" >/dev/null 2>&1; then
  echo "fuzz: $CLANGXX cannot link -fsanitize=fuzzer (libFuzzer runtime missing). On Debian 12:" >&2
  echo "  apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi
if make -s -C native/fuzz run SECONDS="$secs" CLANGXX="$CLANGXX"; then
  echo "fuzz: no crash in ${secs}s (corpus: .native-tests/fuzz-corpus)"
else
  echo "fuzz: crash found; input saved under .native-tests/fuzz-artifacts/." >&2
  echo "  replay: make -C native/fuzz repro FILE=\$PWD/.native-tests/fuzz-artifacts/crash-..." >&2
  echo "  then minimise it and add it to native/fuzz/regressions/ (see native/fuzz/Makefile)" >&2
  exit 1
fi
