#!/bin/bash
# A/B of two builds by short ping-pongs in alternating pairs:
#   bench/pingpong-ab/run.sh A B [PAIRS=15] [net|tls] [ROUNDS=10000]
# A and B are sidestep packages (their dist/ and build/) or "kernel". Each
# pair runs A then B (B then A every other pair), each a fresh server and
# client, 64 B, one connection. Prints each side's median p50 and the median
# (min-max) of the per-pair ratios A/B of p50, p99 and the client's and the
# server's CPU per round trip. On a noisy machine a run of ~1 s per side,
# alternated many times, shows differences of a few percent that a long
# interleaved run's drift hides.
set -e
DIR=$(cd "$(dirname "$0")" && pwd)
A=$1; B=$2; PAIRS=${3:-15}; KIND=${4:-net}; ROUNDS=${5:-10000}
[ -n "$A" ] && [ -n "$B" ] || { echo "usage: $0 A B [PAIRS] [net|tls] [ROUNDS]" >&2; exit 2; }
HZ=$(getconf CLK_TCK)
out=$(mktemp); pairs=$(mktemp)
SP=
trap 'rm -f "$out" "$pairs"; [ -n "$SP" ] && kill $SP 2>/dev/null; true' EXIT

one() {  # one() ROOT: one ping-pong, prints its JSON with serverCpuUs added
  local req=()
  [ "$1" = kernel ] || req=(--require "$1/dist/register.js")
  : > "$out"
  node "${req[@]}" "$DIR/pingpong.js" server "$KIND" > "$out" &
  SP=$!
  for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
  local s0 r s1
  s0=$(awk '{print $14 + $15}' /proc/$SP/stat)
  # (A failed run, or a hooked one that did not go over the fabric, ends the A/B.)
  r=$(node "${req[@]}" "$DIR/pingpong.js" client "$KIND" "$(cat "$out")" "$ROUNDS") || { kill $SP; echo "pingpong-ab: the $1 run failed" >&2; exit 1; }
  s1=$(awk '{print $14 + $15}' /proc/$SP/stat)
  kill $SP; wait $SP 2>/dev/null || true; SP=
  echo "${r%\}},\"serverCpuUs\":$(( (s1 - s0) * 1000000 / HZ / ROUNDS ))}"
}

for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then a=$(one "$A"); b=$(one "$B"); else b=$(one "$B"); a=$(one "$A"); fi
  echo "$a $b" >> "$pairs"
done
node -e "
const pairs = require('fs').readFileSync('$pairs', 'utf8').trim().split('\n').map((l) => l.split(' ').map((x) => JSON.parse(x)));
const med = (xs) => { const s = [...xs].sort((p, q) => p - q); return s[s.length >> 1]; };
const span = (xs) => Math.min(...xs).toFixed(2) + '-' + Math.max(...xs).toFixed(2);
const ratio = (k) => pairs.map(([a, b]) => a[k] / b[k]);
console.log('$KIND ping-pong 64 B, $PAIRS pairs of $ROUNDS round trips');
console.log('A $A: p50 ' + med(pairs.map((p) => p[0].p50)).toFixed(1) + ' us;  B $B: p50 ' + med(pairs.map((p) => p[1].p50)).toFixed(1) + ' us');
for (const k of ['p50', 'p99', 'clientCpuUs', 'serverCpuUs']) console.log('A/B ' + k.padEnd(12) + med(ratio(k)).toFixed(3) + ' (' + span(ratio(k)) + ')');
"
