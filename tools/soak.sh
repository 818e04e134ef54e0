#!/bin/sh
# tools/soak.sh: does a gateway worker stay healthy over a long run?
#
#   tools/soak.sh CASE [SECONDS]        (after ./ngx_module build)
#
# The body is the bench's 1.9 KB chat request when build/bench/post.lua
# exists (one `./ngx_module bench` run), else a short one.  Needs wrk,
# redis-server, gdb; nginx is /usr/sbin/nginx (SOAK_NGINX).
#
# CASE   shm     wrk on /gw and /tokens, llm_zone only, SOAK_KEYS accounts
#        redis   the same rows with llm_redis (the bench's redis, rtokens)
#        pool    /pool1k, a pool of 1,000 provider keys
#        faults  redis rows; Redis SIGSTOPped 3 s every 10 s and
#                CLIENT KILL every 5 s, then SOAK_CLEAN seconds clean
#        aborts  clients that leave: curl on a slow SSE stream, cut at
#                0.2 s, in parallel with wrk -T 5ms on /tokens
#        reload  redis rows; nginx -s reload every 2 s
# SECONDS of load, 180 by default.  Every SOAK_EVERY (10) seconds a line
# goes to build/soak/CASE.csv:
#   t,workers,rss_kb,data_kb,fds,shm_kb,master_fds,rdb_keys,rmem,
#   rclients,rnottl,full,errs,timers
# rss/data/fds are summed over the worker processes (data = VmData, the
# heap and anonymous maps), shm_kb is the llm_zone mapping's resident size
# in one worker, rnottl the sampled Redis keys without a TTL (of 200), full
# the "llm_zone ... is full" lines, errs the [alert]/[crit]/[emerg] lines (the log is at notice),
# timers the nodes of ngx_event_timer_rbtree in all workers, read with gdb
# (tools/soak-timers.py) in the first and the last (idle) samples only: an
# attach stops a worker long enough for llm_redis to time out (SOAK_TIMERS=0
# leaves it out).
# A least-squares slope per minute of every column is printed at the end.
#
# Env: SOAK_LOG (the error_log level, notice), SOAK_PORT (8120), SOAK_MOCK_PORT (8119), SOAK_REDIS_PORT (6511),
# SOAK_KEYS (5000 accounts), SOAK_ZONE (llm_zone size, 1m: small enough
# that 5,000 accounts make it evict), SOAK_CONNS (wrk -c, 32).

set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build
NGINX=${SOAK_NGINX:-/usr/sbin/nginx}
SO=$B/release/ngx_http_llm_gateway_module.so
CASE=${1:?usage: tools/soak.sh shm|redis|pool|faults|aborts|reload [SECONDS]}
SECS=${2:-180}
PORT=${SOAK_PORT:-8120}
MPORT=${SOAK_MOCK_PORT:-8119}
RPORT=${SOAK_REDIS_PORT:-6511}
NKEYS=${SOAK_KEYS:-5000}
ZONE=${SOAK_ZONE:-1m}
EVERY=${SOAK_EVERY:-10}
CLEAN=${SOAK_CLEAN:-60}
CONNS=${SOAK_CONNS:-32}
D=${SOAK_DIR:-$B/soak}
CSV=$D/$CASE.csv
mkdir -p "$D"

say() { echo "soak: $*" >&2; }

# ---- keys: NKEYS client keys, their digests in a key file, a Lua table
keys() {
    [ -s "$D/keys-$NKEYS.txt" ] && return 0
    : > "$D/keys.tmp"; : > "$D/lua.tmp"
    echo 'keys = {' > "$D/lua.tmp"
    i=1
    while [ "$i" -le "$NKEYS" ]; do
        k=$("$B/llm-keygen" new)
        echo "$(printf '%s\n' "$k" | "$B/llm-keygen" digest -) acc$i" \
            >> "$D/keys.tmp"
        echo "\"$k\"," >> "$D/lua.tmp"
        i=$((i + 1))
    done
    echo '}' >> "$D/lua.tmp"
    mv "$D/lua.tmp" "$D/keys-$NKEYS.lua"
    mv "$D/keys.tmp" "$D/keys-$NKEYS.txt"
}

conf_common() {     # conf_common DIR
    mkdir -p "$1/temp"
    echo "worker_processes 2;"
    echo "error_log $1/error.log ${SOAK_LOG:-notice};"
    echo "pid $1/nginx.pid;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "    access_log off;"
    for p in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${p}_temp_path $1/temp/$p;"
    done
}

