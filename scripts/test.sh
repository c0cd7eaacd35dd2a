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

echo "== fuzz targets (clang, libFuzzer)"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
for target in build/fuzz/fuzz/*_fuzzer; do
  corpus="fuzz/corpus/$(basename "$target")"
  work=$(mktemp -d)
  "$target" -max_total_time="$fuzz_seconds" -print_final_stats=0 "$work" "$corpus" 2>&1 | tail -n 2
  rm -rf "$work"
done

echo "== tests"
ctest --preset debug
