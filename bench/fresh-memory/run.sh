#!/bin/bash
# What touching fresh memory costs on this machine, per 2 MiB: N regions
# mapped and written, as huge pages or 4 KiB pages, kept or unmapped after
# each (unmapped memory is reused at once, so that run shows recycled cost).
#   bench/fresh-memory/run.sh [N=100]
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
N=${1:-100}
BIN=$(mktemp)
trap 'rm -f "$BIN"' EXIT
cc -O2 -o "$BIN" "$DIR/fresh.c"
"$BIN" "$N" 1          # fresh huge pages
"$BIN" "$N" 0          # fresh 4 KiB pages
"$BIN" "$N" 1 unmap    # huge pages, each unmapped after use (recycled)
"$BIN" "$N" 0 unmap