mock_conf() {
    d=$D/mock; mkdir -p "$d/temp"
    { conf_common "$d" | sed 's/worker_processes 2/worker_processes 1/'
      cat <<C
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$MPORT backlog=4096;
        location = /v1/stream {
            default_type text/event-stream;
            limit_rate 1k;
            return 200 '$(sse)';
        }
        include $ROOT/tools/mock-backend.conf;
    }
}
C
    } > "$d/nginx.conf"
}

sse() {             # an OpenAI stream of ~3.5 KB, 3 s at limit_rate 1k
    i=0
    while [ $i -lt 24 ]; do
        printf 'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"word %d of the answer "}}]}\\n\\n' $i
        i=$((i + 1))
    done
    printf 'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":24,"total_tokens":33}}\\n\\n'
    printf 'data: [DONE]\\n\\n'
}

gw_conf() {         # gw_conf REDIS(0|1)
    d=$D/gw; mkdir -p "$d/temp"
    { conf_common "$d"
      cat <<C
    load_module_placeholder
    llm_zone  soak:$ZONE;
    llm_tier  bench  requests=1000000000/m;
    llm_tier  bench_tokens  requests=1000000000/m  tokens=4000000000/m
                            input_tokens=4000000000/m  cost=40000/m;
    llm_price  gpt-4o-mini  input=0.15  output=0.60;
    llm_key_file  $D/keys-$NKEYS.txt;
C
      [ "$1" = 0 ] || echo "    llm_redis  127.0.0.1:$RPORT;"
      echo "    upstream pool1000 {"
      echo "        server 127.0.0.1:$MPORT;"
      echo "        llm_pool;"
      seq 1000 | awk '{ printf "        llm_pool_key k%d secret=sk-b-%d;\n", $1, $1 }'
      echo "        keepalive 32;"
      echo "    }"
      cat <<C
    upstream mock { server 127.0.0.1:$MPORT; keepalive 32; }
    map \$status \$soak_bad { 200 0; default 1; }
    log_format soak '\$status \$request_time \$upstream_status "\$request" \$llm_limit_result';
    server {
        access_log  $d/bad.log  soak  if=\$soak_bad;
        listen 127.0.0.1:$PORT backlog=4096;
        proxy_http_version  1.1;
        proxy_set_header  Connection "";
        location = /gw {
            llm_gateway on;  llm_default_tier bench;
            proxy_pass  http://mock/v1/chat/completions;
        }
        location = /tokens {
            llm_gateway on;  llm_default_tier bench_tokens;
            proxy_pass  http://mock/v1/chat/completions;
        }
        location = /stream {
            llm_gateway on;  llm_default_tier bench_tokens;
            proxy_pass  http://mock/v1/stream;
        }
        location = /pool1k {
            proxy_pass  http://pool1000/v1/chat/completions;
        }
    }
}
C
    } | sed "/load_module_placeholder/d; 1i load_module $SO;" > "$d/nginx.conf"
}

start() { "$NGINX" -p "$1/" -c "$1/nginx.conf" -e "$1/error.log"; }
stop() {
    [ -f "$1/nginx.pid" ] || return 0
    p=$(cat "$1/nginx.pid"); kill -QUIT "$p" 2>/dev/null || true
    n=0; while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do
        sleep 0.1; n=$((n + 1)); done
    kill -KILL "$p" 2>/dev/null || true; rm -f "$1/nginx.pid"
}

R() { redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }
redis_up() {
    mkdir -p "$D/redis"
    redis-server --bind 127.0.0.1 --port "$RPORT" --save '' \
        --appendonly no --daemonize yes --pidfile "$D/redis/redis.pid" \
        --dir "$D/redis" --logfile "$D/redis/redis.log" >/dev/null
    n=0; until R ping >/dev/null 2>&1; do sleep 0.1; n=$((n+1));
        [ $n -lt 50 ] || { say "redis does not start"; exit 1; }; done
}
redis_down() {
    [ -f "$D/redis/redis.pid" ] || return 0
    p=$(cat "$D/redis/redis.pid"); kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true; rm -f "$D/redis/redis.pid"
    n=0; while kill -0 "$p" 2>/dev/null && [ $n -lt 100 ]; do
        sleep 0.1; n=$((n + 1)); done
}

PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    stop "$D/gw"; stop "$D/mock"; redis_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM

workers() { ps -o pid= --ppid "$(cat "$D/gw/nginx.pid")" 2>/dev/null; }

