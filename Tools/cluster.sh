#!/usr/bin/env bash
# Installs what Shoal needs on a fresh Debian machine with the Swift toolchain, builds it, and
# runs a local network on 127.0.0.1: N nodes (default 3). Node 0 starts alone; every other node
# is given only node 0 (--peer) and finds the rest through hive gossip, then dials them itself.
# Node i listens on 127.0.0.1:(1634+2i) with its HTTP API on 127.0.0.1:(1633+2i); data goes to
# ./.tmp-cluster/node-i, its log to ./.tmp-cluster/node-i.log. All nodes connect from the one
# address 127.0.0.1, so the inbound limits per IP and per /24 are raised to fit N nodes.
# Ctrl-C (or SIGTERM) stops them gracefully.
#
#   Tools/cluster.sh [N]
#   curl -s --data-binary @chunk.bin http://127.0.0.1:1633/chunks   # span (8 bytes LE) ‖ payload
#   curl -s http://127.0.0.1:1637/status                             # the third node: depth, peers
#   curl -s http://127.0.0.1:1637/peers                              # its connected peers
#
# With fewer than 5 nodes every node has fewer than 4 peers, so depth stays 0 and each node keeps
# everything; from 5 nodes on a node keeps its neighbourhood (Docs/Topology.md).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]] || [ "$N" -gt 200 ]; then
  echo "usage: Tools/cluster.sh [N]   (1 ≤ N ≤ 200)" >&2; exit 64
fi

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

# Every node may be connected to every other, all from 127.0.0.1 (defaults: 16 per IP, 48 per /24).
inbound=$((2 * N + 16))
limits=(--inbound-per-ip-max "$inbound" --inbound-per-subnet-max "$inbound" --inbound-max "$((inbound > 256 ? inbound : 256))")

pids=()
stop() {
  echo; echo "stopping ${#pids[@]} nodes …"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  exit 0
}
trap stop INT TERM

bootstrap="127.0.0.1:1634"
for ((i = 0; i < N; i++)); do
  listen="127.0.0.1:$((1634 + 2 * i))"
  api="127.0.0.1:$((1633 + 2 * i))"
  peer=()
  [ "$i" -gt 0 ] && peer=(--peer "$bootstrap")
  "$BIN/shoal" start --data-dir "$ROOT/node-$i" --listen "$listen" --api "$api" "${peer[@]}" "${limits[@]}" \
    2>>"$ROOT/node-$i.log" &
  pids+=($!)
  sleep 0.3
done
echo "network of $N nodes running, each told only of node 0 at $bootstrap (logs in $ROOT/node-*.log);"
echo "APIs on ports 1633, 1635, …; GET /status shows depth and peers; Ctrl-C stops"
wait
