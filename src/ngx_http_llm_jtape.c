
/*
 * ngx_llm_gateway: a request body's JSON as a flat tape of tokens.
 *
 * Owns the one pass over a request body that checks it is JSON (RFC
 * 8259, strictly: UTF-8, no control characters in strings, escapes and
 * surrogate pairs well formed, numbers in range, one value) no deeper
 * than a limit, and lists its values in document order in an array in
 * the pool: no tree, no hash, no copy of a string.  Readers look keys
 * up by a linear pass over an object's members (the last one of a
 * repeated key wins, as in jansson) and unescape only the strings they
 * read.  It accepts and refuses what jansson's json_loadb() accepts and
 * refuses with JSON_DECODE_ANY|JSON_ALLOW_NUL, but for an integer beyond
 * 64 bits, which it reads as a real (as jansson does every integer with
 * JSON_DECODE_INT_AS_REAL), which t/fuzz checks.
 *
 * Why not jansson here: its tree of a 2 KB chat body (a malloc() per
 * value, a hash per object) took 22 us of a worker's time per request,
 * this pass takes about 1 us; jansson still writes JSON where the
 * gateway has to (src/ngx_http_llm_json.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <math.h>

#include "ngx_http_llm_jtape.h"
#include "ngx_http_llm_tokens.h"
#include "ngx_http_llm_simd.h"


/* what a byte is inside a string */
#define NGX_HTTP_LLM_JT_PLAIN       0
#define NGX_HTTP_LLM_JT_QUOTE       1
#define NGX_HTTP_LLM_JT_BACKSLASH   2
#define NGX_HTTP_LLM_JT_CONTROL     3
#define NGX_HTTP_LLM_JT_NOT_ASCII   4

/* string bytes: 0 ordinary, 1 '"', 2 '\\', 3 a control, 4 not ASCII */
static u_char  ngx_http_llm_jt_sclass[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4
};



/* why a text is refused */
typedef struct {
    const char                 *what;
    u_char                     *at;
    ngx_uint_t                  kind;
} ngx_http_llm_jt_err_t;

#define NGX_HTTP_LLM_JT_E_SYNTAX    0
#define NGX_HTTP_LLM_JT_E_UTF8      1
#define NGX_HTTP_LLM_JT_E_RANGE     2
#define NGX_HTTP_LLM_JT_E_DEPTH     3
#define NGX_HTTP_LLM_JT_E_NOMEM     4


static ngx_http_llm_always_inline ngx_uint_t ngx_http_llm_jt_push(
    ngx_http_llm_jtape_t *t, ngx_uint_t type, u_char *start);
static ngx_int_t ngx_http_llm_jt_grow(ngx_http_llm_jtape_t *t);
static u_char *ngx_http_llm_jt_string(u_char *p, u_char *last,
    ngx_http_llm_jtok_t *tok, ngx_http_llm_jt_err_t *err);
static ngx_int_t ngx_http_llm_jt_hex4(u_char *p, u_char *last,
    uint32_t *code);
static u_char *ngx_http_llm_jt_number(ngx_http_llm_jtape_t *t, u_char *p,
    u_char *last, ngx_http_llm_jtok_t *tok, ngx_http_llm_jt_err_t *err);
static ngx_int_t ngx_http_llm_jt_real_over(ngx_http_llm_jtape_t *t,
    ngx_http_llm_jtok_t *tok);
static ngx_int_t ngx_http_llm_jt_strtod(ngx_http_llm_jtape_t *t,
    ngx_http_llm_jtok_t *tok, double *d);
static ngx_int_t ngx_http_llm_jt_error(ngx_http_llm_jtape_t *t,
    ngx_http_llm_jt_err_t *err, ngx_uint_t max_depth, ngx_str_t *error);


#define ngx_http_llm_jt_ws(c)                                                 \
    ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')


/*
 * NGX_OK: the tape is built (index 1 is the document); NGX_DECLINED:
 * "error" (unless NULL) says why the text is not acceptable JSON;
 * NGX_ERROR.  "t" is zeroed before its first use; a tape parsed again
 * reuses its memory; ngx_http_llm_jtape_free() gives it back.
 */

