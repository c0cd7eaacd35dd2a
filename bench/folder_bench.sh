#!/usr/bin/env bash
# Folder sync, side by side: `meshsync sync` against `rsync -a --delete`,
# `unison -batch` and `cp -a` (the physical limit) on the same generated data,
# in one run. Prints wall time, peak RSS and the ratios the project aims for.
#
#   bench/folder_bench.sh                 every workload, full size, one run each
#   bench/folder_bench.sh -r 3 w1 w4      medians of three runs of W1 and W4
#   bench/folder_bench.sh -s 0.1          a tenth of the data (a quick look)
#
# W1 initial sync of 10,000 files (1-16 KiB) in 100 folders
# W2 initial sync of 4 files x 256 MiB
# W3 after W1+W2 are in sync: rewrite 100 small files, add 50, delete 50,
#    overwrite 1 MiB in the middle of one large file
# W4 re-sync of 100,000 unchanged files (1-4 KiB, 1,000 folders), against a
#    bare stat walk of both trees (find), the floor
# W5 rename a folder holding 10,000 files
#
# Data lives under -w DIR (default /tmp/meshsync-folder-bench), removed at the
# end unless -k. Before every timed run the page cache holds the data (it was
# just written or read), `sync` has flushed earlier writes, and a pair of about
# the same size was just removed (see level). meshsync writes large files
# around the page cache and its metadata commit waits for them to reach the
# device, inside its time; rsync, unison and cp leave their writes in the page
# cache.
set -euo pipefail
cd "$(dirname "$0")/.."

scale=1 runs=1 work=/tmp/meshsync-folder-bench keep=0
while getopts "s:r:w:k" opt; do
  case $opt in
    s) scale=$OPTARG ;;
    r) runs=$OPTARG ;;
    w) work=$OPTARG ;;
    k) keep=1 ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
workloads=${*:-w1 w2 w3 w4 w5}

# The tools compared, from Debian.
missing=()
for p in rsync unison time; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
./scripts/install-deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target meshsync folder_gen >/dev/null
meshsync=$PWD/build/release/apps/meshsync/meshsync
gen=$PWD/build/release/bench/folder_gen

n() { awk -v x="$1" -v s="$scale" 'BEGIN { v = int(x * s); print (v < 1 ? 1 : v) }'; }
rm -rf "$work"
mkdir -p "$work/data" "$work/logs"
export UNISON=$work/unison-home
trap '[[ $keep == 1 ]] || rm -rf "$work"' EXIT

# Master copies of the data, made once.
data() {
  local what=$1 dir=$work/data/$1
  [[ -d $dir ]] && return
  case $what in
    w1) "$gen" small "$dir" "$(n 10000)" 100 1024 16384 1 ;;
    w2) "$gen" large "$dir" 4 "$(n 268435456)" 2 ;;
    w4) "$gen" small "$dir" "$(n 100000)" 1000 1024 4096 4 ;;
    w5) "$gen" small "$dir" "$(n 10000)" 1 1024 16384 5 ;;
  esac
}

# sync_with TOOL A B: one sync from A to B (two-way for meshsync and unison).
sync_with() {
  case $1 in
    meshsync) "$meshsync" sync "$2" "$3" --json >"$work/logs/last-meshsync.json" ;;
    rsync) rsync -a --delete "$2/" "$3/" ;;
    unison) unison "$2" "$3" -batch -times -silent >/dev/null 2>&1 ;;
    cp) cp -a "$2/." "$3/" ;;
  esac
}

# timed LOG TOOL A B: prints "wall_s rss_kib".
timed() {
  local log=$1
  shift
  sync
  /usr/bin/time -f "%e %M" -o "$log" bash -c "$(declare -f sync_with); meshsync=$meshsync; work=$work; sync_with \"\$@\"" _ "$@"
  cat "$log"
}

check_same() {
  diff -rq --no-dereference -x .meshsync -x '.unison*' "$1" "$2" >/dev/null ||
    { echo "!! $3: the folders differ after the sync" >&2; exit 1; }
}

