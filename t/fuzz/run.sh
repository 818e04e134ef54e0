#!/bin/sh
#
# Runs each fuzz target for SECONDS (default 60) from its seed corpus.
# New inputs go to build/fuzz/corpus-*, never into t/fuzz/corpus; crashes
# are written to build/fuzz/ as crash-* / leak-* / timeout-*.
#
#   t/fuzz/run.sh [SECONDS] [TARGET...]     (targets: request usage bpe)

set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
OUT=$ROOT/build/fuzz
SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-request usage bpe}

[ -x "$OUT/fuzz_request" ] && [ -x "$OUT/fuzz_usage" ] \
    && [ -x "$OUT/fuzz_bpe" ] \
    || sh "$ROOT/t/fuzz/build.sh"

status=0

for t in $TARGETS; do
    mkdir -p "$OUT/corpus-$t"
    echo "==> fuzz_$t for ${SECONDS_EACH}s" >&2

    (cd "$OUT" && ASAN_OPTIONS=detect_leaks=1 \
        "./fuzz_$t" -max_total_time="$SECONDS_EACH" -max_len=65536 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$ROOT/t/fuzz/llm.dict" \
        "corpus-$t" "$ROOT/t/fuzz/corpus/$t") || status=1
done

exit $status
