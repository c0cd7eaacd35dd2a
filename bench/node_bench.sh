#!/usr/bin/env bash
# Two meshsync daemons against two syncthing daemons (Debian's), side by side
# on the same data, on loopback, in one run:
#   small    initial sync of 10,000 files (1-16 KiB) in 100 folders
#   large    initial sync of 4 files x 256 MiB
#   incr     after both: rewrite 100 small files, add 50, delete 50, and
#            overwrite 1 MiB inside one large file
#   latency  one saved file, until it is on the other side (median of 10)
#   rss      peak resident memory of the two daemons together
# Goals (issue 4), as ratios meshsync / syncthing: small <= 0.2, large <= 0.5,
# incr <= 0.3, rss <= 0.3; latency <= 100 ms median.
#
#   bench/node_bench.sh           full size
#   bench/node_bench.sh -s 0.1    a tenth of the data (a quick look)
#
# A sync is done when the receiving tree lists the same names, sizes and
# mtimes as the sender's: tree_wait.py lists it before the change and
# follows it with inotify (a poll that listed it every 20 ms took most of a
# core and saw the end late); checked with diff -r after.
# meshsync finds changes with its watcher; syncthing's watcher waits 10 s
# before it scans, so it is told to scan (REST) right after each change,
# which is the fastest it can be. syncthing is configured for loopback
# only: no discovery, relays, NAT traversal, upgrades or usage reports.
set -euo pipefail
cd "$(dirname "$0")/.."

scale=1 work=/tmp/meshsync-node-bench
while getopts "s:w:" opt; do
  case $opt in
    s) scale=$OPTARG ;;
    w) work=$OPTARG ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done

missing=()
for p in syncthing python3 curl; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
./scripts/install-deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target meshsync folder_gen >/dev/null
M=$PWD/build/release/apps/meshsync/meshsync
gen=$PWD/build/release/bench/folder_gen
st=$PWD/bench/st_ctl.py
tree_wait=$PWD/bench/tree_wait.py

n() { awk -v x="$1" -v s="$scale" 'BEGIN { v = int(x * s); print (v < 1 ? 1 : v) }'; }
now() { date +%s.%N; }

