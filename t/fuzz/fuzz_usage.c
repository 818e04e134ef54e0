
/*
 * ngx_llm_gateway: libFuzzer target for the response usage observer.
 *
 * Input: a selector byte ('0'..'2' JSON bodies of OpenAI, Anthropic,
 * Gemini; '3'..'5' SSE streams of the same; any other byte modulo 6), a
 * seed byte, then the body.  The body is fed whole (as a body in one
 * buffer is: read as one tape when it is JSON), then in pieces cut where
 * the seed says, then one byte at a time (the lexer): the results must
 * not depend on how the body was cut, nor on the vector instructions
 * used (whole: the best the CPU has; in pieces: none).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_simd.h"


volatile ngx_cycle_t  *ngx_cycle;
static ngx_log_t       fuzz_log;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


typedef struct {
    ngx_uint_t   found;
    ngx_uint_t   told;       /* told_in, told_out, final: 1, 2, 4 */
    ngx_uint_t   prompt;
    ngx_uint_t   completion;
    ngx_uint_t   cache_read;
    ngx_uint_t   cache_write;
    ngx_uint_t   cache_write_1h;
    ngx_uint_t   chars;
    ngx_uint_t   generated;
    size_t       model_len;
    u_char       model[256];
} result_t;


static void
observe(ngx_uint_t api, ngx_uint_t sse, u_char *p, size_t len,
    uint32_t seed, ngx_uint_t mode, result_t *r)
{
    size_t                 off, n;
    ngx_pool_t            *pool;
    ngx_http_llm_usage_t   u;

    pool = ngx_create_pool(1024, &fuzz_log);
    if (pool == NULL) {
        abort();
    }

    ngx_http_llm_usage_init(&u, pool, api, sse);

    for (off = 0; off < len; off += n) {

        if (mode == 0) {
            n = len - off;

        } else if (mode == 1) {
            n = 1;

        } else {
            seed = seed * 1103515245 + 12345;
            n = 1 + (seed >> 16) % 64;
            n = ngx_min(n, len - off);
        }

        /* each piece in its own buffer, so reading past it is caught */

        u_char  *piece = malloc(n);
        if (piece == NULL) {
            abort();
        }

        ngx_memcpy(piece, p + off, n);

        if ((mode == 0 ? ngx_http_llm_usage_feed_whole(&u, piece, n)
                       : ngx_http_llm_usage_feed(&u, piece, n))
            != NGX_OK)
        {
            abort();
        }

        free(piece);
    }

    ngx_http_llm_usage_finish(&u);

    if (u.model.len > 256 || u.capture_size > NGX_HTTP_LLM_USAGE_CAP
        || u.text_len != 0)
    {
        abort();
    }

    r->found = u.found;
    r->told = u.told_in | u.told_out << 1
              | ngx_http_llm_usage_final(&u) << 2;
    r->prompt = u.prompt_tokens;
    r->completion = u.completion_tokens;
    r->cache_read = u.cache_read;
    r->cache_write = u.cache_write;
    r->cache_write_1h = u.cache_write_1h;
    r->chars = u.streamed_chars;
    r->generated = ngx_http_llm_estimate_tokens(&u.generated);
    r->model_len = u.model.len;

    if (u.model.len) {
        ngx_memcpy(r->model, u.model.data, u.model.len);
    }

    ngx_destroy_pool(pool);
}


/*
 * "a" is the whole body read at once: a final usage found that way
 * leaves the text uncounted (ngx_http_llm_usage_feed_whole())
 */

static int
same(result_t *a, result_t *b)
{
    return a->found == b->found && a->told == b->told
           && a->prompt == b->prompt
           && a->completion == b->completion
           && a->cache_read == b->cache_read
           && a->cache_write == b->cache_write
           && a->cache_write_1h == b->cache_write_1h
           && ((a->told & 4) || (a->chars == b->chars
                                 && a->generated == b->generated))
           && a->model_len == b->model_len
           && ngx_memcmp(a->model, b->model, a->model_len) == 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *body;
    size_t       len;
    uint32_t     seed;
    result_t     whole, cut, bytes;
    ngx_uint_t   sel, api, sse;

    if (size < 2) {
        return 0;
    }

    if (ngx_pagesize == 0) {
        ngx_pagesize = getpagesize();
        fuzz_log.log_level = NGX_LOG_EMERG;
    }

    sel = (data[0] >= '0' ? data[0] - '0' : data[0]) % 6;
    api = sel % 3 + 1;
    sse = sel / 3;
    seed = data[1];

    len = size - 2;
    body = malloc(len ? len : 1);
    if (body == NULL) {
        return 0;
    }

    ngx_memcpy(body, data + 2, len);

    ngx_memzero(&whole, sizeof(result_t));
    ngx_memzero(&cut, sizeof(result_t));
    ngx_memzero(&bytes, sizeof(result_t));

    ngx_http_llm_simd = ngx_http_llm_simd_best();
    observe(api, sse, body, len, seed, 0, &whole);

    ngx_http_llm_simd = NGX_HTTP_LLM_SIMD_NONE;
    observe(api, sse, body, len, seed, 2, &cut);
    ngx_http_llm_simd = ngx_http_llm_simd_best();

    if (!same(&whole, &cut)) {
        abort();
    }

    if (len <= 4096) {
        observe(api, sse, body, len, seed, 1, &bytes);

        if (!same(&whole, &bytes)) {
            abort();
        }
    }

    free(body);

    return 0;
}
