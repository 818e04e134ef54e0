
/*
 * ngx_llm_gateway: the Redis store after the admission.
 *
 * Owns what follows an admission made in Redis (ngx_http_llm_rstore.c):
 * the settle that replaces a reservation by the actual usage (in the
 * reservation's slot; the settles of one account and tier made in one
 * event-loop iteration go as one call of the settles script; a settle
 * Redis cannot have run is handed to the outage replay,
 * ngx_http_llm_replay.c), the concurrency lease given
 * back (ZREM) and renewed every 20 s while its request runs, the refund
 * of what Redis granted a request that had gone, the replay batches'
 * script calls, and llm_usage's read of an account's windows.  All of
 * it fire and forget, off the request's path, but llm_usage's read,
 * which its request waits for (within llm_redis timeout).
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_rstore_int.h"
#include "ngx_http_llm_replay.h"


typedef struct ngx_http_llm_rstore_pending_s  ngx_http_llm_rstore_pending_t;
typedef struct ngx_http_llm_rstore_unsent_s  ngx_http_llm_rstore_unsent_t;


static void ngx_http_llm_rstore_usage_read(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_usage_expire(ngx_http_llm_redis_op_t *rop);
static void ngx_http_llm_rstore_settled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_rstore_unsettled(ngx_http_llm_rstore_settle_t *op,
    const char *why);
static void ngx_http_llm_rstore_replayed(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_rstore_replay_diff(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t t0, int64_t *diff);
static ngx_uint_t ngx_http_llm_rstore_refused(ngx_str_t *error);
static ngx_int_t ngx_http_llm_rstore_settle_send(
    ngx_http_llm_rstore_pending_t *pd);
static void ngx_http_llm_rstore_keep(ngx_str_t *key, ngx_str_t *lease);
static void ngx_http_llm_rstore_resend(ngx_event_t *ev);


/* settles of one account and tier waiting for the end of the iteration */
struct ngx_http_llm_rstore_pending_s {
    ngx_queue_t                 queue;
    ngx_http_llm_tier_t        *tier;
    ngx_str_t                   conc_key;
    ngx_str_t                   account;
    ngx_str_t                  *wkeys;
    ngx_uint_t                  nrec;
    ngx_uint_t                  max;
    ngx_http_llm_rstore_rec_t  *rec;
};


#define NGX_HTTP_LLM_SETTLE_BUCKETS  64

static ngx_queue_t  ngx_http_llm_settles[NGX_HTTP_LLM_SETTLE_BUCKETS];


/*
 * Releases that found no connection, or lost theirs before Redis
 * answered: kept, at most NGX_HTTP_LLM_UNSENT_MAX for as long as a lease
 * lives, and sent again once a connection is up or coming up (ahead of
 * the admissions that follow on it), so that a short outage does not
 * hold an account's slots until their leases expire.  ZREM twice is
 * harmless; each lease's name is its own.
 */

#define NGX_HTTP_LLM_UNSENT_MAX    4096
#define NGX_HTTP_LLM_UNSENT_TICK   250

struct ngx_http_llm_rstore_unsent_s {
    ngx_http_llm_rstore_unsent_t  *next;
    ngx_msec_t                     at;
    ngx_str_t                      key;
    ngx_str_t                      lease;
};

static ngx_http_llm_rstore_unsent_t  *ngx_http_llm_unsent;
static ngx_uint_t                     ngx_http_llm_nunsent;
static ngx_event_t                    ngx_http_llm_unsent_ev;
static ngx_connection_t               ngx_http_llm_unsent_conn;


/*
 * llm_usage: what each window of the account holds in Redis, used[i]
 * and reset[i] (wall clock, ms).  NGX_AGAIN: the content handler runs
 * again when Redis has answered; NGX_DECLINED: Redis is unavailable
 * (the caller asks the zone).
 */

