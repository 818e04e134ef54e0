
/*
 * ngx_llm_gateway: counters in Redis, shared by a fleet of nodes.
 *
 * Owns what "llm_redis" changes in an admission: one Lua script
 * (EVALSHA, EVAL when Redis answers NOSCRIPT) checks and reserves all
 * of a request's windows, its concurrency slot and cooldown in one
 * round trip, atomically; the reply fills the same decision the zone
 * store fills.  What follows, off the request's path (the settle, the
 * lease given back or renewed, refunds, replay batches) and llm_usage's
 * read are in ngx_http_llm_rstore_settle.c; the scripts in
 * ngx_http_llm_rstore_lua.c.
 *
 * Keys (one Cluster hash tag per account, so one slot per decision):
 *
 *   PREFIX{acct:ACCOUNT}:w:DIMENSION:PERIOD   hash: slot number -> count,
 *                                             and t, c, o (see below)
 *   PREFIX{acct:ACCOUNT}:conc                 zset: lease -> expiry (ms)
 *   PREFIX{acct:ACCOUNT}:cool                 cooldown, PX its length
 *
 * DIMENSION is requests, tokens, input_tokens, output_tokens or cost;
 * PERIOD is 1s, 1m, 1h, 1d or 1mo, so counts follow the (dimension,
 * period) tag across reloads and tier changes, as in the zone.  The
 * ring is the zone's: a slot is period/10 wide and the window sums the
 * current slot and the ten before it; a month is one field, the month
 * number since January 1970 (UTC).  The clock is Redis's own TIME, the
 * one clock every node shares; slot numbers count from the epoch.
 * Each window key expires 1.1 periods and a second (a month key: a
 * day after its month) after the first write into its current slot,
 * which is after every slot it counts has left the window.  A lease
 * expires 60 s after it was taken or renewed (every 20 s while its
 * request runs), so a crashed worker's slots come back within 60 s.
 *
 * Admissions are coalesced (llm_redis batch=N): those of one account
 * and tier made in one event-loop iteration of a worker wait in a
 * pending batch, and a posted event sends each batch at the end of the
 * iteration as one call of the batch script, which decides them in
 * order exactly as the admission script would one by one; each request
 * gets its own answer.  batch=1 sends each admission alone.
 *
 * While Redis fails, on_error decides: "local" asks the zone with the
 * same limits, "deny" answers 503, "allow" lets the request through
 * uncounted.  A request waits for Redis at most llm_redis timeout in
 * all (ctx->redis_waited: a key lookup before the admission takes its
 * share), each request of a batch until its own deadline; an admission
 * the request stopped waiting for goes on alone, and what Redis grants
 * it then goes back (the script refuses to run after the deadline it
 * is given, the request's own, on Redis's clock: our clock plus the
 * skew the connection's TIME and each admission reply measure, kept
 * in the zone for the workers of the next reload; none until one of
 * them has).
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_rstore_int.h"
#include "ngx_http_llm_replay.h"


/* pending batches, by their account's hash */
#define NGX_HTTP_LLM_BATCH_BUCKETS  64

/*
 * a request's deadline while Redis's clock is not known: as long as one
 * on it (13 digits, 2001 to 2286), so that it is written in place then
 */
#define NGX_HTTP_LLM_NO_CLOCK       "0000000000000"


static ngx_int_t ngx_http_llm_rstore_enqueue(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_decision_t *d, int64_t deadline);
static void ngx_http_llm_rstore_flush(ngx_event_t *ev);
static void ngx_http_llm_rstore_single(ngx_http_llm_rstore_op_t *op);
static void ngx_http_llm_rstore_cap(ngx_http_llm_rstore_op_t *op);
static void ngx_http_llm_rstore_again(ngx_http_llm_redis_cmd_t *cmd);
static void ngx_http_llm_rstore_cap_arg(ngx_http_llm_rstore_op_t *op,
    ngx_uint_t k, int64_t cap, ngx_str_t *to);
