#!/usr/bin/env bash
# The feed commands as a user runs them: two endpoints edit a feed offline,
# merge, find a conflict, resolve it; hostile feeds are refused with a clear
# error and leave every file untouched; the feeds we write parse cleanly with
# an independent reader (Debian's python3-feedparser); two feeds sync.
set -euo pipefail
source "$(dirname "$0")/../shell/matches.sh"
meshsync=$1
work=$(mktemp -d /tmp/meshsync-feed-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Endpoint EP1 makes a feed; EP2 starts from a copy of it.
id=$("$meshsync" feed create ep1.atom --by EP1 --title "Buy milk" --content "two litres")
"$meshsync" feed create ep1.atom --by EP1 --id call-mum --title "Call mum" >/dev/null
cp ep1.atom ep2.atom
# Offline: both edit the same item; EP2 also adds one.
"$meshsync" feed update ep1.atom "$id" --by EP1 --title "Buy oat milk"
sleep 1  # FeedSync times are whole seconds: EP2's edit is the later one
"$meshsync" feed update ep2.atom "$id" --by EP2 --title "Buy soy milk"
"$meshsync" feed create ep2.atom --by EP2 --id bread --title "Bread" >/dev/null
"$meshsync" feed delete ep2.atom call-mum --by EP2

"$meshsync" feed merge ep1.atom ep2.atom --json >out.json
grep -q '"added":1,"updated":2,"unchanged":0,"conflicts":1,"items":3' out.json ||
  fail "merge summary: $(cat out.json)"
"$meshsync" feed show ep1.atom >show.txt
grep -q '"Buy soy milk"' show.txt || fail "the later edit should win: $(cat show.txt)"
grep -q 'conflict 1: "Buy oat milk"' show.txt || fail "the loser should be a conflict: $(cat show.txt)"
grep -q 'call-mum  updates 2  DELETED' show.txt || fail "delete not merged: $(cat show.txt)"
# Merging again changes nothing; merging the other way agrees.
"$meshsync" feed merge ep1.atom ep2.atom --json | matches '"updated":0' || fail "merge not idempotent"
"$meshsync" feed merge ep2.atom ep1.atom -o ep2-merged.atom >/dev/null
"$meshsync" feed show ep2-merged.atom --json >a.json
"$meshsync" feed show ep1.atom --json >b.json
/usr/bin/python3 - a.json b.json <<'PY' || fail "merging both ways disagrees"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
key = lambda feed: {i["id"]: i for i in feed["items"]}
sys.exit(0 if key(a) == key(b) else 1)
PY

# Resolve as EP1, keeping EP1's own version (conflict 1).
"$meshsync" feed resolve ep1.atom "$id" --by EP1 --keep 1
"$meshsync" feed show ep1.atom >show.txt
grep -q '"Buy oat milk"' show.txt || fail "resolution did not keep conflict 1: $(cat show.txt)"
! grep -q conflict show.txt || fail "conflicts remain: $(cat show.txt)"
if "$meshsync" feed resolve ep1.atom "$id" --by EP1 2>err.txt; then fail "resolving nothing accepted"; fi
"$meshsync" feed merge ep2.atom ep1.atom >/dev/null
"$meshsync" feed show ep2.atom | matches '"Buy oat milk"' || fail "resolution did not spread"
! "$meshsync" feed show ep2.atom | matches conflict || fail "resolution left conflicts on EP2"

# Usage errors.
if "$meshsync" feed update ep1.atom "$id" --title x 2>err.txt; then fail "--by missing accepted"; fi
grep -q -- "--by" err.txt || fail "missing --by not explained: $(cat err.txt)"
if "$meshsync" feed update ep1.atom no-such --by EP1 2>/dev/null; then fail "unknown item accepted"; fi
if "$meshsync" feed create ep1.atom --by EP1 --id "has space" 2>/dev/null; then fail "bad id accepted"; fi
if "$meshsync" feed create ep1.atom --by EP1 --set "bad name=x" 2>/dev/null; then fail "bad field accepted"; fi

# Hostile incoming feeds: a clear error, a non-zero exit, nothing written.
head='<rss version="2.0" xmlns:sx="http://feedsync.org/2007/feedsync"><channel><title>t</title>'
item() { echo "<item><title>x</title><sx:sync id=\"a\" updates=\"$1\">$2</sx:sync></item>"; }
echo '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss version="2.0"><channel><title>&x;</title></channel></rss>' >xxe.xml
{ echo '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
  prev=a
  for n in 1 2 3 4 5 6 7 8 9; do echo "<!ENTITY a$n \"$(printf "&$prev;%.0s" {1..10})\">"; prev=a$n; done
  echo ']><rss version="2.0"><channel><title>&a9;</title></channel></rss>'; } >laughs.xml
echo "$head$(item 1 '')</channel></rss>" >no-history.xml
echo "$head$(item 1 '<sx:history sequence="1" when="11-05-2007T19:33:27Z"/>')</channel></rss>" >bad-date.xml
echo "$head$(item -3 '<sx:history sequence="1" by="e"/>')</channel></rss>" >negative.xml
echo "$head$(item 123456789012345678901234567890 '<sx:history sequence="1" by="e"/>')</channel></rss>" >huge.xml
{ echo -n "$head<item>"; for _ in $(seq 5000); do echo -n "<x>"; done; } >deep.xml
head -c 1000 /dev/urandom >garbage.xml
{ echo -n "$head"; } >huge-file.xml
truncate -s 1G huge-file.xml  # sparse: refused before it is read
before=$(sha256sum ep1.atom)
for bad in xxe laughs no-history bad-date negative huge deep garbage huge-file; do
  if "$meshsync" feed merge ep1.atom $bad.xml -o out-$bad.atom 2>err.txt; then fail "$bad accepted"; fi
  [[ $(wc -l <err.txt) -eq 1 ]] || fail "$bad: the error is not one line: $(cat err.txt)"
  [[ ! -e out-$bad.atom ]] || fail "$bad: an output file was written"
  if "$meshsync" feed merge ep1.atom $bad.xml 2>/dev/null; then fail "$bad accepted"; fi
  [[ "$(sha256sum ep1.atom)" == "$before" ]] || fail "$bad: the local feed changed"
done
grep -q "DTD" <("$meshsync" feed merge ep1.atom xxe.xml 2>&1) || fail "XXE not explained"
ls -A | matches tmp- && fail "a temporary file was left behind"

# An independent reader parses what we write, in both bindings.
"$meshsync" feed create list.rss --by EP1 --title "Eggs" --content "a dozen" >/dev/null
"$meshsync" feed create list.rss --by EP1 --title "Tea & <biscuits>" >/dev/null
/usr/bin/python3 - ep1.atom list.rss <<'PY' || fail "feedparser does not read our feeds cleanly"
import feedparser, sys
for path, titles in ((sys.argv[1], {"Buy oat milk", "Call mum", "Bread"}),
                     (sys.argv[2], {"Eggs", "Tea & <biscuits>"})):
    d = feedparser.parse(path)
    assert not d.bozo, (path, d.bozo_exception)
    assert d.version in ("atom10", "rss20"), d.version
    got = {e.title for e in d.entries}
    assert got == titles, (path, got)
PY

# Two feed files synced through the engine, then edited and synced again
# (call-mum is a tombstone in ep1.atom: nothing to create from it).
"$meshsync" feed sync ep1.atom list.rss --json >sync.json
grep -q '"a_to_b":{"created":2,' sync.json || fail "sync: $(cat sync.json)"
"$meshsync" feed show list.rss | matches '"Buy oat milk"' || fail "sync did not carry items"
"$meshsync" feed update list.rss "$id" --by EP3 --title "Buy milk, any"
"$meshsync" feed sync ep1.atom list.rss >/dev/null
"$meshsync" feed show ep1.atom | matches '"Buy milk, any"' || fail "sync did not carry the edit"
if "$meshsync" feed sync ep1.atom ep1.atom 2>/dev/null; then fail "syncing a feed with itself accepted"; fi
if "$meshsync" feed sync ep1.atom garbage.xml 2>/dev/null; then fail "syncing with garbage accepted"; fi

# A feed and a folder of items: one "name: value" file per item, edited by
# hand and synced back; a file that is not a record is left alone, listed,
# and the exit status says so.
mkdir items
"$meshsync" feed sync list.rss items --json >items.json
grep -q '"a_to_b":{"created":[1-9][0-9]*,.*"errors":0}' items.json || fail "feed to folder: $(cat items.json)"
file=$(grep -l '^title: Buy milk, any$' items/*.txt) || fail "no file holds the item: $(cat items/*)"
sed -i 's/^title: Buy milk, any$/title: Buy milk, any kind/' "$file"
printf 'title: Call the plumber\ndescription: the tap\n drips\n' >items/plumber
"$meshsync" feed sync list.rss items >/dev/null
"$meshsync" feed show list.rss --json >items-feed.json
matches '"Buy milk, any kind"' <items-feed.json || fail "a hand edit did not reach the feed"
matches '"Call the plumber"' <items-feed.json || fail "a new file did not reach the feed"
/usr/bin/python3 - list.rss <<'PY' || fail "the feed after a folder sync does not parse"
import sys, feedparser
d = feedparser.parse(sys.argv[1])
assert not d.bozo, d.bozo_exception
assert "the tap\ndrips" in [e.get("description") for e in d.entries], d.entries
PY
rm items/plumber
echo "just some notes" >items/README
if "$meshsync" feed sync list.rss items 2>err.txt >/dev/null; then fail "a file that is not a record went unreported"; fi
matches 'not a record: items/README: line 1' <err.txt || fail "the bad file is not named: $(cat err.txt)"
[[ "$(cat items/README)" == "just some notes" ]] || fail "the bad file was changed"
"$meshsync" feed show list.rss | matches 'DELETED  "Call the plumber"' || fail "a removed file did not delete the item"
if "$meshsync" feed sync items/x.atom items 2>/dev/null; then fail "a feed inside the folder accepted"; fi
echo "feed cli: ok"
