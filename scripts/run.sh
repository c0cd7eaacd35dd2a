#!/usr/bin/env bash
# Installs what is needed, builds the release preset and runs the main job:
# a real sync session between replicas whose metadata lives in SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target meshsync
exec ./build/release/apps/meshsync/meshsync demo "$@"
