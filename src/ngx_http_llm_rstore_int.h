
/*
 * ngx_llm_gateway: what the two halves of the Redis store share (not
 * for other files): the per-request state, the operations on their way
 * to Redis, and the worker's lease and clock state.
 */


#ifndef _NGX_HTTP_LLM_RSTORE_INT_H_INCLUDED_
#define _NGX_HTTP_LLM_RSTORE_INT_H_INCLUDED_


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore_lua.h"


#define NGX_HTTP_LLM_LEASE_TTL      60000
#define NGX_HTTP_LLM_LEASE_RENEW    20000

/* a replayed batch is not added twice for this long (its marker) */
#define NGX_HTTP_LLM_REPLAY_MARK    600000


typedef struct ngx_http_llm_rstore_op_s  ngx_http_llm_rstore_op_t;


/* per request, in its pool: ctx->redis */
typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_ctx_t         *ctx;
    ngx_http_llm_tier_t        *tier;
    ngx_http_llm_rstore_op_t   *op;        /* the admission on its way */
    ngx_http_llm_decision_t     d;
    ngx_int_t                   rc;
    uint64_t                    t0;        /* Redis ms of the reservation */
    ngx_queue_t                 queue;     /* leases to renew */
    ngx_msec_t                  start;     /* waits for Redis since */
    ngx_msec_t                  deadline;  /* stops waiting then */
    ngx_str_t                   conc_key;
    ngx_str_t                   lease;
    ngx_str_t                  *wkeys;     /* the windows' keys */
    uint64_t                   *usage;     /* llm_usage: used, reset */
    ngx_uint_t                  slot;      /* in its batch */

    unsigned                    pending:1;
    unsigned                    counted:1; /* in Redis */
    unsigned                    leased:1;  /* a Redis lease is held */
    unsigned                    local:1;   /* the zone counted it */
    unsigned                    guessed:1; /* t0 on our clock */
    unsigned                    lost:1;    /* sent, its answer lost */
} ngx_http_llm_rstore_req_t;


struct ngx_http_llm_rstore_op_s {
    ngx_http_llm_redis_cmd_t    cmd;       /* first */
    ngx_http_llm_rstore_req_t  *req;       /* NULL: nobody waits */
    ngx_uint_t                  nkeys;
    void                       *replay;    /* replay.c's batch */

    /* a batch of admissions (the batch script): its requests, in order */
    ngx_queue_t                 queue;     /* pending batches */
    ngx_http_llm_tier_t        *tier;
    ngx_http_llm_rstore_req_t **reqs;      /* NULL: not a batch */
    ngx_uint_t                  nreq;
    ngx_uint_t                  maxreq;

    unsigned                    queued:1;  /* not sent yet */
};


/* what one request's settle changes */
typedef struct {
    uint64_t                    t0;        /* its reservation, Redis ms */
    int64_t                     diff[5];   /* used - reserved */
} ngx_http_llm_rstore_rec_t;


/*
 * The settles of one account and tier (one, or a batch): what they
 * change, replayed (ngx_http_llm_replay.c) when Redis cannot have run
 * them; the records and the account's name follow.
 */
typedef struct {
    ngx_http_llm_rstore_op_t    op;        /* first */
    ngx_http_llm_tier_t        *tier;
    ngx_str_t                   account;
    ngx_uint_t                  nrec;
    ngx_http_llm_rstore_rec_t  *rec;
} ngx_http_llm_rstore_settle_t;


/*
 * The batch script's answer, read one request after the other
 * (ngx_http_llm_rstore_lua.c): each as the admission script's answer,
 * 4 + 3 * nwin numbers in "one"'s elements.
 */
typedef struct {
    ngx_http_llm_redis_reply_t *e;
    ngx_uint_t                  nelts;
    ngx_uint_t                  k;         /* the next number */
    ngx_uint_t                  nwin;
    int64_t                     now;
    int64_t                     sum[NGX_HTTP_LLM_WINDOWS_MAX];
    int64_t                     reset[NGX_HTTP_LLM_WINDOWS_MAX];
    ngx_http_llm_redis_reply_t  one;
    ngx_http_llm_redis_reply_t  elts[4 + 3 * NGX_HTTP_LLM_WINDOWS_MAX];
} ngx_http_llm_rstore_unpack_t;


/* an op's command (ngx_http_llm_redis.c builds and sends it) */
#define ngx_http_llm_rstore_arg(o, data, len)                                 \
    ngx_http_llm_redis_cmd_arg(&(o)->cmd, data, len)
#define ngx_http_llm_rstore_num(o, n)                                         \
    ngx_http_llm_redis_cmd_num(&(o)->cmd, n)
#define ngx_http_llm_rstore_send(o)                                           \
    ngx_http_llm_redis_cmd_send(&(o)->cmd)
#define ngx_http_llm_rstore_noscript(o, reply)                                \
    ngx_http_llm_redis_cmd_noscript(&(o)->cmd, reply)


ngx_http_llm_rstore_req_t *ngx_http_llm_rstore_req(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_tier_t *tier);
ngx_http_llm_rstore_op_t *ngx_http_llm_rstore_op(ngx_uint_t script, int argc,
    size_t strings, ngx_str_t *conc_key);
ngx_http_llm_rstore_op_t *ngx_http_llm_rstore_op_alloc(ngx_uint_t script,
    int argc, size_t strings, ngx_str_t *conc_key, ngx_uint_t nreq);
void ngx_http_llm_rstore_scripts_init(void);
void ngx_http_llm_rstore_done(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
void ngx_http_llm_rstore_release(ngx_str_t *key, ngx_str_t *lease);
void ngx_http_llm_rstore_refund(ngx_http_llm_rstore_op_t *adm, int64_t t0,
    ngx_uint_t period, ngx_uint_t pstride, ngx_uint_t need,
    ngx_uint_t nstride);
void ngx_http_llm_rstore_renew(ngx_event_t *ev);
void ngx_http_llm_rstore_usage_wake(ngx_http_llm_rstore_req_t *st);
void ngx_http_llm_rstore_post(void);
void ngx_http_llm_rstore_settles_init(void);
void ngx_http_llm_rstore_settles_flush(void);
ngx_int_t ngx_http_llm_rstore_unpack_init(ngx_http_llm_rstore_unpack_t *u,
    ngx_http_llm_rstore_op_t *op, ngx_http_llm_redis_reply_t *reply);
ngx_int_t ngx_http_llm_rstore_unpack(ngx_http_llm_rstore_unpack_t *u,
    ngx_http_llm_rstore_op_t *op, ngx_uint_t r);


extern char        *ngx_http_llm_dim_names[];
extern u_char       ngx_http_llm_lease_prefix[32];
extern ngx_queue_t  ngx_http_llm_leases;
extern ngx_event_t  ngx_http_llm_renew_ev;


#endif /* _NGX_HTTP_LLM_RSTORE_INT_H_INCLUDED_ */
