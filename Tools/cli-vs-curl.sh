#!/usr/bin/env bash
# shoal upload/download against curl on the same node, interleaved rounds, RESULT lines.
# Usage: Tools/cli-vs-curl.sh BIN_DIR [SIZE_MB] [ROUNDS] (BIN_DIR: swift build -c release --show-bin-path).
# Each upload gets fresh random bytes (no chunk already stored) and the order alternates per
# round; both download the same file (shoal also fsyncs and renames it). Needs curl and bc.
set -euo pipefail
BIN=$1; SIZE_MB=${2:-256}; ROUNDS=${3:-3}
W=$(mktemp -d /tmp/clibench.XXXXXX); trap 'kill $NODE 2>/dev/null; rm -rf "$W"' EXIT
"$BIN/shoal" start --data-dir "$W/node" --listen 127.0.0.1:0 --api 127.0.0.1:0 --log-level warning > "$W/out" 2>"$W/err" & NODE=$!
for i in $(seq 100); do grep -q "API on" "$W/out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/.*API on \([^,]*\),.*/\1/p' "$W/out")
B=$((SIZE_MB<<20))
t() { local s=$(date +%s.%N); "$@" > "$W/res" 2>/dev/null; local e=$(date +%s.%N); echo "$e - $s" | bc; }
res() { echo "RESULT name=$1 bytes=$B seconds=$2 MBps=$(echo "$B/1000000/$2" | bc -l | cut -c1-6)"; }
up_shoal() { head -c $B /dev/urandom > "$W/a"; s=$(t "$BIN/shoal" upload "$W/a" --api "$API" --progress none); REF=$(cat "$W/res"); cp "$W/a" "$W/ref-bytes"; res upload-shoal $s; }
up_curl() { head -c $B /dev/urandom > "$W/b"; c=$(t curl -s -f -H "Expect:" -H "Content-Type: application/octet-stream" --data-binary @"$W/b" "http://$API/bytes"); res upload-curl $c; }
for r in $(seq $ROUNDS); do
  if (( r % 2 )); then up_shoal; up_curl; else up_curl; up_shoal; fi
  if (( r % 2 )); then
    s=$(t "$BIN/shoal" download "$REF" -o "$W/o1" --api "$API" --progress none); c=$(t curl -s -f -o "$W/o2" "http://$API/bytes/$REF")
  else
    c=$(t curl -s -f -o "$W/o2" "http://$API/bytes/$REF"); s=$(t "$BIN/shoal" download "$REF" -o "$W/o1" --api "$API" --progress none)
  fi
  cmp "$W/ref-bytes" "$W/o1"; cmp "$W/ref-bytes" "$W/o2"
  res download-shoal $s; res download-curl $c
  rm -f "$W/o1" "$W/o2"
done
head -c $B /dev/urandom > "$W/a"
/usr/bin/time -f "peak RSS shoal upload ($SIZE_MB MiB): %M KiB" "$BIN/shoal" upload "$W/a" --api "$API" --progress none >/dev/null
/usr/bin/time -f "peak RSS shoal download ($SIZE_MB MiB): %M KiB" "$BIN/shoal" download "$REF" -o "$W/o1" --api "$API" --progress none