ngx_int_t
ngx_http_llm_rstore_usage(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_tier_t *tier, uint64_t *used, uint64_t *reset)
{
    void                        *admission;
    size_t                       strings;
    ngx_msec_t                   left;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_window_conf_t  *wc;

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    /*
     * a slot of its own: after an internal redirect ctx->redis is the
     * request's admission, which the settle still needs
     */

    st = ctx->rusage;

    if (st) {
        /* back from Redis */

        if (st->pending) {
            return NGX_AGAIN;
        }

        if (st->rc == NGX_OK) {
            ngx_memcpy(used, st->usage, nwin * sizeof(uint64_t));
            ngx_memcpy(reset, st->usage + nwin, nwin * sizeof(uint64_t));
        }

        return st->rc;
    }

    if (ngx_http_llm_redis_conf() == NULL) {
        return NGX_DECLINED;
    }

    /* what is left of the request's time for Redis (a key lookup's) */

    left = ngx_http_llm_redis_left(ctx->redis_waited);

    if (left == 0) {
        return NGX_DECLINED;
    }

    admission = ctx->redis;

    st = ngx_http_llm_rstore_req(r, ctx, tier);

    ctx->redis = admission;

    if (st == NULL) {
        return NGX_ERROR;
    }

    st->usage = ngx_palloc(r->pool, 2 * nwin * sizeof(uint64_t));
    if (st->usage == NULL) {
        return NGX_ERROR;
    }

    st->rc = NGX_DECLINED;      /* until Redis answers: the zone */
    ctx->rusage = st;

    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        strings += st->wkeys[i].len + NGX_INT64_LEN + 2;
    }

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_USAGE, 3 + 2 * nwin,
                                strings, &st->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_rstore_num(op, nwin);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_arg(op, st->wkeys[i].data, st->wkeys[i].len);
    }

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_usage_read;
    op->cmd.op.expire = ngx_http_llm_rstore_usage_expire;
    op->cmd.op.deadline = ngx_current_msec + left;
    op->req = st;

    st->start = ngx_current_msec;

    /* it reads what the settles queued in this loop iteration change */

    ngx_http_llm_rstore_settles_flush();

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
        return NGX_DECLINED;
    }

    st->op = op;
    st->pending = 1;

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_llm_rstore_usage_read(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    uint64_t                     wall;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_req_t   *st;
    ngx_http_llm_redis_reply_t  *e;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    st = op->req;
    ngx_free(op);

    if (st == NULL) {
        return;
    }

    st->op = NULL;
    st->pending = 0;
    st->rc = NGX_DECLINED;

    nwin = st->tier->windows.nelts;

    if (reply && reply->type == NGX_HTTP_LLM_REDIS_ARRAY
        && reply->nelts == 1 + 2 * nwin)
    {
        e = reply->elts;
        wall = ngx_http_llm_now();
        st->rc = NGX_OK;

        for (i = 0; i < reply->nelts; i++) {
            if (e[i].type != NGX_HTTP_LLM_REDIS_INTEGER || e[i].integer < 0) {
                st->rc = NGX_DECLINED;
            }
        }

        for (i = 0; st->rc == NGX_OK && i < nwin; i++) {
            st->usage[i] = e[1 + 2 * i].integer;
            st->usage[nwin + i] = wall + e[2 + 2 * i].integer;
        }
    }

    if (st->rc != NGX_OK && reply && reply->type != NGX_HTTP_LLM_REDIS_ERROR)
    {
        ngx_http_llm_redis_fail("unexpected reply to the usage script");
    }

    ngx_http_llm_rstore_usage_wake(st);
}


/* no answer within the request's time for Redis: the zone's figures */

static void
ngx_http_llm_rstore_usage_expire(ngx_http_llm_redis_op_t *rop)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_http_llm_rstore_req_t  *st;

    st = op->req;

    if (st == NULL) {
        return;
    }

    op->req = NULL;
    st->op = NULL;
    st->pending = 0;
    st->rc = NGX_DECLINED;

    ngx_http_llm_rstore_usage_wake(st);
}


void
ngx_http_llm_rstore_usage_wake(ngx_http_llm_rstore_req_t *st)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    st->ctx->redis_waited += ngx_current_msec - st->start;

    if (ngx_terminate) {
        return;
    }

    r = st->request;
    c = r->connection;

    r->read_event_handler = ngx_http_block_reading;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}


