#!/usr/bin/env bash
# meshsync db sync against the SQLite session extension's changeset apply
# (the local limit) and PouchDB replication, side by side in one run, on the
# same 100,000 rows x 6 columns and the same 1,000-change incremental set;
# plus SQLite -> PostgreSQL on a throw-away server (testing/postgres.sh).
#
#   bench/db_bench.sh [-n ROWS] [-r RUNS]
#
# With -r, each run repeats every measurement (meshsync and PouchDB
# alternating), prints its ratios, and the summary gives each figure's
# median and the ratios of those medians: this host's timings swing by a
# factor of two between minutes, so one run decides little.
#
# Installs what it needs: nodejs and npm from Debian, then pouchdb-core,
# pouchdb-adapter-memory and pouchdb-replication from npm into
# build/bench-node (no native modules). Builds the release preset.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=100000
runs=1
while getopts n:r: opt; do
  case $opt in
    n) rows=$OPTARG ;;
    r) runs=$OPTARG ;;
    *) exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "db_bench.sh: -r takes a positive number" >&2; exit 2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  as_root=(); [[ $(id -u) -ne 0 ]] && as_root=(sudo)
  "${as_root[@]}" apt-get install -y -q --no-install-recommends nodejs npm
fi
node_dir=build/bench-node
if [[ ! -d $node_dir/node_modules/pouchdb-replication ]]; then
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error \
    pouchdb-core@9 pouchdb-adapter-memory@9 pouchdb-replication@9 >/dev/null)
fi
cmake --preset release >/dev/null
cmake --build --preset release --target db_sync_bench >/dev/null

pg_dir=$(mktemp -d /tmp/meshsync-bench-pg.XXXXXX)
trap 'testing/postgres.sh stop "$pg_dir"' EXIT
url=$(testing/postgres.sh start "$pg_dir")

out=$(mktemp)
trap 'rm -f "$out"; testing/postgres.sh stop "$pg_dir"' EXIT
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# The values of KEY over the runs so far, one per line.
values() { grep "^$1=" "$out" | cut -d= -f2; }
median() { values "$1" | sort -g | awk '{ v[NR] = $1 } END { printf "%.4f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
last() { values "$1" | tail -1; }

for ((run = 1; run <= runs; ++run)); do
  ((runs > 1)) && echo "--- run $run of $runs"
  ./build/release/bench/db_sync_bench --rows "$rows" --postgres "$url" | tee -a "$out" | grep -v '='
  NODE_PATH=$node_dir/node_modules node bench/pouchdb_bench.js "$rows" >>"$out"
  # The goals are ratios within one run.
  {
    echo "r_initial=$(ratio "$(last ms_initial)" "$(last ref_initial)")"
    echo "r_incremental=$(ratio "$(last ms_incremental)" "$(last ref_incremental)")"
    echo "r_incremental_hash_order=$(ratio "$(last ms_incremental)" "$(last ref_incremental_hash_order)")"
    echo "r_pouch_initial=$(ratio "$(last pouch_initial)" "$(last ms_initial)")"
    echo "r_pouch_incremental=$(ratio "$(last pouch_incremental)" "$(last ms_incremental)")"
  } >>"$out"
  if ((runs > 1)); then
    echo "  this run: initial $(last r_initial)x, incremental $(last r_incremental)x the" \
      "changeset apply's; PouchDB $(last pouch_initial) s, $(last r_pouch_initial)x meshsync's"
  fi
done

what=$( ((runs > 1)) && echo "medians of $runs runs" || echo "one run")
printf '\n%-34s %10s %10s   (%s)\n' "" "initial" "incr." "$what"
printf '%-34s %9ss %9ss\n' "SQLite changeset apply (limit)" "$(median ref_initial)" "$(median ref_incremental)"
printf '%-34s %9s  %9ss\n' "  same, to a table in hash order" "" "$(median ref_incremental_hash_order)"
printf '%-34s %9ss %9ss\n' "meshsync SQLite -> SQLite" "$(median ms_initial)" "$(median ms_incremental)"
printf '%-34s %9ss %9ss\n' "meshsync SQLite -> PostgreSQL" "$(median pg_initial)" "$(median pg_incremental)"
printf '%-34s %9ss %9ss\n' "PouchDB replicate (memory adapter)" "$(median pouch_initial)" "$(median pouch_incremental)"
# A goal's figure: the median of the runs' ratios, and their range.
goal() {
  local low high
  low=$(values "$1" | sort -g | head -1)
  high=$(values "$1" | sort -g | tail -1)
  if ((runs > 1)); then
    printf '%.2fx (runs: %s-%s)' "$(median "$1")" "$low" "$high"
  else
    printf '%sx' "$low"
  fi
}
echo
echo "goal: initial within 3x of changeset apply:     $(goal r_initial)"
echo "goal: incremental within 3x of changeset apply: $(goal r_incremental)"
echo "      (against the apply to a table in hash order: $(goal r_incremental_hash_order))"
echo "goal: at least 10x faster than PouchDB:         initial $(goal r_pouch_initial)," \
  "incremental $(goal r_pouch_incremental)"
