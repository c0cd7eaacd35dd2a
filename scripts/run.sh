#!/usr/bin/env bash
# Installs what is needed, builds the release preset and runs the main job:
# two folders kept in sync by `meshsync sync`, with their metadata in the
# embedded SQLite store (DIR/.meshsync/meta.db).
#
#   ./scripts/run.sh                 a walk-through on two new folders under /tmp
#   ./scripts/run.sh DIR_A DIR_B     sync two folders of your own (options follow)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target meshsync
meshsync=$PWD/build/release/apps/meshsync/meshsync
if [[ $# -ge 2 ]]; then
  exec "$meshsync" sync "$@"
fi

work=$(mktemp -d /tmp/meshsync-main.XXXXXX)
laptop=$work/laptop
desktop=$work/desktop
mkdir -p "$laptop/notes" "$laptop/photos/2026" "$desktop"
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ meshsync %s\n' "$*"; "$meshsync" "$@"; }

echo "Shopping: milk, bread" >"$laptop/notes/todo.txt"
echo "Draft of the report" >"$laptop/notes/report.md"
head -c 3000000 /dev/urandom >"$laptop/photos/2026/beach.jpg"
ln -s notes/todo.txt "$laptop/todo-link"
echo "only on the desktop" >"$desktop/desktop.txt"

say "First sync: each folder becomes a replica; both sides' files meet"
run sync "$laptop" "$desktop"

say "Offline: the laptop renames a folder and edits the report; the desktop edits the todo list
   and also the report; the laptop deletes the desktop's file"
mv "$laptop/photos" "$laptop/pictures"
echo "Report, laptop edit" >"$laptop/notes/report.md"
echo "Report, desktop edit" >"$desktop/notes/report.md"
echo "Shopping: milk, bread, coffee" >"$desktop/notes/todo.txt"
rm "$laptop/desktop.txt"
run sync "$laptop" "$desktop" --preview
run sync "$laptop" "$desktop"

say "The folders are identical; the losing report edit is kept as a conflict copy on both"
diff -r --no-dereference -x .meshsync "$laptop" "$desktop" && echo "identical"
ls "$desktop/notes"
run conflicts "$desktop"
run trash list "$desktop"
run status "$laptop"
echo
echo "folders kept in $work"