static void ngx_http_llm_rstore_batched(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_answer(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply, const char *error);
static void ngx_http_llm_rstore_expire(ngx_http_llm_redis_op_t *rop);
static void ngx_http_llm_rstore_lost(ngx_http_llm_rstore_op_t *op);
static void ngx_http_llm_rstore_wait_clock(ngx_uint_t late);
static void ngx_http_llm_rstore_clock_late(ngx_event_t *ev);
static void ngx_http_llm_rstore_clock_args(ngx_http_llm_rstore_op_t *op);
static void ngx_http_llm_rstore_admitted(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_rstore_parse(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_seed(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_rstore_fallback(ngx_http_request_t *r,
    ngx_http_llm_rstore_req_t *st, ngx_http_llm_decision_t *d);
static void ngx_http_llm_rstore_cleanup(void *data);
static void ngx_http_llm_rstore_unlease(ngx_http_llm_rstore_req_t *st);


char  *ngx_http_llm_dim_names[] = {
    "requests", "tokens", "input_tokens", "output_tokens", "cost"
};


u_char              ngx_http_llm_lease_prefix[32];
ngx_queue_t         ngx_http_llm_leases;
ngx_event_t         ngx_http_llm_renew_ev;

static ngx_uint_t   ngx_http_llm_rstore_inited;
static uint64_t     ngx_http_llm_lease_seq;

/* admissions waiting for the end of this loop iteration, in batches */
static ngx_queue_t  ngx_http_llm_batches[NGX_HTTP_LLM_BATCH_BUCKETS];
static ngx_event_t  ngx_http_llm_batch_ev;

/* the first deadline of the batches that wait for Redis's clock */
static ngx_event_t  ngx_http_llm_clock_ev;


/*
 * Sends the admission of "ctx" to Redis.  NGX_AGAIN: the access
 * handler runs again when the answer (or the timeout) is in, and takes
 * it from ngx_http_llm_rstore_result().  Otherwise Redis is known to be
 * unavailable and on_error has decided already: the result is the
 * zone store's (plus NGX_HTTP_LLM_UNCOUNTED), "d" is filled.
 */

ngx_int_t
ngx_http_llm_rstore_admit(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d)
{
    u_char                      *p;
    size_t                       klen, strings;
    int64_t                      deadline;
    ngx_msec_t                   left;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    rc = ngx_http_llm_redis_conf();

    st = ngx_http_llm_rstore_req(r, ctx, tier);
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->d = *d;

    if (rc == NULL) {
        goto fallback;
    }

    /* what is left of the request's time for Redis (a key lookup's) */

    left = ngx_http_llm_redis_left(ctx->redis_waited);

    if (left == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_redis: no decision for \"%V\" (no time left), "
                      "on_error applies", &ctx->account);
        goto fallback;
    }

    st->start = ngx_current_msec;
    st->deadline = ngx_current_msec + left;

    /*
     * when this node stops waiting, on Redis's clock.  While that clock
     * is not known (no TIME has answered since this nginx started), the
     * admission waits in its batch until it is, and the deadline is
     * written then (a guess could be far in Redis's past, and with no
     * deadline, Redis frozen at our start and thawed later would run
     * admissions the zone counted meanwhile, on_error=local)
     */

    deadline = ngx_http_llm_redis_skew_known
               ? (int64_t) ngx_http_llm_now() + left + ngx_http_llm_redis_skew
               : 0;

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    klen = st->conc_key.len + sizeof(":w:output_tokens:1mo") - 1;

    if (tier->concurrency) {
        p = ngx_pnalloc(r->pool, 64);
        if (p == NULL) {
            return NGX_ERROR;
        }

        st->lease.data = p;
        p = ngx_sprintf(p, "%s:%uL", ngx_http_llm_lease_prefix,
                        ++ngx_http_llm_lease_seq);
        st->lease.len = p - st->lease.data;
    }

    if (rc->batch > 1 || !ngx_http_llm_redis_skew_known) {
        if (ngx_http_llm_rstore_enqueue(st, d, deadline) != NGX_OK) {
            return NGX_ERROR;
        }

        goto pending;
    }

    /* EVALSHA sha numkeys conc cool windows... 5 + 3 per window */

    strings = (klen + 1) * (nwin + 2) + (NGX_INT64_LEN + 1) * (5 + 3 * nwin)
              + st->lease.len + 64;

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_ADMIT,
                                3 + 2 + nwin + 5 + 3 * nwin, strings,
                                &st->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->nkeys = 2 + nwin;

    ngx_http_llm_rstore_num(op, 2 + nwin);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);

    /* the cooldown key: the conc key with "cool" for "conc" */

    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_memcpy(op->cmd.last - 4, "cool", 4);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    ngx_http_llm_rstore_num(op, tier->concurrency);
    ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);
    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);
    ngx_http_llm_rstore_num(op, tier->cooldown);
    ngx_http_llm_rstore_num(op, deadline);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, wc[i].limit);
        ngx_http_llm_rstore_num(op, d->need[wc[i].dim]);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_admitted;
    op->cmd.op.expire = ngx_http_llm_rstore_expire;
    op->cmd.again = ngx_http_llm_rstore_again;
    op->cmd.op.deadline = st->deadline;
    op->req = st;

    /*
     * the settles queued in this loop iteration go first: Redis decides
     * this admission with the account's usage they settle
     */

    ngx_http_llm_rstore_settles_flush();

    ngx_http_llm_rstore_cap(op);

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
        goto fallback;
    }

    st->op = op;
    st->pending = 1;

pending:

    /* a client that goes away meanwhile ends the request at once */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;

fallback:

    return ngx_http_llm_rstore_fallback(r, st, d);
}


/*
 * The request's Redis state (ctx->redis) and, with llm_redis, the keys
 * of its account's windows, kept for release and settle.
 */

ngx_http_llm_rstore_req_t *
ngx_http_llm_rstore_req(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier)
{
    u_char                      *p;
    size_t                       klen;
    ngx_uint_t                   i, nwin;
    ngx_pool_cleanup_t          *cln;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    ngx_http_llm_rstore_scripts_init();

    rc = ngx_http_llm_redis_conf();

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_rstore_req_t));
    if (st == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_llm_rstore_cleanup;
    cln->data = st;

    st->request = r;
    st->ctx = ctx;
    st->tier = tier;
    ngx_queue_init(&st->queue);

    ctx->redis = st;

    if (rc == NULL) {
        return st;
    }

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    klen = rc->prefix.len + sizeof("{acct:}:w:output_tokens:1mo") - 1
           + ctx->account.len;

    p = ngx_pnalloc(r->pool, klen * (nwin + 1));
    st->wkeys = ngx_palloc(r->pool, (nwin + 1) * sizeof(ngx_str_t));

    if (p == NULL || st->wkeys == NULL) {
        return NULL;
    }

    st->conc_key.data = p;
    p = ngx_sprintf(p, "%V{acct:%V}:conc", &rc->prefix, &ctx->account);
    st->conc_key.len = p - st->conc_key.data;

    for (i = 0; i < nwin; i++) {
        st->wkeys[i].data = p;
        p = ngx_sprintf(p, "%V{acct:%V}:w:%s:%V", &rc->prefix, &ctx->account,
                        ngx_http_llm_dim_names[wc[i].dim], &wc[i].text);
        st->wkeys[i].len = p - st->wkeys[i].data;
    }

    return st;
}


