# Sourced by the single-purpose bench scripts (bulk-raw, churn-cpu):
#   start_server ROOT|kernel SERVER.js NAME
# starts `node [--require ROOT/dist/register.js] SERVER.js` in the background
# on its own fabric (SIDESTEP_FABRIC=NAME-<pid>) and waits for the {port}
# line it prints. Sets REQ (the hook's node arguments, empty for "kernel"),
# SP (the server's pid) and PORT; the server, its output file and the fabric
# go when the script exits.
start_server() {
  local root=$1 server=$2 out
  if [ "$root" = kernel ]; then REQ=(); else REQ=(--require "$root/dist/register.js"); fi
  export SIDESTEP_FABRIC=$3-$$
  out=$(mktemp)
  node "${REQ[@]}" "$server" > "$out" &
  SP=$!
  trap "kill $SP 2>/dev/null; rm -f '$out' /dev/shm/$SIDESTEP_FABRIC" EXIT
  for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
  PORT=$(node -pe 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).port' "$out")
}
