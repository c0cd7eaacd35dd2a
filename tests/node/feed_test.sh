#!/usr/bin/env bash
# The daemon serves a folder as a FeedSync Atom feed (complete and partial)
# and merges a feed posted back into the folder: edits, new files and
# deletes written as a user would, a concurrent edit kept as a FeedSync
# conflict, and hostile feeds (unsafe paths, DTDs, garbage, missing content)
# refused with nothing written. python3-feedparser reads the feeds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

make_node a
mkdir -p "$T/fa/sub"
printf 'buy milk' >"$T/fa/todo.txt"
head -c 301 /dev/urandom >"$T/fa/sub/bin.dat"
head -c $((2 << 20)) /dev/urandom >"$T/fa/big.bin"
"$M" folder add "$T/fa" --id notes --home "$T/a" >/dev/null
start a
KEY=$(key a)
URL="http://$(cat "$T/a/api-listening")/api/feed?folder=notes"
get() { curl -sf -H "X-API-Key: $KEY" "$URL$1"; }
post() {  # post FILE: prints the body; the HTTP status goes to $T/status
  curl -s -o "$T/reply.json" -w '%{http_code}' -H "X-API-Key: $KEY" \
    -H 'Content-Type: application/atom+xml' --data-binary "@$1" "$URL" >"$T/status"
  cat "$T/reply.json"
}
tree_sum() { (cd "$T/fa" && find . -path ./.meshsync -prune -o -type f -print0 | sort -z | xargs -0 md5sum); }

# feed.py FEED: checks a feed with feedparser and prints "path|deleted|content" per entry.
cat >"$T/feed.py" <<'EOF'
import base64, sys, feedparser, xml.etree.ElementTree as ET
path = sys.argv[1]
parsed = feedparser.parse(path)
assert not parsed.bozo, parsed.bozo_exception
ns = {"a": "http://www.w3.org/2005/Atom", "sx": "http://feedsync.org/2007/feedsync"}
for entry in ET.parse(path).getroot().findall("a:entry", ns):
    sync = entry.find("sx:sync", ns)
    content = entry.find("a:content", ns)
    text = "-"
    if content is not None:
        text = content.text or ""
        if content.get("type") == "application/octet-stream":
            text = "base64:%d" % len(base64.b64decode(text))
    print("%s|%s|%s" % (entry.find("a:title", ns).text, sync.get("deleted", "false"), text))
EOF

# edit.py IN OUT BY [path=content | path=DELETE]...: FeedSync updates (3.2)
# and creates as endpoint BY, the way another client would.
cat >"$T/edit.py" <<'EOF'
import sys, datetime, xml.etree.ElementTree as ET
A, SX = "http://www.w3.org/2005/Atom", "http://feedsync.org/2007/feedsync"
ET.register_namespace("", A); ET.register_namespace("sx", SX)
src, out, by = sys.argv[1:4]
tree = ET.parse(src); root = tree.getroot()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
entries = {e.find("{%s}sync" % SX).get("id"): e for e in root.findall("{%s}entry" % A)}
for change in sys.argv[4:]:
    path, value = change.split("=", 1)
    entry = entries.get(path)
    if entry is None:
        entry = ET.SubElement(root, "{%s}entry" % A)
        ET.SubElement(entry, "{%s}title" % A).text = path
        ET.SubElement(entry, "{%s}content" % A, type="text")
        sync = ET.SubElement(entry, "{%s}sync" % SX, id=path, updates="0")
    sync = entry.find("{%s}sync" % SX)
    if value == "DELETE":
        sync.set("deleted", "true")
    elif value.startswith("b64:"):
        entry.find("{%s}content" % A).set("type", "application/octet-stream")
        entry.find("{%s}content" % A).text = value[4:]
    else:
        entry.find("{%s}content" % A).text = value
    updates = int(sync.get("updates")) + 1
    sync.set("updates", str(updates))
    history = ET.Element("{%s}history" % SX, sequence=str(updates), when=now, by=by)
    sync.insert(0, history)