/*
 * From the log phase (nothing of the request is kept): replaces the
 * reservation by what was used, per dimension, at the end of this loop
 * iteration, with the other settles of the account and tier made in
 * it.  NGX_DECLINED: this request was not counted in Redis (the zone
 * counted it, or nobody).  A settle that Redis cannot have run (not
 * sent, never written, an error reply) is replayed
 * (ngx_http_llm_replay.c); one that was sent and lost its answer is
 * not: Redis may have run it.  Nothing of this writes to Redis on the
 * way of a settle that goes well.
 */

ngx_int_t
ngx_http_llm_rstore_settle(ngx_http_llm_ctx_t *ctx, uint64_t *used)
{
    u_char                         *p;
    size_t                          size;
    int64_t                         diff[5];
    ngx_uint_t                      i, n, nwin, b, max;
    ngx_queue_t                    *q;
    ngx_http_llm_rstore_req_t      *st;
    ngx_http_llm_window_conf_t     *wc;
    ngx_http_llm_rstore_pending_t  *pd;

    st = ctx->redis;

    if (st == NULL) {
        return NGX_DECLINED;
    }

    for (i = 0; i < 5; i++) {
        diff[i] = (int64_t) used[i] - (int64_t) st->d.need[i];
    }

    if (st->local) {

        /* the zone counted it: so will Redis, when it is back */

        if (st->guessed && ngx_http_llm_redis_skew_known) {
            /* Redis's clock has been read since: t0 on it */
            st->t0 += ngx_http_llm_redis_skew;
            st->guessed = 0;
        }

        (void) ngx_http_llm_rstore_replay_diff(&ctx->account, st->tier,
                                               st->t0, diff);
    }

    if (!st->counted) {
        return NGX_DECLINED;
    }

    nwin = st->tier->windows.nelts;
    wc = st->tier->windows.elts;

    n = 0;

    for (i = 0; i < nwin; i++) {
        if (diff[wc[i].dim] != 0) {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    b = ngx_crc32_short(st->conc_key.data, st->conc_key.len)
        % NGX_HTTP_LLM_SETTLE_BUCKETS;

    for (q = ngx_queue_head(&ngx_http_llm_settles[b]);
         q != ngx_queue_sentinel(&ngx_http_llm_settles[b]);
         q = ngx_queue_next(q))
    {
        pd = ngx_queue_data(q, ngx_http_llm_rstore_pending_t, queue);

        if (pd->tier == st->tier && pd->nrec < pd->max
            && pd->conc_key.len == st->conc_key.len
            && ngx_memcmp(pd->conc_key.data, st->conc_key.data,
                          st->conc_key.len)
               == 0)
        {
            goto found;
        }
    }

    max = ngx_http_llm_redis_conf()->batch;

    size = sizeof(ngx_http_llm_rstore_pending_t)
           + max * sizeof(ngx_http_llm_rstore_rec_t)
           + nwin * sizeof(ngx_str_t)
           + st->conc_key.len + ctx->account.len;

    for (i = 0; i < nwin; i++) {
        size += st->wkeys[i].len;
    }

    pd = ngx_alloc(size, ngx_cycle->log);
    if (pd == NULL) {
        return NGX_ERROR;
    }

    pd->tier = st->tier;
    pd->nrec = 0;
    pd->max = max;
    pd->rec = (ngx_http_llm_rstore_rec_t *) (pd + 1);
    pd->wkeys = (ngx_str_t *) (pd->rec + max);

    p = (u_char *) (pd->wkeys + nwin);

    for (i = 0; i < nwin; i++) {
        pd->wkeys[i].data = p;
        pd->wkeys[i].len = st->wkeys[i].len;
        p = ngx_cpymem(p, st->wkeys[i].data, st->wkeys[i].len);
    }

    pd->conc_key.data = p;
    pd->conc_key.len = st->conc_key.len;
    p = ngx_cpymem(p, st->conc_key.data, st->conc_key.len);

    pd->account.data = p;
    pd->account.len = ctx->account.len;
    ngx_memcpy(p, ctx->account.data, ctx->account.len);

    ngx_queue_insert_tail(&ngx_http_llm_settles[b], &pd->queue);

    ngx_http_llm_rstore_post();

found:

    pd->rec[pd->nrec].t0 = st->t0;
    ngx_memcpy(pd->rec[pd->nrec].diff, diff, sizeof(diff));
    pd->nrec++;

    return NGX_OK;
}


void
ngx_http_llm_rstore_settles_init(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_SETTLE_BUCKETS; i++) {
        ngx_queue_init(&ngx_http_llm_settles[i]);
    }
}


/* the end of the loop iteration: the pending settles go, in order */

void
ngx_http_llm_rstore_settles_flush(void)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_http_llm_rstore_pending_t  *pd;

    for (i = 0; i < NGX_HTTP_LLM_SETTLE_BUCKETS; i++) {

        while (!ngx_queue_empty(&ngx_http_llm_settles[i])) {
            q = ngx_queue_head(&ngx_http_llm_settles[i]);
            pd = ngx_queue_data(q, ngx_http_llm_rstore_pending_t, queue);

            ngx_queue_remove(q);

            if (ngx_http_llm_rstore_settle_send(pd) != NGX_OK) {
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "llm_redis: usage of \"%V\" not settled: "
                              "no memory", &pd->account);
            }

            ngx_free(pd);
        }
    }
}