/*
 * Queues the admission of "st" in its account's pending batch (one per
 * conc key and tier, at most "batch" requests and what one reply can
 * carry), started here when there is none; the batches go to Redis at
 * the end of this loop iteration, each as one call of the batch script.
 */

static ngx_int_t
ngx_http_llm_rstore_enqueue(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_decision_t *d, int64_t deadline)
{
    size_t                       strings;
    ngx_uint_t                   i, nwin, affinity, max;
    ngx_queue_t                 *bucket, *q;
    ngx_http_llm_tier_t         *tier;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_window_conf_t  *wc;

    rc = ngx_http_llm_redis_conf();

    tier = st->tier;
    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    affinity = (ngx_uint_t) ngx_crc32_short(st->conc_key.data,
                                            st->conc_key.len) + 1;

    bucket = &ngx_http_llm_batches[affinity % NGX_HTTP_LLM_BATCH_BUCKETS];

    /* a new batch goes first: the full ones stay behind it */

    for (q = ngx_queue_head(bucket);
         q != ngx_queue_sentinel(bucket);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_llm_rstore_op_t, queue);

        if (op->cmd.op.affinity == affinity
            && op->tier == tier
            && op->nreq < op->maxreq
            && op->cmd.argvlen[3] == st->conc_key.len
            && ngx_memcmp(op->cmd.argv[3], st->conc_key.data, st->conc_key.len)
               == 0)
        {
            goto found;
        }
    }

    /* the answer's numbers at most: 2 + 2 per window, 2 + 3 per window each */

    max = ngx_min(rc->batch, (NGX_HTTP_LLM_REDIS_ELTS_MAX - 2 - 2 * nwin)
                             / (2 + 3 * nwin));

    /*
     * EVALSHA sha numkeys conc cool windows..., 3 + 2 per window, then
     * 2 + 1 per window per request
     */

    strings = (st->conc_key.len + sizeof(":w:output_tokens:1mo"))
              * (nwin + 2)
              + (NGX_INT64_LEN + 1) * (4 + 2 * nwin)
              + max * (64 + (NGX_INT64_LEN + 1) * (1 + nwin));

    op = ngx_http_llm_rstore_op_alloc(NGX_HTTP_LLM_SCRIPT_BATCH,
                                      3 + 2 + nwin + 3 + 2 * nwin
                                      + max * (2 + nwin),
                                      strings, &st->conc_key, max);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->nkeys = 2 + nwin;
    op->tier = tier;
    op->maxreq = max;
    op->queued = 1;
    op->cmd.op.handler = ngx_http_llm_rstore_batched;
    op->cmd.again = ngx_http_llm_rstore_again;
    op->cmd.op.expire = ngx_http_llm_rstore_expire;
    op->cmd.op.deadline = st->deadline;

    ngx_http_llm_rstore_num(op, 2 + nwin);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
    ngx_memcpy(op->cmd.last - 4, "cool", 4);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    ngx_http_llm_rstore_num(op, tier->concurrency);
    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);
    ngx_http_llm_rstore_num(op, tier->cooldown);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, wc[i].limit);
    }

    ngx_queue_insert_head(bucket, &op->queue);

    if (!ngx_http_llm_batch_ev.posted) {
        ngx_post_event(&ngx_http_llm_batch_ev, &ngx_posted_events);
    }

found:

    /* the batch waits for its most pressed request */

    if ((ngx_msec_int_t) (st->deadline - op->cmd.op.deadline) < 0) {
        op->cmd.op.deadline = st->deadline;
    }

    ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);

    if (ngx_http_llm_redis_skew_known) {
        ngx_http_llm_rstore_num(op, deadline);

    } else {
        ngx_http_llm_rstore_arg(op, (u_char *) NGX_HTTP_LLM_NO_CLOCK,
                                sizeof(NGX_HTTP_LLM_NO_CLOCK) - 1);
    }

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, d->need[wc[i].dim]);
    }

    st->slot = op->nreq;
    op->reqs[op->nreq++] = st;

    st->op = op;
    st->pending = 1;

    return NGX_OK;
}


/*
 * The end of the loop iteration: every pending batch goes to Redis, the
 * settles first, so that an account's usage settled in this iteration
 * counts in its admissions of the same iteration (both go on the
 * account's connection, in this order).
 */

static void
ngx_http_llm_rstore_flush(ngx_event_t *ev)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_http_llm_rstore_op_t  *op;

    ngx_http_llm_rstore_settles_flush();

    if (!ngx_http_llm_redis_skew_known
        && ngx_http_llm_redis_clock_coming())
    {
        ngx_http_llm_rstore_wait_clock(0);
        return;
    }

    for (i = 0; i < NGX_HTTP_LLM_BATCH_BUCKETS; i++) {

        while (!ngx_queue_empty(&ngx_http_llm_batches[i])) {

            /* the oldest first: an account's requests in their order */

            q = ngx_queue_last(&ngx_http_llm_batches[i]);
            op = ngx_queue_data(q, ngx_http_llm_rstore_op_t, queue);

            ngx_queue_remove(q);
            op->queued = 0;

            ngx_http_llm_rstore_clock_args(op);

            if (op->nreq == 1) {
                if (op->reqs[0] == NULL) {
                    /* its client has gone */
                    ngx_free(op);
                    continue;
                }

                ngx_http_llm_rstore_single(op);
            }

            ngx_http_llm_rstore_cap(op);

            if (ngx_http_llm_rstore_send(op) != NGX_OK) {
                ngx_http_llm_redis_fail(op->cmd.op.error);
                op->cmd.op.handler(&op->cmd.op, NULL);
            }
        }
    }
}


