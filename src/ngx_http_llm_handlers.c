
/*
 * ngx_llm_gateway: the content handlers "llm_token_info" and
 * "llm_usage".
 *
 * llm_token_info counts the tokens of ?text= or of a POSTed body (the
 * prompt of a request in a known API format, else the body as text),
 * exactly with llm_tokenizer.
 * llm_usage authenticates the caller's key and shows its account's
 * windows as they stand, counting nothing: with llm_redis as Redis
 * holds them (one read-only script call), else, or while Redis fails,
 * as this node's zone does.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_handlers.h"
#include "ngx_http_llm_body.h"
#include "ngx_http_llm_json.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_reply.h"
#include "ngx_http_llm_rkeys.h"
#include "ngx_http_llm_rstore.h"


static ngx_int_t ngx_http_llm_token_info_handler(ngx_http_request_t *r);
static void ngx_http_llm_token_info_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_token_info_count(ngx_http_request_t *r,
    u_char *text, size_t len, ngx_uint_t as_request);
static ngx_int_t ngx_http_llm_usage_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_send_json(ngx_http_request_t *r,
    ngx_buf_t *b);


/*
 * The locations of these handlers are no gateway of an inherited
 * "llm_gateway on" (ngx_http_llm_merge_loc_conf()): a token count needs
 * no key, and llm_usage authenticates its caller itself and counts
 * nothing.
 */

char *
ngx_http_llm_token_info(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_token_info_handler;

    llcf->handler = 1;

    return NGX_CONF_OK;
}


char *
ngx_http_llm_usage(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_llm_main_conf_t  *lmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_usage_handler;

    llcf->handler = 1;

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);
    ngx_http_llm_needs_zone(cf, lmcf, "llm_usage");
    lmcf->handlers++;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_token_info_handler(ngx_http_request_t *r)
{
    u_char     *p, *dst, *src;
    size_t      i;
    ngx_int_t   rc;
    ngx_str_t   text;

    if (r->method == NGX_HTTP_POST) {
        rc = ngx_http_read_client_request_body(r,
                                             ngx_http_llm_token_info_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_arg(r, (u_char *) "text", 4, &text) != NGX_OK) {
        ngx_str_null(&text);
    }

    /* a query string's "+" is a space */

    p = ngx_pnalloc(r->pool, text.len + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < text.len; i++) {
        p[i] = (text.data[i] == '+') ? ' ' : text.data[i];
    }

    dst = p;
    src = p;
    ngx_unescape_uri(&dst, &src, text.len, 0);

    return ngx_http_llm_token_info_count(r, p, dst - p, 0);
}


static void
ngx_http_llm_token_info_body(ngx_http_request_t *r)
{
    ngx_str_t  body;

    if (ngx_http_llm_body_bytes(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r,
        ngx_http_llm_token_info_count(r, body.data, body.len, 1));
}


/* {"tokens":N,"characters":N,"method":"estimate"|"bpe"} */

static ngx_int_t
ngx_http_llm_token_info_count(ngx_http_request_t *r, u_char *text,
    size_t len, ngx_uint_t as_request)
{
    ngx_int_t                     rc;
    ngx_str_t                     error;
    ngx_buf_t                    *b;
    ngx_uint_t                    tokens, chars, api;
    ngx_http_llm_estimate_t       e;
    ngx_http_llm_loc_conf_t      *llcf;
    ngx_http_llm_main_conf_t     *lmcf;
    ngx_http_llm_request_info_t   info;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    rc = NGX_DECLINED;

    if (as_request) {

        /*
         * the format the gateway would read it in: llm_api, else the
         * URI's (an Anthropic or Gemini one), else the body's shape
         */

        llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);
        api = ngx_http_llm_api(r, llcf->api);

        if (llcf->api == NGX_HTTP_LLM_API_AUTO
            && api == NGX_HTTP_LLM_API_OPENAI)
        {
            api = NGX_HTTP_LLM_API_AUTO;
        }

        rc = ngx_http_llm_json_parse_request_bpe(r->pool, api, text, len,
                                                 &info, NULL, &error,
                                                 lmcf->bpe);

        /* a count needs no maximum (Anthropic's count_tokens has none) */

        if (rc == NGX_DECLINED && info.no_max) {
            rc = NGX_OK;
        }
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        /* as a call to this URI reserves it */

        tokens = ngx_http_llm_body_prompt(r, &info);
        chars = ngx_http_llm_estimate_chars(&info.estimate);

    } else {
        ngx_http_llm_estimate_init(&e);
        e.bpe = lmcf->bpe;
        ngx_http_llm_estimate_add(&e, text, len);

        tokens = ngx_http_llm_estimate_tokens(&e);
        chars = ngx_http_llm_estimate_chars(&e);
    }

    b = ngx_create_temp_buf(r->pool, 2 * NGX_INT_T_LEN + 64);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, "{\"tokens\":%ui,\"characters\":%ui,"
                          "\"method\":\"%s\"}\n", tokens, chars,
                          lmcf->bpe ? "bpe" : "estimate");

    return ngx_http_llm_send_json(r, b);
}


/*
 * {"account":…,"tier":…,"windows":[{"dimension","period","limit",
 * "used","remaining","reset"}]}
 */

