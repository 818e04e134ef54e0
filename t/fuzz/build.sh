#!/bin/sh
#
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined)
# for the request parser (src/ngx_http_llm_json.c, _jtape.c, checked
# against t/fuzz/ref_request.c), the usage scanner and the estimator.
#
#   t/fuzz/build.sh [NGINX_SRC [NGINX_OBJS [OUT_DIR]]]
#
# Defaults: build/nginx-1.22.1, build/release (after ./ngx_module build),
# build/fuzz.  Pools allocate every block with malloc (NGX_DEBUG_PALLOC),
# so AddressSanitizer sees overruns inside pool memory too.

set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)

NGX_SRC=${1:-${NGX_SRC:-$ROOT/build/nginx-1.22.1}}
NGX_OBJS=${2:-${NGX_OBJS:-$ROOT/build/release}}
OUT=${3:-$ROOT/build/fuzz}
CC=${CC:-clang}

if [ ! -f "$NGX_SRC/src/core/ngx_palloc.c" ] \
   || [ ! -f "$NGX_OBJS/ngx_auto_config.h" ]
then
    echo "build.sh: no configured nginx at $NGX_SRC, $NGX_OBJS" \
         "(run ./ngx_module build)" >&2
    exit 2
fi

mkdir -p "$OUT"

INCS="-I$NGX_SRC/src/core -I$NGX_SRC/src/event -I$NGX_SRC/src/event/modules
      -I$NGX_SRC/src/os/unix -I$NGX_SRC/src/http -I$NGX_SRC/src/http/modules
      -I$NGX_SRC/src/http/v2 -I$NGX_OBJS -I$ROOT/src"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
FLAGS="-g -O1 -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1 $SAN
       -Wall -Wno-unused-parameter"

objs=
for f in core/ngx_palloc.c core/ngx_string.c os/unix/ngx_alloc.c; do
    o=$OUT/ngx_$(basename "$f" .c | sed 's/^ngx_//').o
    $CC -c $FLAGS $INCS -o "$o" "$NGX_SRC/src/$f"
    objs="$objs $o"
done

for f in src/ngx_http_llm_json.c src/ngx_http_llm_jtape.c \
         src/ngx_http_llm_scan.c src/ngx_http_llm_tokens.c \
         src/ngx_http_llm_tokens_ascii.c src/ngx_http_llm_simd.c \
         src/ngx_http_llm_bpe.c
do
    o=$OUT/$(basename "$f" .c).o
    $CC -c $FLAGS -fsanitize=fuzzer-no-link -Werror $INCS -o "$o" "$ROOT/$f"
    objs="$objs $o"
done

$CC -c $FLAGS -fsanitize=fuzzer-no-link -Werror $INCS \
    -o "$OUT/ref_request.o" "$ROOT/t/fuzz/ref_request.c"

for t in fuzz_request fuzz_usage fuzz_bpe; do
    extra=
    [ $t != fuzz_request ] || extra=$OUT/ref_request.o
    $CC $FLAGS -fsanitize=fuzzer -Werror $INCS -o "$OUT/$t" \
        "$ROOT/t/fuzz/$t.c" $objs $extra -ljansson
    echo "$OUT/$t"
done
