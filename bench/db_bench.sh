#!/usr/bin/env bash
# meshsync db sync against the SQLite session extension's changeset apply
# (the local limit) and PouchDB replication, side by side in one run, on the
# same 100,000 rows x 6 columns and the same 1,000-change incremental set;
# plus SQLite -> PostgreSQL on a throw-away server (testing/postgres.sh).
#
#   bench/db_bench.sh [-n ROWS]
#
# Installs what it needs: nodejs and npm from Debian, then pouchdb-core,
# pouchdb-adapter-memory and pouchdb-replication from npm into
# build/bench-node (no native modules). Builds the release preset.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=100000
while getopts n: opt; do case $opt in n) rows=$OPTARG ;; *) exit 2 ;; esac; done

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
./build/release/bench/db_sync_bench --rows "$rows" --postgres "$url" | tee "$out" | grep -v '='
NODE_PATH=$node_dir/node_modules node bench/pouchdb_bench.js "$rows" >>"$out"
get() { grep "^$1=" "$out" | cut -d= -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

printf '\n%-34s %10s %10s %10s\n' "" "initial" "incr." ""
printf '%-34s %9ss %9ss\n' "SQLite changeset apply (limit)" "$(get ref_initial)" "$(get ref_incremental)"
printf '%-34s %9ss %9ss\n' "meshsync SQLite -> SQLite" "$(get ms_initial)" "$(get ms_incremental)"
printf '%-34s %9ss %9ss\n' "meshsync SQLite -> PostgreSQL" "$(get pg_initial)" "$(get pg_incremental)"
printf '%-34s %9ss %9ss\n' "PouchDB replicate (memory adapter)" "$(get pouch_initial)" "$(get pouch_incremental)"
echo
echo "goal: initial within 3x of changeset apply:   $(ratio "$(get ms_initial)" "$(get ref_initial)")x"
echo "goal: incremental within 3x of changeset apply: $(ratio "$(get ms_incremental)" "$(get ref_incremental)")x"
echo "goal: at least 10x faster than PouchDB:   initial $(ratio "$(get pouch_initial)" "$(get ms_initial)")x, incremental $(ratio "$(get pouch_incremental)" "$(get ms_incremental)")x"
rm -f "$out"
