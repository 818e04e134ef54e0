
/*
 * ngx_llm_gateway: client keys and accounts read from Redis.
 *
 * Owns, with llm_redis, the lookup of a presented key that is not in
 * llm_key_file (static keys win), and the key cache in llm_zone that
 * spares most requests that lookup.  The admin API writes the records;
 * this file only reads them:
 *
 *   PREFIX{key:DIGEST}         hash: account (required), tier,
 *                              expires (Unix seconds; absent or 0:
 *                              never), revoked (1: refused), name
 *   PREFIX{acct:ACCOUNT}:info  hash: tier, suspended (1: refused)
 *
 * DIGEST is the key's BLAKE2b-256 in lowercase hex, as in the key file;
 * ACCOUNT follows the key file's rules (1..64 of [A-Za-z0-9._@-]), and
 * its hash tag is the one of the account's counters.  The account's
 * tier wins over the key's; with neither, or with a tier this node does
 * not know (logged), the location's llm_default_tier applies.  Only
 * keys shaped like ours ("sk-llm-" and 43 base64url characters) are
 * looked up: anything else is refused without asking Redis, and what
 * Redis is asked is built from the digest alone.
 *
 * A lookup is two HMGETs, the key then its account (they live in
 * different hash slots), on nginx's event loop; the request waits at
 * most llm_redis timeout for both, which is all it may wait for Redis
 * (ctx->redis_waited: its admission gets what is left).  A lookup the
 * request stops waiting for goes on alone, and what it finds is cached.
 * The outcome is cached in the zone, for every worker, for key_cache
 * (default 4 s) and for at most a second when the key does not exist,
 * counted from when the lookup was sent: a key revoked, expired or
 * suspended in Redis is refused by every node at most key_cache later
 * (SPEC 5: within 5 s).  While Redis fails (or the request's time for
 * it runs out), a key that is not cached is refused with 503
 * store_unavailable whatever on_error says: it is neither let in nor
 * called invalid; only static keys work then.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_keys.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_crypto.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rkeys.h"


#define NGX_HTTP_LLM_KEY_LEN          50    /* "sk-llm-" + 43 */
#define NGX_HTTP_LLM_TIER_MAX         64

/* a key that does not exist is believed for at most this long, ms */
#define NGX_HTTP_LLM_KEY_CACHE_NEG    1000

/* zone bytes per cached key: the cache takes at most an eighth */
#define NGX_HTTP_LLM_KCACHE_COST      256

/* what Redis says of a key */
#define NGX_HTTP_LLM_RKEY_VALID       0
#define NGX_HTTP_LLM_RKEY_UNKNOWN     1
#define NGX_HTTP_LLM_RKEY_REVOKED     2
#define NGX_HTTP_LLM_RKEY_SUSPENDED   3
#define NGX_HTTP_LLM_RKEY_FAILED      4     /* no answer: not cached */


typedef struct {
    ngx_uint_t                  state;
    time_t                      expires;   /* 0: never */
    ngx_str_t                   account;
    ngx_str_t                   tier;
} ngx_http_llm_rkey_t;


typedef struct {
    u_char                      color;
    u_char                      state;
    u_char                      account_len;
    u_char                      tier_len;
    ngx_queue_t                 queue;
    ngx_msec_t                  expire;    /* ngx_current_msec */
    time_t                      expires;
    u_char                      digest[NGX_HTTP_LLM_DIGEST_LEN];
    u_char                      data[1];   /* the account, the tier */
} ngx_http_llm_kcache_node_t;


/*
 * Keys Redis does not know have a queue, and a quarter of the entries,
 * of their own: random keys sent by anyone cannot push the keys of
 * paying clients out of the cache (they evict each other first).
 */

typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 queue;     /* known keys: oldest last */
    ngx_queue_t                 unknown;   /* unknown keys: oldest last */
    ngx_uint_t                  count;     /* both */
    ngx_uint_t                  unknowns;
    ngx_uint_t                  max;
} ngx_http_llm_kcache_t;