/*
 * One settle goes as the settle script (KEYS: the windows it changes;
 * ARGV: its reservation's time, per window: period, actual - reserved),
 * more as the settles script (KEYS: the windows any of them changes;
 * ARGV: per window: period; per settle: time, per window: difference).
 */

static ngx_int_t
ngx_http_llm_rstore_settle_send(ngx_http_llm_rstore_pending_t *pd)
{
    size_t                          strings;
    int64_t                         d;
    ngx_uint_t                      i, j, n, nwin;
    ngx_uint_t                      changed[NGX_HTTP_LLM_WINDOWS_MAX];
    ngx_http_llm_window_conf_t     *wc;
    ngx_http_llm_redis_script_t    *script;
    ngx_http_llm_rstore_settle_t   *op;

    nwin = pd->tier->windows.nelts;
    wc = pd->tier->windows.elts;

    n = 0;
    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        changed[i] = 0;

        for (j = 0; j < pd->nrec; j++) {
            if (pd->rec[j].diff[wc[i].dim] != 0) {
                changed[i] = 1;
                break;
            }
        }

        if (changed[i]) {
            n++;
            strings += pd->wkeys[i].len + (NGX_INT64_LEN + 1)
                       + pd->nrec * (NGX_INT64_LEN + 1);
        }
    }

    strings += pd->nrec * (NGX_INT64_LEN + 1);

    script = &ngx_http_llm_rstore_scripts[pd->nrec == 1
                                          ? NGX_HTTP_LLM_SCRIPT_SETTLE
                                          : NGX_HTTP_LLM_SCRIPT_SETTLES];

    op = ngx_http_llm_redis_cmd(sizeof(ngx_http_llm_rstore_settle_t)
                                + pd->nrec * sizeof(ngx_http_llm_rstore_rec_t)
                                + pd->account.len,
                                script, 3 + 2 * n + pd->nrec * (1 + n),
                                strings, &pd->conc_key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->tier = pd->tier;
    op->nrec = pd->nrec;
    op->rec = (ngx_http_llm_rstore_rec_t *) (op + 1);
    ngx_memcpy(op->rec, pd->rec,
               pd->nrec * sizeof(ngx_http_llm_rstore_rec_t));
    op->account.data = (u_char *) (op->rec + pd->nrec);
    op->account.len = pd->account.len;
    ngx_memcpy(op->account.data, pd->account.data, pd->account.len);

    ngx_http_llm_rstore_num(&op->op, n);

    for (i = 0; i < nwin; i++) {
        if (changed[i]) {
            ngx_http_llm_rstore_arg(&op->op, pd->wkeys[i].data,
                                    pd->wkeys[i].len);
        }
    }

    if (pd->nrec == 1) {
        ngx_http_llm_rstore_num(&op->op, pd->rec[0].t0);
    }

    for (i = 0; i < nwin; i++) {
        if (changed[i]) {
            ngx_http_llm_rstore_num(&op->op, wc[i].period);

            if (pd->nrec == 1) {
                ngx_http_llm_rstore_num(&op->op, pd->rec[0].diff[wc[i].dim]);
            }
        }
    }

    for (j = 0; pd->nrec > 1 && j < pd->nrec; j++) {
        ngx_http_llm_rstore_num(&op->op, pd->rec[j].t0);

        for (i = 0; i < nwin; i++) {
            if (changed[i]) {
                d = pd->rec[j].diff[wc[i].dim];
                ngx_http_llm_rstore_num(&op->op, d);
            }
        }
    }

    op->op.cmd.op.handler = ngx_http_llm_rstore_settled;

    if (ngx_http_llm_rstore_send(&op->op) != NGX_OK) {
        ngx_http_llm_rstore_unsettled(op, op->op.cmd.op.error);
        ngx_free(op);
        return NGX_OK;
    }

    /* one write with the iteration's admissions, which follow it */

    return NGX_OK;
}


