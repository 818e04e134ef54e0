
/*
 * ngx_llm_gateway: what clients see of the gateway.
 *
 * Owns the JSON error bodies in the shape of the location's API format
 * (OpenAI, Anthropic, Gemini), which format a request speaks when
 * "llm_api auto", and the header filter that adds the rate-limit
 * headers of SPEC section 4 to every response of a gateway location --
 * the gateway's own errors and the backend's answers alike -- while
 * dropping the backend's own rate-limit headers, which describe the
 * provider's key rather than the client's.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_reply.h"
#include "ngx_http_llm_tally.h"


typedef struct {
    ngx_uint_t                  status;
    ngx_str_t                   code;       /* OpenAI "code" */
    ngx_str_t                   type;       /* OpenAI and Anthropic "type" */
    ngx_str_t                   gstatus;    /* Gemini "status" */
} ngx_http_llm_err_t;


static ngx_buf_t *ngx_http_llm_error_buf(ngx_http_request_t *r,
    ngx_uint_t api, ngx_http_llm_err_e err, ngx_str_t *message);
static ngx_int_t ngx_http_llm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_body_error(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_loc_conf_t *llcf);
static ngx_int_t ngx_http_llm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_llm_hide_backend_headers(ngx_http_request_t *r);
static u_char *ngx_http_llm_duration(u_char *p, uint64_t ms);


ngx_str_t  ngx_http_llm_unreadable_text =
    ngx_string("Request body cannot be read: its length or its chunked "
               "encoding is invalid.");


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_http_llm_err_t  ngx_http_llm_errors[] = {
    { NGX_HTTP_BAD_REQUEST, ngx_string("invalid_request_error"),
      ngx_string("invalid_request_error"), ngx_string("INVALID_ARGUMENT") },
    { NGX_HTTP_UNAUTHORIZED, ngx_string("invalid_api_key"),
      ngx_string("authentication_error"), ngx_string("UNAUTHENTICATED") },
    { NGX_HTTP_FORBIDDEN, ngx_string("account_suspended"),
      ngx_string("permission_error"), ngx_string("PERMISSION_DENIED") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, ngx_string("request_too_large"),
      ngx_string("request_too_large"), ngx_string("INVALID_ARGUMENT") },
    { NGX_HTTP_TOO_MANY_REQUESTS, ngx_string("rate_limit_exceeded"),
      ngx_string("rate_limit_error"), ngx_string("RESOURCE_EXHAUSTED") },
    { NGX_HTTP_TOO_MANY_REQUESTS, ngx_string("quota_exceeded"),
      ngx_string("rate_limit_error"), ngx_string("RESOURCE_EXHAUSTED") },
    { NGX_HTTP_BAD_GATEWAY, ngx_string("provider_unavailable"),
      ngx_string("api_error"), ngx_string("UNAVAILABLE") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("queue_overloaded"),
      ngx_string("overloaded_error"), ngx_string("UNAVAILABLE") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("queue_timeout"),
      ngx_string("overloaded_error"), ngx_string("UNAVAILABLE") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("store_unavailable"),
      ngx_string("api_error"), ngx_string("UNAVAILABLE") },
};


ngx_int_t
ngx_http_llm_reply_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_body_filter;

    return NGX_OK;
}


/*
 * "llm_api auto": Anthropic serves ".../messages" (OpenAI's Assistants
 * ".../threads/ID/messages" are OpenAI's), Gemini "/v1beta/..." (but
 * for "/v1beta/openai/...", its OpenAI-compatible API) and
 * ".../models/NAME:generateContent" and its kin (a name after the last
 * colon: OpenAI's fine-tuned models, "ft:gpt-4o-mini:org::id", have
 * colons too); the rest is OpenAI's.
 */