/*
 * No TIME has answered since this nginx started, and a connection is
 * coming up (or Redis stalls in its handshake; not one whose TIME has
 * answered without a clock, a proxy's): the batches wait for
 * Redis's clock, which writes their deadlines (flushed again by
 * ngx_http_llm_redis_clock_known), each request at most until its own
 * deadline (then on_error, and never sent: "late", from the timer).  A
 * batch nobody waits for any more is dropped.  With no connection at
 * all they go at once, and fail at once.
 */

static void
ngx_http_llm_rstore_wait_clock(ngx_uint_t late)
{
    ngx_uint_t                 i, n;
    ngx_msec_t                 first;
    ngx_queue_t               *q, *next;
    ngx_http_llm_rstore_op_t  *op;

    first = 0;

    for (i = 0; i < NGX_HTTP_LLM_BATCH_BUCKETS; i++) {

        /* batches of requests answered here go in at the head: unmet */

        for (q = ngx_queue_head(&ngx_http_llm_batches[i]);
             q != ngx_queue_sentinel(&ngx_http_llm_batches[i]);
             q = next)
        {
            next = ngx_queue_next(q);
            op = ngx_queue_data(q, ngx_http_llm_rstore_op_t, queue);

            if (late
                && (ngx_msec_int_t) (op->cmd.op.deadline - ngx_current_msec)
                   <= 0)
            {
                ngx_http_llm_rstore_expire(&op->cmd.op);
            }

            for (n = 0; n < op->nreq && op->reqs[n] == NULL; n++) {
                /* void */
            }

            if (n == op->nreq) {
                ngx_queue_remove(q);
                ngx_free(op);
                continue;
            }

            if (first == 0
                || (ngx_msec_int_t) (op->cmd.op.deadline - first) < 0)
            {
                first = op->cmd.op.deadline;
            }
        }
    }

    if (first) {
        ngx_add_timer(&ngx_http_llm_clock_ev,
                      (ngx_msec_int_t) (first - ngx_current_msec) > 0
                      ? first - ngx_current_msec : 1);
    }
}


static void
ngx_http_llm_rstore_clock_late(ngx_event_t *ev)
{
    ngx_http_llm_rstore_wait_clock(1);

    /* the connections may have gone meanwhile: then the rest goes */

    ngx_http_llm_rstore_post();
}


/*
 * The deadlines of a batch queued before Redis's clock was known, now
 * on it ("1", past, for a request that has stopped waiting), later by
 * what the first guess of that clock may be short (the time its TIME
 * waited): a deadline too early would refuse what Redis answers in
 * time, one too late only lets Redis run an admission that waited in
 * vain for that long, which the zone counts too (on_error=local).
 */

static void
ngx_http_llm_rstore_clock_args(ngx_http_llm_rstore_op_t *op)
{
    u_char                     *p;
    int64_t                     at;
    ngx_uint_t                  i, k, nwin;
    ngx_msec_int_t              left;
    ngx_http_llm_rstore_req_t  *st;

    if (!ngx_http_llm_redis_skew_known) {
        return;
    }

    nwin = op->nkeys - 2;

    for (i = 0; i < op->nreq; i++) {
        k = 2 + op->nkeys + 3 + 2 * nwin + i * (2 + nwin) + 2;

        if (op->cmd.argvlen[k] != sizeof(NGX_HTTP_LLM_NO_CLOCK) - 1
            || ngx_strncmp(op->cmd.argv[k], NGX_HTTP_LLM_NO_CLOCK,
                           op->cmd.argvlen[k])
               != 0)
        {
            continue;
        }

        st = op->reqs[i];
        left = st ? (ngx_msec_int_t) (st->deadline - ngx_current_msec) : 0;

        if (left <= 0) {
            op->cmd.argv[k] = "1";
            op->cmd.argvlen[k] = 1;
            continue;
        }

        at = (int64_t) ngx_http_llm_now() + left + ngx_http_llm_redis_skew
             + (int64_t) ngx_http_llm_redis_skew_slack;

        if (at <= 0 || at > 9999999999999LL) {
            /* a clock out of 2001..2286: no deadline, as before */
            continue;
        }

        p = (u_char *) op->cmd.argv[k];
        ngx_sprintf(p, "%013L", at);
    }
}


/*
 * An admission must not run in Redis after this worker has stopped
 * listening for its answer: when a command before it on its connection
 * times out, the connection closes, and an admission Redis ran later
 * would count in Redis while the zone counted it too.  Each deadline
 * the script gets (Redis's clock) is cut to that moment.
 */

static void
ngx_http_llm_rstore_cap(ngx_http_llm_rstore_op_t *op)
{
    u_char      buf[NGX_INT64_LEN];
    int64_t     cap;
    ngx_str_t   to;
    ngx_uint_t  i, nwin;
    ngx_msec_t  closes;

    closes = ngx_http_llm_redis_closes(&op->cmd.op);

    if (closes == 0 || !ngx_http_llm_redis_skew_known) {
        return;
    }

    cap = (int64_t) ngx_http_llm_now()
          + (ngx_msec_int_t) (closes - ngx_current_msec)
          + ngx_http_llm_redis_skew;

    if (cap <= 1) {
        return;
    }

    to.data = buf;
    to.len = ngx_sprintf(buf, "%L", cap) - buf;

    if (op->reqs == NULL) {
        /* ARGV[5] of the admission script */
        ngx_http_llm_rstore_cap_arg(op, 3 + op->nkeys + 4, cap, &to);
        return;
    }

    nwin = op->nkeys - 2;

    for (i = 0; i < op->nreq; i++) {
        /* each request's deadline in the batch script's ARGV */
        ngx_http_llm_rstore_cap_arg(op, 2 + op->nkeys + 3 + 2 * nwin
                                        + i * (2 + nwin) + 2, cap, &to);
    }
}


