#!/usr/bin/env bash
# The folder commands as a user runs them: exit codes, one-line errors,
# --json, --preview, conflicts, trash restore, progress only on a terminal.
set -euo pipefail
source "$(dirname "$0")/../shell/matches.sh"
meshsync=$1
work=$(mktemp -d /tmp/meshsync-cli-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
a=$work/a
b=$work/b
mkdir -p "$a/sub" "$b"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Errors: a clear one-line reason and a non-zero exit.
if "$meshsync" sync "$a" "$work/missing" 2>"$work/err"; then fail "missing folder accepted"; fi
grep -q "missing" "$work/err" || fail "missing folder not named: $(cat "$work/err")"
[[ $(wc -l <"$work/err") -eq 1 ]] || fail "error is not one line"
if "$meshsync" sync "$a" "$a/sub" 2>"$work/err"; then fail "nested folders accepted"; fi
grep -q "inside" "$work/err" || fail "nested folders not explained: $(cat "$work/err")"
if "$meshsync" sync "$a" 2>/dev/null; then fail "one folder accepted"; fi
if "$meshsync" sync "$a" "$b" --policy sometimes 2>/dev/null; then fail "bad policy accepted"; fi

# Preview: prints the plan, writes nothing (no .meshsync either).
echo one >"$a/one.txt"
"$meshsync" sync "$a" "$b" --preview >"$work/plan"
grep -q "create *one.txt" "$work/plan" || fail "preview does not list the create: $(cat "$work/plan")"
[[ ! -e "$b/one.txt" && ! -e "$b/.meshsync" && ! -e "$a/.meshsync" ]] || fail "preview wrote something"

# A real sync, summarised as JSON; no progress bar when not on a terminal.
"$meshsync" sync "$a" "$b" --json >"$work/out" 2>"$work/err"
grep -q '"a_to_b": {"created": 2' "$work/out" || fail "json: $(cat "$work/out")"
grep -q '"in_sync": true' "$work/out" || fail "json: $(cat "$work/out")"
[[ ! -s "$work/err" ]] || fail "stderr not empty: $(cat "$work/err")"
[[ $(cat "$b/one.txt") == one ]] || fail "file not synced"

# A conflict: both copies kept, listed by `conflicts`, also as JSON.
echo "a's" >"$a/one.txt"
echo "b's" >"$b/one.txt"
"$meshsync" sync "$a" "$b" >/dev/null
ls "$a" | matches '^one\.conflict-[0-9]\{8\}-[0-9]\{6\}-[0-9a-f]\{7\}\.txt$' || fail "no conflict copy: $(ls "$a")"
"$meshsync" conflicts "$b" | matches "one.txt" || fail "conflicts does not list it"
"$meshsync" conflicts "$b" --json | matches '"copy": "one.conflict-' || fail "conflicts --json"

# Deleted files go to the trash and come back with `trash restore`.
rm "$a/one.txt"
"$meshsync" sync "$a" "$b" >/dev/null
[[ ! -e "$b/one.txt" ]] || fail "delete not synced"
"$meshsync" trash list "$b" | matches "one.txt" || fail "not in the trash"
"$meshsync" trash restore "$b" one.txt >/dev/null
"$meshsync" sync "$a" "$b" >/dev/null
[[ -e "$a/one.txt" ]] || fail "restored file not synced back"
if "$meshsync" trash restore "$b" ../etc/passwd 2>/dev/null; then fail "restore outside the folder"; fi

# status
"$meshsync" status "$a" | matches "none since the last sync" || fail "status"
echo "PASS"