rm -rf "$work"
mkdir -p "$work"
declare -a PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${MESHSYNC_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

verify() { diff -r -x .meshsync -x .stfolder "$1" "$2" >/dev/null || { echo "trees differ: $1 $2" >&2; exit 1; }; }
# Peak RSS (KiB) of processes and their children.
peak_rss() {
  local total=0 pid kids
  for pid in "$@"; do
    kids=$(pgrep -P "$pid" || true)
    for p in $pid $kids; do
      total=$((total + $(awk '/VmHWM/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
  done
  echo $total
}

small=$(n 10000) dirs=$(n 100) large_bytes=$(n 268435456)
echo "data: $small small files in $dirs folders, 4 x $((large_bytes >> 20)) MiB"
"$gen" small "$work/small" "$small" "$dirs" 1024 16384 1 >/dev/null
"$gen" large "$work/large" 4 "$large_bytes" 2 >/dev/null
mkdir -p "$work/large-dir"

declare -A T
# watch_b: starts following B (tree_wait.py), before A is changed.
watch_b() {
  rm -f "$work/tw.go" "$work/tw.out"
  mkfifo "$work/tw.go"
  python3 "$tree_wait" "$a" "$b" 1800 <"$work/tw.go" >"$work/tw.out" &
  TW=$!
  exec {TWGO}>"$work/tw.go"
  until grep -q ready "$work/tw.out"; do
    kill -0 "$TW" 2>/dev/null || { echo "tree_wait.py failed" >&2; exit 1; }
    sleep 0.01
  done
}
# converged CASE: tells tree_wait.py the sync started at $start, waits until
# B matches A, records the time it took as T[$tool.CASE], and checks the
# trees byte for byte (untimed).
converged() {
  echo "$start" >&"$TWGO"
  exec {TWGO}>&-
  wait "$TW" || exit 1
  local at
  at=$(tail -n 1 "$work/tw.out")
  T[$tool.$1]=$(awk -v a="$start" -v b="$at" 'BEGIN { printf "%.2f", b - a }')
  verify "$a" "$b"
  echo "  $tool $1: ${T[$tool.$1]} s (peak RSS so far $(($(peak_rss "$pid_a" "$pid_b") / 1024)) MiB)"
}
# run TOOL: the four measurements for one tool. Sets T[TOOL.*].
run() {
  local tool=$1 a=$work/$1/a b=$work/$1/b start
  mkdir -p "$a" "$b"
  cp -a "$work/small/." "$a/"
  sync
  if [ "$tool" = meshsync ]; then
    local ha=$work/$tool/home-a hb=$work/$tool/home-b
    read -r pa pb qa qb < <(python3 -c 'import socket
s=[socket.socket() for _ in range(4)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
    "$M" config set listen "127.0.0.1:$pa" --home "$ha" >/dev/null
    "$M" config set api "127.0.0.1:$qa" --home "$ha" >/dev/null
    "$M" config set listen "127.0.0.1:$pb" --home "$hb" >/dev/null
    "$M" config set api "127.0.0.1:$qb" --home "$hb" >/dev/null
    local ida idb
    ida=$("$M" id --home "$ha") idb=$("$M" id --home "$hb")
    "$M" peer add "$idb" "127.0.0.1:$pb" --home "$ha" >/dev/null
    "$M" peer add "$ida" "127.0.0.1:$pa" --home "$hb" >/dev/null
    "$M" folder add "$a" --id bench --home "$ha" >/dev/null
    "$M" folder add "$b" --id bench --home "$hb" >/dev/null
    "$M" folder share bench "$idb" --home "$ha" >/dev/null
    "$M" folder share bench "$ida" --home "$hb" >/dev/null
    watch_b
    start=$(now)
    "$M" daemon --home "$ha" >"$work/$tool-a.log" 2>&1 &
    PIDS+=($!); local pid_a=$!
    "$M" daemon --home "$hb" >"$work/$tool-b.log" 2>&1 &
    PIDS+=($!); local pid_b=$!
    scan() { :; }
  else
    python3 "$st" setup "$work/st" "$a" "$b"
    for side in A B; do
      STNORESTART=1 STNOUPGRADE=1 syncthing serve --home="$work/st/home$side" --no-browser \
        --no-restart --no-upgrade --no-default-folder >"$work/$tool-$side.log" 2>&1 </dev/null &
      PIDS+=($!)
    done
    local pid_a=${PIDS[-2]} pid_b=${PIDS[-1]}
    python3 "$st" wait-ready "$work/st"
    watch_b
    start=$(now)
    python3 "$st" unpause "$work/st"
    scan() { python3 "$st" scan "$work/st" A; }
  fi
  converged small


  # Copied aside, then moved in: the files appear whole, at once, for both.
  cp -a "$work/large" "$work/$tool/large"
  sync
  watch_b
  mv "$work/$tool/large" "$a/large"
  start=$(now)
  scan
  converged large

  watch_b
  "$gen" mutate "$a" 3 >/dev/null
  start=$(now)
  scan
  converged incr

  local samples=() i t0
  for i in $(seq 1 10); do
    sleep 0.3
    t0=$(now)
    echo "saved $i" >"$a/saved-$i.txt"
    scan
    while [ "$(cat "$b/saved-$i.txt" 2>/dev/null)" != "saved $i" ]; do sleep 0.002; done
    samples+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", (b - a) * 1000 }')")
  done
  T[$tool.latency]=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n 5,6p | awk '{ s += $1 } END { printf "%.0f", s / 2 }')
  echo "  $tool latency (ms): ${samples[*]} -> median ${T[$tool.latency]}"

  T[$tool.rss]=$(peak_rss "$pid_a" "$pid_b")
  echo "  $tool peak RSS (both daemons): $((T[$tool.rss] / 1024)) MiB"
  if [ "$tool" = meshsync ]; then
    kill -TERM "$pid_a" "$pid_b"
  else
    python3 "$st" shutdown "$work/st"
  fi
  wait "$pid_a" "$pid_b" 2>/dev/null || true
  rm -rf "$a" "$b"
}

for tool in meshsync syncthing; do
  echo "== $tool"
  run $tool
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
printf '%-12s %12s %12s %8s %8s\n' case meshsync syncthing ratio goal
for c in small large incr; do
  printf '%-12s %11ss %11ss %8s %8s\n' "$c" "${T[meshsync.$c]}" "${T[syncthing.$c]}" \
    "$(ratio "${T[meshsync.$c]}" "${T[syncthing.$c]}")" \
    "$(case $c in small) echo 0.2 ;; large) echo 0.5 ;; incr) echo 0.3 ;; esac)"
done
printf '%-12s %10sms %10sms %8s %8s\n' latency "${T[meshsync.latency]}" "${T[syncthing.latency]}" \
  "$(ratio "${T[meshsync.latency]}" "${T[syncthing.latency]}")" "100ms"
printf '%-12s %9sMiB %9sMiB %8s %8s\n' "peak rss" "$((T[meshsync.rss] / 1024))" \
  "$((T[syncthing.rss] / 1024))" "$(ratio "${T[meshsync.rss]}" "${T[syncthing.rss]}")" 0.3
