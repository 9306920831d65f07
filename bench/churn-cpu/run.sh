#!/bin/bash
# CPU per churn connection, both processes, for a fixed count (less noisy on a
# shared machine than bench/run.js's rates):
#   bench/churn-cpu/run.sh ROOT|kernel [count=20000] [concurrency=64]
# ROOT is a sidestep package (its dist/ and build/, e.g. a copy of this
# checkout); "kernel" runs without the hook. Run roots in alternation.
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$1; N=${2:-20000}; C=${3:-64}
. "$DIR/../lib/server.sh"
start_server "$ROOT" "$DIR/echo-server.js" churn-cpu
echo "$ROOT $(node "${REQ[@]}" "$DIR/client.js" "$PORT" "$N" "$C" "$SP")"
