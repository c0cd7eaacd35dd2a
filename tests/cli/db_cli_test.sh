#!/usr/bin/env bash
# The db commands as a user runs them, on SQLite files and the real
# PostgreSQL server of ctest's "postgres" fixture: provision, sync both ways,
# a column conflict and its log, errors with one line and a non-zero exit
# (bad URL, no primary key, a table not provisioned, differing schemas), the
# lock that keeps two processes off one database, writes made by another
# process during a sync, and deprovision.
set -euo pipefail
source "$(dirname "$0")/../shell/matches.sh"
meshsync=$1
work=$(mktemp -d /tmp/meshsync-db-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
export XDG_DATA_HOME="$work/data"
server=$(cat "${MESHSYNC_PG_URL_FILE:?run through ctest: fixture postgres}")
pg="${server%/*}/cli_$$"
psql -q "$server" -c "CREATE DATABASE cli_$$"

sqlite3 a.db "CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT, done BOOLEAN)"
sqlite3 b.db "CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT, done BOOLEAN)"
psql -q "$pg" -c "CREATE TABLE notes(id bigint PRIMARY KEY, title text, body text, done boolean)"
sqlite3 a.db "INSERT INTO notes VALUES (1, 'milk', 'two litres', 0), (2, 'call', NULL, 1)"
for url in sqlite:a.db sqlite:b.db "$pg"; do "$meshsync" db provision "$url" notes >/dev/null; done

# A -> PostgreSQL -> B: a chain of two different databases.
"$meshsync" db sync sqlite:a.db "$pg" --json >out.json
grep -q '"a_to_b": {"created": 2' out.json || fail "first sync: $(cat out.json)"
"$meshsync" db sync "$pg" sqlite:b.db >/dev/null
[[ $(sqlite3 b.db "SELECT title || '/' || ifnull(body, '-') || '/' || done FROM notes ORDER BY id" | tr '\n' ' ') == "milk/two litres/0 call/-/1 " ]] ||
  fail "B: $(sqlite3 b.db 'SELECT * FROM notes')"

# The same column edited on A and in PostgreSQL: one value wins everywhere,
# the other is in a conflict log.
sqlite3 a.db "UPDATE notes SET body = 'oat milk' WHERE id = 1"
psql -q "$pg" -c "UPDATE notes SET body = 'soy milk', done = true WHERE id = 1"
"$meshsync" db sync sqlite:a.db "$pg" >/dev/null
a=$(sqlite3 a.db "SELECT body || done FROM notes WHERE id = 1")
p=$(psql -tA "$pg" -c "SELECT body || (done::int) FROM notes WHERE id = 1")
[[ "$a" == "$p" ]] || fail "diverged: $a vs $p"
[[ "$a" == "oat milk1" || "$a" == "soy milk1" ]] || fail "columns did not merge: $a"
{ "$meshsync" conflicts sqlite:a.db --json; "$meshsync" conflicts "$pg" --json; } >conflicts.json
grep -q '"row": "notes (1)", "column": "body"' conflicts.json || fail "conflict log: $(cat conflicts.json)"
"$meshsync" db status sqlite:a.db | matches 'table:      notes' || fail "status"

# Errors: one line, non-zero, nothing written.
expect_error() {  # expect_error PATTERN COMMAND...
  local pattern=$1; shift
  if "$@" >out.txt 2>err.txt; then fail "should fail: $*"; fi
  [[ $(wc -l <err.txt) -le 2 ]] || fail "more than one line: $(cat err.txt)"
  grep -q -- "$pattern" err.txt || fail "'$pattern' not in: $(cat err.txt)"
}
expect_error "not a database URL" "$meshsync" db sync a.db b.db
expect_error "cannot open" "$meshsync" db provision sqlite:missing.db notes
sqlite3 a.db "CREATE TABLE loose(a INTEGER, b TEXT)"
expect_error "no primary key" "$meshsync" db provision sqlite:a.db loose
expect_error "is not provisioned" "$meshsync" db sync sqlite:a.db sqlite:b.db --tables loose
sqlite3 c.db "CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body BLOB)"
"$meshsync" db provision sqlite:c.db notes >/dev/null
before=$(sha256sum c.db)
expect_error "differs between" "$meshsync" db sync sqlite:a.db sqlite:c.db
[[ $(sqlite3 c.db "SELECT count(*) FROM notes") == 0 ]] || fail "c.db was written"
expect_error "A and B are the same database" "$meshsync" db sync sqlite:a.db sqlite:a.db
expect_error "--policy is" "$meshsync" db sync sqlite:a.db sqlite:b.db --policy sometimes

# One process at a time: another one holding the lock makes sync exit at
# once, or wait with --wait.
lock=a.db.meshsync/all.lock
flock "$lock" sleep 2 &
holder=$!
for _ in $(seq 100); do flock -n "$lock" true 2>/dev/null || break; sleep 0.05; done
expect_error "being synced by another meshsync process" "$meshsync" db sync sqlite:a.db sqlite:b.db
"$meshsync" db sync sqlite:a.db sqlite:b.db --wait >/dev/null || fail "--wait"
wait "$holder"

# Another process writes while a sync runs: nothing it writes is lost.
sqlite3 a.db "WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < 20099)
              INSERT INTO notes SELECT i, 'bulk ' || i, NULL, 0 FROM n"
( for i in $(seq 1 40); do
    sqlite3 -cmd ".timeout 10000" a.db "INSERT INTO notes VALUES ($((30000 + i)), 'live', NULL, 0);
                                          UPDATE notes SET body = 'edited $i' WHERE id = $((100 + i))"
  done ) &
writer=$!
# Rows the writer changes under the sync are left for another round (the
# sync runs a few), or for the next sync if the writer is still going.
if ! "$meshsync" db sync sqlite:a.db sqlite:b.db --batch 500 >/dev/null 2>err.txt; then
  grep -q "changed since it was scanned" err.txt || fail "sync during writes: $(cat err.txt)"
fi
wait "$writer"
"$meshsync" db sync sqlite:a.db sqlite:b.db >/dev/null
dump() { sqlite3 "$1" "SELECT id, title, ifnull(body, ''), done FROM notes ORDER BY id"; }
[[ "$(dump a.db)" == "$(dump b.db)" ]] || fail "A and B differ after syncing during writes"
[[ $(sqlite3 b.db "SELECT count(*) FROM notes WHERE title = 'live'") == 40 ]] || fail "live inserts lost"
[[ $(sqlite3 b.db "SELECT count(*) FROM notes WHERE body LIKE 'edited %'") == 40 ]] || fail "live edits lost"

# Deprovision: the tables stay, meshsync's objects and metadata go.
"$meshsync" db deprovision sqlite:b.db >/dev/null
[[ $(sqlite3 b.db "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'meshsync%'") == 0 ]] ||
  fail "meshsync objects left in b.db"
[[ ! -e b.db.meshsync ]] || fail "metadata left behind"
[[ $(sqlite3 b.db "SELECT count(*) FROM notes") -gt 20000 ]] || fail "deprovision touched the rows"
"$meshsync" db deprovision "$pg" >/dev/null
[[ -z "$(ls "$XDG_DATA_HOME/meshsync/databases")" ]] || fail "PostgreSQL metadata left behind"
psql -q "$server" -c "DROP DATABASE cli_$$"
echo "db cli: all checks passed"
