#!/bin/bash
#
# instr.sh [SRC] [PORT] [N]: instructions per call of the same scripts
# and cases as time.sh, counted by callgrind inside evalShaCommand only:
# the same on a busy machine, so two versions compare to the percent.
# Needs a redis-server of yours under callgrind on PORT (default 6452):
#
#   valgrind --tool=callgrind --toggle-collect=evalShaCommand \
#       --callgrind-out-file=/tmp/cg/cg.out \
#       redis-server --port 6452 --save '' --appendonly no &
#
# (CG_DIR=/tmp/cg, where the dumps go; callgrind_control signals it.)

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
F=$(realpath "${1:-$ROOT/src/ngx_http_llm_rstore_lua.c}"); P=${2:-6452}
N=${3:-2000}; CG_DIR=${CG_DIR:-/tmp/cg}
cd "$ROOT"

load() {
    perl -It/lib -MTest::LLM::Lua -e \
        'my %l = lua_scripts($ARGV[0], "", $ARGV[1]); print $l{$ARGV[1]}' \
        "$F" "$1" | redis-cli -p "$P" -x script load
}

PID=$(redis-cli -p "$P" info server | grep process_id | tr -dc 0-9)

run() {
    local name=$1; shift
    redis-cli -p "$P" config resetstat >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    redis-benchmark -p "$P" -n "$N" -c 1 -q "$@" >/dev/null
    rm -f "$CG_DIR"/cg.out.*
    callgrind_control -d "$PID" >/dev/null 2>&1
    sleep 0.3
    local f=$(ls "$CG_DIR"/cg.out.* | tail -1)
    local ir=$(grep '^summary:' "$f" | awk '{print $2}')
    local st=$(redis-cli -p "$P" info commandstats | grep evalsha)
    local calls=$(echo "$st" | grep -o 'calls=[0-9]*' | head -1 | cut -d= -f2)
    printf "%-8s instructions/call=%7d %s\n" "$name" $((ir / calls)) \
        "$(echo "$st" | grep -o 'failed_calls=[0-9]*')"
}

B=$(load batch); A=$(load admit); S=$(load settle); R=$(load replay)
redis-cli -p "$P" flushall >/dev/null
RQ="l1 0 1 l2 0 1 l3 0 1 l4 0 1 l5 0 1 l6 0 1"
run batch evalsha $B 3 "{a}c" "{a}k" "{a}w" 0 60000 0 60000 1000000000 $RQ
run admit evalsha $A 3 "{a}c" "{a}k" "{a}w" 0 l1 60000 0 0 \
    60000 1000000000 1
NOW=$(redis-cli -p "$P" time | head -1)000
run settle evalsha $S 1 "{a}w" $NOW 60000 5
run settleN evalsha $S 1 "{a}w" $NOW 60000 -1
run replay -r 100000000 evalsha $R 2 "{a}m:__rand_int__" "{a}w" 60000 \
    $NOW 60000 2
redis-cli -p "$P" flushall >/dev/null
run admit3 -r 1000000 evalsha $A 5 "{b}c" "{b}k" "{b}w1" "{b}w2" "{b}w3" \
    100000 l__rand_int__ 60000 5000 0 60000 1000000000 1 \
    3600000 1000000000 100 0 1000000000 100
