#!/bin/bash
# CPU per churn connection, both processes, for a fixed count (less noisy on a
# shared machine than bench/run.js's rates):
#   bench/churn-cpu/run.sh ROOT|kernel [count=20000] [concurrency=64]
# ROOT is a sidestep package (its dist/ and build/, e.g. a copy of this
# checkout); "kernel" runs without the hook. Run roots in alternation.
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$1; N=${2:-20000}; C=${3:-64}
if [ "$ROOT" = kernel ]; then REQ=(); else REQ=(--require "$ROOT/dist/register.js"); fi
export SIDESTEP_FABRIC=churn-cpu-$$
OUT=$(mktemp)
node "${REQ[@]}" "$DIR/echo-server.js" > "$OUT" &
SP=$!
trap 'kill $SP 2>/dev/null; rm -f "$OUT" /dev/shm/$SIDESTEP_FABRIC' EXIT
for _ in $(seq 50); do [ -s "$OUT" ] && break; sleep 0.1; done
PORT=$(node -pe 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).port' "$OUT")
echo "$ROOT $(node "${REQ[@]}" "$DIR/client.js" "$PORT" "$N" "$C" "$SP")"
