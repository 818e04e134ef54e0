
/*
 * ngx_llm_gateway: vector scanning of text.
 *
 * Owns the choice of vector instructions (ngx_http_llm_simd, set once
 * in the master by ngx_http_llm_simd_init() from what the CPU has) and
 * the two string scanners the JSON readers share: where a JSON string
 * needs a closer look (ngx_http_llm_jtape.c), and where one ends in an
 * answer (ngx_http_llm_scan.c).  With AVX-512BW they compare 64 bytes
 * at a time into bit masks; otherwise eight at a time in a 64-bit word.
 * Each level must give what the portable loop gives: t/unit and the
 * fuzzers run every level the CPU has on the same inputs.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_simd.h"

#if (NGX_HTTP_LLM_HAVE_AVX512)
#include <immintrin.h>
#endif


#define NGX_HTTP_LLM_ONES      0x0101010101010101ULL
#define NGX_HTTP_LLM_HIGH      0x8080808080808080ULL
#define NGX_HTTP_LLM_QUOTES    0x2222222222222222ULL
#define NGX_HTTP_LLM_SLASHES   0x5c5c5c5c5c5c5c5cULL
#define NGX_HTTP_LLM_SPACES    0x2020202020202020ULL

/* the high bit of each byte of "v" that equals the byte of "c" (or more) */
#define ngx_http_llm_swar_eq(v, c)                                            \
    ((((v) ^ (c)) - NGX_HTTP_LLM_ONES) & ~((v) ^ (c)))


#if (NGX_HTTP_LLM_HAVE_AVX512)
static u_char *ngx_http_llm_simd_string512(u_char *p, u_char *last);
static u_char *ngx_http_llm_simd_quote512(u_char *p, u_char *last,
    ngx_uint_t *chars);
#endif


ngx_uint_t  ngx_http_llm_simd;


void
ngx_http_llm_simd_init(void)
{
    ngx_http_llm_simd = ngx_http_llm_simd_best();
}


/* the best level this CPU and this build have */

ngx_uint_t
ngx_http_llm_simd_best(void)
{
#if (NGX_HTTP_LLM_HAVE_AVX512)

    __builtin_cpu_init();

    /* what the AVX-512 functions are compiled for (NGX_HTTP_LLM_AVX512) */

    if (__builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("popcnt")
        && __builtin_cpu_supports("bmi")
        && __builtin_cpu_supports("bmi2"))
    {
        return NGX_HTTP_LLM_SIMD_AVX512;
    }

#endif

#if (NGX_HTTP_LLM_HAVE_SSE2)
    return NGX_HTTP_LLM_SIMD_SSE2;
#else
    return NGX_HTTP_LLM_SIMD_NONE;
#endif
}


/*
 * The first byte from "p" that a JSON string reader must look at: '"',
 * '\\', a control character or a byte of a multibyte character; "last"
 * if there is none.
 */

u_char *
ngx_http_llm_simd_string(u_char *p, u_char *last)
{
    uint64_t  v;

#if (NGX_HTTP_LLM_HAVE_AVX512)

    if (ngx_http_llm_simd >= NGX_HTTP_LLM_SIMD_AVX512) {
        return ngx_http_llm_simd_string512(p, last);
    }

#endif

    /* eight bytes at a time: false alarms are possible, a miss is not */

    while (last - p >= 8) {
        ngx_memcpy(&v, p, 8);

        if ((ngx_http_llm_swar_eq(v, NGX_HTTP_LLM_QUOTES)
             | ngx_http_llm_swar_eq(v, NGX_HTTP_LLM_SLASHES)
             | ((v - NGX_HTTP_LLM_SPACES) & ~v)
             | v)
            & NGX_HTTP_LLM_HIGH)
        {
            break;
        }

        p += 8;
    }

    while (p < last && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
        p++;
    }

    return p;
}


/*
 * The first '"' or '\\' from "p" ("last" if none); "chars" grows by the
 * characters before it (bytes that do not continue a UTF-8 sequence).
 */

u_char *
ngx_http_llm_simd_quote(u_char *p, u_char *last, ngx_uint_t *chars)
{
    u_char      *s;
    uint64_t     v;
    ngx_uint_t   n;

#if (NGX_HTTP_LLM_HAVE_AVX512)

    if (ngx_http_llm_simd >= NGX_HTTP_LLM_SIMD_AVX512) {
        return ngx_http_llm_simd_quote512(p, last, chars);
    }

#endif

    s = p;

    while (last - p >= 8) {
        ngx_memcpy(&v, p, 8);

        if ((ngx_http_llm_swar_eq(v, NGX_HTTP_LLM_QUOTES)
             | ngx_http_llm_swar_eq(v, NGX_HTTP_LLM_SLASHES))
            & NGX_HTTP_LLM_HIGH)
        {
            break;
        }

        p += 8;
    }

    while (p < last && *p != '"' && *p != '\\') {
        p++;
    }

    for (n = 0; s < p; s++) {
        n += ((*s & 0xc0) != 0x80);
    }

    *chars += n;

    return p;
}


#if (NGX_HTTP_LLM_HAVE_AVX512)

/* the masks of what the scanners look for in 64 bytes */

NGX_HTTP_LLM_AVX512
static ngx_inline uint64_t
ngx_http_llm_string_mask(__m512i v)
{
    return _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('"'))
           | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\\'))
           | _mm512_cmplt_epu8_mask(v, _mm512_set1_epi8(0x20))
           | _mm512_movepi8_mask(v);
}


NGX_HTTP_LLM_AVX512
static u_char *
ngx_http_llm_simd_string512(u_char *p, u_char *last)
{
    size_t    n;
    uint64_t  m, valid;

    while (last - p >= 64) {
        m = ngx_http_llm_string_mask(_mm512_loadu_si512(p));

        if (m) {
            return p + __builtin_ctzll(m);
        }

        p += 64;
    }

    n = last - p;

    if (n == 0) {
        return last;
    }

    /* the tail: a masked load reads nothing past "last" */

    valid = ((uint64_t) 1 << n) - 1;

    m = ngx_http_llm_string_mask(_mm512_maskz_loadu_epi8(valid, p)) & valid;

    return m ? p + __builtin_ctzll(m) : last;
}


NGX_HTTP_LLM_AVX512
static u_char *
ngx_http_llm_simd_quote512(u_char *p, u_char *last, ngx_uint_t *chars)
{
    size_t      n;
    __m512i     v;
    uint64_t    m, valid, cont;
    ngx_uint_t  c;

    c = 0;

    for ( ;; ) {
        n = last - p;

        if (n == 0) {
            break;
        }

        valid = (n >= 64) ? ~(uint64_t) 0 : ((uint64_t) 1 << n) - 1;
        v = _mm512_maskz_loadu_epi8(valid, p);

        m = (_mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('"'))
             | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\\')))
            & valid;

        /* bytes 0x80-0xbf continue a character */

        cont = _mm512_cmplt_epu8_mask(
                   _mm512_sub_epi8(v, _mm512_set1_epi8((char) 0x80)),
                   _mm512_set1_epi8(0x40));

        if (m) {
            valid = (m & -m) - 1;
            c += __builtin_popcountll(valid & ~cont);
            *chars += c;

            return p + __builtin_ctzll(m);
        }

        c += __builtin_popcountll(valid & ~cont);

        if (n <= 64) {
            break;
        }

        p += 64;
    }

    *chars += c;

    return last;
}

#endif