static ngx_int_t
ngx_http_llm_usage_handler(ngx_http_request_t *r)
{
    size_t                       len;
    uint64_t                    *used, *reset, rem;
    ngx_int_t                    rc;
    ngx_str_t                    msg;
    ngx_buf_t                   *b;
    ngx_uint_t                   i, n;
    ngx_http_llm_ctx_t          *ctx;
    ngx_http_llm_tier_t         *tier;
    ngx_http_llm_decision_t      d;
    ngx_http_llm_loc_conf_t     *llcf;
    ngx_http_llm_main_conf_t    *lmcf;
    ngx_http_llm_window_conf_t  *wc;

    static char  *dims[] = { "requests", "tokens", "input_tokens",
                             "output_tokens", "cost" };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_http_llm_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    ctx->api = ngx_http_llm_api(r, llcf->api);

    /*
     * once: the credential is out of the request then ("done" means
     * authenticated here; no access handler runs in this location)
     */

    rc = ctx->done ? NGX_OK : ngx_http_llm_authenticate(r, ctx, llcf, &msg);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        return ngx_http_llm_send_error(r, ctx, NGX_HTTP_LLM_ERR_INVALID_KEY,
                                       &msg);

    case NGX_HTTP_LLM_KEY_SUSPENDED:
        return ngx_http_llm_send_error(r, ctx, NGX_HTTP_LLM_ERR_SUSPENDED,
                                       &msg);

    case NGX_HTTP_LLM_KEY_NO_STORE:
        ctx->retry_after = ngx_http_llm_now() + 1000;
        return ngx_http_llm_send_error(r, ctx, NGX_HTTP_LLM_ERR_STORE, &msg);

    case NGX_AGAIN:
        /* the key is asked of Redis: this handler runs again */
        r->main->count++;
        return NGX_DONE;

    default:
        return rc;
    }

    ctx->done = 1;

    tier = ctx->tier;
    n = tier ? tier->windows.nelts : 0;

    used = ngx_palloc(r->pool, 2 * (n + 1) * sizeof(uint64_t));
    if (used == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    reset = used + n + 1;

    ngx_memzero(&d, sizeof(ngx_http_llm_decision_t));
    d.now = ngx_current_msec;
    d.wall = ngx_http_llm_now();

    rc = NGX_DECLINED;

    if (tier && lmcf->redis) {

        /* llm_redis: the fleet's windows, else this node's zone */

        rc = ngx_http_llm_rstore_usage(r, ctx, tier, used, reset);

        if (rc == NGX_AGAIN) {
            r->main->count++;
            return NGX_DONE;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (tier && rc != NGX_OK) {
        ngx_http_llm_store_usage(lmcf->shm_zone, &ctx->account, tier, &d,
                                 used, reset);
    }

    len = sizeof("{\"account\":\"\",\"key_id\":\"\",\"tier\":\"\","
                 "\"windows\":[]}\n")
          + ctx->account.len
          + ngx_escape_json(NULL, ctx->account.data, ctx->account.len)
          + NGX_HTTP_LLM_KEY_ID_LEN
          + (tier ? tier->name.len
                    + ngx_escape_json(NULL, tier->name.data, tier->name.len)
                  : 4)
          + n * (sizeof("{\"dimension\":\"output_tokens\",\"period\":\"1mo\","
                        "\"limit\":,\"used\":,\"remaining\":,\"reset\":},")
                 + 4 * (NGX_INT64_LEN + 8));

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, "{\"account\":\"", 12);
    b->last = (u_char *) ngx_escape_json(b->last, ctx->account.data,
                                         ctx->account.len);
    b->last = ngx_sprintf(b->last, "\",\"key_id\":\"%*s\",\"tier\":",
                          (size_t) (ctx->has_key_id
                                    ? NGX_HTTP_LLM_KEY_ID_LEN : 0),
                          ctx->key_id);

    if (tier) {
        *b->last++ = '"';
        b->last = (u_char *) ngx_escape_json(b->last, tier->name.data,
                                             tier->name.len);
        *b->last++ = '"';

    } else {
        b->last = ngx_cpymem(b->last, "null", 4);
    }

    b->last = ngx_cpymem(b->last, ",\"windows\":[", 12);

    wc = tier ? tier->windows.elts : NULL;

    for (i = 0; i < n; i++) {
        rem = used[i] < wc[i].limit ? wc[i].limit - used[i] : 0;

        b->last = ngx_sprintf(b->last, "%s{\"dimension\":\"%s\","
                              "\"period\":\"%V\",",
                              i ? "," : "", dims[wc[i].dim], &wc[i].text);

        if (wc[i].dim == NGX_HTTP_LLM_DIM_COST) {
            b->last = ngx_sprintf(b->last, "\"limit\":%ui.%06ui,"
                                  "\"used\":%uL.%06uL,"
                                  "\"remaining\":%uL.%06uL,",
                                  wc[i].limit / 1000000,
                                  wc[i].limit % 1000000,
                                  used[i] / 1000000, used[i] % 1000000,
                                  rem / 1000000, rem % 1000000);

        } else {
            b->last = ngx_sprintf(b->last, "\"limit\":%ui,\"used\":%uL,"
                                  "\"remaining\":%uL,",
                                  wc[i].limit, used[i], rem);
        }

        b->last = ngx_sprintf(b->last, "\"reset\":%uL}",
                              (reset[i] + 999) / 1000);
    }

    b->last = ngx_cpymem(b->last, "]}\n", 3);

    return ngx_http_llm_send_json(r, b);
}


static ngx_int_t
ngx_http_llm_send_json(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = NGX_HTTP_OK;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = b->last - b->pos;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