/* sent again as EVAL (NOSCRIPT): maybe on another connection */

static void
ngx_http_llm_rstore_again(ngx_http_llm_redis_cmd_t *cmd)
{
    ngx_http_llm_rstore_cap((ngx_http_llm_rstore_op_t *) cmd);
}


/*
 * A deadline argument later than "cap" becomes "cap" (its text "to"),
 * in place: deadlines on Redis's clock are as long as each other.
 */

static void
ngx_http_llm_rstore_cap_arg(ngx_http_llm_rstore_op_t *op, ngx_uint_t k,
    int64_t cap, ngx_str_t *to)
{
    ngx_int_t  v;

    if (op->cmd.argvlen[k] != to->len) {
        /* "1": its request has gone */
        return;
    }

    v = ngx_atoi((u_char *) op->cmd.argv[k], op->cmd.argvlen[k]);

    if (v > cap) {
        ngx_memcpy((u_char *) op->cmd.argv[k], to->data, to->len);
    }
}


/*
 * A batch of one goes as the admission script: its arguments are the
 * same, in another order (KEYS as they are; ARGV climit, lease, lease
 * ttl, cooldown, deadline, per window: period, limit, need).
 */

static void
ngx_http_llm_rstore_single(ngx_http_llm_rstore_op_t *op)
{
    size_t       l[5 + 3 * NGX_HTTP_LLM_WINDOWS_MAX];
    ngx_uint_t   i, nwin, k;
    const char  *v[5 + 3 * NGX_HTTP_LLM_WINDOWS_MAX];

    nwin = op->nkeys - 2;
    k = 3 + op->nkeys;          /* ARGV[1] */

    ngx_memcpy(v, &op->cmd.argv[k], (5 + 3 * nwin) * sizeof(char *));
    ngx_memcpy(l, &op->cmd.argvlen[k], (5 + 3 * nwin) * sizeof(size_t));

    /*
     * from climit, ttl, cooldown, per window: period, limit; lease,
     * deadline, per window: need
     */

#define ngx_http_llm_mv(to, from)                                             \
    op->cmd.argv[k + (to)] = v[from];                                         \
    op->cmd.argvlen[k + (to)] = l[from]

    ngx_http_llm_mv(0, 0);
    ngx_http_llm_mv(1, 3 + 2 * nwin);
    ngx_http_llm_mv(2, 1);
    ngx_http_llm_mv(3, 2);
    ngx_http_llm_mv(4, 4 + 2 * nwin);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_mv(5 + 3 * i, 3 + 2 * i);
        ngx_http_llm_mv(6 + 3 * i, 4 + 2 * i);
        ngx_http_llm_mv(7 + 3 * i, 5 + 2 * nwin + i);
    }

#undef ngx_http_llm_mv

    op->cmd.script = &ngx_http_llm_rstore_scripts[NGX_HTTP_LLM_SCRIPT_ADMIT];
    op->cmd.argv[1] = (const char *) op->cmd.script->sha;
    op->cmd.op.handler = ngx_http_llm_rstore_admitted;

    op->req = op->reqs[0];
    op->reqs = NULL;
    op->nreq = 0;
}


/*
 * The batch's answer, one request after the other; a request that is
 * gone gives back what it was granted.  NULL or an error reply: each
 * request takes the on_error path.
 */

static void
ngx_http_llm_rstore_batched(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_str_t                      key, lease;
    ngx_uint_t                     i, nwin, a, ok;
    ngx_http_llm_rstore_req_t     *st;
    ngx_http_llm_rstore_unpack_t   u;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    nwin = op->nkeys - 2;

    /* all of it read first: an answer that is not the script's is none */

    ok = 0;

    if (ngx_http_llm_rstore_unpack_init(&u, op, reply) == NGX_OK) {

        for (i = 0; i < op->nreq; i++) {
            if (ngx_http_llm_rstore_unpack(&u, op, i) != NGX_OK) {
                break;
            }
        }

        ok = (i == op->nreq && u.k == u.nelts);

        if (ok) {
            (void) ngx_http_llm_rstore_unpack_init(&u, op, reply);
        }
    }

    for (i = 0; i < op->nreq; i++) {

        if (ok) {
            (void) ngx_http_llm_rstore_unpack(&u, op, i);
        }

        st = op->reqs[i];

        if (st) {
            st->op = NULL;
            st->lost = (reply == NULL && !op->cmd.op.unsent);
            ngx_http_llm_rstore_answer(st, ok ? &u.one : reply,
                                       op->cmd.op.error);
            continue;
        }

        if (reply == NULL) {
            ngx_http_llm_rstore_lost(op);
        }

        /* gone: its lease and its charge go back */

        if (!ok || u.elts[0].integer != 0) {
            continue;
        }

        /* argv of ARGV[k]: 2 + nkeys + k; the request's block */

        a = 2 + op->nkeys + 3 + 2 * nwin + i * (2 + nwin);

        if (op->cmd.argvlen[a + 1] > 0) {
            key.data = (u_char *) op->cmd.argv[3];
            key.len = op->cmd.argvlen[3];
            lease.data = (u_char *) op->cmd.argv[a + 1];
            lease.len = op->cmd.argvlen[a + 1];

            ngx_http_llm_rstore_release(&key, &lease);
        }

        ngx_http_llm_rstore_refund(op, u.now, 2 + op->nkeys + 4, 2, a + 3, 1);
    }

    ngx_free(op);
}


