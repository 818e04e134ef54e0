
/*
 * ngx_llm_gateway: the access-phase handler of "llm_gateway on".
 *
 * Owns the order of one admission: find the client's credential (and
 * take it out of the request), authenticate it, pick the account and
 * tier, read the body when tokens are counted (the phases resume when
 * it is complete), ask the store for a decision (a body refused as
 * unreadable or too large still asks, for one request), and answer the
 * refusals in the API's own shape.  An admitted request that holds a
 * concurrency slot gives it back in a pool cleanup, which runs on every
 * way a request can end (finalized, aborted by the client, failed
 * upstream).
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_reply.h"
#include "ngx_http_llm_body.h"
#include "ngx_http_llm_tally.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_rkeys.h"


static ngx_int_t ngx_http_llm_access(ngx_http_request_t *r);
static ngx_pool_cleanup_t *ngx_http_llm_ctx_cleanup(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_refuse(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_err_e err, ngx_str_t *message);
static ngx_int_t ngx_http_llm_admit_refused(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_limit(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_let_in(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static u_char *ngx_http_llm_limit_text(u_char *p,
    ngx_http_llm_decision_t *d, ngx_uint_t dim);
static void ngx_http_llm_give_back(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cleanup(void *data);


typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_ctx_t         *ctx;
} ngx_http_llm_cleanup_t;


/*
 * The gateway runs last in the access phase, so that a request that
 * allow/deny, auth_basic or auth_request refuse is not counted; with
 * "satisfy any", where a module that grants access ends the phase, it
 * runs first (ngx_http_llm_access_any_handler) and the others decide
 * after it.
 */

ngx_int_t
ngx_http_llm_access_handler(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY) {
        return NGX_DECLINED;
    }

    return ngx_http_llm_access(r);
}


ngx_int_t
ngx_http_llm_access_any_handler(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy != NGX_HTTP_SATISFY_ANY) {
        return NGX_DECLINED;
    }

    return ngx_http_llm_access(r);
}


/*
 * The preaccess phase, for subrequests, which skip the access phase
 * (nginx lets the main request's admission stand for its parts): in a
 * gateway location one would go to the backend unchecked, uncounted,
 * and with the client's credential.  It is served only as a part of a
 * request that the gateway admitted (a mirror of one, an SSI include in
 * its answer), or of one that a gateway location is yet to decide on
 * (its auth_request, where "llm_gateway on" is the server's); any other
 * (an include from a page it does not guard, or from the error_page of
 * a request it refused) gets a 403.  (Clone subrequests, as
 * proxy_cache_background_update makes, start past this phase.)
 */

ngx_int_t
ngx_http_llm_subrequest_handler(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    if (r == r->main) {
        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

    if (!llcf->enable) {
        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r->main, ngx_http_llm_gateway_module);
    ctx = ngx_http_llm_find_ctx(r->main);

    if (ctx && ctx->done) {
        if (ctx->result == NGX_HTTP_LLM_RESULT_PASSED || ctx->uncounted) {
            return NGX_DECLINED;
        }

    } else if (llcf->enable) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "llm: subrequest \"%V\" to a gateway location refused: "
                  "the gateway did not admit the request it is part of",
                  &r->uri);

    return NGX_HTTP_FORBIDDEN;
}


/* the post-read phase: no client key of ours in $request, ever */