sample() {          # sample T
    rss=0 data=0 fds=0 nw=0 shm=0
    for w in $(workers); do
        s=/proc/$w/status
        [ -r "$s" ] || continue
        # a worker may exit meanwhile (reload): its figures count 0
        r=$(awk '/^VmRSS/ { print $2 }' "$s" 2>/dev/null || true)
        v=$(awk '/^VmData/ { print $2 }' "$s" 2>/dev/null || true)
        f=$(ls "/proc/$w/fd" 2>/dev/null | wc -l)
        [ -n "$r" ] || continue
        nw=$((nw + 1))
        rss=$((rss + r)); data=$((data + ${v:-0})); fds=$((fds + f))
        shm=$(awk '/zero \(deleted\)|SYSV/ { z = 1; next }
                   z && /^Rss:/ { s += $2; z = 0 } END { print s + 0 }' \
              "/proc/$w/smaps" 2>/dev/null || echo 0)
    done
    mfd=$(ls "/proc/$(cat "$D/gw/nginx.pid")/fd" | wc -l)
    if [ -n "$REDIS" ] && R ping >/dev/null 2>&1; then
        keys=$(R dbsize)
        mem=$(R info memory | awk -F: '/^used_memory:/ { print $2+0 }')
        cl=$(R client list | grep -vc 'cmd=client' || true)
        nottl=$(R --scan | head -200 | sed 's/^/PTTL /' | R \
                | grep -c '^-1$' || true)
    else
        keys=- mem=- cl=- nottl=-
    fi
    full=$(grep -c 'is full' "$D/gw/error.log" || true)
    errs=$(grep -c '\[alert\]\|\[crit\]\|\[emerg\]' "$D/gw/error.log" || true)
    tm=-
    if [ "${SOAK_TIMERS:-1}" = 1 ] && [ -n "${2:-}" ]; then
        tm=0
        for w in $(workers); do
            n=$(timeout 20 gdb -p "$w" -batch -x "$ROOT/tools/soak-timers.py" \
                2>/dev/null | awk '/^timers/ { print $2 }')
            tm=$((tm + ${n:-0}))
        done
    fi
    echo "$1,$nw,$rss,$data,$fds,$shm,$mfd,$keys,$mem,$cl,$nottl,$full,$errs,$tm" \
        >> "$CSV"
}

slopes() {          # the least-squares slope per minute of each column
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i; next }
        { n++; x = $1; sx += x; sxx += x * x
          for (i = 2; i <= NF; i++) { sy[i] += $i; sxy[i] += x * $i
              if (n == 1) f[i] = $i; l[i] = $i } }
        END { printf "soak: %d samples;", n
              for (i = 2; i <= NF; i++) {
                  d = n * sxx - sx * sx
                  s = d ? (n * sxy[i] - sx * sy[i]) / d * 60 : 0
                  printf " %s %s->%s (%+.1f/min)", h[i], f[i], l[i], s }
              print "" }' "$CSV" >&2
}

wrk_lua() {         # wrk_lua PATHS...: rotate keys and paths
    { cat "$D/keys-$NKEYS.lua"
      printf 'paths = {'; for p in "$@"; do printf '"%s",' "$p"; done
      echo '}'
      cat "$B/bench/post.lua" 2>/dev/null | grep '^  \|^local\|^}' \
        || echo 'local turns = {"{\"role\":\"user\",\"content\":\"hi\"}"}'
      cat <<'L'
local body = '{"model":"gpt-4o-mini","max_tokens":256,"messages":['
    .. table.concat(turns, ",") .. ']}'
local i = 0
function setup(thread) thread:set("seed", math.random(1, 1000000)) end
request = function()
    i = i + 1
    local k = keys[((i * 7919 + (seed or 0)) % #keys) + 1]
    return wrk.format("POST", paths[(i % #paths) + 1],
        { ["Authorization"] = "Bearer " .. k,
          ["Content-Type"] = "application/json" }, body)
end
L
    } > "$D/soak.lua"
}

# ---------------------------------------------------------------- main
keys
REDIS=
case $CASE in
    redis|faults|reload) REDIS=1 ;;
    shm|pool|aborts) ;;
    *) say "unknown case $CASE"; exit 2 ;;
esac
stop "$D/gw"; stop "$D/mock"; redis_down
rm -f "$D/aborts.count" "$D/reloads.count"
[ -z "$REDIS" ] || redis_up
mock_conf; start "$D/mock"
gw_conf "${REDIS:-0}"; : > "$D/gw/error.log"; start "$D/gw"
sleep 1
case $CASE in
    pool) wrk_lua /pool1k ;;
    *)    wrk_lua /gw /tokens ;;
