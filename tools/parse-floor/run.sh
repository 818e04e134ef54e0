#!/bin/sh
#
# Compares the gateway's request parsing with simdjson on the same chat
# body: builds t/unit/llm_unit (if needed) and tools/parse-floor/floor.cc,
# then prints both.  Needs g++ and libsimdjson-dev.
#
#   tools/parse-floor/run.sh

set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
OUT=$ROOT/build/parse-floor

mkdir -p "$OUT"

sh "$ROOT/t/unit/build.sh" >/dev/null

g++ -O2 -std=c++17 -o "$OUT/parse-floor" "$ROOT/tools/parse-floor/floor.cc" \
    -lsimdjson

"$ROOT/build/unit/llm_unit" chat-body > "$OUT/body.json"
"$ROOT/build/unit/llm_unit" bench \
    | sed -n '/^parse_request/,/estimate of its/p'
"$OUT/parse-floor" "$OUT/body.json"