ngx_int_t
ngx_http_llm_post_read_handler(ngx_http_request_t *r)
{
    if (r->args.len
        && ngx_http_llm_mask_request_line(r) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


/*
 * The log phase, first of its handlers.  A request that nginx refused
 * while it read the headers (a 400 for a bad Content-Length, an HTTP/2
 * stream ended before the body its headers declared) ran no phase, the
 * post-read one included: its $request is masked here, before the
 * access log quotes it.  Then the usage is settled.
 */

ngx_int_t
ngx_http_llm_log_handler(ngx_http_request_t *r)
{
    if (r == r->main && r->args.len) {
        (void) ngx_http_llm_mask_request_line(r);
    }

    return ngx_http_llm_tally_log_handler(r);
}


static ngx_int_t
ngx_http_llm_access(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_str_t                 msg;
    ngx_uint_t                body;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

    if (!llcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_llm_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->done) {
        /* admitted already, before an internal redirect */
        return NGX_DECLINED;
    }

    /* llm_redis: back with Redis's answer, authenticated already */
    if (ctx->redis) {
        return ngx_http_llm_limit(r, ctx);
    }

    switch (ctx->step) {

    case NGX_HTTP_LLM_STEP_AUTH:
        ctx->api = ngx_http_llm_api(r, llcf->api);

        rc = ngx_http_llm_authenticate(r, ctx, llcf, &msg);

        switch (rc) {

        case NGX_OK:
            break;

        case NGX_DECLINED:
            return ngx_http_llm_refuse(r, ctx, NGX_HTTP_LLM_ERR_INVALID_KEY,
                                       &msg);

        case NGX_HTTP_LLM_KEY_SUSPENDED:
            return ngx_http_llm_refuse(r, ctx, NGX_HTTP_LLM_ERR_SUSPENDED,
                                       &msg);

        case NGX_HTTP_LLM_KEY_NO_STORE:
            ctx->retry_after = ngx_http_llm_now() + 1000;
            return ngx_http_llm_refuse(r, ctx, NGX_HTTP_LLM_ERR_STORE, &msg);

        default: /* NGX_AGAIN, a status */
            return rc;
        }

        /* token accounting, where a window or a variable asks for it */

        body = ngx_http_llm_body_wanted(r, ctx, llcf);

        if (body || ngx_http_llm_tally_wanted(r, ctx)) {
            ctx->tally = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_tally_t));
            if (ctx->tally == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* an X-Accel-Redirect makes it a GET later: this is kept */

            ctx->tally->posted = (r->method & (NGX_HTTP_POST|NGX_HTTP_PUT
                                               |NGX_HTTP_PATCH))
                                 ? 1 : 0;

            /* an encoded answer's usage cannot be read */

            if (ngx_http_llm_identity(r) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        if (body) {
            rc = ngx_http_llm_body_read(r, ctx);

            if (rc == NGX_DECLINED) {
                return ngx_http_llm_admit_refused(r, ctx);
            }

            return rc;
        }

        break;

    case NGX_HTTP_LLM_STEP_BODY:
        /* the body is still coming */
        return NGX_DONE;

    case NGX_HTTP_LLM_STEP_REFUSED:
        /* nginx refused the body in a later read */
        return ngx_http_llm_admit_refused(r, ctx);

    default: /* NGX_HTTP_LLM_STEP_READ */
        rc = ngx_http_llm_body_parse(r, ctx, llcf);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            return ngx_http_llm_admit_refused(r, ctx);
        }

        break;
    }

    return ngx_http_llm_limit(r, ctx);
}


/*
 * The context survives internal redirects (which clear r->ctx) through
 * the pool cleanup that carries it, so a request is counted once.
 */

ngx_http_llm_ctx_t *
ngx_http_llm_find_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_cleanup_t  *lc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);
    if (ctx) {
        return ctx;
    }

    cln = ngx_http_llm_ctx_cleanup(r);
    if (cln == NULL) {
        return NULL;
    }

    lc = cln->data;
    ngx_http_set_ctx(r, lc->ctx, ngx_http_llm_gateway_module);

    return lc->ctx;
}


static ngx_pool_cleanup_t *
ngx_http_llm_ctx_cleanup(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_llm_cleanup) {
            return cln;
        }
    }

    return NULL;
}


ngx_http_llm_ctx_t *
ngx_http_llm_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_cleanup_t  *lc;

    ctx = ngx_http_llm_find_ctx(r);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_llm_cleanup_t));
    if (cln == NULL) {
        return NULL;
    }

    lc = cln->data;
    lc->request = r;
    lc->ctx = ctx;

    cln->handler = ngx_http_llm_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_llm_gateway_module);

    return ctx;
}


/*
 * Finds the account and tier of the request's key (or of a keyless
 * client, where that is allowed): in the key file, else with llm_redis
 * in Redis.  NGX_OK; NGX_DECLINED, with the 401's message in "msg";
 * NGX_HTTP_LLM_KEY_SUSPENDED (403) or NGX_HTTP_LLM_KEY_NO_STORE (503),
 * with their message; NGX_AGAIN while Redis is asked (call again when
 * the phases resume); or a status to finalize with.
 */