typedef struct ngx_http_llm_rkeys_op_s  ngx_http_llm_rkeys_op_t;


/* per request, in its pool: ctx->rkey */
typedef struct {
    ngx_http_request_t         *request;
    ngx_http_llm_ctx_t         *ctx;
    ngx_http_llm_rkeys_op_t    *op;        /* the lookup on its way */
    ngx_http_llm_rkey_t         key;       /* its outcome */
    u_char                      digest[NGX_HTTP_LLM_DIGEST_LEN];
    unsigned                    pending:1;
    unsigned                    error:1;
} ngx_http_llm_rkeys_req_t;


/* outlives its request: ngx_alloc() */
struct ngx_http_llm_rkeys_op_s {
    ngx_http_llm_redis_op_t     op;        /* first */
    ngx_http_llm_rkeys_req_t   *req;       /* NULL: nobody waits */
    ngx_shm_zone_t             *zone;
    ngx_msec_t                  sent;
    ngx_uint_t                  step;      /* 0: the key, 1: its account */
    ngx_http_llm_rkey_t         key;
    u_char                      digest[NGX_HTTP_LLM_DIGEST_LEN];
    u_char                      account[NGX_HTTP_LLM_ACCOUNT_MAX];
    u_char                      tier[NGX_HTTP_LLM_TIER_MAX];
    u_char                      name[256]; /* the Redis key */
};


