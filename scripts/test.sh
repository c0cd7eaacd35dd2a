#!/usr/bin/env bash
# Installs what is needed, builds the test preset (ASan + UBSan, warnings as
# errors) and runs every test; then builds the libFuzzer targets with clang
# and runs each briefly, and checks formatting.
#
#   MESHSYNC_PROPERTY_CASES  random cases per convergence property (2000)
#   MESHSYNC_FUZZ_SECONDS    seconds per fuzz target (30)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

cases=${MESHSYNC_PROPERTY_CASES:-2000}
fuzz_seconds=${MESHSYNC_FUZZ_SECONDS:-30}

echo "== format check"
mapfile -t sources < <(git ls-files '*.cc' '*.h')
clang-format --dry-run -Werror "${sources[@]}"

echo "== build (debug: ASan + UBSan)"
cmake --preset debug -DMESHSYNC_PROPERTY_CASES="$cases" >/dev/null
cmake --build --preset debug

echo "== build (release: what the main job runs; -O3 warns differently)"
cmake --preset release >/dev/null
cmake --build --preset release --target meshsync

echo "== fuzz targets (clang, libFuzzer)"
root=$(pwd)
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
for target in build/fuzz/fuzz/*_fuzzer; do
  name=$(basename "$target")
  work=$(mktemp -d)
  mkdir "$work/corpus"
  echo "-- $name"
  # A finding keeps its whole report and the input (od -c) in the log, so a
  # CI failure can be reproduced from the log alone.
  if ! (cd "$work" && "$root/$target" -max_total_time="$fuzz_seconds" -print_final_stats=0 \
          corpus "$root/fuzz/corpus/$name" >log 2>&1); then
    grep -v '^#[0-9]' "$work/log" | tail -n 60
    for finding in "$work"/crash-* "$work"/leak-* "$work"/oom-* "$work"/timeout-*; do
      [[ -e $finding ]] && { echo "input $(basename "$finding"):"; od -An -c "$finding" | head -n 40; }
    done
    rm -rf "$work"
    echo "fuzz target $name found a failing input" >&2
    exit 1
  fi
  tail -n 1 "$work/log"
  rm -rf "$work"
done

echo "== tests"
ctest --preset debug