ngx_int_t
ngx_http_llm_authenticate(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_loc_conf_t *llcf, ngx_str_t *msg)
{
    u_char                    *p;
    ngx_int_t                  rc;
    ngx_str_t                  key;
    ngx_http_llm_key_t        *k;
    ngx_http_llm_main_conf_t  *lmcf;
    u_char                     digest[32];

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    if (ctx->rkey) {
        /* back from Redis (the credential is out of the request now) */
        rc = ngx_http_llm_rkeys_result(r, ctx, msg);
        goto dynamic;
    }

    rc = ngx_http_llm_credential(r, &key);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {

        if (llcf->anonymous_tier == NULL) {
            ngx_str_set(msg, "Missing API key. Send it as "
                        "\"Authorization: Bearer KEY\".");
            goto unauthorized;
        }

        /* keyless clients are counted per address */

        p = ngx_pnalloc(r->pool,
                        sizeof("anon:") - 1 + r->connection->addr_text.len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->account.data = p;
        p = ngx_cpymem(p, "anon:", sizeof("anon:") - 1);
        p = ngx_cpymem(p, r->connection->addr_text.data,
                       r->connection->addr_text.len);
        ctx->account.len = p - ctx->account.data;
        ctx->tier = llcf->anonymous_tier;

        return NGX_OK;
    }

    ngx_str_set(msg, "Incorrect API key provided.");

    if (key.len == 0 || key.len > NGX_HTTP_LLM_CREDENTIAL_MAX) {
        goto unauthorized;
    }

    k = ngx_http_llm_key_find(lmcf, &key, digest);

    if (k == NULL) {

        if (lmcf->redis == NULL) {
            goto unauthorized;
        }

        rc = ngx_http_llm_rkeys_find(r, ctx, &key, digest, msg);
        goto dynamic;
    }

    ngx_hex_dump(ctx->key_id, digest, NGX_HTTP_LLM_KEY_ID_LEN / 2);
    ctx->has_key_id = 1;

    if (k->expires && k->expires <= ngx_time()) {
        ngx_str_set(msg, "This API key has expired.");
        goto unauthorized;
    }

    ctx->account = k->account;
    ctx->tier = k->tier ? k->tier : llcf->default_tier;

    return NGX_OK;

dynamic:

    switch (rc) {

    case NGX_OK:
        if (ctx->tier == NULL) {
            ctx->tier = llcf->default_tier;
        }

        return NGX_OK;

    case NGX_DECLINED:
        goto unauthorized;

    case NGX_AGAIN:
        return NGX_AGAIN;

    case NGX_HTTP_LLM_KEY_SUSPENDED:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: account \"%V\" refused: %V", &ctx->account, msg);

        ctx->result = NGX_HTTP_LLM_RESULT_REJECTED;
        return rc;

    case NGX_HTTP_LLM_KEY_NO_STORE:
        ctx->result = NGX_HTTP_LLM_RESULT_STORE;
        return rc;

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

unauthorized:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm: client refused: %V", msg);

    ctx->result = NGX_HTTP_LLM_RESULT_UNAUTH;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_limit(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                    *p;
    uint64_t                   wait;
    ngx_int_t                  rc;
    ngx_str_t                  msg;
    ngx_uint_t                 dim;
    ngx_http_llm_err_e         err;
    ngx_http_llm_tier_t       *tier;
    ngx_http_llm_tally_t      *t;
    ngx_http_llm_decision_t    d;
    ngx_http_llm_main_conf_t  *lmcf;

    tier = ctx->tier;

    if (tier == NULL) {
        /* a key with no tier anywhere: authenticated, not limited */
        ctx->result = NGX_HTTP_LLM_RESULT_PASSED;
        ctx->done = 1;
        return ngx_http_llm_let_in(r, ctx);
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    ngx_memzero(&d, sizeof(ngx_http_llm_decision_t));

    ngx_http_llm_tally_reserve(r, ctx, &d);

    d.now = ngx_current_msec;
    d.wall = ngx_http_llm_now();

    /* llm_redis: the decision comes from Redis, asynchronously */
    if (ctx->redis) {
        rc = ngx_http_llm_rstore_result(r, ctx, &d);

    } else if (lmcf->redis) {
        rc = ngx_http_llm_rstore_admit(r, ctx, tier, &d);

    } else {
        rc = ngx_http_llm_store_admit(lmcf->shm_zone, &ctx->account, tier,
                                      &d);
    }

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    if (rc == NGX_HTTP_LLM_UNCOUNTED) {
        /* on_error=allow */
        ctx->result = NGX_HTTP_LLM_RESULT_STORE;
        ctx->uncounted = 1;
        ctx->done = 1;
        return ngx_http_llm_let_in(r, ctx);
    }

    ctx->requests = d.requests;
    ctx->tokens = d.tokens;
    ctx->retry_after = d.retry_at;

    if (rc == NGX_OK) {
        ctx->conc_held = tier->concurrency ? 1 : 0;
        ctx->result = NGX_HTTP_LLM_RESULT_PASSED;
        ctx->done = 1;

        t = ctx->tally;

        if (t && !ctx->refused) {
            ngx_memcpy(t->reserved, d.need, sizeof(t->reserved));
            t->at_now = d.now;
            t->at_wall = d.wall;
            t->reserving = (tier->dims & NGX_HTTP_LLM_TOKEN_DIMS) != 0;
        }

        return ngx_http_llm_let_in(r, ctx);
    }

    msg.data = ngx_pnalloc(r->pool, 256);
    if (msg.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    wait = d.retry_at > d.wall ? d.retry_at - d.wall : 0;
    wait = (ngx_max(wait, 1000) + 999) / 1000;

    switch (rc) {

    case NGX_HTTP_LLM_REFUSED:
        dim = d.refused->dim;
        err = ngx_http_llm_window_is_quota(d.refused)
              ? NGX_HTTP_LLM_ERR_QUOTA : NGX_HTTP_LLM_ERR_RATE_LIMIT;

        if (d.need[dim] > d.refused->limit) {

            /* it can never fit: waiting does not help */

            ctx->no_retry = 1;
            p = ngx_http_llm_limit_text(msg.data, &d, dim);

            if (dim == NGX_HTTP_LLM_DIM_COST) {
                p = ngx_snprintf(p, 256 - (p - msg.data), " in tier "
                                 "\"%V\" is less than this request needs "
                                 "(%uL.%06uL USD).", &tier->name,
                                 d.need[dim] / 1000000,
                                 d.need[dim] % 1000000);

            } else {
                p = ngx_snprintf(p, 256 - (p - msg.data), " in tier "
                                 "\"%V\" is less than this request needs "
                                 "(%uL).", &tier->name, d.need[dim]);
            }

        } else {
            p = ngx_snprintf(msg.data, 256, "%s reached for ",
                             err == NGX_HTTP_LLM_ERR_QUOTA
                             ? "Quota" : "Rate limit");
            p = ngx_http_llm_limit_text(p, &d, dim);
            p = ngx_snprintf(p, 256 - (p - msg.data), " in tier \"%V\". "
                             "Retry in %uL s.", &tier->name, wait);
        }

        ctx->result = NGX_HTTP_LLM_RESULT_LIMITED;
        break;

    case NGX_HTTP_LLM_CONC_FULL:
        err = NGX_HTTP_LLM_ERR_RATE_LIMIT;
        p = ngx_snprintf(msg.data, 256, "Too many concurrent requests "
                         "(limit %ui) in tier \"%V\".",
                         tier->concurrency, &tier->name);
        ctx->result = NGX_HTTP_LLM_RESULT_LIMITED;
        break;

    case NGX_HTTP_LLM_COOLING:
        err = NGX_HTTP_LLM_ERR_SUSPENDED;
        p = ngx_snprintf(msg.data, 256, "This account is cooling down "
                         "after exceeding its limits. Retry in %uL s.",
                         wait);
        ctx->result = NGX_HTTP_LLM_RESULT_REJECTED;
        break;

    default: /* NGX_ERROR */
        err = NGX_HTTP_LLM_ERR_STORE;
        p = ngx_snprintf(msg.data, 256, "The rate limit store is "
                         "unavailable. Retry shortly.");
        ctx->retry_after = d.wall + 1000;
        ctx->result = NGX_HTTP_LLM_RESULT_STORE;
        break;
    }

    msg.len = p - msg.data;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm: account \"%V\" refused: %V", &ctx->account, &msg);

    if (ctx->unread) {
        /*
         * a body nginx did not read to its end is no request that an
         * error_page could send on ("= @overflow"): its own error
         */

        return ngx_http_llm_refuse(r, ctx, ctx->refusal,
                                   &ctx->refusal_text);
    }

    return ngx_http_llm_refuse(r, ctx, err, &msg);
}


/*
 * A body the gateway refuses (400 invalid_request_error, 413
 * request_too_large) is still a request of its key's: it is admitted
 * as one request that reserves and costs no tokens, and the windows
 * count it and report it in the headers.  When they refuse it (429,
 * 403 in a cooldown, 503 with on_error=deny), that is its answer, as it
 * would have been for a good body; a request they let in gets the
 * body's error.
 */

static ngx_int_t
ngx_http_llm_admit_refused(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm: account \"%V\" sent an invalid request: %V",
                  &ctx->account, &ctx->refusal_text);

    return ngx_http_llm_limit(r, ctx);
}


/* admitted: on to the content phase, or the refused body's error */

static ngx_int_t
ngx_http_llm_let_in(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    if (!ctx->refused) {
        return NGX_DECLINED;
    }

    /*
     * a refused body goes no further, counted or not (on_error=allow):
     * it is nothing an uncounted answer could be charged for
     */

    ctx->uncounted = 0;
    ctx->result = NGX_HTTP_LLM_RESULT_REJECTED;

    /*
     * it makes no call: its concurrency slot is given back now, not when
     * the connection closes (a 413's lingering close lasts seconds)
     */

    ngx_http_llm_give_back(r, ctx);

    return ngx_http_llm_refuse(r, ctx, ctx->refusal, &ctx->refusal_text);
}


/* "requests per 1m (limit 3)", "cost per 1d (limit 5.000000 USD)" */

static u_char *
ngx_http_llm_limit_text(u_char *p, ngx_http_llm_decision_t *d,
    ngx_uint_t dim)
{
    ngx_uint_t  limit;

    static char  *names[] = { "requests", "tokens", "input tokens",
                              "output tokens", "cost" };

    limit = d->refused->limit;

    if (dim == NGX_HTTP_LLM_DIM_COST) {
        return ngx_sprintf(p, "cost per %V (limit %ui.%06ui USD)",
                           &d->refused->text, limit / 1000000,
                           limit % 1000000);
    }

    return ngx_sprintf(p, "%s per %V (limit %ui)", names[dim],
                       &d->refused->text, limit);
}


static ngx_int_t
ngx_http_llm_refuse(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_err_e err, ngx_str_t *message)
{
    ngx_int_t   rc;
    ngx_uint_t  status;

    ctx->done = 1;

    /*
     * as nginx's own errors: an error_page's location has the body
     * ("error_page 429 = @overflow" proxies the request elsewhere)
     */

    status = ngx_http_llm_error_page(r, ctx, err);

    if (status) {
        ngx_http_finalize_request(r, status);
        return NGX_DONE;
    }

    /* no "100 Continue" for a body unwanted */

    r->expect_tested = 1;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_llm_send_error(r, ctx, err, message);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/* the concurrency slot the request holds, in Redis or in the zone */

static void
ngx_http_llm_give_back(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    /* as the pool's cleanups run: Redis's lease first */

    ngx_http_llm_rstore_give_back(ctx);

    cln = ngx_http_llm_ctx_cleanup(r);

    if (cln) {
        ngx_http_llm_cleanup(cln->data);
    }
}


static void
ngx_http_llm_cleanup(void *data)
{
    ngx_http_llm_cleanup_t  *lc = data;

    ngx_http_llm_main_conf_t  *lmcf;

    if (!lc->ctx->conc_held) {
        return;
    }

    lc->ctx->conc_held = 0;

    lmcf = ngx_http_get_module_main_conf(lc->request,
                                         ngx_http_llm_gateway_module);

    ngx_http_llm_store_release(lmcf->shm_zone, &lc->ctx->account);
}
