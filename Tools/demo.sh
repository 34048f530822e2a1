#!/usr/bin/env bash
# Installs what Shoal needs on a fresh Debian machine with the Swift toolchain, fills a store
# with random chunks through the release benchmark, and prints the inspector's summary of it.
# Usage: Tools/demo.sh [CHUNKS] [DIR]     (defaults: 100000 chunks under ./.tmp-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-100000}
DIR=${2:-$PWD/.tmp-demo}

need=()
pkg-config --exists lmdb 2>/dev/null || need+=(liblmdb-dev)
command -v mdb_stat >/dev/null 2>&1 || need+=(lmdb-utils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi

for product in shoal-bench lmdb-inspect; do swift build -c release --product "$product" 2>&1 | tail -n 1; done
BIN=$(swift build -c release --show-bin-path)
rm -rf "$DIR" && mkdir -p "$DIR"
"$BIN/shoal-bench" store --chunks "$CHUNKS" --dir "$DIR" --keep --no-lmdb
# The bench makes a scratch directory inside DIR; its group-committed store is what we show.
STORE=$(find "$DIR" -path '*/group/data.mdb' -printf '%h\n' | head -n 1)
echo
"$BIN/lmdb-inspect" summary "$STORE"
"$BIN/lmdb-inspect" verify "$STORE"
echo
echo "The store is in $STORE; outside check: mdb_stat -a $STORE"
