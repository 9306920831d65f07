#!/bin/bash
# What a bulk receiver costs V8 and the system: one hooked (or plain) counting
# sink, one client of STREAMS connections writing 1 MiB chunks, MIB in all.
#   bench/receive-gc/run.sh ROOT|kernel [MIB=1024] [STREAMS=1] [CHECK=0]
# Prints GB/s, the receiver's scavenges and mark-compacts (--trace-gc), its
# peak RSS (anon/file/shmem MiB), the read slabs it made, and its CPU (µs).
# ROOT is a sidestep package (its dist/ and build/); "kernel" runs unhooked.
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$1; MIB=${2:-1024}; STREAMS=${3:-1}; CHECK=${4:-0}
if [ "$ROOT" = kernel ]; then REQ=(); else REQ=(--require "$ROOT/dist/register.js"); fi
out=$(mktemp); err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
ROOT=$ROOT STREAMS=$STREAMS CHECK=$CHECK node --trace-gc "${REQ[@]}" "$DIR/server.js" > "$out" 2> "$err" &
SP=$!
for _ in $(seq 50); do grep -q port "$out" && break; sleep 0.1; done
PORT=$(grep -o '"port":[0-9]*' "$out" | cut -d: -f2)
R=$(node "${REQ[@]}" "$DIR/client.js" "$PORT" "$MIB" "$STREAMS")
wait $SP
echo "$ROOT streams=$STREAMS $R scavenges=$(grep -c Scavenge "$out") mark-compacts=$(grep -c Mark "$out") $(tail -1 "$err")"
