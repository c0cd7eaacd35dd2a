#!/usr/bin/env bash
# Offline bundles between two nodes that never connect: export, import with
# and without a daemon running, only what the other lacks once it has sent
# a bundle back, and bundles that are truncated, altered, from an untrusted
# device or for a folder not configured, each refused with nothing written.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for n in a b c; do
  make_node $n
  mkdir -p "$T/f$n"
done
A=$(id a); B=$(id b); C=$(id c)
mkdir -p "$T/fa/docs/deep"
echo "hello" >"$T/fa/readme.txt"
for i in $(seq 1 30); do echo "file $i" >"$T/fa/docs/deep/f$i.txt"; done
head -c $((3 << 20)) /dev/urandom >"$T/fa/docs/big.bin"
ln -s readme.txt "$T/fa/link"

"$M" folder add "$T/fa" --id docs --home "$T/a" >/dev/null
"$M" folder add "$T/fb" --id docs --home "$T/b" >/dev/null
"$M" folder add "$T/fc" --id docs --home "$T/c" >/dev/null
"$M" peer add "$B" dynamic --name b --home "$T/a" >/dev/null
"$M" peer add "$A" dynamic --name a --home "$T/b" >/dev/null
"$M" peer add "$B" dynamic --name b --home "$T/c" >/dev/null
"$M" folder share docs "$B" --home "$T/a" >/dev/null
"$M" folder share docs "$A" --home "$T/b" >/dev/null
"$M" folder share docs "$B" --home "$T/c" >/dev/null

echo "== export from A, import on B (no daemons)"
"$M" bundle export docs --for "$B" "$T/one.bundle" --home "$T/a" | tee "$T/export1.json"
grep -q '"lacking": 35' "$T/export1.json" || fail "the first bundle does not carry every item"
"$M" bundle import "$T/one.bundle" --home "$T/b" | tee "$T/import1.json"
same_tree "$T/fa" "$T/fb" || fail "B does not match A after the import"
[ -L "$T/fb/link" ] || fail "the symlink did not travel as a link"
"$M" bundle import "$T/one.bundle" --home "$T/b" | matches '"created": 0, "updated": 0' \
  || fail "importing a bundle twice changed something"

echo "== hostile bundles are refused and write nothing"
before=$(find "$T/fb" -path "$T/fb/.meshsync" -prune -o -type f -print | sort | xargs md5sum)
size=$(stat -c %s "$T/one.bundle")
echo "changed on A" >"$T/fa/readme.txt"
"$M" bundle export docs --for "$B" "$T/two.bundle" --home "$T/a" >/dev/null
head -c $((size / 2)) "$T/two.bundle" >"$T/truncated.bundle"
if "$M" bundle import "$T/truncated.bundle" --home "$T/b" 2>"$T/err.txt"; then fail "a truncated bundle was imported"; fi
grep -q "truncated" "$T/err.txt" || fail "truncated bundle: $(cat "$T/err.txt")"
cp "$T/two.bundle" "$T/altered.bundle"
# Flip one byte inside the big file's data (past the metadata at the front).
offset=$(( $(stat -c %s "$T/altered.bundle") - (1 << 20) ))
printf '\x55' | dd of="$T/altered.bundle" bs=1 seek="$offset" conv=notrunc status=none
cmp -s "$T/two.bundle" "$T/altered.bundle" && printf '\xaa' | dd of="$T/altered.bundle" bs=1 seek="$offset" conv=notrunc status=none
if "$M" bundle import "$T/altered.bundle" --home "$T/b" 2>"$T/err.txt"; then fail "an altered bundle was imported"; fi
grep -q "signature does not match" "$T/err.txt" || fail "altered bundle: $(cat "$T/err.txt")"
echo "not a bundle" >"$T/garbage.bundle"
if "$M" bundle import "$T/garbage.bundle" --home "$T/b" 2>"$T/err.txt"; then fail "garbage was imported"; fi
grep -q "not a meshsync bundle" "$T/err.txt" || fail "garbage: $(cat "$T/err.txt")"
echo "from c" >"$T/fc/c.txt"
"$M" bundle export docs --for "$B" "$T/from-c.bundle" --home "$T/c" >/dev/null
if "$M" bundle import "$T/from-c.bundle" --home "$T/b" 2>"$T/err.txt"; then fail "a bundle from an untrusted device was imported"; fi
grep -q "not a trusted device" "$T/err.txt" || fail "untrusted: $(cat "$T/err.txt")"
if "$M" bundle import "$T/two.bundle" --home "$T/c" 2>"$T/err.txt"; then fail "C imported A's bundle"; fi
after=$(find "$T/fb" -path "$T/fb/.meshsync" -prune -o -type f -print | sort | xargs md5sum)
[ "$before" = "$after" ] || fail "a refused bundle changed B's folder"

echo "== with B's daemon running, the import goes through its API"
start b
"$M" bundle import "$T/two.bundle" --home "$T/b" | tee "$T/import2.json"
grep -q '"updated": 1' "$T/import2.json" || fail "the daemon's import: $(cat "$T/import2.json")"
same_tree "$T/fa" "$T/fb" || fail "B does not match A after the second import"
grep -q "imported a bundle from a" "$T/b.log" || fail "B's daemon did not log the import"
api b /api/activity | matches '"bundle-imported"' || fail "no bundle-imported activity"

echo "== B answers with a bundle of its own edit; A then sends only what B lacks"
echo "edited on B" >"$T/fb/docs/deep/f1.txt"
wait_for "B's daemon records its edit" grep -q "local changes found" "$T/b.log"
"$M" bundle export docs --for "$A" "$T/back.bundle" --home "$T/b" | tee "$T/export3.json"
"$M" bundle import "$T/back.bundle" --home "$T/a" | tee "$T/import3.json"
grep -q '"updated": 1' "$T/import3.json" || fail "A did not take B's edit: $(cat "$T/import3.json")"
same_tree "$T/fa" "$T/fb" || fail "A does not match B after B's bundle"
"$M" bundle export docs --for "$B" "$T/three.bundle" --home "$T/a" | tee "$T/export4.json"
grep -q '"lacking": 0, "data_bytes": 0' "$T/export4.json" \
  || fail "A sent B what B's own bundle showed it has: $(cat "$T/export4.json")"
stop b
echo PASS
