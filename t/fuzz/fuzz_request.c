
/*
 * ngx_llm_gateway: libFuzzer target for the request parser, the
 * include_usage rewrite, the UTF-8 check and the token estimator.
 *
 * Differential: the estimator's ASCII path must count exactly what its
 * byte loop counts, at every vector level the CPU has.  The parser (a
 * tape, src/ngx_http_llm_jtape.c; at one of those levels, chosen by the
 * input's size) must accept and refuse exactly what the jansson parser
 * it replaced (ref_request.c) does, and read the same model, limits,
 * counts and estimate from what both accept (the estimate may differ
 * only when an object repeats a key: jansson kept the last, the tape
 * reads all), for bodies without a raw NUL byte (which jansson skips).
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

#include <jansson.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_simd.h"


ngx_int_t ref_parse_request(ngx_pool_t *pool, ngx_uint_t api, u_char *body,
    size_t len, ngx_http_llm_request_info_t *info, ngx_str_t *error);


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


/* jansson, asked to refuse a key repeated in an object, refuses it */

static int
repeats_a_key(u_char *body, size_t len)
{
    json_t        *root;
    json_error_t   err;

    root = json_loadb((char *) body, len,
                      JSON_DECODE_ANY|JSON_ALLOW_NUL|JSON_REJECT_DUPLICATES,
                      &err);

    if (root == NULL && json_error_code(&err) == json_error_numeric_overflow) {
        /* an integer beyond 64 bits first: read on, as the tape does */
        root = json_loadb((char *) body, len,
                          JSON_DECODE_ANY|JSON_ALLOW_NUL
                          |JSON_REJECT_DUPLICATES|JSON_DECODE_INT_AS_REAL,
                          &err);
    }

    if (root) {
        json_decref(root);
        return 0;
    }

    return json_error_code(&err) == json_error_duplicate_key;
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

    /* the ASCII fast path counts exactly what the byte loop counts */

    {
        size_t                   from;
        ngx_uint_t               level;
        ngx_http_llm_estimate_t  fast, slow;

        for (from = 0, level = 0; from < len && from < 3; /* void */) {
            ngx_http_llm_simd = level;
            ngx_http_llm_estimate_init(&fast);
            ngx_http_llm_estimate_init(&slow);
            ngx_http_llm_estimate_add_bytes(&slow, body + from, len - from);

            if (ngx_http_llm_estimate_ascii(&fast, body + from, len - from)
                == NGX_OK
                && ngx_memcmp(&fast, &slow, sizeof(fast)) != 0)
            {
                if (getenv("FUZZ_VERBOSE")) {
                    fprintf(stderr, "ascii: words %lu/%lu long %lu/%lu "
                            "humps %lu/%lu mixed %lu/%lu puncts %lu/%lu "
                            "lp %lu/%lu "
                            "digits %lu/%lu spaces %lu/%lu chars %lu/%lu\n",
                            fast.words, slow.words, fast.long_letters,
                            slow.long_letters, fast.humps, slow.humps,
                            fast.mixed, slow.mixed,
                            fast.puncts, slow.puncts, fast.long_puncts,
                            slow.long_puncts, fast.digits, slow.digits,
                            fast.spaces, slow.spaces, fast.chars, slow.chars);
                }

                abort();
            }

            if (level++ == ngx_http_llm_simd_best()) {
                level = 0;
                from++;
            }
        }

        ngx_http_llm_simd = size % (ngx_http_llm_simd_best() + 1);
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

    /* a fuzz pool does not run out: NGX_ERROR is a disagreement (jansson
     * refusing, for the canonical form, what the tape accepted) */

    if ((rc == NGX_DECLINED && err.len == 0) || rc == NGX_ERROR) {
        abort();
    }

    /*
     * jansson skips a raw NUL byte (its reader takes 0 for "no byte
     * buffered"); the tape refuses it, as RFC 8259 does
     */

    if (rc != NGX_ERROR && memchr(body, '\0', len) == NULL) {
        ngx_str_t                    rerr;
        ngx_http_llm_request_info_t  ref;

        if (ref_parse_request(pool, api, body, len, &ref, &rerr) != rc) {
            if (getenv("FUZZ_VERBOSE")) {
                fprintf(stderr, "tape: %d \"%.*s\"\nref: \"%.*s\"\n",
                        (int) rc, (int) (rc == NGX_OK ? 0 : err.len),
                        err.data, (int) (rc == NGX_OK ? rerr.len : 0),
                        rerr.data);
            }

            abort();
        }

        if (rc == NGX_OK
            && (ref.max_tokens != info.max_tokens
                || ref.messages != info.messages
                || ref.choices != info.choices
                || ref.stream != info.stream
                || ref.has_include_usage != info.has_include_usage
                || ref.model.len != info.model.len
                || (info.model.len
                    && ngx_memcmp(ref.model.data, info.model.data,
                                  info.model.len) != 0)
                || (ngx_memcmp(&ref.estimate, &info.estimate,
                               sizeof(ngx_http_llm_estimate_t)) != 0
                    && !repeats_a_key(body, len))))
        {
            if (getenv("FUZZ_VERBOSE")) {
                fprintf(stderr, "tape: max %ld msgs %lu est %lu\n"
                        "ref:  max %ld msgs %lu est %lu\n",
                        (long) info.max_tokens, info.messages,
                        ngx_http_llm_estimate_tokens(&info.estimate),
                        (long) ref.max_tokens, ref.messages,
                        ngx_http_llm_estimate_tokens(&ref.estimate));
            }

            abort();
        }
    }

    if (rc == NGX_OK) {
        if (!ngx_http_llm_utf8_valid(body, len)
            || info.max_tokens == 0 || info.max_tokens < -1
            || info.max_tokens > NGX_HTTP_LLM_MAX_TOKENS_MAX
            || info.model.len > 256
            || info.choices < 1 || info.choices > 2147483647)
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

        rc = ngx_http_llm_json_include_usage(pool, body, len, NULL, &out);

        /* from parse_request()'s info, the same body without a reread */

        if (api == NGX_HTTP_LLM_API_OPENAI) {
            ngx_str_t  out2;

            if (ngx_http_llm_json_include_usage(pool, body, len, &info, &out2)
                != rc
                || (rc == NGX_OK
                    && (out2.len != out.len
                        || memcmp(out2.data, out.data, out.len) != 0)))
            {
                abort();
            }
        }

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
