#!/usr/bin/env bash
# Installs what Shoal needs on a fresh Debian machine with the Swift toolchain, builds it, and
# runs a local cluster on 127.0.0.1: N nodes (default 3) in a line, node i dialling node i-1.
# Node i listens on 127.0.0.1:(1634+2i) with its HTTP API on 127.0.0.1:(1633+2i); data goes to
# ./.tmp-cluster/node-i. Ctrl-C (or SIGTERM) stops them gracefully.
#
#   Tools/cluster.sh [N]
#   curl -s --data-binary @chunk.bin http://127.0.0.1:1633/chunks   # span (8 bytes LE) ‖ payload
#   curl -s http://127.0.0.1:1637/status                             # the third node
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}

need=()
pkg-config --exists lmdb 2>/dev/null || need+=(liblmdb-dev)
pkg-config --exists libisal 2>/dev/null || need+=(libisal-dev)
command -v mdb_stat >/dev/null 2>&1 || need+=(lmdb-utils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi

swift build -c release --product shoal 2>&1 | tail -n 1
BIN=$(swift build -c release --show-bin-path)
ROOT=$PWD/.tmp-cluster
mkdir -p "$ROOT"

pids=()
stop() {
  echo; echo "stopping ${#pids[@]} nodes …"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit 0
}
trap stop INT TERM

for ((i = 0; i < N; i++)); do
  listen="127.0.0.1:$((1634 + 2 * i))"
  api="127.0.0.1:$((1633 + 2 * i))"
  peer=()
  [ "$i" -gt 0 ] && peer=(--peer "127.0.0.1:$((1634 + 2 * (i - 1)))")
  "$BIN/shoal" start --data-dir "$ROOT/node-$i" --listen "$listen" --api "$api" "${peer[@]}" \
    2>>"$ROOT/node-$i.log" &
  pids+=($!)
  sleep 0.3
done
echo "cluster of $N nodes running (logs in $ROOT/node-*.log); APIs on ports 1633, 1635, …; Ctrl-C to stop"
wait