/* the answer the access handler waited for; NGX_AGAIN: not yet */

ngx_int_t
ngx_http_llm_rstore_result(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_decision_t *d)
{
    ngx_http_llm_rstore_req_t  *st = ctx->redis;

    if (st->pending) {
        return NGX_AGAIN;
    }

    *d = st->d;

    return st->rc;
}


/*
 * An account's commands share one connection (the affinity: a hash of
 * its conc key), so a settle reaches Redis before the account's next
 * admission from this worker.
 */

ngx_http_llm_rstore_op_t *
ngx_http_llm_rstore_op(ngx_uint_t script, int argc, size_t strings,
    ngx_str_t *conc_key)
{
    return ngx_http_llm_rstore_op_alloc(script, argc, strings, conc_key, 0);
}


/* "nreq": room for the requests of a batch */

ngx_http_llm_rstore_op_t *
ngx_http_llm_rstore_op_alloc(ngx_uint_t script, int argc, size_t strings,
    ngx_str_t *conc_key, ngx_uint_t nreq)
{
    ngx_http_llm_rstore_op_t  *op;

    op = ngx_http_llm_redis_cmd(sizeof(ngx_http_llm_rstore_op_t)
                                + nreq * sizeof(ngx_http_llm_rstore_req_t *),
                                &ngx_http_llm_rstore_scripts[script], argc,
                                strings, conc_key);
    if (op == NULL) {
        return NULL;
    }

    if (nreq) {
        op->reqs = (ngx_http_llm_rstore_req_t **) (op + 1);
    }

    return op;
}


static void
ngx_http_llm_rstore_admitted(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_str_t                   key, lease;
    ngx_http_llm_rstore_req_t  *st;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    st = op->req;

    if (st == NULL) {

        if (reply == NULL) {
            ngx_http_llm_rstore_lost(op);
        }

        /*
         * the request is gone (its client went away): what it was
         * given goes back at once, its lease and its charge
         */

        if (reply && reply->type == NGX_HTTP_LLM_REDIS_ARRAY
            && reply->nelts > 1 && reply->elts[0].integer == 0)
        {
            if (op->cmd.argvlen[3 + op->nkeys + 1] > 0) {
                key.data = (u_char *) op->cmd.argv[3];
                key.len = op->cmd.argvlen[3];
                lease.data = (u_char *) op->cmd.argv[3 + op->nkeys + 1];
                lease.len = op->cmd.argvlen[3 + op->nkeys + 1];

                ngx_http_llm_rstore_release(&key, &lease);
            }

            ngx_http_llm_rstore_refund(op, reply->elts[1].integer,
                                       3 + op->nkeys + 5, 3,
                                       3 + op->nkeys + 7, 3);
        }

        ngx_free(op);
        return;
    }

    st->op = NULL;
    st->lost = (reply == NULL && !op->cmd.op.unsent);

    ngx_http_llm_rstore_answer(st, reply, op->cmd.op.error);

    ngx_free(op);
}


/*
 * An admission written to Redis whose answer was lost with its
 * connection: Redis may or may not have run it, and nothing tells
 * which.  Its request went the on_error way (with "local", the zone
 * counted it, and the replay adds that to Redis when it is back), so
 * if Redis ran it, it counts twice, until its window has passed: a
 * lost answer may count more than happened, never less.  Said here
 * for a request that had stopped waiting (answer() says it for one
 * that waited).
 */

static void
ngx_http_llm_rstore_lost(ngx_http_llm_rstore_op_t *op)
{
    ngx_str_t  key;

    if (op->cmd.op.unsent) {
        return;
    }

    key.data = (u_char *) op->cmd.argv[3];
    key.len = op->cmd.argvlen[3];

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "llm_redis: an admission for \"%V\" lost its answer "
                  "after it was sent (%s): Redis may have counted it too",
                  &key, op->cmd.op.error ? op->cmd.op.error : "no reply");
}


/*
 * Redis's answer to the admission of "st" (NULL: none, "error" says
 * why), or the on_error path; the request runs on.
 */

static void
ngx_http_llm_rstore_answer(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply, const char *error)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    st->pending = 0;
    st->ctx->redis_waited += ngx_current_msec - st->start;

    r = st->request;
    r->read_event_handler = ngx_http_block_reading;

    rc = NGX_ERROR;

    if (reply && reply->type != NGX_HTTP_LLM_REDIS_ERROR) {
        rc = ngx_http_llm_rstore_parse(st, reply);

        if (rc == NGX_ERROR) {
            ngx_http_llm_redis_fail("unexpected reply to the admission "
                                    "script");
        }
    }

    if (rc == NGX_ERROR || rc == NGX_AGAIN) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_redis: no decision for \"%V\" (%s%s), "
                      "on_error applies", &st->ctx->account,
                      rc == NGX_AGAIN ? "past its deadline"
                      : reply ? "error reply"
                      : error ? error : "no reply",
                      st->lost ? ", lost after it was sent: Redis may "
                                 "have counted it too" : "");

        rc = ngx_http_llm_rstore_fallback(r, st, &st->d);
    }

    st->rc = rc;

    if (ngx_terminate) {
        return;
    }

    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}


/*
 * An admission's requests whose time for Redis is up (of a batch: those
 * past their own deadline; the batch then waits for the next one) take
 * the on_error path; the admission goes on without them, and what Redis
 * grants them later goes back, as for a client that has gone.
 */