static ngx_uint_t ngx_http_llm_rkeys_shaped(ngx_str_t *key);
static ngx_int_t ngx_http_llm_rkeys_resolve(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_rkeys_req_t *st, ngx_str_t *msg);
static ngx_int_t ngx_http_llm_rkeys_send(ngx_http_llm_rkeys_op_t *op);
static void ngx_http_llm_rkeys_reply(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static ngx_uint_t ngx_http_llm_rkeys_parse_key(ngx_http_llm_rkeys_op_t *op,
    ngx_http_llm_redis_reply_t *reply);
static ngx_uint_t ngx_http_llm_rkeys_parse_account(
    ngx_http_llm_rkeys_op_t *op, ngx_http_llm_redis_reply_t *reply);
static ngx_uint_t ngx_http_llm_rkeys_truthy(ngx_http_llm_redis_reply_t *e);
static void ngx_http_llm_rkeys_finish(ngx_http_llm_rkeys_op_t *op,
    ngx_uint_t state);
static void ngx_http_llm_rkeys_expire(ngx_http_llm_redis_op_t *rop);
static void ngx_http_llm_rkeys_wake(ngx_http_llm_rkeys_req_t *st,
    ngx_msec_t sent);
static void ngx_http_llm_rkeys_cleanup(void *data);
static ngx_int_t ngx_http_llm_kcache_get(ngx_shm_zone_t *zone,
    u_char *digest, ngx_http_llm_rkey_t *k);
static void ngx_http_llm_kcache_put(ngx_shm_zone_t *zone, u_char *digest,
    ngx_http_llm_rkey_t *k, ngx_msec_t expire);
static ngx_http_llm_kcache_node_t *ngx_http_llm_kcache_lookup(
    ngx_http_llm_kcache_t *kc, u_char *digest);
static void ngx_http_llm_kcache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_llm_kcache_remove(ngx_http_llm_kcache_t *kc,
    ngx_slab_pool_t *shpool, ngx_http_llm_kcache_node_t *kn);
static void ngx_http_llm_kcache_expire(ngx_http_llm_kcache_t *kc,
    ngx_slab_pool_t *shpool, ngx_queue_t *queue, ngx_uint_t force);


#define ngx_http_llm_kcache_node(n)                                           \
    ((ngx_http_llm_kcache_node_t *) &(n)->color)

#define ngx_http_llm_kcache_rbnode(kn)                                        \
    ((ngx_rbtree_node_t *) ((u_char *) (kn)                                   \
                            - offsetof(ngx_rbtree_node_t, color)))


/*
 * A key that is not in the key file, "digest" its digest: from the
 * cache, else asked of Redis (NGX_AGAIN).  Sets ctx->account, ctx->tier
 * (NULL: the location's default) and $llm_key_id when the key exists.
 */

ngx_int_t
ngx_http_llm_rkeys_find(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_str_t *key, u_char *digest, ngx_str_t *msg)
{
    ngx_msec_t                  left;
    ngx_pool_cleanup_t         *cln;
    ngx_http_llm_rkeys_op_t    *op;
    ngx_http_llm_redis_conf_t  *rc;
    ngx_http_llm_rkeys_req_t   *st;
    ngx_http_llm_main_conf_t   *lmcf;

    if (!ngx_http_llm_rkeys_shaped(key)) {
        ngx_str_set(msg, "Incorrect API key provided.");
        return NGX_DECLINED;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
    rc = ngx_http_llm_redis_conf();

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_rkeys_req_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->request = r;
    st->ctx = ctx;
    ngx_memcpy(st->digest, digest, NGX_HTTP_LLM_DIGEST_LEN);

    /*
     * until the lookup is on its way or answered, the state says "no":
     * a request that fails here and comes back (error_page) is refused
     */

    st->key.state = NGX_HTTP_LLM_RKEY_FAILED;
    st->error = 1;

    st->key.account.data = ngx_pnalloc(r->pool, NGX_HTTP_LLM_ACCOUNT_MAX
                                                + NGX_HTTP_LLM_TIER_MAX);
    if (st->key.account.data == NULL) {
        return NGX_ERROR;
    }

    st->key.tier.data = st->key.account.data + NGX_HTTP_LLM_ACCOUNT_MAX;

    ctx->rkey = st;

    if (rc && rc->key_cache
        && ngx_http_llm_kcache_get(lmcf->shm_zone, digest, &st->key)
           == NGX_OK)
    {
        st->error = 0;
        return ngx_http_llm_rkeys_resolve(r, ctx, st, msg);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_llm_rkeys_cleanup;
    cln->data = st;

    op = ngx_alloc(sizeof(ngx_http_llm_rkeys_op_t), ngx_cycle->log);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(op, sizeof(ngx_http_llm_rkeys_op_t));

    op->op.handler = ngx_http_llm_rkeys_reply;
    op->op.expire = ngx_http_llm_rkeys_expire;
    op->req = st;
    op->zone = lmcf->shm_zone;
    op->sent = ngx_current_msec;
    ngx_memcpy(op->digest, digest, NGX_HTTP_LLM_DIGEST_LEN);

    /* both steps share what is left of the request's time for Redis */

    left = rc ? ngx_http_llm_redis_left(ctx->redis_waited) : 0;
    op->op.deadline = ngx_current_msec + left;

    if (left == 0 || ngx_http_llm_rkeys_send(op) != NGX_OK) {
        if (left) {
            ngx_http_llm_redis_fail(op->op.error);
        }

        ngx_free(op);

        st->key.state = NGX_HTTP_LLM_RKEY_FAILED;
        st->error = 0;
        return ngx_http_llm_rkeys_resolve(r, ctx, st, msg);
    }

    st->op = op;
    st->pending = 1;
    st->error = 0;

    /* a client that goes away meanwhile ends the request at once */

    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/* back in the phases: the lookup's outcome; NGX_AGAIN: not yet */

ngx_int_t
ngx_http_llm_rkeys_result(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_str_t *msg)
{
    ngx_http_llm_rkeys_req_t  *st = ctx->rkey;

    if (st->pending) {
        return NGX_AGAIN;
    }

    if (st->error) {
        return NGX_ERROR;
    }

    return ngx_http_llm_rkeys_resolve(r, ctx, st, msg);
}


/* "sk-llm-" and 43 base64url characters */

static ngx_uint_t
ngx_http_llm_rkeys_shaped(ngx_str_t *key)
{
    u_char      c;
    ngx_uint_t  i;

    if (key->len != NGX_HTTP_LLM_KEY_LEN
        || ngx_strncmp(key->data, "sk-llm-", 7) != 0)
    {
        return 0;
    }

    for (i = 7; i < key->len; i++) {
        c = key->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


static ngx_int_t
ngx_http_llm_rkeys_resolve(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_rkeys_req_t *st, ngx_str_t *msg)
{
    ngx_http_llm_rkey_t       *k;
    ngx_http_llm_main_conf_t  *lmcf;

    k = &st->key;

    ngx_str_set(msg, "Incorrect API key provided.");

    switch (k->state) {

    case NGX_HTTP_LLM_RKEY_VALID:
        break;

    case NGX_HTTP_LLM_RKEY_FAILED:

        /*
         * whatever on_error says: a key that could not be checked is
         * neither let in nor called invalid (a 401 would tell the client
         * not to retry); the key file's keys work on
         */

        ngx_str_set(msg, "The key store is unavailable. Retry shortly.");
        return NGX_HTTP_LLM_KEY_NO_STORE;

    case NGX_HTTP_LLM_RKEY_UNKNOWN:
        return NGX_DECLINED;

    default:
        break;
    }

    /* the key exists */

    ngx_hex_dump(ctx->key_id, st->digest, NGX_HTTP_LLM_KEY_ID_LEN / 2);
    ctx->has_key_id = 1;

    if (k->state == NGX_HTTP_LLM_RKEY_REVOKED) {
        ngx_str_set(msg, "This API key has been revoked.");
        return NGX_DECLINED;
    }

    if (k->expires && k->expires <= ngx_time()) {
        ngx_str_set(msg, "This API key has expired.");
        return NGX_DECLINED;
    }

    ctx->account = k->account;

    if (k->state == NGX_HTTP_LLM_RKEY_SUSPENDED) {
        ngx_str_set(msg, "This account is suspended.");
        return NGX_HTTP_LLM_KEY_SUSPENDED;
    }

    ctx->tier = NULL;

    if (k->tier.len) {
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
        ctx->tier = ngx_http_llm_tier_find(lmcf, &k->tier);
    }

    return NGX_OK;
}


/* HMGET of the key's hash (step 0) or of its account's (step 1) */

static ngx_int_t
ngx_http_llm_rkeys_send(ngx_http_llm_rkeys_op_t *op)
{
    int                         i, argc;
    u_char                     *p;
    size_t                      argvlen[6];
    const char                 *argv[6];
    ngx_http_llm_redis_conf_t  *rc;

    rc = ngx_http_llm_redis_conf();

    argv[0] = "HMGET";
    argvlen[0] = 5;

    if (op->step == 0) {
        p = ngx_sprintf(op->name, "%V{key:", &rc->prefix);
        p = ngx_hex_dump(p, op->digest, NGX_HTTP_LLM_DIGEST_LEN);
        *p++ = '}';

        argv[2] = "account";
        argv[3] = "tier";
        argv[4] = "expires";
        argv[5] = "revoked";
        argc = 6;

    } else {
        p = ngx_sprintf(op->name, "%V{acct:%V}:info", &rc->prefix,
                        &op->key.account);

        argv[2] = "tier";
        argv[3] = "suspended";
        argc = 4;
    }

    argv[1] = (const char *) op->name;
    argvlen[1] = p - op->name;

    for (i = 2; i < argc; i++) {
        argvlen[i] = ngx_strlen(argv[i]);
    }

    return ngx_http_llm_redis_send(&op->op, argc, argv, argvlen);
}


static void
ngx_http_llm_rkeys_reply(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_rkeys_op_t *op = (ngx_http_llm_rkeys_op_t *) rop;

    ngx_uint_t  state;

    if (reply == NULL || reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "llm_redis: key lookup failed (%*s), on_error "
                      "applies", reply ? ngx_min(reply->str.len, 200)
                                       : ngx_strlen(op->op.error),
                      reply ? reply->str.data : (u_char *) op->op.error);

        ngx_http_llm_rkeys_finish(op, NGX_HTTP_LLM_RKEY_FAILED);
        return;
    }

    if (op->step == 0) {
        state = ngx_http_llm_rkeys_parse_key(op, reply);

        if (state == NGX_HTTP_LLM_RKEY_VALID) {

            /* the key exists: now its account, if time is left */

            op->step = 1;

            if (op->op.deadline
                && (ngx_msec_int_t) (op->op.deadline - ngx_current_msec)
                   <= 0)
            {
                ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                              "llm_redis: key lookup failed (no time "
                              "left for the account), on_error applies");

                ngx_http_llm_rkeys_finish(op, NGX_HTTP_LLM_RKEY_FAILED);
                return;
            }

            if (ngx_http_llm_rkeys_send(op) == NGX_OK) {
                return;
            }

            ngx_http_llm_redis_fail(op->op.error);
            state = NGX_HTTP_LLM_RKEY_FAILED;
        }

    } else {
        state = ngx_http_llm_rkeys_parse_account(op, reply);
    }

    ngx_http_llm_rkeys_finish(op, state);
}


/* account, tier, expires, revoked */

static ngx_uint_t
ngx_http_llm_rkeys_parse_key(ngx_http_llm_rkeys_op_t *op,
    ngx_http_llm_redis_reply_t *reply)
{
    time_t                       expires;
    u_char                       id[NGX_HTTP_LLM_KEY_ID_LEN];
    ngx_http_llm_redis_reply_t  *e;

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY || reply->nelts != 4) {
        ngx_http_llm_redis_fail("unexpected reply to a key lookup");
        return NGX_HTTP_LLM_RKEY_FAILED;
    }

    e = reply->elts;

    if (e[0].type != NGX_HTTP_LLM_REDIS_STRING) {
        return NGX_HTTP_LLM_RKEY_UNKNOWN;
    }

    ngx_hex_dump(id, op->digest, NGX_HTTP_LLM_KEY_ID_LEN / 2);

    if (ngx_http_llm_account_valid(&e[0].str) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm_redis: key %*s names an invalid account, "
                      "refused", (size_t) NGX_HTTP_LLM_KEY_ID_LEN, id);
        return NGX_HTTP_LLM_RKEY_UNKNOWN;
    }

    op->key.account.data = op->account;
    op->key.account.len = e[0].str.len;
    ngx_memcpy(op->account, e[0].str.data, e[0].str.len);

    if (e[1].type == NGX_HTTP_LLM_REDIS_STRING
        && e[1].str.len <= NGX_HTTP_LLM_TIER_MAX)
    {
        op->key.tier.data = op->tier;
        op->key.tier.len = e[1].str.len;
        ngx_memcpy(op->tier, e[1].str.data, e[1].str.len);
    }

    if (e[2].type == NGX_HTTP_LLM_REDIS_STRING && e[2].str.len) {
        expires = ngx_atotm(e[2].str.data, e[2].str.len);

        if (expires == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_redis: key %*s has an invalid \"expires\", "
                          "refused", (size_t) NGX_HTTP_LLM_KEY_ID_LEN, id);

            /* long expired */
            expires = 1;
        }

        op->key.expires = expires;
    }

    return ngx_http_llm_rkeys_truthy(&e[3]) ? NGX_HTTP_LLM_RKEY_REVOKED
                                            : NGX_HTTP_LLM_RKEY_VALID;
}


/* tier, suspended */

static ngx_uint_t
ngx_http_llm_rkeys_parse_account(ngx_http_llm_rkeys_op_t *op,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_redis_reply_t  *e;

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY || reply->nelts != 2) {
        ngx_http_llm_redis_fail("unexpected reply to an account lookup");
        return NGX_HTTP_LLM_RKEY_FAILED;
    }

    e = reply->elts;

    if (e[0].type == NGX_HTTP_LLM_REDIS_STRING
        && e[0].str.len > 0 && e[0].str.len <= NGX_HTTP_LLM_TIER_MAX)
    {
        op->key.tier.data = op->tier;
        op->key.tier.len = e[0].str.len;
        ngx_memcpy(op->tier, e[0].str.data, e[0].str.len);
    }

    return ngx_http_llm_rkeys_truthy(&e[1]) ? NGX_HTTP_LLM_RKEY_SUSPENDED
                                            : NGX_HTTP_LLM_RKEY_VALID;
}


