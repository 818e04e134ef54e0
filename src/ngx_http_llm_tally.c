
/*
 * ngx_llm_gateway: token accounting of one request.
 *
 * Owns the life of a request's tokens after its body is read: the
 * reservation checked against the token and cost windows (prompt
 * estimate plus the answer's maximum, priced by "llm_price"), watching
 * the response go by (the observer of ngx_http_llm_scan.c, fed from the
 * body filter without holding a byte), and in the log phase replacing
 * the reservation with what the backend says it used (at the end of
 * the answer, else in the log phase) -- or, when it
 * says nothing, with an estimate of what was streamed.  A response
 * served from proxy_cache costs no tokens.  Also the token variables.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_tally.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_body.h"


static ngx_int_t ngx_http_llm_price_usd(ngx_str_t *value, size_t skip,
    uint64_t *micro);


/*
 * llm_price MODEL input=USD output=USD [cache_read=USD] [cache_write=USD]
 *     [cache_write_1h=USD];
 *
 * USD per million tokens, kept in micro-dollars per million tokens; the
 * prompt's tokens a provider's cache read or wrote cost "input" unless
 * priced apart, those it keeps for an hour "cache_write" unless priced
 * apart.
 */

char *
ngx_http_llm_price(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    size_t                 skip;
    uint64_t              *usd;
    ngx_str_t             *value, model;
    ngx_uint_t             i, wildcard, has_in, has_out, has_read, has_write,
                           has_1h;
    ngx_http_llm_price_t  *price;

    value = cf->args->elts;

    model = value[1];
    wildcard = 0;

    if (model.len && model.data[model.len - 1] == '*') {
        model.len--;
        wildcard = 1;
    }

    if (ngx_strlchr(model.data, model.data + model.len, '*') != NULL
        || (model.len == 0 && !wildcard))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid model \"%V\": a \"*\" may only end it",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    price = lmcf->prices.elts;

    for (i = 0; i < lmcf->prices.nelts; i++) {
        if (price[i].wildcard == wildcard
            && price[i].model.len == model.len
            && ngx_strncmp(price[i].model.data, model.data, model.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate llm_price \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    price = ngx_array_push(&lmcf->prices);
    if (price == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(price, sizeof(ngx_http_llm_price_t));

    price->model = model;
    price->wildcard = wildcard;

    has_in = 0;
    has_out = 0;
    has_read = 0;
    has_write = 0;
    has_1h = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "input=", 6) == 0) {
            usd = &price->input;
            skip = 6;
            has_in++;

        } else if (ngx_strncmp(value[i].data, "output=", 7) == 0) {
            usd = &price->output;
            skip = 7;
            has_out++;

        } else if (ngx_strncmp(value[i].data, "cache_read=", 11) == 0) {
            usd = &price->cache_read;
            skip = 11;
            has_read++;

        } else if (ngx_strncmp(value[i].data, "cache_write=", 12) == 0) {
            usd = &price->cache_write;
            skip = 12;
            has_write++;

        } else if (ngx_strncmp(value[i].data, "cache_write_1h=", 15) == 0) {
            usd = &price->cache_write_1h;
            skip = 15;
            has_1h++;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_llm_price_usd(&value[i], skip, usd) != NGX_OK) {
            goto invalid;
        }
    }

    if (!has_in || !has_out) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_price \"%V\" needs input= and output=",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (has_in > 1 || has_out > 1 || has_read > 1 || has_write > 1
        || has_1h > 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_price \"%V\" names a price twice",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (!has_read) {
        price->cache_read = price->input;
    }

    if (!has_write) {
        price->cache_write = price->input;
    }

    if (!has_1h) {
        price->cache_write_1h = price->cache_write;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid price \"%V\", expected USD per million "
                       "tokens from 0 to 10000 with up to 6 decimals",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_llm_price_usd(ngx_str_t *value, size_t skip, uint64_t *micro)
{
    u_char    *p, *last;
    uint64_t   n, frac, scale;

    p = value->data + skip;
    last = value->data + value->len;

    if (p == last) {
        return NGX_ERROR;
    }

    n = 0;

    for ( /* void */ ; p < last && *p != '.'; p++) {
        if (*p < '0' || *p > '9' || n > 10000) {
            return NGX_ERROR;
        }

        n = n * 10 + (*p - '0');
    }

    frac = 0;
    scale = 1000000;

    if (p < last) {
        if (p + 1 == last) {
            return NGX_ERROR;
        }

        for (p++; p < last; p++) {
            if (*p < '0' || *p > '9' || scale == 1) {
                return NGX_ERROR;
            }

            scale /= 10;
            frac += (*p - '0') * scale;
        }
    }

    n = n * 1000000 + frac;

    if (n > (uint64_t) 10000 * 1000000) {
        return NGX_ERROR;
    }

    *micro = n;

    return NGX_OK;
}


/* an exact name beats a wildcard; the longest wildcard wins */

ngx_http_llm_price_t *
ngx_http_llm_price_find(ngx_http_llm_main_conf_t *lmcf, ngx_str_t *model)
{
    u_char                *at;
    size_t                 len;
    ngx_uint_t             i;
    ngx_http_llm_price_t  *price, *best;

    if (model->len == 0) {
        return NULL;
    }

    /*
     * Vertex AI names a model's version after an '@' in its path
     * ("claude-sonnet-4-5@20250929"): the exact name is what precedes it
     */

    at = ngx_strlchr(model->data, model->data + model->len, '@');
    len = at ? (size_t) (at - model->data) : model->len;

    price = lmcf->prices.elts;
    best = NULL;

    for (i = 0; i < lmcf->prices.nelts; i++) {

        if (!price[i].wildcard) {
            if ((price[i].model.len == model->len
                 || price[i].model.len == len)
                && ngx_strncmp(price[i].model.data, model->data,
                               price[i].model.len)
                   == 0)
            {
                return &price[i];
            }

            continue;
        }

        if (price[i].model.len <= model->len
            && ngx_strncmp(price[i].model.data, model->data,
                           price[i].model.len)
               == 0
            && (best == NULL || price[i].model.len > best->model.len))
        {
            best = &price[i];
        }
    }

    return best;
}


/*
 * micro-dollars, rounded up, of "input" tokens and "output" tokens; of
 * the input, "cache" (NULL: none) tells what a provider's cache read,
 * wrote, and of that kept for an hour; each product fits 64 bits (at
 * most 10^9 tokens at 10^10 micro-dollars per million), their sum may
 * not
 */

uint64_t
ngx_http_llm_cost(ngx_http_llm_price_t *price, uint64_t input,
    uint64_t output, uint64_t *cache)
{
    uint64_t    p[5], whole, part, read, written, hour;
    ngx_uint_t  i;

    if (price == NULL) {
        return 0;
    }

    input = ngx_min(input, NGX_HTTP_LLM_PRICED_MAX);

    read = 0;
    written = 0;
    hour = 0;

    if (cache) {
        written = ngx_min(cache[1], input);
        hour = ngx_min(cache[2], written);
        read = ngx_min(cache[0], input - written);
    }

    p[0] = (input - read - written) * price->input;
    p[1] = read * price->cache_read;
    p[2] = (written - hour) * price->cache_write;
    p[3] = hour * price->cache_write_1h;
    p[4] = ngx_min(output, NGX_HTTP_LLM_PRICED_MAX) * price->output;

    whole = 0;
    part = 0;

    for (i = 0; i < 5; i++) {
        whole += p[i] / 1000000;
        part += p[i] % 1000000;
    }

    return whole + (part + 999999) / 1000000;
}


/*
 * A request is accounted when its tier counts tokens or cost, or when
 * the configuration uses what accounting tells (token variables, pool
 * tokens= budgets); otherwise its answer is passed on untouched.
 */

ngx_uint_t
ngx_http_llm_tally_wanted(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_main_conf_t  *lmcf;

    if (ctx->tier && (ctx->tier->dims & NGX_HTTP_LLM_TOKEN_DIMS)) {
        return 1;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    return lmcf->want_usage;
}


/*
 * What the windows are asked for before the call: one request, the
 * prompt estimate as input tokens, the answer's maximum as output
 * tokens, both as tokens, and their price as cost.  An upload, whose
 * body is not read but whose answer is charged all the same (an audio
 * transcription's usage), asks for one input token and what a request
 * with no maximum does, so that a spent token window refuses it too.
 * A request whose body is refused makes no call: one request alone.
 */

void
ngx_http_llm_tally_reserve(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_decision_t *d)
{
    uint64_t                   in, out, cost, cache[3];
    ngx_http_llm_tally_t      *t;
    ngx_http_llm_price_t      *price;
    ngx_http_llm_loc_conf_t   *llcf;
    ngx_http_llm_main_conf_t  *lmcf;

    t = ctx->tally;

    d->need[NGX_HTTP_LLM_DIM_REQUESTS] = 1;

    if (t == NULL || ctx->refused) {
        return;
    }

    if (t->parsed) {
        in = t->prompt;
        out = t->output;

    } else if (t->posted) {
        llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

        in = 1;
        out = llcf->max_tokens_default;

    } else {
        /* what a GET or a DELETE gets back costs no tokens */
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    t->price = ngx_http_llm_price_find(lmcf, &t->model);

    d->need[NGX_HTTP_LLM_DIM_INPUT] = in;
    d->need[NGX_HTTP_LLM_DIM_OUTPUT] = out;
    d->need[NGX_HTTP_LLM_DIM_TOKENS] = in + out;

    /*
     * the prompt at the dearest of input=, cache_write= and
     * cache_write_1h=: the cache may write all of it (Anthropic's writes
     * cost more than input); a call that reserves tokens but whose model
     * has no price yet (an alias the answer may resolve to a priced
     * model) still costs a micro-dollar, so that a spent cost window
     * refuses it too
     */

    cache[0] = 0;
    cache[1] = 0;
    cache[2] = 0;

    price = t->price;

    if (price && ngx_max(price->cache_write, price->cache_write_1h)
                 > price->input)
    {
        cache[1] = in;
        cache[2] = (price->cache_write_1h > price->cache_write) ? in : 0;
    }

    cost = ngx_http_llm_cost(price, in, out, cache);

    d->need[NGX_HTTP_LLM_DIM_COST] = (in + out) ? ngx_max(cost, 1) : 0;
}


/* the response header is going out: watch the body that follows */

void
ngx_http_llm_tally_start(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_uint_t             sse;
    ngx_http_llm_tally_t  *t;

    t = ctx->tally;

    if (t->answered) {
        return;
    }

    t->answered = 1;

    if (r->cached) {
        t->cached = 1;
        return;
    }

    if (r->headers_out.status < NGX_HTTP_OK
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE
        || r->header_only)
    {
        return;
    }

    /* what a GET or a DELETE gets back was not generated for it */

    if (!t->posted) {
        return;
    }

    sse = r->headers_out.content_type.len >= 17
          && ngx_strncasecmp(r->headers_out.content_type.data,
                             (u_char *) "text/event-stream", 17)
             == 0;

    if (sse) {
        t->stream = 1;
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len
        && ngx_strcasecmp(r->headers_out.content_encoding->value.data,
                          (u_char *) "identity")
           != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: the backend's answer is encoded (\"%V\"), its "
                      "usage is estimated; send it "
                      "\"proxy_set_header Accept-Encoding \\\"\\\";\"",
                      &r->headers_out.content_encoding->value);

        /* unread, it costs what was reserved for it */
        t->encoded = 1;
        return;
    }

    ngx_http_llm_usage_init(&t->usage, r->pool, ctx->api, sse);
    t->observing = 1;

    /* a body the upstream module buffered to a file is read back to us */
    r->filter_need_in_memory = 1;
}


void
ngx_http_llm_tally_body(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_chain_t *in)
{
    ngx_buf_t             *b;
    ngx_uint_t             last;
    ngx_http_llm_tally_t  *t;

    t = ctx->tally;
    last = 0;

    for ( /* void */ ; in; in = in->next) {
        b = in->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (!t->observing) {
            continue;
        }

        if (ngx_buf_in_memory(b) && b->last > b->pos) {

            /* a body in one buffer is read whole (all but streams are) */

            if ((r->headers_out.content_length_n == b->last - b->pos
                 ? ngx_http_llm_usage_feed_whole(&t->usage, b->pos,
                                                 b->last - b->pos)
                 : ngx_http_llm_usage_feed(&t->usage, b->pos,
                                           b->last - b->pos))
                != NGX_OK)
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "llm: usage not read, out of memory");
                t->observing = 0;
            }
        }
    }

    /* the whole answer went by: settle now, not when the client leaves */

    if (last) {
        t->complete = 1;
        t->usage.whole = 1;
        ngx_http_llm_tally_settle(r, ctx);
    }
}


/*
 * The answer went on from the backend into proxy_cache (or proxy_store)
 * after the client had gone, as nginx reads such an answer to its end:
 * the body filter saw only what went out before.
 */

static ngx_uint_t
ngx_http_llm_tally_cache_fill(ngx_http_request_t *r, ngx_http_llm_tally_t *t)
{
    ngx_uint_t            kept;
    ngx_event_pipe_t     *p;
    ngx_http_upstream_t  *u;

    u = r->upstream;

    if (!t->observing || t->complete || u == NULL || u->pipe == NULL) {
        return 0;
    }

    /* u->store is cleared once the file is stored: the conf says it */

    kept = u->conf->store ? 1 : 0;

#if (NGX_HTTP_CACHE)
    kept |= u->cacheable;
#endif

    p = u->pipe;

    if (kept && (p->upstream_done || p->upstream_eof)
        && (p->downstream_error || r->connection->error))
    {
        return 1;
    }

    return 0;
}


/*
 * What the request used.  The backend's own usage when it told it (in
 * an answer cut short, at least the text that went out); an answer
 * without usage (a stream the client cut, a backend that does not
 * report) is charged the prompt estimate and an estimate of the text
 * that went out ($llm_tokens_estimated); an encoded answer, which is not
 * read, and one that nginx read on for proxy_cache after the client had
 * gone (its usage went to the cache, and its hits are free), what was
 * reserved for it; an error answer, or what a GET gets,
 * costs no tokens; a client gone before any answer is charged its
 * prompt, which the backend did read.
 */

void
ngx_http_llm_tally_finish(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    uint64_t                   in, out, cache[3];
    ngx_uint_t                 n;
    ngx_http_llm_tally_t      *t;
    ngx_http_llm_price_t      *price;
    ngx_http_llm_main_conf_t  *lmcf;

    t = ctx->tally;

    if (t == NULL || t->finished) {
        return;
    }

    t->finished = 1;

    in = 0;
    out = 0;
    cache[0] = 0;
    cache[1] = 0;
    cache[2] = 0;

    if (t->observing) {
        ngx_http_llm_usage_finish(&t->usage);
    }

    if (t->cached || t->count) {
        /* nothing asked of the backend, or a count of tokens: free */

    } else if (t->observing && t->usage.found) {
        t->found = 1;
        in = t->usage.prompt_tokens;
        out = t->usage.completion_tokens;

        /* what it did not name is estimated */

        if (!t->usage.told_in) {
            in = t->prompt;
            t->estimated = 1;

        } else {
            cache[0] = t->usage.cache_read;
            cache[1] = t->usage.cache_write;
            cache[2] = t->usage.cache_write_1h;
        }

        if (!t->complete || !ngx_http_llm_usage_final(&t->usage)) {
            /*
             * cut short, or ended without its final usage (Anthropic's
             * message_start told output_tokens 1, and an error event
             * came instead of message_delta): at least what went out
             */

            n = ngx_http_llm_estimate_tokens(&t->usage.generated);

            if (!ngx_http_llm_usage_final(&t->usage)
                && ngx_http_llm_tally_cache_fill(r, t))
            {
                n = ngx_max(n, t->output);
            }

            if (n > out) {
                out = n;
                t->estimated = 1;
            }
        }

    } else if (t->encoded || ngx_http_llm_tally_cache_fill(r, t)) {
        t->estimated = 1;
        in = t->prompt;
        out = t->output;

    } else if (t->observing) {
        t->estimated = 1;
        in = t->prompt;
        out = ngx_http_llm_estimate_tokens(&t->usage.generated);

    } else if (!t->answered && r->upstream && t->parsed) {
        t->estimated = 1;
        in = t->prompt;
    }

    price = t->price;

    if (t->usage.model.len) {
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
        price = ngx_http_llm_price_find(lmcf, &t->usage.model);

        /*
         * a dated version of the model asked for ("gpt-4o" answered as
         * "gpt-4o-2024-08-06", Vertex AI's "claude-sonnet-4-5@20250929"
         * as "claude-sonnet-4-5-20250929") keeps the request's exact
         * price over a wildcard no longer than its name ("gpt-4*")
         */

        if (price == NULL
            || (price->wildcard && t->price && !t->price->wildcard
                && price->model.len <= t->price->model.len
                && t->usage.model.len > t->price->model.len
                && ngx_strncmp(t->usage.model.data, t->price->model.data,
                               t->price->model.len)
                   == 0))
        {
            price = t->price;
        }
    }

    t->price = price;

    t->used[NGX_HTTP_LLM_DIM_REQUESTS] =
                                       t->reserved[NGX_HTTP_LLM_DIM_REQUESTS];
    t->used[NGX_HTTP_LLM_DIM_TOKENS] = in + out;
    t->used[NGX_HTTP_LLM_DIM_INPUT] = in;
    t->used[NGX_HTTP_LLM_DIM_OUTPUT] = out;
    t->used[NGX_HTTP_LLM_DIM_COST] = ngx_http_llm_cost(price, in, out,
                                                       cache);
}


/*
 * The log phase, first of its handlers (so the access log sees the
 * figures): what the body filter did not settle at the end of the
 * answer (a client gone, an answer cut short) is settled now.
 */

ngx_int_t
ngx_http_llm_tally_log_handler(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_llm_find_ctx(r);

    if (ctx == NULL || ctx->tally == NULL) {
        return NGX_OK;
    }

    ngx_http_llm_tally_settle(r, ctx);

    return NGX_OK;
}


/* the reservation replaced by the use in the store, once */

void
ngx_http_llm_tally_settle(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_http_llm_tally_t      *t;
    ngx_http_llm_settle_t      s;
    ngx_http_llm_main_conf_t  *lmcf;

    t = ctx->tally;

    ngx_http_llm_tally_finish(r, ctx);

    if (!t->reserving) {
        return;
    }

    t->reserving = 0;

    /* llm_redis: settled there, unless the zone counted this request */

    if (ctx->redis) {
        rc = ngx_http_llm_rstore_settle(ctx, t->used);

        if (rc != NGX_DECLINED) {
            if (rc == NGX_ERROR) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "llm: usage of account \"%V\" not sent to "
                              "redis", &ctx->account);
            }

            return;
        }
    }

    ngx_memzero(&s, sizeof(ngx_http_llm_settle_t));

    for (i = NGX_HTTP_LLM_DIM_TOKENS; i <= NGX_HTTP_LLM_DIM_COST; i++) {
        s.delta[i] = (int64_t) t->used[i] - (int64_t) t->reserved[i];
    }

    s.at.now = t->at_now;
    s.at.wall = t->at_wall;
    s.now.now = ngx_current_msec;
    s.now.wall = ngx_http_llm_now();

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm settle: tokens %uL/%uL input %uL/%uL "
                   "output %uL/%uL (used/reserved)",
                   t->used[1], t->reserved[1], t->used[2], t->reserved[2],
                   t->used[3], t->reserved[3]);

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    ngx_http_llm_store_settle(lmcf->shm_zone, &ctx->account, ctx->tier, &s);
}