static void
ngx_http_llm_rstore_expire(ngx_http_llm_redis_op_t *rop)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_uint_t                  i, n;
    ngx_msec_t                  next;
    ngx_http_llm_rstore_req_t  *st, *late[NGX_HTTP_LLM_REDIS_BATCH_MAX];

    if (op->reqs == NULL) {
        st = op->req;

        if (st) {
            op->req = NULL;
            st->op = NULL;

            /* "op" may be gone after this */
            ngx_http_llm_rstore_answer(st, NULL, "no answer in time");
        }

        return;
    }

    n = 0;
    next = 0;

    for (i = 0; i < op->nreq; i++) {
        st = op->reqs[i];

        if (st == NULL) {
            continue;
        }

        if ((ngx_msec_int_t) (st->deadline - ngx_current_msec) <= 0) {
            op->reqs[i] = NULL;
            st->op = NULL;
            late[n++] = st;
            continue;
        }

        if (next == 0 || (ngx_msec_int_t) (st->deadline - next) < 0) {
            next = st->deadline;
        }
    }

    op->cmd.op.deadline = next;

    /* "op" may be gone after the first of these */

    for (i = 0; i < n; i++) {
        ngx_http_llm_rstore_answer(late[i], NULL, "no answer in time");
    }
}


static ngx_int_t
ngx_http_llm_rstore_parse(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply)
{
    int64_t                      status, sum, reset, over;
    uint64_t                     at, wall;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_decision_t     *d;
    ngx_http_llm_redis_reply_t  *e;
    ngx_http_llm_window_conf_t  *wc;

    nwin = st->tier->windows.nelts;
    wc = st->tier->windows.elts;
    e = reply->elts;

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY
        || reply->nelts != 4 + 3 * nwin)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->nelts; i++) {
        if (e[i].type != NGX_HTTP_LLM_REDIS_INTEGER) {
            return NGX_ERROR;
        }
    }

    status = e[0].integer;

    if (status < 0 || status > 4 || e[3].integer != (int64_t) nwin) {
        return NGX_ERROR;
    }

    wall = ngx_http_llm_now();

    ngx_http_llm_redis_clock_seen(e[1].integer);

    if (status == 4) {
        /* it ran after its deadline (our clock's guess was off) */
        return NGX_AGAIN;
    }

    d = &st->d;

    d->wall = wall;
    d->refused = NULL;
    d->retry_at = 0;
    ngx_memzero(&d->requests, sizeof(ngx_http_llm_report_t));
    ngx_memzero(&d->tokens, sizeof(ngx_http_llm_report_t));

    for (i = 0; i < nwin; i++) {
        sum = e[4 + 3 * i].integer;
        reset = e[5 + 3 * i].integer;
        over = e[6 + 3 * i].integer;

        if (status == 1 && over >= 0) {
            ngx_http_llm_refusal(d, &wc[i], wall + over);
        }

        if (wc[i].dim == NGX_HTTP_LLM_DIM_COST) {
            continue;
        }

        ngx_http_llm_report(wc[i].dim == NGX_HTTP_LLM_DIM_REQUESTS
                                   ? &d->requests : &d->tokens,
                                   &wc[i],
                                   sum < (int64_t) wc[i].limit
                                   ? wc[i].limit - sum : 0,
                                   wall + (reset > 0 ? reset : 0));
    }

    if (status == 1 && d->refused == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_rstore_seed(st, reply);

    if (status != 0) {
        at = wall + (e[2].integer > 0 ? e[2].integer : 0);

        if (at > d->retry_at) {
            d->retry_at = at;
        }
    }

    switch (status) {

    case 0:
        st->counted = 1;
        st->t0 = e[1].integer;

        if (st->tier->concurrency) {
            st->leased = 1;
            st->ctx->conc_held = 1;

            if (ngx_queue_empty(&ngx_http_llm_leases)) {
                /* first lease: renewal starts */
                if (!ngx_http_llm_renew_ev.timer_set) {
                    ngx_add_timer(&ngx_http_llm_renew_ev,
                                  NGX_HTTP_LLM_LEASE_RENEW);
                }
            }

            ngx_queue_insert_tail(&ngx_http_llm_leases, &st->queue);
        }

        return NGX_OK;

    case 1:
        return NGX_HTTP_LLM_REFUSED;

    case 2:
        return NGX_HTTP_LLM_CONC_FULL;

    default:
        return NGX_HTTP_LLM_COOLING;
    }
}


/*
 * With on_error=local, the zone's windows of the account follow what
 * Redis answers, so that the zone's decisions during an outage start
 * from the fleet's counts (SPEC 9: no more than a node's share of new
 * admissions over the limit, not a whole window more per node).
 */

static void
ngx_http_llm_rstore_seed(ngx_http_llm_rstore_req_t *st,
    ngx_http_llm_redis_reply_t *reply)
{
    uint64_t                    sums[NGX_HTTP_LLM_WINDOWS_MAX];
    ngx_uint_t                  i;
    ngx_http_llm_decision_t     d;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_redis_conf_t  *rcf;

    rcf = ngx_http_llm_redis_conf();

    if (rcf == NULL || rcf->on_error != NGX_HTTP_LLM_ON_ERROR_LOCAL
        || st->tier->windows.nelts == 0)
    {
        return;
    }

    for (i = 0; i < st->tier->windows.nelts; i++) {
        sums[i] = reply->elts[4 + 3 * i].integer > 0
                  ? (uint64_t) reply->elts[4 + 3 * i].integer : 0;
    }

    d.now = ngx_current_msec;
    d.wall = ngx_http_llm_now();

    lmcf = ngx_http_get_module_main_conf(st->request,
                                         ngx_http_llm_gateway_module);

    ngx_http_llm_store_seed(lmcf->shm_zone, &st->ctx->account, st->tier,
                            &d, sums);
}