/*
 * The settle's answer.  Redis has not run it when it refused it with an
 * error reply it gives before any script runs (NOSCRIPT with no second
 * try, OOM, BUSY, LOADING, READONLY...: ngx_http_llm_rstore_refused())
 * or when it never left this worker: it is replayed.  One that was
 * written and lost its answer, or failed in the script, may have
 * changed Redis, and is left as it is.
 */

static void
ngx_http_llm_rstore_settled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_settle_t *op = (ngx_http_llm_rstore_settle_t *) rop;

    const char  *why;

    if (ngx_http_llm_rstore_noscript(&op->op, reply) == NGX_OK) {
        return;
    }

    if (reply == NULL) {
        why = rop->error ? rop->error : "no answer";

        if (rop->unsent) {
            ngx_http_llm_rstore_unsettled(op, why);
            goto done;
        }

    } else if (reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        why = "script error";

        if (ngx_http_llm_rstore_refused(&reply->str)) {
            ngx_http_llm_rstore_unsettled(op, "error reply");
            goto done;
        }

    } else {
        goto done;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "llm_redis: usage of \"%V\" may not be settled: %s "
                  "after it was sent", &op->account, why);

done:

    ngx_free(op);
}


/* a settle Redis has not run: its difference goes to the replay */

static void
ngx_http_llm_rstore_unsettled(ngx_http_llm_rstore_settle_t *op,
    const char *why)
{
    ngx_uint_t  i;

    /*
     * also as the worker exits (its connections closing): the replay
     * is left in llm_zone then, for the next workers
     */

    for (i = 0; i < op->nrec; i++) {
        if (ngx_http_llm_rstore_replay_diff(&op->account, op->tier,
                                            op->rec[i].t0, op->rec[i].diff)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_redis: usage of \"%V\" not settled: %s",
                          &op->account, why);
            return;
        }
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "llm_redis: usage of \"%V\" not settled (%s), "
                  "replayed when Redis is back", &op->account, why);
}


/*
 * A settle's difference, to the replay: what it gives back goes to its
 * reservation's slot, what it adds (more used than reserved) to the
 * slot of now, Redis's time: the settle script counts an excess in the
 * current slot once the reservation's has left a window, and a replay
 * drops what has left it.
 */

static ngx_int_t
ngx_http_llm_rstore_replay_diff(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t t0, int64_t *diff)
{
    int64_t     less[5], more[5];
    ngx_int_t   rc;
    ngx_uint_t  i, nless, nmore;

    nless = 0;
    nmore = 0;

    for (i = 0; i < 5; i++) {
        less[i] = diff[i] < 0 ? diff[i] : 0;
        more[i] = diff[i] > 0 ? diff[i] : 0;
        nless += (less[i] != 0);
        nmore += (more[i] != 0);
    }

    rc = NGX_OK;

    if (nless && ngx_http_llm_replay_add(account, tier, t0, less) != NGX_OK) {
        rc = NGX_DECLINED;
    }

    if (nmore
        && ngx_http_llm_replay_add(account, tier,
                                   (int64_t) ngx_http_llm_now()
                                   + ngx_http_llm_redis_skew, more)
           != NGX_OK)
    {
        rc = NGX_DECLINED;
    }

    return rc;
}


