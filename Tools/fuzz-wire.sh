#!/usr/bin/env bash
# Fuzz the wire decoder for a bounded time (Docs/Protocol.md §10).
#
#   Tools/fuzz-wire.sh [SECONDS]      # default 60
#
# Builds Tools/shoal-wire-fuzz as a libFuzzer binary (release, fuzzer + address sanitizers,
# its own scratch path .build-fuzz), then runs it for SECONDS on a temporary copy of the
# committed corpus, so the corpus in the repository only changes when someone copies new
# inputs in on purpose. Exits non-zero when the fuzzer finds a crash, a leak or a timeout; the
# input that triggered it is kept in $FUZZ_ARTIFACTS (default .build-fuzz/artifacts) and the
# path is printed.
#
# Environment: FUZZ_ARTIFACTS (where crash inputs go), FUZZ_MAX_LEN (largest input, default
# 80000: it holds the largest hive `peers` frame, 73 508 bytes, and deliveries of up to 17 full
# chunks; a delivery of 64 full chunks, 262 796 bytes, is left to the corpus and the unit tests,
# as inputs that long make each fuzzing step slow).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
max_len="${FUZZ_MAX_LEN:-80000}"
artifacts="${FUZZ_ARTIFACTS:-$PWD/.build-fuzz/artifacts}"
corpus_src="Tests/ShoalWireTests/Corpus"

echo "=== building shoal-wire-fuzz (fuzzer + address sanitizers)"
# The build gets its own (generous) bound too, so CI never hangs here.
timeout 3600 swift build -c release --sanitize fuzzer --sanitize address \
    --scratch-path .build-fuzz --product shoal-wire-fuzz -Xswiftc -DSHOAL_FUZZING 2>&1 | tail -n 3
fuzzer="$(swift build -c release --scratch-path .build-fuzz --show-bin-path)/shoal-wire-fuzz"
[ -x "$fuzzer" ] || { echo "fuzz-wire: $fuzzer was not built" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/shoal-fuzz-wire.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
cp "$corpus_src"/* "$work/corpus/"

echo "=== fuzzing for ${seconds}s, $(ls "$work/corpus" | wc -l) seed inputs"
status=0
# SWIFT_BACKTRACE=enable=no: otherwise the Swift backtracer runs first on a crash and ASan
# reports a false error inside it. The outer timeout is a backstop for -max_total_time.
SWIFT_BACKTRACE=enable=no timeout --kill-after=30 "$((seconds + 120))" \
    "$fuzzer" "$work/corpus" \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$work/fuzz.log" 2>&1 || status=$?

if [ "$status" -ne 0 ]; then
    tail -n 120 "$work/fuzz.log" >&2
    echo "fuzz-wire: the fuzzer failed (exit $status); the input that did it is in $artifacts:" >&2
    ls -l "$artifacts" >&2 || true
    echo "replay it with: SWIFT_BACKTRACE=enable=no $fuzzer $artifacts/<file>" >&2
    exit 1
fi
grep -E '^(Done|stat::)' "$work/fuzz.log" || tail -n 5 "$work/fuzz.log"
echo "fuzz-wire: no crash in ${seconds}s"