static ngx_int_t
ngx_http_llm_rstore_fallback(ngx_http_request_t *r,
    ngx_http_llm_rstore_req_t *st, ngx_http_llm_decision_t *d)
{
    ngx_int_t                   rc;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_redis_conf_t  *rcf;

    rcf = ngx_http_llm_redis_conf();

    d->now = ngx_current_msec;
    d->wall = ngx_http_llm_now();

    switch (rcf ? rcf->on_error : NGX_HTTP_LLM_ON_ERROR_DENY) {

    case NGX_HTTP_LLM_ON_ERROR_LOCAL:
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
        rc = ngx_http_llm_store_admit(lmcf->shm_zone, &st->ctx->account,
                                      st->tier, d);

        if (rc == NGX_OK) {

            /* Redis is told when it is back, at Redis's time of it */

            st->t0 = (int64_t) d->wall + ngx_http_llm_redis_skew;
            st->guessed = !ngx_http_llm_redis_skew_known;

            if (ngx_http_llm_replay_add(&st->ctx->account, st->tier,
                                        st->t0, (int64_t *) d->need)
                == NGX_OK)
            {
                st->local = 1;
            }
        }

        return rc;

    case NGX_HTTP_LLM_ON_ERROR_ALLOW:
        return NGX_HTTP_LLM_UNCOUNTED;

    default: /* NGX_HTTP_LLM_ON_ERROR_DENY */
        return NGX_ERROR;
    }
}


/*
 * The request's pool goes: an admission still on its way is left to
 * finish alone, and a Redis lease goes back (the zone's cleanup in the
 * access handler then has nothing to release).
 */

static void
ngx_http_llm_rstore_cleanup(void *data)
{
    ngx_http_llm_rstore_req_t  *st = data;

    ngx_uint_t                 a, nwin;
    ngx_http_llm_rstore_op_t  *op;

    op = st->op;

    if (op && op->reqs) {
        op->reqs[st->slot] = NULL;

        if (op->queued) {
            /* not sent yet: a deadline passed long ago, nothing changes */

            nwin = op->nkeys - 2;
            a = 2 + op->nkeys + 3 + 2 * nwin + st->slot * (2 + nwin);

            op->cmd.argv[a + 2] = "1";
            op->cmd.argvlen[a + 2] = 1;
        }

        st->op = NULL;

    } else if (op) {
        op->req = NULL;
        st->op = NULL;
    }

    ngx_http_llm_rstore_unlease(st);
}


/* the request's concurrency lease, if its admission holds one, now */

void
ngx_http_llm_rstore_give_back(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->redis) {
        ngx_http_llm_rstore_unlease(ctx->redis);
    }
}


static void
ngx_http_llm_rstore_unlease(ngx_http_llm_rstore_req_t *st)
{
    if (!st->leased) {
        return;
    }

    st->leased = 0;
    st->ctx->conc_held = 0;

    ngx_queue_remove(&st->queue);

    ngx_http_llm_rstore_release(&st->conc_key, &st->lease);
}


ngx_int_t
ngx_http_llm_rstore_preload(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_SCRIPTS; i++) {
        if (ngx_http_llm_redis_preload(&ngx_http_llm_rstore_scripts[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_llm_rstore_scripts_init(void)
{
    ngx_uint_t  i;

    if (ngx_http_llm_rstore_inited) {
        return;
    }

    ngx_http_llm_rstore_inited = 1;

    for (i = 0; i < NGX_HTTP_LLM_SCRIPTS; i++) {
        ngx_http_llm_redis_sha1(ngx_http_llm_rstore_scripts[i].sha,
                                (u_char *) ngx_http_llm_rstore_scripts[i].body,
                                ngx_http_llm_rstore_scripts[i].len);
    }

    /* leases are named by worker: a random tag, the pid, a sequence */

    ngx_sprintf(ngx_http_llm_lease_prefix, "%08xD:%P%Z",
                (uint32_t) (ngx_random() ^ ngx_time()), ngx_pid);

    ngx_queue_init(&ngx_http_llm_leases);

    /* debug logging reads ev->data as a connection: something readable */
    ngx_http_llm_renew_ev.data = &ngx_http_llm_renew_ev;
    ngx_http_llm_renew_ev.handler = ngx_http_llm_rstore_renew;
    ngx_http_llm_renew_ev.log = ngx_cycle->log;
    ngx_http_llm_renew_ev.cancelable = 1;

    for (i = 0; i < NGX_HTTP_LLM_BATCH_BUCKETS; i++) {
        ngx_queue_init(&ngx_http_llm_batches[i]);
    }

    ngx_http_llm_batch_ev.data = &ngx_http_llm_batch_ev;
    ngx_http_llm_batch_ev.handler = ngx_http_llm_rstore_flush;
    ngx_http_llm_batch_ev.log = ngx_cycle->log;

    ngx_http_llm_clock_ev.data = &ngx_http_llm_clock_ev;
    ngx_http_llm_clock_ev.handler = ngx_http_llm_rstore_clock_late;
    ngx_http_llm_clock_ev.log = ngx_cycle->log;
    ngx_http_llm_clock_ev.cancelable = 1;

    ngx_http_llm_redis_clock_known = ngx_http_llm_rstore_post;

    ngx_http_llm_rstore_settles_init();
}


/* the pending batches go at the end of this loop iteration */

void
ngx_http_llm_rstore_post(void)
{
    if (!ngx_http_llm_batch_ev.posted) {
        ngx_post_event(&ngx_http_llm_batch_ev, &ngx_posted_events);
    }
}