/*
 * An error Redis answers before it runs a script (so nothing of it was
 * written).  Any other, "ERR" or a command's own error that Redis 7
 * passes on from redis.call() (WRONGTYPE, NOPERM...), may come half-way
 * through, after writes.
 */

static ngx_uint_t
ngx_http_llm_rstore_refused(ngx_str_t *error)
{
    size_t       n;
    ngx_uint_t   i;

    static char  *before[] = {
        "OOM", "BUSY", "LOADING", "READONLY", "MISCONF", "NOREPLICAS",
        "MASTERDOWN", "NOAUTH", "NOSCRIPT", NULL
    };

    for (n = 0; n < error->len && error->data[n] != ' '; n++) {
        /* void */
    }

    for (i = 0; before[i]; i++) {
        if (n == ngx_strlen(before[i])
            && ngx_strncmp(error->data, before[i], n) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* fire and forget: release, settle, renew */

void
ngx_http_llm_rstore_done(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    ngx_str_t  key, lease;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    if (reply == NULL && op->cmd.argv[0][0] == 'Z') {
        key.data = (u_char *) op->cmd.argv[1];
        key.len = op->cmd.argvlen[1];
        lease.data = (u_char *) op->cmd.argv[2];
        lease.len = op->cmd.argvlen[2];

        ngx_http_llm_rstore_keep(&key, &lease);

    } else if (reply == NULL || reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "llm_redis: %s not done: %*s",
                      op->cmd.argv[0][0] == 'Z' ? "release" : "script",
                      reply ? ngx_min(reply->str.len, 200) : 13,
                      reply ? reply->str.data : (u_char *) "no connection");
    }

    ngx_free(op);
}


void
ngx_http_llm_rstore_release(ngx_str_t *key, ngx_str_t *lease)
{
    ngx_http_llm_rstore_op_t  *op;

    op = ngx_http_llm_rstore_op(0, 3, key->len + lease->len, key);
    if (op == NULL) {
        return;
    }

    op->cmd.argv[0] = "ZREM";
    op->cmd.argvlen[0] = 4;
    op->cmd.argc = 1;
    op->cmd.retried = 1;

    ngx_http_llm_rstore_arg(op, key->data, key->len);
    ngx_http_llm_rstore_arg(op, lease->data, lease->len);

    op->cmd.op.handler = ngx_http_llm_rstore_done;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_free(op);
        ngx_http_llm_rstore_keep(key, lease);
    }
}


/* a release to send again; past the cap, its lease expires on its own */

static void
ngx_http_llm_rstore_keep(ngx_str_t *key, ngx_str_t *lease)
{
    ngx_http_llm_rstore_unsent_t  *u;

    if (ngx_http_llm_nunsent >= NGX_HTTP_LLM_UNSENT_MAX || ngx_exiting) {
        return;
    }

    u = ngx_alloc(sizeof(ngx_http_llm_rstore_unsent_t) + key->len
                  + lease->len, ngx_cycle->log);
    if (u == NULL) {
        return;
    }

    u->at = ngx_current_msec;
    u->key.data = (u_char *) (u + 1);
    u->key.len = key->len;
    u->lease.data = ngx_cpymem(u->key.data, key->data, key->len);
    u->lease.len = lease->len;
    ngx_memcpy(u->lease.data, lease->data, lease->len);

    u->next = ngx_http_llm_unsent;
    ngx_http_llm_unsent = u;
    ngx_http_llm_nunsent++;

    if (!ngx_http_llm_unsent_ev.timer_set) {
        /* a timer's debug line names its connection's fd: none */

        ngx_http_llm_unsent_conn.fd = (ngx_socket_t) -1;

        ngx_http_llm_unsent_ev.handler = ngx_http_llm_rstore_resend;
        ngx_http_llm_unsent_ev.data = &ngx_http_llm_unsent_conn;
        ngx_http_llm_unsent_ev.log = ngx_cycle->log;
        ngx_http_llm_unsent_ev.cancelable = 1;
        ngx_add_timer(&ngx_http_llm_unsent_ev, NGX_HTTP_LLM_UNSENT_TICK);
    }
}


static void
ngx_http_llm_rstore_resend(ngx_event_t *ev)
{
    ngx_http_llm_rstore_unsent_t  *u, *next;

    if (!ngx_http_llm_redis_coming_up()) {
        if (!ngx_exiting) {
            ngx_add_timer(ev, NGX_HTTP_LLM_UNSENT_TICK);
        }

        return;
    }

    u = ngx_http_llm_unsent;
    ngx_http_llm_unsent = NULL;
    ngx_http_llm_nunsent = 0;

    for ( /* void */ ; u; u = next) {
        next = u->next;

        if (ngx_current_msec - u->at < NGX_HTTP_LLM_LEASE_TTL) {
            ngx_http_llm_rstore_release(&u->key, &u->lease);
        }

        ngx_free(u);
    }
}


/*
 * An admission whose request was gone when Redis granted it: the
 * settle script takes back what it charged, at its time "t0".  "adm"
 * holds the keys; window i's period is its argument "period" + i *
 * "pstride", its need "need" + i * "nstride".
 */

void
ngx_http_llm_rstore_refund(ngx_http_llm_rstore_op_t *adm, int64_t t0,
    ngx_uint_t period, ngx_uint_t pstride, ngx_uint_t need,
    ngx_uint_t nstride)
{
    u_char                    *p;
    size_t                     strings;
    ngx_str_t                  conc;
    ngx_uint_t                 i, n, nwin, pi, ni;
    ngx_http_llm_rstore_op_t  *op;

    nwin = adm->nkeys - 2;

    n = 0;
    strings = NGX_INT64_LEN + 64;

    for (i = 0; i < nwin; i++) {
        pi = period + pstride * i;
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] == 1 && adm->cmd.argv[ni][0] == '0') {
            continue;
        }

        n++;
        strings += adm->cmd.argvlen[5 + i] + adm->cmd.argvlen[pi]
                   + adm->cmd.argvlen[ni] + 4;
    }

    if (n == 0) {
        return;
    }

    conc.data = (u_char *) adm->cmd.argv[3];
    conc.len = adm->cmd.argvlen[3];

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_SETTLE,
                                3 + n + 1 + 2 * n, strings, &conc);
    if (op == NULL) {
        return;
    }

    ngx_http_llm_rstore_num(op, n);

    for (i = 0; i < nwin; i++) {
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] != 1 || adm->cmd.argv[ni][0] != '0') {
            ngx_http_llm_rstore_arg(op, (u_char *) adm->cmd.argv[5 + i],
                                    adm->cmd.argvlen[5 + i]);
        }
    }

    ngx_http_llm_rstore_num(op, t0);

    for (i = 0; i < nwin; i++) {
        pi = period + pstride * i;
        ni = need + nstride * i;

        if (adm->cmd.argvlen[ni] == 1 && adm->cmd.argv[ni][0] == '0') {
            continue;
        }

        ngx_http_llm_rstore_arg(op, (u_char *) adm->cmd.argv[pi],
                                adm->cmd.argvlen[pi]);

        /* minus the need */

        p = op->cmd.last;
        *op->cmd.last++ = '-';
        op->cmd.last = ngx_cpymem(op->cmd.last, adm->cmd.argv[ni],
                                  adm->cmd.argvlen[ni]);
        op->cmd.argv[op->cmd.argc] = (const char *) p;
        op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;
    }

    op->cmd.op.handler = ngx_http_llm_rstore_done;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_free(op);
    }
}


