
/*
 * ngx_llm_gateway: libFuzzer target for the request parser, the
 * include_usage rewrite, the UTF-8 check and the token estimator.
 *
 * Input: one selector byte (API: '0' OpenAI, '1' Anthropic, '2' Gemini,
 * any other byte modulo 3), then the request body.  Checks, besides what
 * the sanitizers see: the parser's results are in range, an accepted
 * body is valid UTF-8 and nests no deeper than the limit, include_usage
 * returns JSON the parser accepts again with include_usage set, and the
 * UTF-8 check agrees with a reference decoder.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_tokens.h"


volatile ngx_cycle_t  *ngx_cycle;
static ngx_log_t       fuzz_log;


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


/* Unicode 15, table 3-7: well-formed UTF-8 byte sequences */

static int
reference_utf8(const uint8_t *p, size_t n)
{
    size_t   i, k, need;
    uint8_t  lo, hi;

    for (i = 0; i < n; /* void */) {
        uint8_t  c = p[i];

        lo = 0x80;
        hi = 0xbf;

        if (c <= 0x7f) {
            i++;
            continue;

        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;

        } else if (c == 0xe0) {
            need = 2; lo = 0xa0;

        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            need = 2;

        } else if (c == 0xed) {
            need = 2; hi = 0x9f;

        } else if (c == 0xf0) {
            need = 3; lo = 0x90;

        } else if (c >= 0xf1 && c <= 0xf3) {
            need = 3;

        } else if (c == 0xf4) {
            need = 3; hi = 0x8f;

        } else {
            return 0;
        }

        if (n - i - 1 < need) {
            return 0;
        }

        for (k = 1; k <= need; k++) {
            if (p[i + k] < lo || p[i + k] > hi) {
                return 0;
            }

            lo = 0x80;
            hi = 0xbf;
        }

        i += need + 1;
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *body;
    size_t                       len;
    ngx_int_t                    rc;
    ngx_str_t                    err, out, canon, canon2;
    ngx_uint_t                   api, tokens, chars;
    ngx_pool_t                  *pool;
    ngx_http_llm_estimate_t      e;
    ngx_http_llm_request_info_t  info, again;

    if (size == 0) {
        return 0;
    }

    if (ngx_pagesize == 0) {
        ngx_pagesize = getpagesize();
        fuzz_log.log_level = NGX_LOG_EMERG;
    }

    api = (data[0] >= '0' ? data[0] - '0' : data[0]) % 3 + 1;

    /* a copy of the exact size, so reading past the end is caught */

    len = size - 1;
    body = malloc(len ? len : 1);
    if (body == NULL) {
        return 0;
    }

    ngx_memcpy(body, data + 1, len);

    if (ngx_http_llm_utf8_valid(body, len) != reference_utf8(body, len)) {
        abort();
    }

    ngx_http_llm_estimate_init(&e);
    ngx_http_llm_estimate_add(&e, body, len);
    tokens = ngx_http_llm_estimate_tokens(&e);
    chars = ngx_http_llm_estimate_chars(&e);

    if (chars > len || (len && chars == 0) || tokens > 4 * len + 1) {
        abort();
    }

    pool = ngx_create_pool(1024, &fuzz_log);
    if (pool == NULL) {
        free(body);
        return 0;
    }

    rc = ngx_http_llm_json_parse_request(pool, api, body, len, &info,
                                         &canon, &err);

    if (rc == NGX_DECLINED && err.len == 0) {
        abort();
    }

    if (rc == NGX_OK) {
        if (!ngx_http_llm_utf8_valid(body, len)
            || !ngx_http_llm_json_depth_ok(body, len,
                                           NGX_HTTP_LLM_JSON_DEPTH)
            || info.max_tokens == 0 || info.max_tokens < -1
            || info.max_tokens > NGX_HTTP_LLM_MAX_TOKENS_MAX
            || info.model.len > 256
            || info.choices < 1 || info.choices > 128)
        {
            abort();
        }

        (void) ngx_http_llm_estimate_tokens(&info.estimate);

        /* the canonical form is a fixed point, and reads the same */

        if (ngx_http_llm_json_parse_request(pool, api, canon.data, canon.len,
                                            &again, &canon2, &err)
            != NGX_OK
            || canon2.len != canon.len
            || memcmp(canon2.data, canon.data, canon.len) != 0
            || again.max_tokens != info.max_tokens
            || again.messages != info.messages)
        {
            abort();
        }

        rc = ngx_http_llm_json_include_usage(pool, body, len, &out);

        if (rc == NGX_OK) {
            rc = ngx_http_llm_json_parse_request(pool, api, out.data, out.len,
                                                 &again, NULL, &err);

            if (api == NGX_HTTP_LLM_API_OPENAI
                && (rc != NGX_OK || !again.has_include_usage
                    || again.max_tokens != info.max_tokens
                    || again.stream != info.stream
                    || again.messages != info.messages))
            {
                abort();
            }

        } else if (rc != NGX_DECLINED) {
            abort();
        }
    }

    ngx_destroy_pool(pool);
    free(body);

    return 0;
}