tree.write(out, xml_declaration=True, encoding="utf-8")
EOF

echo "== the complete feed"
get "" >"$T/full.atom"
/usr/bin/python3 "$T/feed.py" "$T/full.atom" | sort >"$T/full.txt"
cat "$T/full.txt"
grep -qx 'todo.txt|false|buy milk' "$T/full.txt" || fail "todo.txt is not in the feed"
grep -qx 'sub/bin.dat|false|base64:301' "$T/full.txt" || fail "the binary file is not in the feed"
grep -qx 'sub|false|-' "$T/full.txt" || fail "the folder is not in the feed"
grep -qx 'big.bin|false|-' "$T/full.txt" || fail "the large file is carried or missing"
until=$(sed -n 's/.*<sx:sharing[^>]*until="\([0-9]*\)".*/\1/p' "$T/full.atom")
[ -n "$until" ] || fail "the feed has no sx:sharing until"

echo "== a partial feed: only what changed since"
printf 'buy milk and bread' >"$T/fa/todo.txt"
get "&since=$until" >"$T/partial.atom"
/usr/bin/python3 "$T/feed.py" "$T/partial.atom" >"$T/partial.txt"
cat "$T/partial.txt"
[ "$(cat "$T/partial.txt")" = "todo.txt|false|buy milk and bread" ] || fail "the partial feed"
grep -q "since=\"$until\"" "$T/partial.atom" || fail "the partial feed does not say since"
grep -q 'type="complete"' "$T/partial.atom" || fail "the partial feed does not link the complete one"

echo "== a feed posted back: an edit, a new file, a delete"
get "" >"$T/now.atom"
/usr/bin/python3 "$T/edit.py" "$T/now.atom" "$T/post1.atom" phone \
  "todo.txt=buy eggs" "new/note.txt=from the phone" "sub/bin.dat=DELETE" "new/two.dat=b64:AAEC/w=="
post "$T/post1.atom" | tee "$T/post1.json"
[ "$(cat "$T/status")" = 200 ] || fail "the post was refused: $(cat "$T/reply.json")"
grep -q '"written": 3, "deleted": 1' "$T/post1.json" || fail "the post did not write 3 and delete 1"
[ "$(od -An -tx1 "$T/fa/new/two.dat" | tr -d ' ')" = 000102ff ] || fail "new/two.dat: bad bytes"
[ "$(cat "$T/fa/todo.txt")" = "buy eggs" ] || fail "todo.txt was not written"
[ "$(cat "$T/fa/new/note.txt")" = "from the phone" ] || fail "new/note.txt was not written"
[ ! -e "$T/fa/sub/bin.dat" ] || fail "sub/bin.dat was not deleted"
[ -n "$(find "$T/fa/.meshsync/trash" -name bin.dat)" ] || fail "the deleted file is not in the trash"
[ -n "$(find "$T/fa/.meshsync/trash" -name todo.txt)" ] || fail "the overwritten file is not in the trash"
post "$T/post1.atom" >/dev/null
grep -q '"written": 0, "deleted": 0' "$T/reply.json" || fail "posting the same feed again wrote"
get "" >"$T/after.atom"
/usr/bin/python3 "$T/feed.py" "$T/after.atom" >"$T/after.txt"
grep -qx 'todo.txt|false|buy eggs' "$T/after.txt" || fail "the feed after the post"
grep -q 'by="phone"' "$T/after.atom" || fail "the phone's history is not kept"

