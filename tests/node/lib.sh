# Shared by the node tests: starting and stopping daemons, waiting for a
# state (polled, with a generous cap so a broken build fails instead of
# hanging; nothing asserts how fast anything is), and the API.
# Sourced with the meshsync binary as $1.
M=${1:?usage: TEST.sh path/to/meshsync}
source "$(dirname "${BASH_SOURCE[0]}")/../shell/matches.sh"
T=$(mktemp -d /tmp/meshsync-mesh-XXXXXX)
declare -A PIDS

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -z "${MESHSYNC_KEEP:-}" ]; then rm -rf "$T"; else echo "kept $T" >&2; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for log in "$T"/*.log; do echo "--- $log" >&2; tail -n 40 "$log" >&2; done
  exit 1
}

# wait_for DESCRIPTION COMMAND...: polls COMMAND for up to 60 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 600); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$what"
}

same_tree() { diff -r -x .meshsync "$1" "$2"; }

start() {
  local name=$1
  rm -f "$T/$name/listening"
  "$M" daemon --home "$T/$name" >>"$T/$name.log" 2>&1 &
  PIDS[$name]=$!
  wait_for "$name starts listening" test -s "$T/$name/listening"
}

stop() {  # SIGTERM, and the daemon must exit 0
  local name=$1 status=0
  kill -TERM "${PIDS[$name]}"
  wait "${PIDS[$name]}" || status=$?
  unset "PIDS[$name]"
  [ "$status" -eq 0 ] || fail "$name exited $status on SIGTERM"
}

addr() { cat "$T/$1/listening"; }
key() { sed -n "s/^api_key = '\(.*\)'$/\1/p" "$T/$1/config.toml"; }
api() {  # api NODE PATH: GET with the node's key
  curl -sf -H "X-API-Key: $(key "$1")" "http://$(cat "$T/$1/api-listening")$2"
}
id() { "$M" id --home "$T/$1"; }


# make_node NAME: a home with loopback addresses and a name.
make_node() {
  mkdir -p "$T/$1"
  "$M" config set listen 127.0.0.1:0 --home "$T/$1" >/dev/null
  "$M" config set api 127.0.0.1:0 --home "$T/$1" >/dev/null
  "$M" config set name "node-$1" --home "$T/$1" >/dev/null
}