/* a flag: present, and neither empty nor "0" */

static ngx_uint_t
ngx_http_llm_rkeys_truthy(ngx_http_llm_redis_reply_t *e)
{
    return e->type == NGX_HTTP_LLM_REDIS_STRING
           && e->str.len > 0
           && !(e->str.len == 1 && e->str.data[0] == '0');
}


/* the outcome: cached, then given to the request waiting for it */

static void
ngx_http_llm_rkeys_finish(ngx_http_llm_rkeys_op_t *op, ngx_uint_t state)
{
    ngx_msec_t                  ttl, sent;
    ngx_http_llm_tier_t        *tier;
    ngx_http_llm_rkeys_req_t   *st;
    ngx_http_llm_redis_conf_t  *rc;
    ngx_http_llm_main_conf_t   *lmcf;

    op->key.state = state;

    rc = ngx_http_llm_redis_conf();

    if (state == NGX_HTTP_LLM_RKEY_VALID && op->key.tier.len) {
        lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                ngx_http_llm_gateway_module);
        tier = ngx_http_llm_tier_find(lmcf, &op->key.tier);

        if (tier == NULL) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_redis: account \"%V\" has tier \"%V\", "
                          "which this node does not know; "
                          "llm_default_tier applies",
                          &op->key.account, &op->key.tier);
        }
    }

    if (state != NGX_HTTP_LLM_RKEY_FAILED && rc && rc->key_cache) {
        ttl = (state == NGX_HTTP_LLM_RKEY_UNKNOWN)
              ? ngx_min(rc->key_cache, NGX_HTTP_LLM_KEY_CACHE_NEG)
              : rc->key_cache;

        ngx_http_llm_kcache_put(op->zone, op->digest, &op->key,
                                op->sent + ttl);
    }

    st = op->req;

    if (st == NULL) {
        /* the request is gone */
        ngx_free(op);
        return;
    }

    st->op = NULL;
    st->pending = 0;

    st->key.state = op->key.state;
    st->key.expires = op->key.expires;
    st->key.account.len = op->key.account.len;
    st->key.tier.len = op->key.tier.len;

    ngx_memcpy(st->key.account.data, op->key.account.data,
               op->key.account.len);
    ngx_memcpy(st->key.tier.data, op->key.tier.data, op->key.tier.len);

    sent = op->sent;

    ngx_free(op);

    ngx_http_llm_rkeys_wake(st, sent);
}