/*
 * One batch of what this worker counted for "account" while Redis
 * failed (amount[] by dimension, at "at", Redis ms), named "id" of
 * the worker "tag" (NULL: this one) so that Redis adds it once.
 * NGX_OK: ngx_http_llm_replay_done(batch, ok) follows.
 */

ngx_int_t
ngx_http_llm_rstore_replay(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t at, int64_t *amount, u_char *tag, uint64_t id, void *batch)
{
    u_char                      *p;
    size_t                       strings;
    ngx_str_t                    key;
    ngx_uint_t                   i, nwin;
    ngx_http_llm_rstore_op_t    *op;
    ngx_http_llm_redis_conf_t   *rc;
    ngx_http_llm_window_conf_t  *wc;
    u_char                       buf[NGX_HTTP_LLM_ACCOUNT_MAX + 128];

    rc = ngx_http_llm_redis_conf();

    if (rc == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_llm_rstore_scripts_init();

    nwin = tier->windows.nelts;
    wc = tier->windows.elts;

    key.data = buf;
    key.len = ngx_sprintf(buf, "%V{acct:%V}:conc", &rc->prefix, account)
              - buf;

    strings = (rc->prefix.len + account->len + 64) * (nwin + 1)
              + (NGX_INT64_LEN + 1) * (3 + 2 * nwin) + 64;

    op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_REPLAY,
                                3 + 1 + nwin + 2 + 2 * nwin, strings, &key);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_rstore_num(op, 1 + nwin);

    p = op->cmd.last;
    op->cmd.last = ngx_sprintf(p, "%V{acct:%V}:replay:%s:%uL", &rc->prefix,
                           account, tag ? tag : ngx_http_llm_lease_prefix,
                           id);
    op->cmd.argv[op->cmd.argc] = (const char *) p;
    op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;

    for (i = 0; i < nwin; i++) {
        p = op->cmd.last;
        op->cmd.last = ngx_sprintf(p, "%V{acct:%V}:w:%s:%V", &rc->prefix,
                               account, ngx_http_llm_dim_names[wc[i].dim],
                               &wc[i].text);
        op->cmd.argv[op->cmd.argc] = (const char *) p;
        op->cmd.argvlen[op->cmd.argc++] = op->cmd.last - p;
    }

    ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_REPLAY_MARK);
    ngx_http_llm_rstore_num(op, at);

    for (i = 0; i < nwin; i++) {
        ngx_http_llm_rstore_num(op, wc[i].period);
        ngx_http_llm_rstore_num(op, amount[wc[i].dim]);
    }

    op->cmd.op.handler = ngx_http_llm_rstore_replayed;
    op->replay = batch;

    if (ngx_http_llm_rstore_send(op) != NGX_OK) {
        ngx_free(op);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_llm_rstore_replayed(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rstore_op_t *op = (ngx_http_llm_rstore_op_t *) rop;

    void  *batch;

    if (ngx_http_llm_rstore_noscript(op, reply) == NGX_OK) {
        return;
    }

    batch = op->replay;
    ngx_free(op);

    ngx_http_llm_replay_done(batch,
                             reply && reply->type
                                      == NGX_HTTP_LLM_REDIS_INTEGER);
}


/* every 20 s: the leases of requests still running live on */

void
ngx_http_llm_rstore_renew(ngx_event_t *ev)
{
    ngx_queue_t                *q;
    ngx_http_llm_rstore_op_t   *op;
    ngx_http_llm_rstore_req_t  *st;

    for (q = ngx_queue_head(&ngx_http_llm_leases);
         q != ngx_queue_sentinel(&ngx_http_llm_leases);
         q = ngx_queue_next(q))
    {
        st = ngx_queue_data(q, ngx_http_llm_rstore_req_t, queue);

        op = ngx_http_llm_rstore_op(NGX_HTTP_LLM_SCRIPT_RENEW, 6,
                                    st->conc_key.len + st->lease.len
                                    + 2 * NGX_INT64_LEN, &st->conc_key);
        if (op == NULL) {
            break;
        }

        ngx_http_llm_rstore_num(op, 1);
        ngx_http_llm_rstore_arg(op, st->conc_key.data, st->conc_key.len);
        ngx_http_llm_rstore_arg(op, st->lease.data, st->lease.len);
        ngx_http_llm_rstore_num(op, NGX_HTTP_LLM_LEASE_TTL);

        op->cmd.op.handler = ngx_http_llm_rstore_done;

        if (ngx_http_llm_rstore_send(op) != NGX_OK) {
            ngx_free(op);
            break;
        }
    }

    if (!ngx_queue_empty(&ngx_http_llm_leases)) {
        ngx_add_timer(ev, NGX_HTTP_LLM_LEASE_RENEW);
    }
}