declare -A wall rss
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# level W: copy the workload's data twice and delete the copies, so the first
# tool's timed run follows the same memory history as every later tool's (the
# removal of a pair of about that size). On this VM fresh page cache costs
# 0.5 s per 256 MiB unless it reuses pages freed moments before (then 0.05 s):
# without this, whichever tool ran after another tool's pair was removed won.
level() {
  local sources=()
  case $1 in
    w3) data w1; data w2; sources=("$work/data/w1" "$work/data/w2") ;;
    *) data "$1"; sources=("$work/data/$1") ;;
  esac
  mkdir -p "$work/level"
  for copy in 1 2; do
    for src in "${sources[@]}"; do cp -a "$src" "$work/level/$copy-$(basename "$src")"; done
  done
  sync
  rm -rf "$work/level"
}

# run_workload W TOOLS...: fills wall[W,tool] and rss[W,tool] with medians.
run_workload() {
  local w=$1
  shift
  level "$w"
  for tool in "$@"; do
    local walls=() rsss=()
    for ((r = 1; r <= runs; r++)); do
      local pair=$work/pairs/$w-$tool
      rm -rf "$pair" "$UNISON"
      mkdir -p "$pair/B" "$UNISON"
      case $w in
        w1 | w2)
          data "$w"
          cp -a "$work/data/$w" "$pair/A"
          find "$pair/A" -type f -exec cat {} + >/dev/null  # warm, as for every tool
          ;;
        w3)
          data w1
          data w2
          mkdir -p "$pair/A"
          cp -a "$work/data/w1/." "$pair/A/"
          cp -a "$work/data/w2/." "$pair/A/"
          sync_with "$tool" "$pair/A" "$pair/B"
          "$gen" mutate "$pair/A" "$r"
          ;;
        w4)
          data w4
          cp -a "$work/data/w4" "$pair/A"
          rm -rf "$pair/B"
          cp -a "$work/data/w4" "$pair/B"
          sync_with "$tool" "$pair/A" "$pair/B"
          ;;
        w5)
          data w5
          cp -a "$work/data/w5" "$pair/A"
          sync_with "$tool" "$pair/A" "$pair/B"
          mv "$pair/A/d0" "$pair/A/renamed"
          ;;
      esac
      read -r s k < <(timed "$work/logs/$w-$tool-$r" "$tool" "$pair/A" "$pair/B")
      walls+=("$s")
      rsss+=("$k")
      [[ $tool == cp ]] || check_same "$pair/A" "$pair/B" "$w $tool"
      if [[ $tool == meshsync ]]; then
        # The store leaves its write-ahead log for the next writer to fold
        # in: fold it in first, or the file holds only part of the metadata.
        sqlite3 "$pair/A/.meshsync/meta.db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
        meta_bytes[$w]=$(stat -c %s "$pair/A/.meshsync/meta.db")
        meta_files[$w]=$(find "$pair/A" -path "$pair/A/.meshsync" -prune -o -print | wc -l)
        cp "$work/logs/last-meshsync.json" "$work/logs/$w-json"
      fi
      rm -rf "$pair"
    done
    wall[$w,$tool]=$(printf '%s\n' "${walls[@]}" | median)
    rss[$w,$tool]=$(printf '%s\n' "${rsss[@]}" | median)
  done
}