ngx_uint_t
ngx_http_llm_api(ngx_http_request_t *r, ngx_uint_t api)
{
    u_char      *p, *last, *colon, *beta;
    ngx_str_t   *m;

    static ngx_str_t  methods[] = {
        ngx_string("generateContent"),
        ngx_string("streamGenerateContent"),
        ngx_string("countTokens"),
        ngx_string("embedContent"),
        ngx_string("batchEmbedContents"),
        ngx_string("batchGenerateContent"),
        ngx_string("asyncBatchEmbedContent"),
        ngx_string("predict"),
        ngx_string("predictLongRunning"),
        ngx_null_string
    };

    if (api != NGX_HTTP_LLM_API_AUTO) {
        return api;
    }

    p = r->uri.data;
    last = p + r->uri.len;

    /* Claude on Vertex AI: ".../publishers/anthropic/models/M:rawPredict" */

    if (ngx_strlcasestrn(p, last, (u_char *) "/publishers/anthropic/",
                         sizeof("/publishers/anthropic/") - 1 - 1)
        != NULL)
    {
        return NGX_HTTP_LLM_API_ANTHROPIC;
    }

    beta = ngx_strlcasestrn(p, last, (u_char *) "/v1beta/", 8 - 1);

    if (beta != NULL
        && ((size_t) (last - beta) < 8 + 7
            || ngx_strncasecmp(beta + 8, (u_char *) "openai/", 7) != 0))
    {
        return NGX_HTTP_LLM_API_GEMINI;
    }

    for (colon = last; colon > p && colon[-1] != ':' && colon[-1] != '/';
         colon--)
    {
        /* void */
    }

    if (colon > p && colon[-1] == ':') {
        for (m = methods; m->len; m++) {
            if ((size_t) (last - colon) == m->len
                && ngx_strncmp(colon, m->data, m->len) == 0)
            {
                return NGX_HTTP_LLM_API_GEMINI;
            }
        }
    }

    /* OpenAI's Assistants have messages too: /v1/threads/ID/messages */

    if (ngx_strlcasestrn(p, last, (u_char *) "/messages", 9 - 1) != NULL
        && ngx_strlcasestrn(p, last, (u_char *) "/threads/", 9 - 1) == NULL)
    {
        return NGX_HTTP_LLM_API_ANTHROPIC;
    }

    return NGX_HTTP_LLM_API_OPENAI;
}


/*
 * Sends the error's status and JSON body; the caller finalizes the
 * request with what this returns.
 */

ngx_int_t
ngx_http_llm_send_error(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_err_e err, ngx_str_t *message)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_http_llm_error_buf(r, ctx->api, err, message);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (r->headers_out.status == NGX_HTTP_UNAUTHORIZED
        || r->headers_out.status == NGX_HTTP_FORBIDDEN
        || err == NGX_HTTP_LLM_ERR_QUOTA)
    {
        ctx->no_retry = 1;
    }

    ctx->own_error = 1;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * The status of "err" when the location has an error_page for it: the
 * operator's page answers in place of ours, as for nginx's own errors
 * (a named location or a URI, "=" for another status), and the header
 * filter still adds the rate-limit headers to it; 0: none.  Once, as
 * nginx does: an error in the page itself gets ours.  The client's
 * errors only (4xx): the stock "error_page 500 502 503 504 /50x.html"
 * would turn a store or queue 503 into an HTML page for API clients.
 */

ngx_uint_t
ngx_http_llm_error_page(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_err_e err)
{
    ngx_uint_t                 i, status;
    ngx_http_err_page_t       *ep;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages == NULL || r->error_page || r->uri_changes == 0) {
        return 0;
    }

    status = ngx_http_llm_errors[err].status;

    if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return 0;
    }

    ep = clcf->error_pages->elts;

    for (i = 0; i < clcf->error_pages->nelts; i++) {
        if (ep[i].status == (ngx_int_t) status) {

            if (status == NGX_HTTP_UNAUTHORIZED
                || status == NGX_HTTP_FORBIDDEN
                || err == NGX_HTTP_LLM_ERR_QUOTA)
            {
                ctx->no_retry = 1;
            }

            return status;
        }
    }

    return 0;
}