esac
echo "t,workers,rss_kb,data_kb,fds,shm_kb,master_fds,rdb_keys,rmem,rclients,rnottl,full,errs,timers" > "$CSV"
# warm up: every account once, so that the baseline has them
wrk -t1 -c"$CONNS" -d10s -s "$D/soak.lua" "http://127.0.0.1:$PORT" \
    > "$D/$CASE.warm.txt" 2>&1 || true
sample 0 timers

t0=$(date +%s)
WT=""; [ "$CASE" = aborts ] && WT="--timeout 5ms"
wrk -t2 -c"$CONNS" -d"${SECS}s" $WT -s "$D/soak.lua" \
    "http://127.0.0.1:$PORT" > "$D/$CASE.wrk.txt" 2>&1 &
PIDS="$PIDS $!"; WRK=$!

if [ "$CASE" = aborts ]; then
    ( c=0; while :; do
        for j in 1 2 3 4 5 6 7 8; do
          c=$((c + 1))
          k=$(sed -n "$((c % NKEYS + 2))p" "$D/keys-$NKEYS.lua" | tr -d '",')
          curl -s -o /dev/null --max-time 0.2 "http://127.0.0.1:$PORT/stream" \
            -H "Authorization: Bearer $k" \
            -H 'Content-Type: application/json' \
            -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}' &
        done; wait
        echo x >> "$D/aborts.count"
      done ) & PIDS="$PIDS $!"
    : > "$D/aborts.count"
fi
if [ "$CASE" = faults ]; then
    ( rp=$(cat "$D/redis/redis.pid"); n=0
      while [ $n -lt "$SECS" ]; do
        sleep 5; n=$((n + 5))
        R client kill type normal >/dev/null 2>&1 || true
        if [ $((n % 10)) = 0 ]; then
            kill -STOP "$rp"; sleep 3; kill -CONT "$rp"; n=$((n + 3))
        fi
      done ) & PIDS="$PIDS $!"
fi
if [ "$CASE" = reload ]; then
    ( while :; do sleep 2; "$NGINX" -p "$D/gw/" -c "$D/gw/nginx.conf" \
        -e "$D/gw/error.log" -s reload 2>/dev/null \
        && echo x >> "$D/reloads.count"; done ) &
    PIDS="$PIDS $!"; RL=$!
fi

end=$((t0 + SECS))
[ "$CASE" = faults ] && end=$((end + CLEAN))
while :; do
    sleep "$EVERY"
    now=$(date +%s)
    if [ "$CASE" = reload ] && [ $((now - t0)) -ge "$SECS" ]; then
        kill "$RL" 2>/dev/null || true
    fi
    if [ "$CASE" = faults ] && [ $((now - t0)) -ge "$SECS" ] \
        && ! kill -0 "$WRK" 2>/dev/null && [ -z "${CLEANWRK:-}" ]; then
        # the clean minute: load again, Redis left alone
        wrk -t2 -c"$CONNS" -d"$((CLEAN - EVERY))s" -s "$D/soak.lua" \
            "http://127.0.0.1:$PORT" > "$D/$CASE.clean.txt" 2>&1 &
        PIDS="$PIDS $!"; CLEANWRK=$!
    fi
    sample $((now - t0))
    [ "$now" -lt "$end" ] || break
done
wait "$WRK" 2>/dev/null || true
for p in $PIDS; do kill "$p" 2>/dev/null || true; done; PIDS=
sleep 5; sample "$(( $(date +%s) - t0 ))" timers    # idle, load gone
grep -E 'requests in|Non-2xx|Socket errors' "$D/$CASE.wrk.txt" >&2 || true
[ ! -f "$D/aborts.count" ] || say "aborted streams: $(( $(wc -l < "$D/aborts.count") * 8 ))"
[ ! -f "$D/reloads.count" ] || say "reloads: $(wc -l < "$D/reloads.count")"
[ -z "$REDIS" ] || say "Redis keys without a TTL: $(R --scan \
    | sed 's/^/PTTL /' | R | grep -c '^-1$' || true) of $(R dbsize)"
say "replays drained: $(grep -c 'is in Redis now' "$D/gw/error.log" || true)"
slopes
cat "$CSV" >&2
cp "$D/gw/error.log" "$D/$CASE.error.log"
[ ! -f "$D/gw/bad.log" ] || { mv "$D/gw/bad.log" "$D/$CASE.bad.log"
    say "not 200: $(awk '{ print $1 }' "$D/$CASE.bad.log" | sort | uniq -c)"; }
