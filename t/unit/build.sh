#!/bin/sh
#
# Builds t/unit/llm_unit: src/ngx_http_llm_json.c and _tokens.c linked with
# the few nginx core objects they need (pools, strings, allocation), and
# t/unit/bpe_unit: src/ngx_http_llm_bpe.c and the estimator likewise.
#
#   t/unit/build.sh [NGINX_SRC [NGINX_OBJS [OUT_DIR]]]
#
# NGINX_SRC   nginx source tree      (default: build/nginx-1.22.1, env NGX_SRC)
# NGINX_OBJS  configured objs dir with ngx_auto_config.h
#                                    (default: build/release, env NGX_OBJS)
# OUT_DIR     where objects and the binary go  (default: build/unit)
#
# CC and CFLAGS are honoured (e.g. CFLAGS='-fsanitize=address,undefined').
# Exit status 2: the nginx tree or its configured objs are missing.

set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)

NGX_SRC=${1:-${NGX_SRC:-$ROOT/build/nginx-1.22.1}}
NGX_OBJS=${2:-${NGX_OBJS:-$ROOT/build/release}}
OUT=${3:-$ROOT/build/unit}
CC=${CC:-gcc}
CFLAGS=${CFLAGS:-}

if [ ! -f "$NGX_SRC/src/core/ngx_palloc.c" ]; then
    echo "build.sh: no nginx source tree at $NGX_SRC" >&2
    exit 2
fi

if [ ! -f "$NGX_OBJS/ngx_auto_config.h" ]; then
    echo "build.sh: no ngx_auto_config.h in $NGX_OBJS" \
         "(run ./ngx_module build)" >&2
    exit 2
fi

mkdir -p "$OUT"

INCS="-I$NGX_SRC/src/core -I$NGX_SRC/src/event -I$NGX_SRC/src/event/modules
      -I$NGX_SRC/src/os/unix -I$NGX_SRC/src/http -I$NGX_SRC/src/http/modules
      -I$NGX_SRC/src/http/v2 -I$NGX_OBJS -I$ROOT/src"

# nginx's own objects are built as nginx builds them; ours with -Werror
WARN="-W -Wall -Wpointer-arith -Wno-unused-parameter"
NGX_FLAGS="-O2 -g -pipe $WARN $CFLAGS"
OUR_FLAGS="-O2 -g -pipe $WARN -Werror $CFLAGS"

objs=
for f in core/ngx_palloc.c core/ngx_string.c os/unix/ngx_alloc.c; do
    o=$OUT/ngx_$(basename "$f" .c | sed 's/^ngx_//').o
    $CC -c $NGX_FLAGS $INCS -o "$o" "$NGX_SRC/src/$f"
    objs="$objs $o"
done

# llm_unit: the parser, the observer and the estimator; bpe_unit: the
# exact counter and the estimator
unit=
bpe=
for f in src/ngx_http_llm_json.c src/ngx_http_llm_jtape.c \
         src/ngx_http_llm_scan.c src/ngx_http_llm_tokens.c \
         src/ngx_http_llm_tokens_ascii.c src/ngx_http_llm_simd.c \
         src/ngx_http_llm_bpe.c t/unit/llm_unit.c t/unit/bpe_unit.c
do
    o=$OUT/$(basename "$f" .c).o
    $CC -c $OUR_FLAGS $INCS -o "$o" "$ROOT/$f"
    case $f in
        *json.c|*jtape.c|*scan.c|*llm_unit.c) unit="$unit $o" ;;
        *bpe_unit.c) bpe="$bpe $o" ;;
        *) unit="$unit $o"; bpe="$bpe $o" ;;
    esac
done

$CC $CFLAGS -o "$OUT/llm_unit" $objs $unit -ljansson
$CC $CFLAGS -o "$OUT/bpe_unit" $objs $bpe

echo "$OUT/llm_unit"