echo "== a deleted folder that still holds live files stays, and is published again"
get "" >"$T/dirs.atom"
/usr/bin/python3 "$T/edit.py" "$T/dirs.atom" "$T/rmdir.atom" phone "new=DELETE"
post "$T/rmdir.atom" >/dev/null
grep -q '"deleted": 0' "$T/reply.json" || fail "the folder delete: $(cat "$T/reply.json")"
[ -f "$T/fa/new/note.txt" ] || fail "deleting a folder lost the files in it"
get "" >"$T/dirs2.atom"
/usr/bin/python3 "$T/feed.py" "$T/dirs2.atom" >"$T/dirs2.txt"
grep -qx 'new|false|-' "$T/dirs2.txt" \
  || fail "the folder that stayed is not live in the feed again"
rm -f "$T/fa/sub/"* 2>/dev/null || true
get "" >"$T/dirs3.atom"
/usr/bin/python3 "$T/edit.py" "$T/dirs3.atom" "$T/rmdir2.atom" phone "sub=DELETE"
post "$T/rmdir2.atom" >/dev/null
grep -q '"deleted": 1' "$T/reply.json" || fail "an empty folder was not deleted"
[ ! -e "$T/fa/sub" ] || fail "the empty folder is still there"

echo "== a concurrent edit: one version wins the file, the other is an sx:conflict"
/usr/bin/python3 "$T/edit.py" "$T/after.atom" "$T/post2.atom" phone "todo.txt=phone version"
printf 'desktop version' >"$T/fa/todo.txt"
post "$T/post2.atom" >/dev/null
[ "$(cat "$T/status")" = 200 ] || fail "the concurrent post was refused: $(cat "$T/reply.json")"
get "" >"$T/conflict.atom"
grep -q "<sx:conflicts>" "$T/conflict.atom" || fail "the concurrent edit left no sx:conflicts"
for version in "phone version" "desktop version"; do
  grep -q "$version" "$T/conflict.atom" || fail "the feed lost '$version'"
done
case "$(cat "$T/fa/todo.txt")" in
  "phone version" | "desktop version") ;;
  *) fail "todo.txt holds neither version" ;;
esac

echo "== hostile feeds are refused and write nothing"
get "" >"$T/current.atom"
before=$(tree_sum)
refused() {  # refused NAME REASON: the post of $T/NAME.atom gets 4xx naming REASON
  post "$T/$1.atom" >/dev/null
  case "$(cat "$T/status")" in 4*) ;; *) fail "$1 was accepted: $(cat "$T/reply.json")" ;; esac
  grep -q "$2" "$T/reply.json" || fail "$1: $(cat "$T/reply.json")"
}
/usr/bin/python3 "$T/edit.py" "$T/current.atom" "$T/escape.atom" evil "todo.txt=fine" "../outside.txt=x"
refused escape "does not name a file in the folder"
/usr/bin/python3 "$T/edit.py" "$T/current.atom" "$T/absolute.atom" evil "%2Ftmp%2Fx=x"
refused absolute "does not name a file in the folder"
/usr/bin/python3 "$T/edit.py" "$T/current.atom" "$T/meta.atom" evil ".meshsync/config=x"
refused meta "metadata folder"
/usr/bin/python3 "$T/edit.py" "$T/current.atom" "$T/nocontent.atom" evil "todo.txt=x"
sed -i 's|<content type="text">x</content>||' "$T/nocontent.atom"
refused nocontent "has no atom:content"
cat >"$T/dtd.atom" <<'EOF'
<?xml version="1.0"?>
<!DOCTYPE feed [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<feed xmlns="http://www.w3.org/2005/Atom"><title>&x;</title></feed>
EOF
refused dtd "DTD"
echo "this is not a feed" >"$T/garbage.atom"
refused garbage "malformed XML"
[ "$before" = "$(tree_sum)" ] || fail "a refused feed changed the folder"
[ ! -e "$T/outside.txt" ] || fail "a feed wrote outside the folder"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" \
  "http://$(cat "$T/a/api-listening")/api/feed?folder=nope")
[ "$code" = 404 ] || fail "an unknown folder answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL")
[ "$code" = 401 ] || fail "a request without the key answered $code"
stop a
echo "PASS"
