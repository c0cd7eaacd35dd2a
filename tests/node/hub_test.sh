#!/usr/bin/env bash
# Hub and spoke: four devices that only know a hub, which has no folder of
# its own configured. The hub accepts the folder they offer, stores it under
# its home, and relays: a change on any spoke reaches all the others, and
# concurrent edits on two spokes end as the same conflict copy everywhere.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

make_node hub
"$M" config set hub true --home "$T/hub" >/dev/null
HUB=$(id hub)
start hub
# Spokes dial this address: keep it across the hub's restart.
"$M" config set listen "$(addr hub)" --home "$T/hub" >/dev/null
for n in 1 2 3 4; do
  make_node s$n
  mkdir -p "$T/f$n"
  "$M" peer add "$(id s$n)" dynamic --name "spoke-$n" --home "$T/hub" >/dev/null
  "$M" peer add "$HUB" "$(addr hub)" --name hub --home "$T/s$n" >/dev/null
  "$M" folder add "$T/f$n" --id team --home "$T/s$n" >/dev/null
  "$M" folder share team "$HUB" --home "$T/s$n" >/dev/null
done
mkdir -p "$T/f1/plans"
echo "from spoke 1" >"$T/f1/plans/q1.txt"
for n in 1 2 3 4; do start s$n; done

echo "== the hub accepts the folder and relays spoke 1's files to every spoke"
wait_for "the hub stores the folder" test -f "$T/hub/folders/team/plans/q1.txt"
for n in 2 3 4; do wait_for "spoke 1's files reach spoke $n" same_tree "$T/f1" "$T/f$n"; done
api hub /api/folders | matches '"id": "team"' || fail "the hub's API does not list the folder"

echo "== a change on spoke 3 reaches spoke 1"
echo "from spoke 3" >"$T/f3/notes.txt"
wait_for "spoke 3's file reaches spoke 1" test -f "$T/f1/notes.txt"

echo "== concurrent edits on two spokes while the hub is down"
stop hub
echo "spoke 2 says" >"$T/f2/plans/q1.txt"
echo "spoke 4 says" >"$T/f4/plans/q1.txt"
start hub
for n in 2 3 4; do wait_for "spoke $n converges with spoke 1" same_tree "$T/f1" "$T/f$n"; done
copies=$(ls "$T/f1/plans" | grep -c '^q1\.conflict-' || true)
[ "$copies" -eq 1 ] || fail "expected one conflict copy, found $copies"

for n in hub s1 s2 s3 s4; do stop $n; done
echo "PASS"