/*
 * The error's JSON body in the API's shape; sets the status, type and
 * length of the response.
 */

static ngx_buf_t *
ngx_http_llm_error_buf(ngx_http_request_t *r, ngx_uint_t api,
    ngx_http_llm_err_e err, ngx_str_t *message)
{
    size_t               len;
    u_char              *p;
    uintptr_t            escape;
    ngx_buf_t           *b;
    ngx_http_llm_err_t  *e;

    static ngx_str_t     json = ngx_string("application/json");

    e = &ngx_http_llm_errors[err];

    escape = ngx_escape_json(NULL, message->data, message->len);

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\",\"param\":null,"
                 "\"code\":\"\"}}\n")
          + message->len + escape + e->code.len + e->type.len
          + e->gstatus.len + NGX_INT_T_LEN;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    p = b->last;

    switch (api) {

    case NGX_HTTP_LLM_API_ANTHROPIC:
        p = ngx_sprintf(p, "{\"type\":\"error\",\"error\":{\"type\":\"%V\","
                        "\"message\":\"", &e->type);
        p = (u_char *) ngx_escape_json(p, message->data, message->len);
        p = ngx_cpymem(p, "\"}}\n", 4);
        break;

    case NGX_HTTP_LLM_API_GEMINI:
        p = ngx_sprintf(p, "{\"error\":{\"code\":%ui,\"message\":\"",
                        e->status);
        p = (u_char *) ngx_escape_json(p, message->data, message->len);
        p = ngx_sprintf(p, "\",\"status\":\"%V\"}}\n", &e->gstatus);
        break;

    default: /* NGX_HTTP_LLM_API_OPENAI */
        p = ngx_cpymem(p, "{\"error\":{\"message\":\"", 21);
        p = (u_char *) ngx_escape_json(p, message->data, message->len);
        p = ngx_sprintf(p, "\",\"type\":\"%V\",\"param\":null,"
                        "\"code\":\"%V\"}}\n",
                        err == NGX_HTTP_LLM_ERR_INVALID_KEY
                        ? &ngx_http_llm_errors[0].code : &e->type,
                        &e->code);
        break;
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = e->status;
    r->headers_out.content_type = json;
    r->headers_out.content_type_len = json.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = b->last - b->pos;

    return b;
}