ngx_int_t
ngx_http_llm_tally_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                *p;
    uint64_t               n;
    ngx_str_t             *s;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_tally_t  *t;

    ctx = ngx_http_llm_find_ctx(r->main);

    if (ctx == NULL || ctx->tally == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    t = ctx->tally;

    switch (data) {

    case NGX_HTTP_LLM_VAR_MODEL:
        s = t->usage.model.len ? &t->usage.model : &t->model;

        if (s->len == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = s->data;
        v->len = s->len;
        goto found;

    case NGX_HTTP_LLM_VAR_STREAM:
        if (!t->parsed && !t->answered) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = (u_char *) (t->stream ? "1" : "0");
        v->len = 1;
        goto found;

    case NGX_HTTP_LLM_VAR_CACHE_KEY:
        if (!t->has_cache_key
            && ngx_http_llm_body_unread_cache_key(r->main, t) != NGX_OK)
        {
            return NGX_ERROR;
        }

        v->data = t->cache_key;
        v->len = sizeof(t->cache_key);
        goto found;
    }

    /* known once the request is over */

    if (!t->finished) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_HTTP_LLM_VAR_ESTIMATED) {
        v->data = (u_char *) (t->estimated ? "1" : "0");
        v->len = 1;
        goto found;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    switch (data) {

    case NGX_HTTP_LLM_VAR_PROMPT:
        n = t->used[NGX_HTTP_LLM_DIM_INPUT];
        break;

    case NGX_HTTP_LLM_VAR_COMPLETION:
        n = t->used[NGX_HTTP_LLM_DIM_OUTPUT];
        break;

    case NGX_HTTP_LLM_VAR_TOTAL:
        n = t->used[NGX_HTTP_LLM_DIM_TOKENS];
        break;

    default: /* NGX_HTTP_LLM_VAR_COST */
        if (t->price == NULL && !t->cached) {
            v->not_found = 1;
            return NGX_OK;
        }

        n = t->used[NGX_HTTP_LLM_DIM_COST];
        p = ngx_sprintf(p, "%uL.%06uL", n / 1000000, n % 1000000);
        v->len = p - v->data;
        goto found;
    }

    v->len = ngx_sprintf(p, "%uL", n) - p;

found:

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
