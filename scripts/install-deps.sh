#!/usr/bin/env bash
# Installs every Debian package meshsync needs to build, test and benchmark.
# Idempotent: packages already present are left alone, and apt is only asked
# when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libsqlite3-dev libssl-dev sqlite3
  libgtest-dev libgmock-dev librapidcheck-dev
  clang libclang-rt-14-dev          # libFuzzer targets
  libexpat1-dev                     # XML parsing for FeedSync feeds
  libpq-dev postgresql              # the PostgreSQL provider, and a real server for its tests
  libboost-dev                      # Boost.Asio (with OpenSSL) for the node's network protocol
  libprotobuf-dev protobuf-compiler # the node's wire messages
  libzstd-dev                       # compression of metadata on the wire
  libtomlplusplus-dev               # the node's configuration file
  python3 python3-feedparser        # an independent check of the feeds we write
  time                              # /usr/bin/time for peak RSS in bench/
  curl                              # the node's API in tests
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
