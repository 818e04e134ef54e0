
/*
 * ngx_llm_gateway: client keys and how they arrive.
 *
 * Owns "llm_key_file" (lines "DIGEST ACCOUNT [tier=NAME]
 * [expires=ISO8601]", read at configuration time, so a reload applies
 * changes), the lookup of a presented key by its digest, and the
 * extraction of the client's credential from the five forms clients
 * use -- "Authorization: Bearer", "x-api-key", "api-key",
 * "x-goog-api-key" and "?key=" -- each of which is taken out of what
 * goes upstream.  The same hiding keeps the client's Accept-Encoding
 * from a backend whose usage is read.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_crypto.h"


#define NGX_HTTP_LLM_KEY_FILE_MAX  (64 * 1024 * 1024)


static ngx_int_t ngx_http_llm_key_line(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf, ngx_str_t *file, ngx_uint_t line,
    ngx_str_t *words, ngx_uint_t n);
static time_t ngx_http_llm_parse_iso8601(u_char *p, size_t len);
static int ngx_libc_cdecl ngx_http_llm_key_cmp(const void *one,
    const void *two);
static ngx_int_t ngx_http_llm_keys_one_tier(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
static int ngx_libc_cdecl ngx_http_llm_key_account_cmp(const void *one,
    const void *two);
static void ngx_http_llm_header_hide(ngx_table_elt_t *h, ngx_uint_t wipe);
static ngx_int_t ngx_http_llm_query_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_uint_t ngx_http_llm_key_args(u_char *p, u_char *last,
    ngx_uint_t mask);
static void ngx_http_llm_mask_uri(ngx_str_t *uri);


static ngx_str_t  ngx_http_llm_hidden_name = ngx_string("Connection");
static u_char     ngx_http_llm_hidden_lc[] = "connection";


/* llm_key_file PATH; */

char *
ngx_http_llm_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    u_char           *buf, *p, *last, *eol;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *value, words[8];
    ngx_uint_t        line, nw;
    ngx_file_info_t   fi;

    if (lmcf->key_file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    lmcf->key_file = value[1];

    if (ngx_conf_full_name(cf->cycle, &lmcf->key_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(lmcf->key_file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN,
                       0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &lmcf->key_file);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    n = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > NGX_HTTP_LLM_KEY_FILE_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is unreadable or too large",
                           &lmcf->key_file);
        goto failed;
    }

    buf = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (buf == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));
    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "could not read key file \"%V\"", &lmcf->key_file);
        goto failed;
    }

    ngx_close_file(fd);

    last = buf + n;
    line = 0;

    for (p = buf; p < last; p = eol + 1) {
        line++;

        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        /* split on blanks; "#" starts a comment */

        nw = 0;

        while (p < eol && *p != '#') {

            if (*p == ' ' || *p == '\t' || *p == '\r') {
                p++;
                continue;
            }

            if (nw == sizeof(words) / sizeof(ngx_str_t)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "too many fields in key file \"%V\" "
                                   "line %ui", &lmcf->key_file, line);
                return NGX_CONF_ERROR;
            }

            words[nw].data = p;

            while (p < eol && *p != ' ' && *p != '\t' && *p != '\r') {
                p++;
            }

            words[nw].len = p - words[nw].data;
            nw++;
        }

        if (nw == 0) {
            continue;
        }

        if (ngx_http_llm_key_line(cf, lmcf, &lmcf->key_file, line, words, nw)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

failed:

    ngx_close_file(fd);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_llm_key_line(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *file, ngx_uint_t line, ngx_str_t *words, ngx_uint_t n)
{
    ngx_uint_t           i;
    ngx_http_llm_key_t  *key;

    if (n < 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" line %ui: expected "
                           "\"DIGEST ACCOUNT [tier=NAME] [expires=TIME]\"",
                           file, line);
        return NGX_ERROR;
    }

    key = ngx_array_push(&lmcf->keys);
    if (key == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_llm_key_t));

    if (ngx_http_llm_hex_decode(key->digest, words[0].data, words[0].len)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" line %ui: invalid digest, "
                           "expected 64 hex digits of BLAKE2b-256",
                           file, line);
        return NGX_ERROR;
    }

    if (ngx_http_llm_account_valid(&words[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" line %ui: invalid account "
                           "\"%V\"", file, line, &words[1]);
        return NGX_ERROR;
    }

    key->account = words[1];

    for (i = 2; i < n; i++) {

        if (words[i].len > 5 && ngx_strncmp(words[i].data, "tier=", 5) == 0)
        {
            if (key->tier_name.len) {
                goto duplicate;
            }

            key->tier_name.data = words[i].data + 5;
            key->tier_name.len = words[i].len - 5;
            continue;
        }

        if (words[i].len > 8
            && ngx_strncmp(words[i].data, "expires=", 8) == 0)
        {
            if (key->expires) {
                goto duplicate;
            }

            key->expires = ngx_http_llm_parse_iso8601(words[i].data + 8,
                                                      words[i].len - 8);
            if (key->expires == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "key file \"%V\" line %ui: invalid "
                                   "\"%V\", expected an ISO 8601 UTC time",
                                   file, line, &words[i]);
                return NGX_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" line %ui: invalid parameter "
                           "\"%V\"", file, line, &words[i]);
        return NGX_ERROR;
    }

    /* the tier is resolved once every llm_tier is known */

    key->line = line;

    return NGX_OK;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "key file \"%V\" line %ui: duplicate parameter "
                       "\"%V\"", file, line, &words[i]);
    return NGX_ERROR;
}