static ngx_int_t
ngx_http_llm_header_filter(ngx_http_request_t *r)
{
    u_char                   *p;
    uint64_t                  now, wait;
    ngx_uint_t                status;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;
    u_char                    buf[NGX_INT64_LEN + 16];

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_llm_find_ctx(r);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

    if ((r->err_status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
         || (r->err_status == NGX_HTTP_BAD_REQUEST && r->request_body))
        && (llcf->enable || ctx)
        && (ctx == NULL || !ctx->own_error)
        && !(r->error_page && r->internal))
    {
        if (ngx_http_llm_body_error(r, ctx, llcf) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx = ngx_http_llm_find_ctx(r);
    }

    if (ctx == NULL) {
        return ngx_http_next_header_filter(r);
    }

    /*
     * our own error for an admitted request (the pool's 502) is an
     * answer too: it costs no tokens; one let through uncounted (Redis
     * down, on_error=allow) is read all the same, for the variables
     */

    if (ctx->tally
        && (ctx->result == NGX_HTTP_LLM_RESULT_PASSED || ctx->uncounted))
    {
        ngx_http_llm_tally_start(r, ctx);
    }

    if (!llcf->headers) {
        return ngx_http_next_header_filter(r);
    }

    ngx_http_llm_hide_backend_headers(r);

    now = ngx_http_llm_now();
    status = r->headers_out.status;

    if (ctx->requests.set) {
        p = ngx_sprintf(buf, "%ui", ctx->requests.limit);

        if (ngx_http_llm_add_header(r, "X-Rate-Limit-Limit", buf, p - buf)
            != NGX_OK
            || ngx_http_llm_add_header(r, "x-ratelimit-limit-requests",
                                       buf, p - buf)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_sprintf(buf, "%ui", ctx->requests.remaining);

        if (ngx_http_llm_add_header(r, "X-Rate-Limit-Remaining", buf,
                                    p - buf)
            != NGX_OK
            || ngx_http_llm_add_header(r, "x-ratelimit-remaining-requests",
                                       buf, p - buf)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_sprintf(buf, "%uL", (ctx->requests.reset + 999) / 1000);

        if (ngx_http_llm_add_header(r, "X-Rate-Limit-Reset", buf, p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        wait = ctx->requests.reset > now ? ctx->requests.reset - now : 0;
        p = ngx_http_llm_duration(buf, wait);

        if (ngx_http_llm_add_header(r, "x-ratelimit-reset-requests", buf,
                                    p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->tokens.set) {
        p = ngx_sprintf(buf, "%ui", ctx->tokens.limit);

        if (ngx_http_llm_add_header(r, "x-ratelimit-limit-tokens", buf,
                                    p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_sprintf(buf, "%ui", ctx->tokens.remaining);

        if (ngx_http_llm_add_header(r, "x-ratelimit-remaining-tokens", buf,
                                    p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        wait = ctx->tokens.reset > now ? ctx->tokens.reset - now : 0;
        p = ngx_http_llm_duration(buf, wait);

        if (ngx_http_llm_add_header(r, "x-ratelimit-reset-tokens", buf,
                                    p - buf)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->retry_after
        && (status == NGX_HTTP_TOO_MANY_REQUESTS
            || status == NGX_HTTP_SERVICE_UNAVAILABLE
            || status == NGX_HTTP_FORBIDDEN))
    {
        wait = ctx->retry_after > now ? ctx->retry_after - now : 0;

        if (ngx_http_llm_retry_after(r, wait) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->no_retry
        || status == NGX_HTTP_UNAUTHORIZED || status == NGX_HTTP_FORBIDDEN)
    {
        if (ngx_http_llm_add_header(r, "x-should-retry",
                                    (u_char *) "false", 5)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * nginx answers a body it cannot take with its own HTML page: one over
 * client_max_body_size (413, before the access phase, or while the
 * gateway or the upstream module reads a chunked body), or one whose
 * length or chunked encoding does not hold (400, while a body is read:
 * an upload the upstream module reads, an HTTP/2 body).  A gateway
 * location answers in its API's JSON instead, unless error_page takes it
 * (an error_page for that status here, or the page it redirected to).
 * The body filter then sends ours in place of the page.  A backend's own
 * 413 or 400 (no r->err_status) passes, and so does a 400 for the
 * request's head (no body read yet).
 */

static ngx_int_t
ngx_http_llm_body_error(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_loc_conf_t *llcf)
{
    ngx_str_t                  msg;
    ngx_buf_t                 *b;
    ngx_uint_t                 i;
    ngx_http_llm_err_e         err;
    ngx_http_err_page_t       *ep;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    /* "error_page 500 502 503 504 /50x.html" does not take them */

    if (clcf->error_pages) {
        ep = clcf->error_pages->elts;

        for (i = 0; i < clcf->error_pages->nelts; i++) {
            if (ep[i].status == (ngx_int_t) r->err_status) {
                return NGX_OK;
            }
        }
    }

    if (ctx == NULL) {
        ctx = ngx_http_llm_get_ctx(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->api = ngx_http_llm_api(r, llcf->api);
    }

    if (r->err_status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        err = NGX_HTTP_LLM_ERR_TOO_LARGE;

        if (ngx_http_llm_too_large_text(r, &msg) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        err = NGX_HTTP_LLM_ERR_INVALID_REQUEST;
        msg = ngx_http_llm_unreadable_text;
    }

    b = ngx_http_llm_error_buf(r, ctx->api, err, &msg);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ctx->own_error = 1;
    ctx->error_body = b;

    return NGX_OK;
}


/* the 413's message, of the location's client_max_body_size */

ngx_int_t
ngx_http_llm_too_large_text(ngx_http_request_t *r, ngx_str_t *msg)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    msg->data = ngx_pnalloc(r->pool, 128);
    if (msg->data == NULL) {
        return NGX_ERROR;
    }

    msg->len = ngx_sprintf(msg->data, "Request body is larger than the "
                           "limit of %O bytes.", clcf->client_max_body_size)
               - msg->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t          out;
    ngx_http_llm_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    if (ctx == NULL || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->error_body) {

        /* nginx's page goes, ours goes once */

        if (ctx->error_body->pos == NULL) {
            return NGX_OK;
        }

        out.buf = ctx->error_body;
        out.next = NULL;

        ctx->error_body = ngx_calloc_buf(r->pool);
        if (ctx->error_body == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_next_body_filter(r, &out);
    }

    if (ctx->tally && (ctx->tally->reserving || ctx->tally->observing)) {
        ngx_http_llm_tally_body(r, ctx, in);
    }

    return ngx_http_next_body_filter(r, in);
}


/*
 * the backend's x-ratelimit-*, x-rate-limit-* and anthropic-ratelimit-*
 * speak of its own key
 */

static void
ngx_http_llm_hide_backend_headers(ngx_http_request_t *r)
{
    ngx_str_t        *n;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static ngx_str_t  names[] = {
        ngx_string("x-ratelimit-"),
        ngx_string("x-rate-limit-"),
        ngx_string("anthropic-ratelimit-"),
        ngx_null_string
    };

    part = &r->headers_out.headers.part;
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

        if (h[i].hash == 0) {
            continue;
        }

        for (n = names; n->len; n++) {
            if (h[i].key.len > n->len
                && ngx_strncasecmp(h[i].key.data, n->data, n->len) == 0)
            {
                h[i].hash = 0;
                break;
            }
        }
    }
}


/*
 * Retry-After in whole seconds, at least one; retry-after-ms the same
 * wait to the millisecond (a requests=10/s window frees its next slot in
 * tens of ms, and the SDKs that read retry-after-ms first would sleep a
 * whole second for nothing); no wait known (0) is a second
 */

ngx_int_t
ngx_http_llm_retry_after(ngx_http_request_t *r, uint64_t wait)
{
    u_char  *p;
    u_char   buf[NGX_INT64_LEN];

    if (wait == 0) {
        wait = 1000;
    }

    p = ngx_sprintf(buf, "%uL", (ngx_max(wait, 1000) + 999) / 1000);

    if (ngx_http_llm_add_header(r, "Retry-After", buf, p - buf) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "%uL", wait);

    return ngx_http_llm_add_header(r, "retry-after-ms", buf, p - buf);
}


ngx_int_t
ngx_http_llm_add_header(ngx_http_request_t *r, char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, len);
    if (h->value.data == NULL) {
        h->hash = 0;
        return NGX_ERROR;
    }

    ngx_memcpy(h->value.data, value, len);
    h->value.len = len;

    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->hash = 1;

    return NGX_OK;
}


/* "17ms", "1s", "6m0s", "2h0m5s", as OpenAI's reset headers */

static u_char *
ngx_http_llm_duration(u_char *p, uint64_t ms)
{
    uint64_t  s;

    if (ms < 1000) {
        return ngx_sprintf(p, "%uLms", ms);
    }

    s = (ms + 999) / 1000;

    if (s >= 3600) {
        return ngx_sprintf(p, "%uLh%uLm%uLs", s / 3600, s % 3600 / 60,
                           s % 60);
    }

    if (s >= 60) {
        return ngx_sprintf(p, "%uLm%uLs", s / 60, s % 60);
    }

    return ngx_sprintf(p, "%uLs", s);
}
