#!/bin/bash
#
# time.sh [SRC] [PORT] [N]: Redis's own time per call (INFO commandstats
# usec_per_call) of the rstore scripts in SRC (default the tree's
# src/ngx_http_llm_rstore_lua.c), run by redis-benchmark -c4 against a
# redis-server of yours on PORT (default 6451; it is FLUSHALLed):
#
#   batch    6 admissions of one account, 1 window
#   admit    1 window, no concurrency limit, no cooldown
#   settle   +5 to the current slot; settleN: -1
#   settles5 five settles of one window in one call (+5, -1, ...)
#   replay   a new marker each call
#   admit3   3 windows (minute, hour, calendar month), a concurrency limit
#
# Wall-clock numbers move with whatever else runs: take two runs, or
# use instr.sh (instruction counts) to compare two versions.

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
F=$(realpath "${1:-$ROOT/src/ngx_http_llm_rstore_lua.c}"); P=${2:-6451}
N=${3:-50000}
cd "$ROOT"

load() {
    perl -It/lib -MTest::LLM::Lua -e \
        'my %l = lua_scripts($ARGV[0], "", $ARGV[1]); print $l{$ARGV[1]}' \
        "$F" "$1" | redis-cli -p "$P" -x script load
}

run() {
    local name=$1; shift
    redis-cli -p "$P" config resetstat >/dev/null
    redis-benchmark -p "$P" -n "$N" -c 4 -q "$@" >/dev/null
    local st=$(redis-cli -p "$P" info commandstats | grep evalsha)
    printf "%-8s %s %s\n" "$name" \
        "$(echo "$st" | grep -o 'usec_per_call=[0-9.]*')" \
        "$(echo "$st" | grep -o 'failed_calls=[0-9]*')"
}

B=$(load batch); A=$(load admit); S=$(load settle); R=$(load replay)
SS=$(load settles)
redis-cli -p "$P" flushall >/dev/null
RQ="l1 0 1 l2 0 1 l3 0 1 l4 0 1 l5 0 1 l6 0 1"
run batch evalsha $B 3 "{a}c" "{a}k" "{a}w" 0 60000 0 60000 1000000000 $RQ
run admit evalsha $A 3 "{a}c" "{a}k" "{a}w" 0 l1 60000 0 0 \
    60000 1000000000 1
NOW=$(redis-cli -p "$P" time | head -1)000
run settle evalsha $S 1 "{a}w" $NOW 60000 5
run settleN evalsha $S 1 "{a}w" $NOW 60000 -1
run settles5 evalsha $SS 1 "{a}w" 60000 $NOW 5 $NOW -1 $NOW 5 $NOW -1 \
    $NOW 5
run replay -r 100000000 evalsha $R 2 "{a}m:__rand_int__" "{a}w" 60000 \
    $NOW 60000 2
redis-cli -p "$P" flushall >/dev/null
run admit3 -r 1000000 evalsha $A 5 "{b}c" "{b}k" "{b}w1" "{b}w2" "{b}w3" \
    100000 l__rand_int__ 60000 5000 0 60000 1000000000 1 \
    3600000 1000000000 100 0 1000000000 100