/*
 * After the http block: resolve tier names, sort by digest and refuse
 * duplicates.
 */

ngx_int_t
ngx_http_llm_keys_init(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t           i;
    ngx_http_llm_key_t  *key;

    key = lmcf->keys.elts;

    for (i = 0; i < lmcf->keys.nelts; i++) {

        if (key[i].tier_name.len == 0) {
            continue;
        }

        key[i].tier = ngx_http_llm_tier_find(lmcf, &key[i].tier_name);

        if (key[i].tier == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "key file \"%V\" line %ui: unknown tier \"%V\"",
                          &lmcf->key_file, key[i].line, &key[i].tier_name);
            return NGX_ERROR;
        }
    }

    /* an account has one tier: its key lines must not disagree */

    if (ngx_http_llm_keys_one_tier(cf, lmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_qsort(key, lmcf->keys.nelts, sizeof(ngx_http_llm_key_t),
              ngx_http_llm_key_cmp);

    for (i = 1; i < lmcf->keys.nelts; i++) {
        if (ngx_memcmp(key[i - 1].digest, key[i].digest,
                       NGX_HTTP_LLM_DIGEST_LEN)
            == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "key file \"%V\" holds a digest twice "
                          "(accounts \"%V\" and \"%V\")", &lmcf->key_file,
                          &key[i - 1].account, &key[i].account);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_llm_key_cmp(const void *one, const void *two)
{
    const ngx_http_llm_key_t  *a = one;
    const ngx_http_llm_key_t  *b = two;

    return ngx_memcmp(a->digest, b->digest, NGX_HTTP_LLM_DIGEST_LEN);
}


static ngx_int_t
ngx_http_llm_keys_one_tier(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t            i, n;
    ngx_http_llm_key_t   *key, **by;

    n = lmcf->keys.nelts;

    if (n < 2) {
        return NGX_OK;
    }

    by = ngx_palloc(cf->temp_pool, n * sizeof(ngx_http_llm_key_t *));
    if (by == NULL) {
        return NGX_ERROR;
    }

    key = lmcf->keys.elts;

    for (i = 0; i < n; i++) {
        by[i] = &key[i];
    }

    ngx_qsort(by, n, sizeof(ngx_http_llm_key_t *),
              ngx_http_llm_key_account_cmp);

    for (i = 1; i < n; i++) {
        if (ngx_http_llm_key_account_cmp(&by[i - 1], &by[i]) == 0
            && by[i - 1]->tier != by[i]->tier)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "key file \"%V\" gives account \"%V\" two "
                          "tiers, on lines %ui and %ui", &lmcf->key_file,
                          &by[i]->account, ngx_min(by[i - 1]->line,
                                                   by[i]->line),
                          ngx_max(by[i - 1]->line, by[i]->line));
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_llm_key_account_cmp(const void *one, const void *two)
{
    ngx_http_llm_key_t  *a = *(ngx_http_llm_key_t **) one;
    ngx_http_llm_key_t  *b = *(ngx_http_llm_key_t **) two;

    return ngx_memn2cmp(a->account.data, b->account.data, a->account.len,
                        b->account.len);
}


/* account names: 1..64 of [A-Za-z0-9._@-] */

ngx_int_t
ngx_http_llm_account_valid(ngx_str_t *account)
{
    u_char      c;
    ngx_uint_t  i;

    if (account->len == 0 || account->len > NGX_HTTP_LLM_ACCOUNT_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < account->len; i++) {
        c = account->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || c == '.' || c == '_' || c == '@' || c == '-')
        {
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * YYYY-MM-DD, optionally followed by THH:MM[:SS[.frac]] and Z or
 * +HH:MM / -HH:MM; years from 2000 on.
 */

static time_t
ngx_http_llm_parse_iso8601(u_char *p, size_t len)
{
    u_char      *last;
    ngx_int_t    f[6], off, sign, hh, mm;
    ngx_uint_t   i, w, leap;

    static const size_t   widths[6] = { 4, 2, 2, 2, 2, 2 };
    static const u_char   seps[5] = { '-', '-', 'T', ':', ':' };
    static const u_char   days[13] = { 0, 31, 29, 31, 30, 31, 30, 31, 31,
                                       30, 31, 30, 31 };

    last = p + len;
    ngx_memzero(f, sizeof(f));

    for (i = 0; i < 6; i++) {

        if (i > 0) {
            if (p == last || (*p != seps[i - 1]
                              && !(i == 3 && *p == 't')))
            {
                break;
            }

            p++;
        }

        for (w = widths[i]; w; w--, p++) {
            if (p == last || *p < '0' || *p > '9') {
                return NGX_ERROR;
            }

            f[i] = f[i] * 10 + (*p - '0');
        }
    }

    /* a date alone, or a date with hours and minutes at least */

    if (i < 3 || i == 4) {
        return NGX_ERROR;
    }

    leap = (f[0] % 4 == 0 && f[0] % 100 != 0) || f[0] % 400 == 0;

    if (f[0] < 2000 || f[1] < 1 || f[1] > 12 || f[2] < 1
        || f[2] > days[f[1]] || (f[1] == 2 && f[2] == 29 && !leap)
        || f[3] > 23 || f[4] > 59 || f[5] > 59)
    {
        return NGX_ERROR;
    }

    if (i == 6 && p < last && *p == '.') {
        for (p++; p < last && *p >= '0' && *p <= '9'; p++) { /* void */ }
    }

    off = 0;

    if (p < last && (*p == 'Z' || *p == 'z')) {
        p++;

    } else if (p < last && (*p == '+' || *p == '-')) {
        sign = (*p == '-') ? -1 : 1;

        if (last - p != 6 || p[3] != ':') {
            return NGX_ERROR;
        }

        hh = ngx_atoi(p + 1, 2);
        mm = ngx_atoi(p + 4, 2);

        if (hh < 0 || hh > 23 || mm < 0 || mm > 59) {
            return NGX_ERROR;
        }

        off = sign * (hh * 3600 + mm * 60);
        p += 6;
    }

    if (p != last) {
        return NGX_ERROR;
    }

    return ngx_http_llm_civil_days(f[0], f[1], f[2]) * 86400
           + f[3] * 3600 + f[4] * 60 + f[5] - off;
}


ngx_http_llm_key_t *
ngx_http_llm_key_find(ngx_http_llm_main_conf_t *lmcf, ngx_str_t *key,
    u_char *digest)
{
    ngx_int_t            rc;
    ngx_uint_t           lo, hi, mid;
    ngx_http_llm_key_t  *keys;

    ngx_http_llm_digest(digest, key->data, key->len);

    keys = lmcf->keys.elts;
    lo = 0;
    hi = lmcf->keys.nelts;

    /* a digest cannot be steered by the client: searching it is safe */

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memcmp(digest, keys[mid].digest, NGX_HTTP_LLM_DIGEST_LEN);

        if (rc == 0) {
            return ngx_http_llm_digest_equal(digest, keys[mid].digest)
                   ? &keys[mid] : NULL;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/*
 * Finds the client's credential and takes every credential header and
 * "key" argument out of the request, so none of them is proxied.
 * NGX_DECLINED: the client sent none.
 */

ngx_int_t
ngx_http_llm_credential(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char           *p, *last;
    ngx_str_t         found[4], arg;
    ngx_uint_t        i, which;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_memzero(found, sizeof(found));

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        switch (h[i].key.len) {

        case sizeof("authorization") - 1:
            if (ngx_strncmp(h[i].lowcase_key, "authorization", 13) != 0) {
                continue;
            }

            /* only "Bearer" (any case) is ours: Basic and others pass */

            p = h[i].value.data;
            last = p + h[i].value.len;

            if (h[i].value.len < 6
                || ngx_strncasecmp(p, (u_char *) "Bearer", 6) != 0
                || (h[i].value.len > 6 && p[6] != ' ' && p[6] != '\t'))
            {
                continue;
            }

            for (p += 6; p < last && (*p == ' ' || *p == '\t'); p++) {
                /* void */
            }

            while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
                last--;
            }

            which = 0;
            r->headers_in.authorization = NULL;
            break;

        case sizeof("x-api-key") - 1:
            if (ngx_strncmp(h[i].lowcase_key, "x-api-key", 9) != 0) {
                continue;
            }

            p = h[i].value.data;
            last = p + h[i].value.len;
            which = 1;
            break;

        case sizeof("api-key") - 1:
            if (ngx_strncmp(h[i].lowcase_key, "api-key", 7) != 0) {
                continue;
            }

            p = h[i].value.data;
            last = p + h[i].value.len;
            which = 2;
            break;

        case sizeof("x-goog-api-key") - 1:
            if (ngx_strncmp(h[i].lowcase_key, "x-goog-api-key", 14) != 0) {
                continue;
            }

            /* Gemini's SDKs */

            p = h[i].value.data;
            last = p + h[i].value.len;
            which = 3;
            break;

        default:
            continue;
        }

        /* copied: the header's own bytes are wiped below */

        if (found[which].data == NULL) {
            found[which].len = last - p;
            found[which].data = ngx_pnalloc(r->pool, last - p + 1);

            if (found[which].data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(found[which].data, p, last - p);
        }

        ngx_http_llm_header_hide(&h[i], 1);
    }

    arg.data = NULL;

    if (r->args.len && ngx_http_llm_query_key(r, &arg) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < 4; i++) {
        if (found[i].data) {
            *key = found[i];
            return NGX_OK;
        }
    }

    if (arg.data) {
        *key = arg;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The backend is asked for an answer it does not encode, so that its
 * usage can be read: every Accept-Encoding header of the client's is
 * hidden from the upstream request, as "proxy_set_header
 * Accept-Encoding "";" would (a proxy_set_header of the location's
 * own still wins), and nginx's pointer to the first one is moved to a
 * copy, so that the gzip filter still encodes for the client as it
 * asked.
 */

ngx_int_t
ngx_http_llm_identity(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;
#if (NGX_HTTP_GZIP || NGX_HTTP_HEADERS)
    ngx_table_elt_t  *copy;
#endif

#if (NGX_HTTP_GZIP || NGX_HTTP_HEADERS)

    if (r->headers_in.accept_encoding == NULL) {
        return NGX_OK;
    }

    copy = ngx_palloc(r->pool, sizeof(ngx_table_elt_t));
    if (copy == NULL) {
        return NGX_ERROR;
    }

    *copy = *r->headers_in.accept_encoding;
    r->headers_in.accept_encoding = copy;

#endif

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("accept-encoding") - 1
            && h[i].hash
            && ngx_strncmp(h[i].lowcase_key, "accept-encoding", 15) == 0)
        {
            ngx_http_llm_header_hide(&h[i], 0);
        }
    }

    return NGX_OK;
}


/*
 * A hidden header stays in the list (other pointers into the list must
 * stay valid) but is renamed to "Connection", a header that the proxy
 * module always sets itself and so never copies from the client, and
 * emptied; a credential's bytes are overwritten ("wipe"), so that a
 * "$http_*" value cached before this phase shows no more than
 * asterisks.
 */

static void
ngx_http_llm_header_hide(ngx_table_elt_t *h, ngx_uint_t wipe)
{
    if (wipe) {
        ngx_memset(h->value.data, '*', h->value.len);
    }

    h->key = ngx_http_llm_hidden_name;
    h->lowcase_key = ngx_http_llm_hidden_lc;
    h->hash = ngx_hash_key(ngx_http_llm_hidden_lc,
                           sizeof(ngx_http_llm_hidden_lc) - 1);
    h->value.len = 0;
}


/*
 * Takes every "key" argument out of $args, returning the first one
 * (unescaped), and masks their values in the request line and the
 * unparsed URI (for HTTP/2 these are copies), so that $request and
 * $request_uri do not log them.
 */

static ngx_int_t
ngx_http_llm_query_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char     *p, *last, *amp, *dst, *out, *v, *src;
    ngx_uint_t  n;

    p = r->args.data;
    last = p + r->args.len;

    if (ngx_http_llm_key_args(p, last, 0) == 0) {
        return NGX_OK;
    }

    out = ngx_pnalloc(r->pool, r->args.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    dst = out;
    n = 0;

    for ( /* void */ ; p < last; p = amp + 1) {

        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        if (amp - p < 4 || ngx_strncmp(p, "key=", 4) != 0) {
            if (dst != out) {
                *dst++ = '&';
            }

            dst = ngx_cpymem(dst, p, amp - p);
            continue;
        }

        if (n++ == 0) {
            v = ngx_pnalloc(r->pool, amp - p - 4 + 1);
            if (v == NULL) {
                return NGX_ERROR;
            }

            key->data = v;
            src = p + 4;
            ngx_unescape_uri(&v, &src, amp - p - 4, 0);
            key->len = v - key->data;
        }
    }

    /* $args may alias the request line: copy the key out before masking */

    ngx_http_llm_mask_uri(&r->unparsed_uri);
    ngx_http_llm_mask_uri(&r->request_line);

    r->args.data = out;
    r->args.len = dst - out;
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}


/* counts the "key" arguments of a query string, masking their values */

static ngx_uint_t
ngx_http_llm_key_args(u_char *p, u_char *last, ngx_uint_t mask)
{
    u_char      *amp;
    ngx_uint_t   n;

    n = 0;

    for ( /* void */ ; p < last; p = amp + 1) {

        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        if (amp - p >= 4 && ngx_strncmp(p, "key=", 4) == 0) {
            n++;

            if (mask) {
                ngx_memset(p + 4, '*', amp - p - 4);
            }
        }
    }

    return n;
}


/*
 * $request, which nginx's error lines and the access log show, without
 * the values of "key" arguments shaped like our keys: from the
 * post-read phase, for a request that never reaches a gateway's access
 * phase (a body over client_max_body_size, a "return", a path that is
 * no gateway's).  The request line is copied first: $args and $uri
 * may point into it.
 */

ngx_int_t
ngx_http_llm_mask_request_line(ngx_http_request_t *r)
{
    u_char      *p, *q, *last, *amp, *line;
    ngx_uint_t   mask, n;

    static u_char  prefix[] = "key=sk-llm-";

    for (mask = 0; mask < 2; mask++) {

        last = r->request_line.data + r->request_line.len;

        p = ngx_strlchr(r->request_line.data, last, '?');
        if (p == NULL) {
            return NGX_OK;
        }

        q = ngx_strlchr(p, last, ' ');
        last = q ? q : last;

        n = 0;

        for (p++; p < last; p = amp + 1) {

            amp = ngx_strlchr(p, last, '&');
            if (amp == NULL) {
                amp = last;
            }

            if ((size_t) (amp - p) >= sizeof(prefix) - 1
                && ngx_strncmp(p, prefix, sizeof(prefix) - 1) == 0)
            {
                n++;

                if (mask) {
                    ngx_memset(p + 4, '*', amp - p - 4);
                }
            }
        }

        if (n == 0 || mask) {
            return NGX_OK;
        }

        line = ngx_pnalloc(r->pool, r->request_line.len);
        if (line == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(line, r->request_line.data, r->request_line.len);
        r->request_line.data = line;
    }

    return NGX_OK;
}


/* the query of "/uri?query" or of "GET /uri?query HTTP/1.1" */

static void
ngx_http_llm_mask_uri(ngx_str_t *uri)
{
    u_char  *p, *q, *last;

    last = uri->data + uri->len;

    p = ngx_strlchr(uri->data, last, '?');
    if (p == NULL) {
        return;
    }

    q = ngx_strlchr(p, last, ' ');

    (void) ngx_http_llm_key_args(p + 1, q ? q : last, 1);
}