/*
 * The request's time for Redis is up before the lookup's answer: it
 * goes on as if the lookup had failed; the lookup goes on alone.
 */

static void
ngx_http_llm_rkeys_expire(ngx_http_llm_redis_op_t *rop)
{
    ngx_http_llm_rkeys_op_t *op = (ngx_http_llm_rkeys_op_t *) rop;

    ngx_http_llm_rkeys_req_t  *st;

    st = op->req;

    if (st == NULL) {
        return;
    }

    op->req = NULL;
    st->op = NULL;
    st->key.state = NGX_HTTP_LLM_RKEY_FAILED;

    ngx_log_error(NGX_LOG_INFO, st->request->connection->log, 0,
                  "llm_redis: key lookup failed (no answer within "
                  "llm_redis timeout), on_error applies");

    ngx_http_llm_rkeys_wake(st, op->sent);
}


/* the request waited since "sent": it runs on */

static void
ngx_http_llm_rkeys_wake(ngx_http_llm_rkeys_req_t *st, ngx_msec_t sent)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    st->pending = 0;
    st->ctx->redis_waited += ngx_current_msec - sent;

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


/* the request's pool goes: a lookup on its way finishes alone */

static void
ngx_http_llm_rkeys_cleanup(void *data)
{
    ngx_http_llm_rkeys_req_t  *st = data;

    if (st->op) {
        st->op->req = NULL;
        st->op = NULL;
    }
}


