#!/bin/bash
# One bulk stream between two Node processes without the benchmark's
# byte-exact check (bench/run.js's bulk checks every byte, which costs the
# receiver a pass over memory): what the transport itself allows.
#   bench/bulk-raw/run.sh ROOT|kernel [MiB=2048]
# ROOT is a sidestep package (its dist/ and build/); "kernel" runs unhooked.
# Prints GB/s, the client's CPU per MiB and the server's CPU seconds.
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$1; MIB=${2:-2048}
. "$DIR/../lib/server.sh"
start_server "$ROOT" "$DIR/server.js" bulk-raw
R=$(node "${REQ[@]}" "$DIR/client.js" "$PORT" "$MIB")
TICKS=$(awk '{print $14 + $15}' /proc/$SP/stat)
echo "$ROOT $R server CPU $(awk -v t="$TICKS" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }') s"