declare -A meta_bytes meta_files
walk="" w3_copy=""
for w in $workloads; do
  case $w in
    w1 | w2) run_workload "$w" meshsync rsync unison cp ;;
    w3)
      run_workload w3 meshsync rsync unison
      # The floor for W3 on a file system without reflinks: the edited large
      # file must be written whole (to a temporary file renamed into place,
      # the old one kept in the trash), so copying one large file is a cost
      # no safe sync avoids.
      data w2
      cat "$work/data/w2/large0.bin" >/dev/null
      copies=()
      for ((r = 1; r <= runs; r++)); do
        sync
        start=$(date +%s%N)
        cp "$work/data/w2/large0.bin" "$work/floor-copy"
        copies+=("$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')")
        rm -f "$work/floor-copy"
      done
      w3_copy=$(printf '%s\n' "${copies[@]}" | median)
      ;;
    w5) run_workload "$w" meshsync rsync unison ;;
    w4)
      run_workload w4 meshsync rsync unison
      data w4
      cp -a "$work/data/w4" "$work/walk-a"
      cp -a "$work/data/w4" "$work/walk-b"
      find "$work/walk-a" "$work/walk-b" -printf '%s %T@\n' >/dev/null
      walks=()
      for ((r = 1; r <= runs; r++)); do
        start=$(date +%s%N)
        find "$work/walk-a" "$work/walk-b" -printf '%s %T@\n' >/dev/null
        walks+=("$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')")
      done
      walk=$(printf '%s\n' "${walks[@]}" | median)
      rm -rf "$work/walk-a" "$work/walk-b"
      ;;
    *) echo "unknown workload $w" >&2; exit 2 ;;
  esac
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
printf '\nfolder sync, scale %s, median of %s run(s); wall seconds, peak RSS MiB\n\n' "$scale" "$runs"
printf '%-4s  %-9s %8s %9s\n' "" tool "wall s" "RSS MiB"
for w in $workloads; do
  for tool in meshsync rsync unison cp; do
    [[ -n ${wall[$w,$tool]:-} ]] || continue
    printf '%-4s  %-9s %8s %9s\n' "${w^^}" "$tool" "${wall[$w,$tool]}" \
      "$(awk -v k="${rss[$w,$tool]}" 'BEGIN { printf "%.1f", k / 1024 }')"
  done
done
printf '\nratios (meshsync / other) and goals\n'
goal() { printf '  %-34s %6s   goal %s\n' "$1" "$2" "$3"; }
for w in $workloads; do
  case $w in
    w1) goal "W1 vs rsync" "$(ratio "${wall[w1,meshsync]}" "${wall[w1,rsync]}")" "<= 1.0"
        goal "W1 vs unison" "$(ratio "${wall[w1,meshsync]}" "${wall[w1,unison]}")" ""
        goal "W1 vs cp -a" "$(ratio "${wall[w1,meshsync]}" "${wall[w1,cp]}")" "" ;;
    w2) goal "W2 vs rsync" "$(ratio "${wall[w2,meshsync]}" "${wall[w2,rsync]}")" "<= 0.5"
        goal "W2 vs cp -a" "$(ratio "${wall[w2,meshsync]}" "${wall[w2,cp]}")" "" ;;
    w3) goal "W3 vs rsync" "$(ratio "${wall[w3,meshsync]}" "${wall[w3,rsync]}")" "<= 0.3"
        goal "W3 vs cp of the large file ($w3_copy s, reused pages)" "$(ratio "${wall[w3,meshsync]}" "$w3_copy")" "" ;;
    w4) goal "W4 vs rsync" "$(ratio "${wall[w4,meshsync]}" "${wall[w4,rsync]}")" "<= 0.5"
        goal "W4 vs stat walk of both ($walk s)" "$(ratio "${wall[w4,meshsync]}" "$walk")" "<= 1.5"
        goal "W4 peak RSS (MiB)" "$(awk -v k="${rss[w4,meshsync]}" 'BEGIN { printf "%.1f", k / 1024 }')" "<= 100" ;;
    w5) goal "W5 meshsync seconds" "${wall[w5,meshsync]}" "<= 0.2"
        goal "W5 vs rsync" "$(ratio "${wall[w5,meshsync]}" "${wall[w5,rsync]}")" "" ;;
  esac
  if [[ -n ${meta_bytes[$w]:-} && $w =~ ^(w1|w4)$ ]]; then
    goal "${w^^} metadata bytes per entry" "$(awk -v b="${meta_bytes[$w]}" -v f="${meta_files[$w]}" 'BEGIN { printf "%.0f", b / f }')" "<= 300"
  fi
done
if [[ -f $work/logs/w5-json ]]; then
  printf '  W5 meshsync A->B: %s\n' "$(grep -o '"a_to_b": {[^}]*}' "$work/logs/w5-json")"
fi