/*
 * The cache: an rbtree in llm_zone keyed by the digest, entries queued
 * in the order they were made (they all live about as long), at most
 * an eighth of the zone.  k's strings must have room for the longest
 * account and tier.
 */

static ngx_int_t
ngx_http_llm_kcache_get(ngx_shm_zone_t *zone, u_char *digest,
    ngx_http_llm_rkey_t *k)
{
    void                        **slot;
    ngx_int_t                     rc;
    ngx_slab_pool_t              *shpool;
    ngx_http_llm_kcache_node_t   *kn;

    shpool = ngx_http_llm_store_shpool(zone, &slot);

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&shpool->mutex);

    kn = *slot ? ngx_http_llm_kcache_lookup(*slot, digest) : NULL;

    if (kn && (ngx_msec_int_t) (kn->expire - ngx_current_msec) > 0) {
        k->state = kn->state;
        k->expires = kn->expires;
        k->account.len = kn->account_len;
        k->tier.len = kn->tier_len;

        ngx_memcpy(k->account.data, kn->data, kn->account_len);
        ngx_memcpy(k->tier.data, kn->data + kn->account_len, kn->tier_len);

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


static void
ngx_http_llm_kcache_put(ngx_shm_zone_t *zone, u_char *digest,
    ngx_http_llm_rkey_t *k, ngx_msec_t expire)
{
    void                        **slot;
    size_t                        size;
    ngx_uint_t                    tries, unknown;
    ngx_slab_pool_t              *shpool;
    ngx_rbtree_node_t            *node;
    ngx_http_llm_kcache_t        *kc;
    ngx_http_llm_kcache_node_t   *kn;

    shpool = ngx_http_llm_store_shpool(zone, &slot);

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_llm_kcache_node_t, data)
           + k->account.len + k->tier.len;

    ngx_shmtx_lock(&shpool->mutex);

    kc = *slot;

    if (kc == NULL) {
        kc = ngx_slab_alloc_locked(shpool, sizeof(ngx_http_llm_kcache_t));
        if (kc == NULL) {
            goto done;
        }

        ngx_rbtree_init(&kc->rbtree, &kc->sentinel,
                        ngx_http_llm_kcache_insert_value);
        ngx_queue_init(&kc->queue);
        ngx_queue_init(&kc->unknown);

        kc->count = 0;
        kc->unknowns = 0;
        kc->max = ngx_max(zone->shm.size / 8 / NGX_HTTP_LLM_KCACHE_COST,
                          64);

        *slot = kc;
    }

    /* a newer outcome replaces the entry */

    kn = ngx_http_llm_kcache_lookup(kc, digest);

    if (kn) {
        ngx_http_llm_kcache_remove(kc, shpool, kn);
    }

    unknown = (k->state == NGX_HTTP_LLM_RKEY_UNKNOWN);

    ngx_http_llm_kcache_expire(kc, shpool, &kc->unknown,
                               unknown && kc->unknowns >= kc->max / 4);

    /* full: an unknown key goes first */

    ngx_http_llm_kcache_expire(kc, shpool,
                               kc->unknowns ? &kc->unknown : &kc->queue,
                               kc->count >= kc->max);

    ngx_http_llm_kcache_expire(kc, shpool, &kc->queue, 0);

    for (tries = 0; /* void */; tries++) {
        node = ngx_slab_alloc_locked(shpool, size);

        if (node != NULL) {
            break;
        }

        /* the zone is full: the cache gives way, then does without */

        if (tries == 4 || kc->count == 0) {
            goto done;
        }

        ngx_http_llm_kcache_expire(kc, shpool,
                                   kc->unknowns ? &kc->unknown : &kc->queue,
                                   1);
    }

    node->key = ngx_crc32_short(digest, NGX_HTTP_LLM_DIGEST_LEN);

    kn = ngx_http_llm_kcache_node(node);

    kn->state = (u_char) k->state;
    kn->account_len = (u_char) k->account.len;
    kn->tier_len = (u_char) k->tier.len;
    kn->expire = expire;
    kn->expires = k->expires;

    ngx_memcpy(kn->digest, digest, NGX_HTTP_LLM_DIGEST_LEN);
    ngx_memcpy(kn->data, k->account.data, k->account.len);
    ngx_memcpy(kn->data + k->account.len, k->tier.data, k->tier.len);

    ngx_rbtree_insert(&kc->rbtree, node);
    ngx_queue_insert_head(unknown ? &kc->unknown : &kc->queue, &kn->queue);
    kc->count++;
    kc->unknowns += unknown;

done:

    ngx_shmtx_unlock(&shpool->mutex);
}