ngx_int_t
ngx_http_llm_jtape_parse(ngx_http_llm_jtape_t *t, ngx_pool_t *pool,
    u_char *p, size_t len, ngx_uint_t max_depth, ngx_str_t *error)
{
    u_char                 *last, c;
    size_t                  n;
    uint32_t                stack[NGX_HTTP_LLM_JT_DEPTH_MAX + 1];
    ngx_uint_t              depth, i, in_object, escaped;
    ngx_http_llm_jt_err_t   err;

    if (max_depth > NGX_HTTP_LLM_JT_DEPTH_MAX) {
        return NGX_ERROR;
    }

    if (len >= 0xffffffff) {
        /* offsets are 32 bits */
        if (error) {
            ngx_str_set(error, "request body is too large to read");
        }

        return NGX_DECLINED;
    }

    t->pool = pool;
    t->base = p;
    t->len = len;

    if (t->nalloc == 0) {
        t->nalloc = 64;
        t->tok = ngx_palloc(pool, t->nalloc * sizeof(ngx_http_llm_jtok_t));
        if (t->tok == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_memzero(&t->tok[0], sizeof(ngx_http_llm_jtok_t));
    t->ntok = 1;

    last = p + len;
    depth = 0;
    in_object = 0;
    escaped = 0;

    err.what = "unexpected character";
    err.kind = NGX_HTTP_LLM_JT_E_SYNTAX;

value:

    while (p < last && ngx_http_llm_jt_ws(*p)) {
        p++;
    }

    if (p == last) {
        err.what = "unexpected end of data";
        err.at = p;
        goto failed;
    }

    c = *p;

    switch (c) {

    case '{':
    case '[':
        i = ngx_http_llm_jt_push(t, c == '{' ? NGX_HTTP_LLM_JT_OBJECT
                                             : NGX_HTTP_LLM_JT_ARRAY, p);
        if (i == 0) {
            return NGX_ERROR;
        }

        if (depth == max_depth) {
            err.kind = NGX_HTTP_LLM_JT_E_DEPTH;
            err.at = p;
            goto failed;
        }

        stack[depth++] = (uint32_t) i;
        in_object = (c == '{');
        p++;

        while (p < last && ngx_http_llm_jt_ws(*p)) {
            p++;
        }

        if (p < last && *p == (in_object ? '}' : ']')) {
            p++;
            goto close;
        }

        if (in_object) {
            goto key;
        }

        goto value;

    case '"':
        i = ngx_http_llm_jt_push(t, NGX_HTTP_LLM_JT_STRING, p + 1);
        if (i == 0) {
            return NGX_ERROR;
        }

        p = ngx_http_llm_jt_string(p + 1, last, &t->tok[i], &err);
        escaped |= t->tok[i].flags;
        break;

    case 't':
    case 'f':
    case 'n':
        i = ngx_http_llm_jt_push(t, c == 't' ? NGX_HTTP_LLM_JT_TRUE
                                    : c == 'f' ? NGX_HTTP_LLM_JT_FALSE
                                               : NGX_HTTP_LLM_JT_NULL, p);
        if (i == 0) {
            return NGX_ERROR;
        }

        n = (c == 'f') ? 5 : 4;

        if ((size_t) (last - p) < n
            || ngx_memcmp(p, (c == 't' ? "true" : c == 'f' ? "false"
                                                          : "null"), n)
               != 0)
        {
            err.what = "invalid literal";
            err.at = p;
            goto failed;
        }

        t->tok[i].len = (uint32_t) n;
        p += n;
        break;

    default:
        if (c != '-' && (c < '0' || c > '9')) {
            err.at = p;
            goto failed;
        }

        i = ngx_http_llm_jt_push(t, NGX_HTTP_LLM_JT_INTEGER, p);
        if (i == 0) {
            return NGX_ERROR;
        }

        p = ngx_http_llm_jt_number(t, p, last, &t->tok[i], &err);
    }

    if (p == NULL) {
        goto failed;
    }

    t->tok[i].next = (uint32_t) t->ntok;

after:

    while (p < last && ngx_http_llm_jt_ws(*p)) {
        p++;
    }

    if (depth == 0) {
        if (p != last) {
            err.what = "data after the document";
            err.at = p;
            goto failed;
        }

        /* room to unescape any one string: escapes only shrink text */

        if ((escaped & NGX_HTTP_LLM_JT_ESCAPED) && t->scratch_size < len) {
            t->scratch = ngx_pnalloc(pool, len);
            if (t->scratch == NULL) {
                return NGX_ERROR;
            }

            t->scratch_size = len;
        }

        return NGX_OK;
    }

    if (p == last) {
        err.what = "unexpected end of data";
        err.at = p;
        goto failed;
    }

    if (*p == ',') {
        p++;

        if (!in_object) {
            goto value;
        }

        while (p < last && ngx_http_llm_jt_ws(*p)) {
            p++;
        }

        goto key;
    }

    if (*p != (in_object ? '}' : ']')) {
        err.at = p;
        goto failed;
    }

    p++;

close:

    i = stack[--depth];
    t->tok[i].next = (uint32_t) t->ntok;
    t->tok[i].len = (uint32_t) (p - t->base) - t->tok[i].start;

    if (depth) {
        in_object = (t->tok[stack[depth - 1]].type == NGX_HTTP_LLM_JT_OBJECT);
    }

    goto after;

key:

    if (p == last || *p != '"') {
        err.what = "a string key expected";
        err.at = p;
        goto failed;
    }

    i = ngx_http_llm_jt_push(t, NGX_HTTP_LLM_JT_STRING, p + 1);
    if (i == 0) {
        return NGX_ERROR;
    }

    p = ngx_http_llm_jt_string(p + 1, last, &t->tok[i], &err);

    if (p == NULL) {
        goto failed;
    }

    escaped |= t->tok[i].flags;

    if (t->tok[i].flags & NGX_HTTP_LLM_JT_NUL) {
        err.what = "a NUL character in a key";
        err.at = t->base + t->tok[i].start;
        goto failed;
    }

    t->tok[i].next = (uint32_t) t->ntok;

    while (p < last && ngx_http_llm_jt_ws(*p)) {
        p++;
    }

    if (p == last || *p != ':') {
        err.what = "':' expected";
        err.at = p;
        goto failed;
    }

    p++;

    goto value;

failed:

    return ngx_http_llm_jt_error(t, &err, max_depth, error);
}


/* a token per value and per key: the common case inline, growth not */

static ngx_http_llm_always_inline ngx_uint_t
ngx_http_llm_jt_push(ngx_http_llm_jtape_t *t, ngx_uint_t type, u_char *start)
{
    ngx_http_llm_jtok_t  *tok;

    if (t->ntok == t->nalloc && ngx_http_llm_jt_grow(t) != NGX_OK) {
        return 0;
    }

    tok = &t->tok[t->ntok];

    tok->start = (uint32_t) (start - t->base);
    tok->len = 0;
    tok->next = 0;
    tok->type = (uint8_t) type;
    tok->flags = 0;

    return t->ntok++;
}


static ngx_int_t
ngx_http_llm_jt_grow(ngx_http_llm_jtape_t *t)
{
    ngx_http_llm_jtok_t  *tok;

    tok = ngx_palloc(t->pool, 2 * t->nalloc * sizeof(ngx_http_llm_jtok_t));
    if (tok == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(tok, t->tok, t->ntok * sizeof(ngx_http_llm_jtok_t));

    /* a large block goes back at once; a small one stays till the end */
    (void) ngx_pfree(t->pool, t->tok);

    t->tok = tok;
    t->nalloc *= 2;

    return NGX_OK;
}


/* p: past the opening quote; returns past the closing one, or NULL */

static u_char *
ngx_http_llm_jt_string(u_char *p, u_char *last, ngx_http_llm_jtok_t *tok,
    ngx_http_llm_jt_err_t *err)
{
    u_char    *start;
    size_t     n;
    uint32_t   code, low;

    start = p;

    for ( ;; ) {

        p = ngx_http_llm_simd_string(p, last);

        if (p == last) {
            err->what = "unterminated string";
            err->at = p;
            return NULL;
        }

        switch (ngx_http_llm_jt_sclass[*p]) {

        case NGX_HTTP_LLM_JT_QUOTE:
            tok->len = (uint32_t) (p - start);
            return p + 1;

        case NGX_HTTP_LLM_JT_BACKSLASH:
            tok->flags |= NGX_HTTP_LLM_JT_ESCAPED;

            if (last - p < 2) {
                err->what = "unterminated string";
                err->at = last;
                return NULL;
            }

            switch (p[1]) {

            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                continue;

            case 'u':
                break;

            default:
                err->what = "invalid escape";
                err->at = p;
                return NULL;
            }

            if (ngx_http_llm_jt_hex4(p + 2, last, &code) != NGX_OK) {
                err->what = "invalid \\u escape";
                err->at = p;
                return NULL;
            }

            if (code >= 0xdc00 && code <= 0xdfff) {
                err->what = "a lone low surrogate";
                err->at = p;
                return NULL;
            }

            if (code >= 0xd800 && code <= 0xdbff) {
                if (last - p < 12 || p[6] != '\\' || p[7] != 'u'
                    || ngx_http_llm_jt_hex4(p + 8, last, &low) != NGX_OK
                    || low < 0xdc00 || low > 0xdfff)
                {
                    err->what = "a lone high surrogate";
                    err->at = p;
                    return NULL;
                }

                p += 12;
                continue;
            }

            if (code == 0) {
                tok->flags |= NGX_HTTP_LLM_JT_NUL;
            }

            p += 6;
            continue;

        case NGX_HTTP_LLM_JT_CONTROL:
            err->what = "a control character in a string";
            err->at = p;
            return NULL;

        default: /* NGX_HTTP_LLM_JT_NOT_ASCII */
            n = ngx_http_llm_utf8_char(p, last);

            if (n == 0) {
                err->kind = NGX_HTTP_LLM_JT_E_UTF8;
                err->at = p;
                return NULL;
            }

            p += n;
        }
    }
}


static ngx_int_t
ngx_http_llm_jt_hex4(u_char *p, u_char *last, uint32_t *code)
{
    u_char      c;
    uint32_t    v;
    ngx_uint_t  i;

    if (last - p < 4) {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            v = v * 16 + (c - '0');

        } else {
            c |= 0x20;

            if (c < 'a' || c > 'f') {
                return NGX_ERROR;
            }

            v = v * 16 + (c - 'a' + 10);
        }
    }

    *code = v;

    return NGX_OK;
}


/*
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  A number must not
 * overflow a double, as jansson's strtod() has it.  An integer beyond 64
 * bits is a real (JSON sets no limit, and a tool's schema may name
 * 18446744073709551615), as jansson reads integers with
 * JSON_DECODE_INT_AS_REAL.
 */

static u_char *
ngx_http_llm_jt_number(ngx_http_llm_jtape_t *t, u_char *p, u_char *last,
    ngx_http_llm_jtok_t *tok, ngx_http_llm_jt_err_t *err)
{
    u_char      *start, *digits;
    uint64_t     n, max;
    ngx_int_t    over;
    ngx_uint_t   neg, real, d, magnitude, e, e_neg;

    start = p;
    neg = 0;
    real = 0;
    over = 0;
    n = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }

    max = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

    if (p == last || *p < '0' || *p > '9') {
        goto invalid;
    }

    digits = p;

    if (*p == '0') {
        p++;

    } else {
        while (p < last && *p >= '0' && *p <= '9') {
            d = *p++ - '0';

            if (n > (max - d) / 10) {
                over = 1;

            } else {
                n = n * 10 + d;
            }
        }
    }

    /* the value is below 10 to the power "magnitude" */

    magnitude = p - digits;

    if (p < last && *p == '.') {
        real = 1;
        p++;

        if (p == last || *p < '0' || *p > '9') {
            goto invalid;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;

        e_neg = 0;

        if (p < last && (*p == '+' || *p == '-')) {
            e_neg = (*p == '-');
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            goto invalid;
        }

        for (e = 0; p < last && *p >= '0' && *p <= '9'; p++) {
            e = ngx_min(e * 10 + (*p - '0'), 100000);
        }

        if (!e_neg) {
            magnitude += e;
        }
    }

    tok->len = (uint32_t) (p - start);

    /*
     * a real below 1e300 cannot overflow (DBL_MAX is 1.8e308): strtod()
     * is asked only about the others
     */

    if (real || over) {
        tok->type = NGX_HTTP_LLM_JT_REAL;
        over = (magnitude < 300) ? 0 : ngx_http_llm_jt_real_over(t, tok);

        if (over == NGX_ERROR) {
            err->kind = NGX_HTTP_LLM_JT_E_NOMEM;
            return NULL;
        }
    }

    if (over) {
        err->kind = NGX_HTTP_LLM_JT_E_RANGE;
        err->at = start;
        return NULL;
    }

    return p;

invalid:

    err->what = "invalid number";
    err->at = start;

    return NULL;
}


/*
 * 1: strtod() says the real overflows (as jansson has it: underflow to a
 * subnormal or to 0 is fine); NGX_ERROR: no memory.
 */

static ngx_int_t
ngx_http_llm_jt_real_over(ngx_http_llm_jtape_t *t, ngx_http_llm_jtok_t *tok)
{
    double  d;

    if (ngx_http_llm_jt_strtod(t, tok, &d) != NGX_OK) {
        return NGX_ERROR;
    }

    return (d == HUGE_VAL || d == -HUGE_VAL);
}


/*
 * strtod() wants a terminated string: a copy, on the stack if short,
 * else malloc()ed and freed at once (a pool would keep it, and a tape
 * read again and again would grow).
 */

static ngx_int_t
ngx_http_llm_jt_strtod(ngx_http_llm_jtape_t *t, ngx_http_llm_jtok_t *tok,
    double *d)
{
    u_char  *s, buf[64];

    if (tok->len < sizeof(buf)) {
        s = buf;

    } else {
        s = ngx_alloc(tok->len + 1, t->pool->log);
        if (s == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(s, t->base + tok->start, tok->len);
    s[tok->len] = '\0';

    *d = strtod((char *) s, NULL);

    if (s != buf) {
        ngx_free(s);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_jt_error(ngx_http_llm_jtape_t *t, ngx_http_llm_jt_err_t *err,
    ngx_uint_t max_depth, ngx_str_t *error)
{
    u_char  *p;
    size_t   n;

    if (err->kind == NGX_HTTP_LLM_JT_E_NOMEM) {
        return NGX_ERROR;
    }

    if (error == NULL) {
        /* the caller wants no reason (nothing is allocated) */
        return NGX_DECLINED;
    }

    switch (err->kind) {

    case NGX_HTTP_LLM_JT_E_UTF8:
        ngx_str_set(error, "request body is not valid UTF-8");
        return NGX_DECLINED;

    case NGX_HTTP_LLM_JT_E_RANGE:
        ngx_str_set(error, "a number in the request body is out of range");
        return NGX_DECLINED;

    case NGX_HTTP_LLM_JT_E_DEPTH:
        n = sizeof("request body is nested more than  levels deep")
            + NGX_INT_T_LEN;
        break;

    default:
        /* a byte that is not UTF-8 is named as such wherever it is */

        if (err->at < t->base + t->len && *err->at >= 0x80
            && ngx_http_llm_utf8_char(err->at, t->base + t->len) == 0)
        {
            ngx_str_set(error, "request body is not valid UTF-8");
            return NGX_DECLINED;
        }

        n = sizeof("request body is not valid JSON:  at byte ")
            + ngx_strlen(err->what) + NGX_SIZE_T_LEN;
    }

    p = ngx_pnalloc(t->pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    error->data = p;

    if (err->kind == NGX_HTTP_LLM_JT_E_DEPTH) {
        error->len = ngx_sprintf(p, "request body is nested more than %ui "
                                 "levels deep", max_depth) - p;

    } else {
        error->len = ngx_sprintf(p, "request body is not valid JSON: %s at "
                                 "byte %uz", err->what,
                                 (size_t) (err->at - t->base)) - p;
    }

    return NGX_DECLINED;
}


/* the value of "name" in the object "obj" (the last if repeated); 0: none */

ngx_uint_t
ngx_http_llm_jtape_get(ngx_http_llm_jtape_t *t, ngx_uint_t obj, char *name,
    size_t len)
{
    size_t                j;
    ngx_str_t             key;
    ngx_uint_t            i, end, found;
    ngx_http_llm_jtok_t  *k;

    if (obj == 0 || t->tok[obj].type != NGX_HTTP_LLM_JT_OBJECT) {
        return 0;
    }

    end = t->tok[obj].next;
    found = 0;

    for (i = obj + 1; i < end; i = t->tok[i + 1].next) {
        k = &t->tok[i];

        if (k->flags & NGX_HTTP_LLM_JT_ESCAPED) {

            /* an escape takes 2 to 6 bytes for the 1 to 4 it stands for */

            if (k->len < len || k->len > 6 * len
                || ngx_http_llm_jtape_str(t, i, &key) != NGX_OK)
            {
                continue;
            }

        } else {
            key.data = t->base + k->start;
            key.len = k->len;
        }

        if (key.len != len) {
            continue;
        }

        /* keys are short: a loop beats a call to memcmp() */

        for (j = 0; j < len && key.data[j] == (u_char) name[j]; j++) {
            /* void */
        }

        if (j == len) {
            found = i + 1;
        }
    }

    return found;
}


/*
 * The values of several names in the object "obj", in one pass over its
 * members: "found[i]" is what ngx_http_llm_jtape_get() would give for
 * the i-th of "keys" (the last if repeated, 0 if none).
 */

void
ngx_http_llm_jtape_pick(ngx_http_llm_jtape_t *t, ngx_uint_t obj,
    ngx_http_llm_jtape_keys_t *keys, ngx_uint_t *found)
{
    size_t                j;
    uint64_t              lens;
    ngx_str_t             key, *name, *names;
    ngx_uint_t            i, end;
    ngx_http_llm_jtok_t  *k;

    names = keys->names;

    if (keys->lens == 0) {

        /* the lengths of the names (those under 63): most keys have none */

        lens = (uint64_t) 1 << 63;

        for (name = names; name->len; name++) {
            lens |= (uint64_t) 1 << ngx_min(name->len, 63);
        }

        keys->n = name - names;
        keys->lens = lens;
    }

    lens = keys->lens;

    ngx_memzero(found, keys->n * sizeof(ngx_uint_t));

    if (obj == 0 || t->tok[obj].type != NGX_HTTP_LLM_JT_OBJECT) {
        return;
    }

    end = t->tok[obj].next;

    for (i = obj + 1; i < end; i = t->tok[i + 1].next) {
        k = &t->tok[i];

        key.data = t->base + k->start;
        key.len = k->len;

        if (k->flags & NGX_HTTP_LLM_JT_ESCAPED) {
            if (ngx_http_llm_jtape_str(t, i, &key) != NGX_OK) {
                continue;
            }

        } else if (!(lens & ((uint64_t) 1 << ngx_min(key.len, 63)))) {
            continue;
        }

        for (name = names; name->len; name++) {

            if (name->len != key.len || name->data[0] != key.data[0]) {
                continue;
            }

            for (j = 1; j < key.len && key.data[j] == name->data[j]; j++) {
                /* void */
            }

            if (j == key.len) {
                found[name - names] = i + 1;
                break;
            }
        }
    }
}


/*
 * A string's text: the bytes themselves, or unescaped into the tape's
 * scratch space, which the next call may reuse.  NGX_ERROR: not a
 * string.
 */

ngx_int_t
ngx_http_llm_jtape_str(ngx_http_llm_jtape_t *t, ngx_uint_t i, ngx_str_t *s)
{
    u_char               *p, *last, *d, c;
    uint32_t              code, low;
    ngx_http_llm_jtok_t  *tok;

    tok = &t->tok[i];

    if (i == 0 || tok->type != NGX_HTTP_LLM_JT_STRING) {
        return NGX_ERROR;
    }

    p = t->base + tok->start;

    if (!(tok->flags & NGX_HTTP_LLM_JT_ESCAPED)) {
        s->data = p;
        s->len = tok->len;
        return NGX_OK;
    }

    d = t->scratch;
    s->data = d;
    last = p + tok->len;

    while (p < last) {

        if (*p != '\\') {
            *d++ = *p++;
            continue;
        }

        p++;

        c = *p++;

        if (c != 'u') {
            *d++ = (c == 'b') ? '\b' : (c == 'f') ? '\f' : (c == 'n') ? '\n'
                   : (c == 'r') ? '\r' : (c == 't') ? '\t'
                   : c;                                /* " \ / */
            continue;
        }

        /*
         * checked by the parse: 4 hex digits, surrogates in pairs (the
         * values set first are for compilers that cannot tell)
         */

        code = 0;
        low = 0xdc00;

        (void) ngx_http_llm_jt_hex4(p, last, &code);
        p += 4;

        if (code >= 0xd800 && code <= 0xdbff) {
            (void) ngx_http_llm_jt_hex4(p + 2, last, &low);
            p += 6;
            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        }

        if (code < 0x80) {
            *d++ = (u_char) code;

        } else if (code < 0x800) {
            *d++ = (u_char) (0xc0 | (code >> 6));
            *d++ = (u_char) (0x80 | (code & 0x3f));

        } else if (code < 0x10000) {
            *d++ = (u_char) (0xe0 | (code >> 12));
            *d++ = (u_char) (0x80 | ((code >> 6) & 0x3f));
            *d++ = (u_char) (0x80 | (code & 0x3f));

        } else {
            *d++ = (u_char) (0xf0 | (code >> 18));
            *d++ = (u_char) (0x80 | ((code >> 12) & 0x3f));
            *d++ = (u_char) (0x80 | ((code >> 6) & 0x3f));
            *d++ = (u_char) (0x80 | (code & 0x3f));
        }
    }

    s->len = d - s->data;

    return NGX_OK;
}


/* an integer token's value (its range was checked by the parse) */

int64_t
ngx_http_llm_jtape_int(ngx_http_llm_jtape_t *t, ngx_uint_t i)
{
    u_char      *p, *last;
    uint64_t     n;
    ngx_uint_t   neg;

    p = t->base + t->tok[i].start;
    last = p + t->tok[i].len;
    neg = (*p == '-');
    n = 0;

    for (p += neg; p < last; p++) {
        n = n * 10 + (*p - '0');
    }

    return neg ? (int64_t) (0 - n) : (int64_t) n;
}


/* a real token's value; NGX_ERROR: no memory */

ngx_int_t
ngx_http_llm_jtape_real(ngx_http_llm_jtape_t *t, ngx_uint_t i, double *d)
{
    return ngx_http_llm_jt_strtod(t, &t->tok[i], d);
}


/* gives back what the tape took from the pool, if it can (large blocks) */

void
ngx_http_llm_jtape_free(ngx_http_llm_jtape_t *t)
{
    if (t->tok) {
        (void) ngx_pfree(t->pool, t->tok);
    }

    if (t->scratch) {
        (void) ngx_pfree(t->pool, t->scratch);
    }

    ngx_memzero(t, sizeof(ngx_http_llm_jtape_t));
}
