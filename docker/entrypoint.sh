#!/bin/sh
# Container entry for ngx_llm_gateway.
#
#   gateway   (default) render /etc/nginx/nginx.conf from the quick-start
#             config and run nginx in the foreground.  Environment:
#               LLM_BACKEND  http://host:port of the LLM backend
#                            (default http://mock:8081, the compose mock)
#               LLM_LISTEN   port to listen on (default 8080)
#               LLM_REDIS    host:port of Redis; unset = shared memory only
#               LLM_KEY_FILE the llm_key_file (default /etc/nginx/llm-keys.txt)
#             A missing or empty key file gets one demo key (account "demo",
#             tier "free"), printed once to the log.
#   mock      the canned OpenAI-compatible backend on port 8081
#   keygen ACCOUNT [TIER]
#             print a new key and its llm-keys.txt line
#   anything else is run as a command
set -eu

KEYS=${LLM_KEY_FILE:-/etc/nginx/llm-keys.txt}
QUICKSTART=${LLM_QUICKSTART:-/etc/nginx/quickstart.conf}
CONF=${LLM_NGINX_CONF:-/etc/nginx/nginx.conf}

keyline() {     # keyline ACCOUNT [TIER]: key on line 1, key-file line on 2
    key=$(llm-keygen new)
    digest=$(printf '%s\n' "$key" | llm-keygen digest -)
    printf '%s\n%s %s%s\n' "$key" "$digest" "$1" "${2:+ tier=$2}"
}

render() {
    backend=${LLM_BACKEND:-http://mock:8081}
    case $backend in
        https://*) scheme=https ;;
        *)         scheme=http ;;
    esac
    addr=${backend#*://}
    addr=${addr%%/*}
    case $addr in
        *:*) ;;
        *) if [ "$scheme" = https ]; then addr=$addr:443; else addr=$addr:80; fi ;;
    esac
    host=${addr%:*}
    pp="proxy_pass  $scheme://backend;"
    if [ "$scheme" = https ]; then
        pp="$pp proxy_ssl_server_name on; proxy_ssl_name $host; proxy_set_header Host $host;"
    fi
    redis='# llm_redis: unset (LLM_REDIS)'
    [ -z "${LLM_REDIS:-}" ] || redis="llm_redis  $LLM_REDIS;"

    m='^\([[:space:]]*\).*# run:'
    sed -e "s|$m error_log\$|\\1error_log  /dev/stderr  notice;|" \
        -e "s|$m access_log\$|\\1access_log  /dev/stdout  llm;|" \
        -e "s|$m backend\$|\\1server  $addr;|" \
        -e "s|$m listen\$|\\1listen  ${LLM_LISTEN:-8080};|" \
        -e "s|$m proxy_pass\$|\\1$pp|" \
        -e "s|$m redis\$|\\1$redis|" \
        -e "s|$m key_file\$|\\1llm_key_file  $KEYS;|" \
        "$QUICKSTART" > "$CONF"
}

cmd=${1:-gateway}
case $cmd in
    gateway)
        if [ ! -s "$KEYS" ]; then
            out=$(keyline demo free)
            mkdir -p "$(dirname "$KEYS")"
            printf '%s\n' "$out" | sed -n 2p > "$KEYS"
            echo "llm-gateway: no $KEYS; created a demo key (account demo, tier free):"
            echo "llm-gateway:   $(printf '%s\n' "$out" | sed -n 1p)"
        fi
        render
        nginx -t -q -c "$CONF"
        exec nginx -c "$CONF" -g 'daemon off;'
        ;;
    mock)
        exec nginx -c /etc/nginx/mock.conf -g 'daemon off;'
        ;;
    keygen)
        shift
        [ $# -ge 1 ] || { echo "usage: keygen ACCOUNT [TIER]" >&2; exit 2; }
        keyline "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