static ngx_http_llm_kcache_node_t *
ngx_http_llm_kcache_lookup(ngx_http_llm_kcache_t *kc, u_char *digest)
{
    ngx_int_t                    rc;
    ngx_rbtree_key_t             hash;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_llm_kcache_node_t  *kn;

    hash = ngx_crc32_short(digest, NGX_HTTP_LLM_DIGEST_LEN);

    node = kc->rbtree.root;
    sentinel = kc->rbtree.sentinel;

    /* a digest cannot be steered by the client: searching it is safe */

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        kn = ngx_http_llm_kcache_node(node);

        rc = ngx_memcmp(digest, kn->digest, NGX_HTTP_LLM_DIGEST_LEN);

        if (rc == 0) {
            return ngx_http_llm_digest_equal(digest, kn->digest) ? kn : NULL;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_llm_kcache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_llm_kcache_node_t   *kn, *knt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            kn = ngx_http_llm_kcache_node(node);
            knt = ngx_http_llm_kcache_node(temp);

            p = (ngx_memcmp(kn->digest, knt->digest, NGX_HTTP_LLM_DIGEST_LEN)
                 < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* drops up to two outdated entries, and with "force" the oldest one */

static void
ngx_http_llm_kcache_expire(ngx_http_llm_kcache_t *kc,
    ngx_slab_pool_t *shpool, ngx_queue_t *queue, ngx_uint_t force)
{
    ngx_uint_t                   n;
    ngx_queue_t                 *q;
    ngx_http_llm_kcache_node_t  *kn;

    for (n = 0; n < 2 && !ngx_queue_empty(queue); n++) {
        q = ngx_queue_last(queue);
        kn = ngx_queue_data(q, ngx_http_llm_kcache_node_t, queue);

        if (!force && (ngx_msec_int_t) (kn->expire - ngx_current_msec) > 0) {
            return;
        }

        force = 0;

        ngx_http_llm_kcache_remove(kc, shpool, kn);
    }
}


static void
ngx_http_llm_kcache_remove(ngx_http_llm_kcache_t *kc,
    ngx_slab_pool_t *shpool, ngx_http_llm_kcache_node_t *kn)
{
    if (kn->state == NGX_HTTP_LLM_RKEY_UNKNOWN) {
        kc->unknowns--;
    }

    kc->count--;

    ngx_queue_remove(&kn->queue);
    ngx_rbtree_delete(&kc->rbtree, ngx_http_llm_kcache_rbnode(kn));
    ngx_slab_free_locked(shpool, ngx_http_llm_kcache_rbnode(kn));
}
