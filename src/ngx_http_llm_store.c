
/*
 * ngx_llm_gateway: the shared memory zone ("llm_zone").
 *
 * Owns the zone and one node per tracked account (or anonymous client
 * address): its window rings, concurrency count and cooldown deadline,
 * in an rbtree keyed by the name's hash with an LRU queue, as in
 * ngx_http_limit_req_module.  Idle entries whose windows have emptied
 * are expired on insertion; when the slab is full, the least recently
 * used idle entry is evicted (and that is logged).  Every entry, and
 * every concurrency lease, takes one slab chunk of the same size, that
 * of the largest tier's entry: a chunk freed by any eviction then makes
 * room for any new entry (chunks of another size class would not).
 * Every decision is taken under the zone's mutex, so it is exact across
 * workers.
 *
 * Concurrency slots are leased per worker process: an account at its
 * limit first takes back (at most once a second) the slots of workers
 * that no longer exist, so a crashed worker cannot hold them for long.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_crypto.h"


/*
 * The longest name an entry keeps as it is, and the length of the name
 * a longer one is kept by; see ngx_http_llm_zone_name()
 */

#define NGX_HTTP_LLM_ZONE_RAW_MAX   21
#define NGX_HTTP_LLM_ZONE_NAME_LEN  17


typedef struct ngx_http_llm_lease_s  ngx_http_llm_lease_t;

struct ngx_http_llm_lease_s {
    ngx_http_llm_lease_t       *next;
    ngx_pid_t                   pid;
    uint32_t                    count;
};


/* times are ngx_current_msec: monotonic, and the same in every worker */

typedef struct {
    u_char                      color;
    u_char                      nwin;
    u_short                     len;
    uint32_t                    reclaimed;  /* ms >> 10: last reclaim */
    ngx_queue_t                 queue;
    uint64_t                    expire;     /* idle and empty after */
    uint64_t                    blocked;    /* cooldown ends */
    ngx_http_llm_lease_t       *leases;
    uint32_t                    conc;       /* sum of the leases */
    ngx_http_llm_ring_t         rings[1];   /* nwin; tags; the name */
} ngx_http_llm_node_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 queue;
    uint64_t                    base;       /* when the zone was made */
    void                       *keys;       /* ngx_http_llm_rkeys.c's */

    /* what exiting workers leave for the next ones (replay batches) */
    ngx_queue_t                 parcels;
    ngx_atomic_t                nparcels;

    /* Redis's clock less ours (ms), once a worker has read it */
    ngx_atomic_int_t            skew;
    ngx_atomic_t                skew_known;
} ngx_http_llm_shctx_t;


typedef struct {
    ngx_http_llm_shctx_t       *sh;
    ngx_slab_pool_t            *shpool;
    ngx_str_t                   name;
    ngx_http_llm_main_conf_t   *lmcf;
    size_t                      size;       /* of an entry, of a lease */
} ngx_http_llm_zone_ctx_t;


static ngx_int_t ngx_http_llm_init_zone(ngx_shm_zone_t *shm_zone, void *data);
static size_t ngx_http_llm_entry_size(ngx_http_llm_main_conf_t *lmcf);
static uint32_t ngx_http_llm_zone_name(ngx_str_t *account, ngx_str_t *name,
    u_char *buf);
static void ngx_http_llm_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_llm_node_t *ngx_http_llm_node_lookup(
    ngx_http_llm_zone_ctx_t *ctx, uint32_t hash, ngx_str_t *account);
static ngx_http_llm_node_t *ngx_http_llm_node_get(
    ngx_http_llm_zone_ctx_t *ctx, uint32_t hash, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t now, ngx_uint_t keep);
static void *ngx_http_llm_alloc(ngx_http_llm_zone_ctx_t *ctx, size_t size,
    uint64_t now);
static ngx_http_llm_node_t *ngx_http_llm_node_create(
    ngx_http_llm_zone_ctx_t *ctx, uint32_t hash, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t now);
static ngx_http_llm_node_t *ngx_http_llm_node_retier(
    ngx_http_llm_zone_ctx_t *ctx, ngx_http_llm_node_t *old, uint32_t hash,
    ngx_str_t *account, ngx_http_llm_tier_t *tier, uint64_t now);
static void ngx_http_llm_log_full(ngx_http_llm_zone_ctx_t *ctx,
    uint64_t now);
static void ngx_http_llm_node_free(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln);
static ngx_uint_t ngx_http_llm_expire(ngx_http_llm_zone_ctx_t *ctx,
    ngx_uint_t force, uint64_t now);
static ngx_int_t ngx_http_llm_lease(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln, uint64_t now);
static void ngx_http_llm_lease_return(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln);
static void ngx_http_llm_lease_reclaim(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln);


#define ngx_http_llm_node(n)                                                  \
    ((ngx_http_llm_node_t *) &(n)->color)

#define ngx_http_llm_rbnode(ln)                                               \
    ((ngx_rbtree_node_t *) ((u_char *) (ln)                                   \
                            - offsetof(ngx_rbtree_node_t, color)))

#define ngx_http_llm_node_tags(ln)                                            \
    ((u_char *) &(ln)->rings[(ln)->nwin])

#define ngx_http_llm_node_name(ln)                                            \
    (ngx_http_llm_node_tags(ln) + (ln)->nwin)

/* the bytes an entry of "nwin" windows and a name of "len" bytes needs */

#define ngx_http_llm_node_size(nwin, len)                                     \
    (offsetof(ngx_rbtree_node_t, color)                                       \
     + offsetof(ngx_http_llm_node_t, rings)                                   \
     + (nwin) * (sizeof(ngx_http_llm_ring_t) + 1) + (len))


/* llm_zone NAME:SIZE; */

char *
ngx_http_llm_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    u_char                   *p;
    ssize_t                   size;
    ngx_str_t                *value, name, s;
    ngx_http_llm_zone_ctx_t  *ctx;

    if (lmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = (u_char *) ngx_strlchr(value[1].data, value[1].data + value[1].len,
                               ':');
    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected NAME:SIZE",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - name.data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small", &value[1]);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_zone_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->name = name;
    ctx->lmcf = lmcf;

    lmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_llm_gateway_module);
    if (lmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (lmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    lmcf->shm_zone->init = ngx_http_llm_init_zone;
    lmcf->shm_zone->data = ctx;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_zone_ctx_t  *octx = data;

    size_t                    len;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    ctx->size = ngx_http_llm_entry_size(ctx->lmcf);

    if (octx) {
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

        /*
         * entries the old workers made stay: a reload keeps the size
         * (a smaller one would be a size class of its own again)
         */

        ctx->size = ngx_max(ctx->size, octx->size);

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_llm_shctx_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_http_llm_rbtree_insert_value);

    ngx_queue_init(&ctx->sh->queue);
    ngx_queue_init(&ctx->sh->parcels);

    ctx->sh->base = ngx_current_msec;

    len = sizeof(" in llm_zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in llm_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* running out of slab is handled, and logged, by eviction */

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * The size of every entry of the zone: that of the tier with the most
 * windows, with the longest name an entry keeps (so 256 bytes, one
 * slab chunk, up to three windows); at least a lease's.
 */

static size_t
ngx_http_llm_entry_size(ngx_http_llm_main_conf_t *lmcf)
{
    size_t                nwin;
    ngx_uint_t            i;
    ngx_http_llm_tier_t  *tier;

    nwin = 1;
    tier = lmcf->tiers.elts;

    for (i = 0; i < lmcf->tiers.nelts; i++) {
        nwin = ngx_max(nwin, tier[i].windows.nelts);
    }

    return ngx_max(ngx_http_llm_node_size(nwin, NGX_HTTP_LLM_ZONE_RAW_MAX),
                   sizeof(ngx_http_llm_lease_t));
}


static void
ngx_http_llm_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t    **p;
    ngx_http_llm_node_t   *ln, *lnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            ln = ngx_http_llm_node(node);
            lnt = ngx_http_llm_node(temp);

            p = (ngx_memn2cmp(ngx_http_llm_node_name(ln),
                              ngx_http_llm_node_name(lnt), ln->len, lnt->len)
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


/*
 * The name an account's entry is found by: the account's own when it is
 * short (21 bytes: an entry of three windows then fits a 256-byte slab
 * chunk, SPEC 10, and most names cost no digest per request); else a
 * byte no name holds and 16 bytes of the name's BLAKE2b digest, so that
 * such an entry fits too whatever the name: accounts of up to 64
 * characters, IPv6 clients ("anon:ADDR").  Returns the name's hash.
 */

static uint32_t
ngx_http_llm_zone_name(ngx_str_t *account, ngx_str_t *name, u_char *buf)
{
    u_char  digest[NGX_HTTP_LLM_DIGEST_LEN];

    if (account->len <= NGX_HTTP_LLM_ZONE_RAW_MAX) {
        *name = *account;

    } else {
        ngx_http_llm_digest(digest, account->data, account->len);

        buf[0] = '\0';
        ngx_memcpy(buf + 1, digest, NGX_HTTP_LLM_ZONE_NAME_LEN - 1);

        name->data = buf;
        name->len = NGX_HTTP_LLM_ZONE_NAME_LEN;
    }

    return ngx_crc32_short(name->data, name->len);
}


/*
 * The zone's slab pool, and the pointer in the zone that the key cache
 * of ngx_http_llm_rkeys.c hangs from (used under the slab's mutex).
 */

ngx_slab_pool_t *
ngx_http_llm_store_shpool(ngx_shm_zone_t *shm_zone, void ***keys)
{
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    *keys = &ctx->sh->keys;

    return ctx->shpool;
}


/*
 * Redis's clock less ours, as the workers have read it: it outlives
 * them, so that a worker that starts on a reload knows it before its
 * connection's TIME has answered (an admission sent then carries a
 * deadline).  NGX_DECLINED: never read.
 */

ngx_int_t
ngx_http_llm_store_skew(ngx_shm_zone_t *shm_zone, int64_t *skew)
{
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (!ctx->sh->skew_known) {
        return NGX_DECLINED;
    }

    ngx_memory_barrier();

    *skew = ctx->sh->skew;

    return NGX_OK;
}


void
ngx_http_llm_store_set_skew(ngx_shm_zone_t *shm_zone, int64_t skew)
{
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (ctx->sh->skew_known && ctx->sh->skew == (ngx_atomic_int_t) skew) {
        return;
    }

    ctx->sh->skew = (ngx_atomic_int_t) skew;

    ngx_memory_barrier();

    ctx->sh->skew_known = 1;
}


typedef struct {
    ngx_queue_t                 queue;
    size_t                      len;
    u_char                      data[1];
} ngx_http_llm_parcel_t;


/*
 * A worker that exits leaves "data" in the zone, for a worker of the
 * next reload to take (ngx_http_llm_store_take()).  A parcel that fits
 * in an entry's chunk takes one, so that in a full zone the least
 * recently used idle entry makes room for it, as for a new account:
 * usage on its way to Redis outweighs an idle account's local counts.
 * NGX_ERROR: the zone is full and every entry is busy.
 */

ngx_int_t
ngx_http_llm_store_leave(ngx_shm_zone_t *shm_zone, void *data, size_t len)
{
    size_t                    size;
    ngx_http_llm_parcel_t    *pc;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    size = offsetof(ngx_http_llm_parcel_t, data) + len;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    pc = ngx_http_llm_alloc(ctx, ngx_max(size, ctx->size), ngx_current_msec);
    if (pc == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NGX_ERROR;
    }

    pc->len = len;
    ngx_memcpy(pc->data, data, len);

    ngx_queue_insert_tail(&ctx->sh->parcels, &pc->queue);
    ctx->sh->nparcels++;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


/* how many parcels are left (read without the lock: a hint) */

ngx_uint_t
ngx_http_llm_store_parcels(ngx_shm_zone_t *shm_zone)
{
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    return (ctx && ctx->sh) ? ctx->sh->nparcels : 0;
}


/*
 * The oldest parcel left, copied to the heap (ngx_free() it), its
 * length in "len"; NULL: none (or no memory: it stays).
 */

void *
ngx_http_llm_store_take(ngx_shm_zone_t *shm_zone, size_t *len)
{
    void                     *data;
    ngx_queue_t              *q;
    ngx_http_llm_parcel_t    *pc;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (ctx->sh->nparcels == 0) {
        return NULL;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ngx_queue_empty(&ctx->sh->parcels)) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    q = ngx_queue_head(&ctx->sh->parcels);
    pc = ngx_queue_data(q, ngx_http_llm_parcel_t, queue);

    data = ngx_alloc(pc->len, ngx_cycle->log);
    if (data == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return NULL;
    }

    ngx_memcpy(data, pc->data, pc->len);
    *len = pc->len;

    ngx_queue_remove(q);
    ctx->sh->nparcels--;
    ngx_slab_free_locked(ctx->shpool, pc);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return data;
}


/*
 * Admission of one request for "account" under "tier": cooldown, then
 * concurrency, then every window, all or nothing.  On NGX_OK the
 * request holds one concurrency slot when the tier limits concurrency.
 */

ngx_int_t
ngx_http_llm_store_admit(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d)
{
    u_char                    buf[NGX_HTTP_LLM_ZONE_NAME_LEN];
    uint32_t                  hash;
    uint64_t                  need, retry_at;
    ngx_int_t                 rc;
    ngx_str_t                 name;
    ngx_http_llm_node_t      *ln;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;
    hash = ngx_http_llm_zone_name(account, &name, buf);
    account = &name;

    d->base = ctx->sh->base;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_http_llm_node_get(ctx, hash, account, tier, d->now, 0);

    if (ln == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_OK;

    if (ln->blocked > d->now) {
        d->retry_at = d->wall + (ln->blocked - d->now);
        rc = NGX_HTTP_LLM_COOLING;

    } else if (tier->concurrency && ln->conc >= tier->concurrency) {

        /* slots of crashed workers come back, looked for once a second */

        if ((uint32_t) (d->now >> 10) != ln->reclaimed) {
            ln->reclaimed = (uint32_t) (d->now >> 10);
            ngx_http_llm_lease_reclaim(ctx, ln);
        }

        if (ln->conc >= tier->concurrency) {
            d->retry_at = d->wall + 1000;
            rc = NGX_HTTP_LLM_CONC_FULL;
        }
    }

    if (rc != NGX_OK) {

        /* the windows are reported as they stand, and not charged */

        need = d->need[NGX_HTTP_LLM_DIM_REQUESTS];
        retry_at = d->retry_at;
        ngx_memzero(d->need, sizeof(d->need));

        (void) ngx_http_llm_decide(tier, ln->rings, d);

        d->need[NGX_HTTP_LLM_DIM_REQUESTS] = need;
        d->retry_at = retry_at;
        goto done;
    }

    if (tier->concurrency && ngx_http_llm_lease(ctx, ln, d->now) != NGX_OK) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = ngx_http_llm_decide(tier, ln->rings, d);

    if (rc != NGX_OK) {

        if (tier->concurrency) {
            ngx_http_llm_lease_return(ctx, ln);
        }

        /*
         * a request too large for a window is no sign of a client going
         * too fast: it is refused, and the account not blocked
         */

        if (tier->cooldown && !d->never) {
            ln->blocked = d->now + tier->cooldown;

            if (d->retry_at < d->wall + tier->cooldown) {
                d->retry_at = d->wall + tier->cooldown;
            }
        }
    }

    if (d->now + tier->longest > ln->expire) {
        ln->expire = d->now + tier->longest;
    }

    if (ln->blocked > ln->expire) {
        ln->expire = ln->blocked;
    }

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rc;
}


/*
 * With llm_redis and on_error=local: the windows of "account" take what
 * Redis's hold ("sums", per window, from its answer to an admission), so
 * that a node left to decide alone while Redis fails starts from the
 * fleet's counts as it last saw them, not from nothing.  Called with
 * d->now and d->wall set; changes nothing else of the entry.
 */

void
ngx_http_llm_store_seed(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d, uint64_t *sums)
{
    u_char                    buf[NGX_HTTP_LLM_ZONE_NAME_LEN];
    uint32_t                  hash;
    ngx_str_t                 name;
    ngx_http_llm_node_t      *ln;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;
    hash = ngx_http_llm_zone_name(account, &name, buf);

    d->base = ctx->sh->base;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /*
     * The last eighth of the zone is left to the key cache, which cannot
     * evict entries (ngx_http_llm_rkeys.c): past that, a new account's
     * entry takes the place of the least recently used idle one, as in a
     * full zone.  Without this, seeds of accounts Redis counts anyway
     * fill the zone, and a key in use is no longer cached, so an outage
     * refuses it (503).
     */

    ln = ngx_http_llm_node_get(ctx, hash, &name, tier, d->now,
                               shm_zone->shm.size / 8 / ngx_pagesize);

    if (ln) {
        ngx_http_llm_seed(tier, ln->rings, d, sums);

        if (d->now + tier->longest > ln->expire) {
            ln->expire = d->now + tier->longest;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


void
ngx_http_llm_store_release(ngx_shm_zone_t *shm_zone, ngx_str_t *account)
{
    u_char                    buf[NGX_HTTP_LLM_ZONE_NAME_LEN];
    uint32_t                  hash;
    ngx_str_t                 name;
    ngx_http_llm_node_t      *ln;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;
    hash = ngx_http_llm_zone_name(account, &name, buf);
    account = &name;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_http_llm_node_lookup(ctx, hash, account);

    if (ln != NULL) {
        ngx_http_llm_lease_return(ctx, ln);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* the reservation of a finished request replaced by its use */

void
ngx_http_llm_store_settle(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_settle_t *s)
{
    u_char                    buf[NGX_HTTP_LLM_ZONE_NAME_LEN];
    uint32_t                  hash;
    ngx_str_t                 name;
    ngx_http_llm_node_t      *ln;
    ngx_http_llm_zone_ctx_t  *ctx;

    ctx = shm_zone->data;
    hash = ngx_http_llm_zone_name(account, &name, buf);
    account = &name;

    s->at.base = ctx->sh->base;
    s->now.base = ctx->sh->base;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_http_llm_node_lookup(ctx, hash, account);

    if (ln != NULL) {
        ngx_http_llm_settle(tier, ln->rings, ngx_http_llm_node_tags(ln),
                            ln->nwin, s);

        if (s->now.now + tier->longest > ln->expire) {
            ln->expire = s->now.now + tier->longest;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * What each window of "tier" holds for an account, counting nothing:
 * used[i] and reset[i] (wall clock, ms) for window i.
 */

void
ngx_http_llm_store_usage(ngx_shm_zone_t *shm_zone, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, ngx_http_llm_decision_t *d, uint64_t *used,
    uint64_t *reset)
{
    u_char                      *tags;
    u_char                       buf[NGX_HTTP_LLM_ZONE_NAME_LEN];
    uint32_t                     hash;
    ngx_str_t                    name;
    ngx_uint_t                   i, j;
    ngx_http_llm_node_t         *ln;
    ngx_http_llm_zone_ctx_t     *ctx;
    ngx_http_llm_window_conf_t  *wc;

    ctx = shm_zone->data;
    hash = ngx_http_llm_zone_name(account, &name, buf);
    account = &name;

    d->base = ctx->sh->base;

    wc = tier->windows.elts;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_http_llm_node_lookup(ctx, hash, account);

    for (i = 0; i < tier->windows.nelts; i++) {
        used[i] = 0;
        reset[i] = d->wall;

        if (ln == NULL) {
            continue;
        }

        tags = ngx_http_llm_node_tags(ln);

        for (j = 0; j < ln->nwin; j++) {
            if (tags[j] == tier->tags[i]) {
                used[i] = ngx_http_llm_window_used(&wc[i], &ln->rings[j], d,
                                                   &reset[i]);
                break;
            }
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* one more concurrency slot for this worker */

static ngx_int_t
ngx_http_llm_lease(ngx_http_llm_zone_ctx_t *ctx, ngx_http_llm_node_t *ln,
    uint64_t now)
{
    ngx_http_llm_lease_t  *lease;

    for (lease = ln->leases; lease; lease = lease->next) {
        if (lease->pid == ngx_pid) {
            break;
        }
    }

    if (lease == NULL) {

        /*
         * "ln" holds no slot of ours yet: keep it from being evicted;
         * a lease is an entry's size, so that evicting one makes room
         */

        ln->conc++;
        lease = ngx_http_llm_alloc(ctx, ctx->size, now);
        ln->conc--;

        if (lease == NULL) {
            return NGX_ERROR;
        }

        lease->pid = ngx_pid;
        lease->count = 0;
        lease->next = ln->leases;
        ln->leases = lease;
    }

    lease->count++;
    ln->conc++;

    return NGX_OK;
}


static void
ngx_http_llm_lease_return(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln)
{
    ngx_http_llm_lease_t  *lease, **prev;

    for (prev = &ln->leases; *prev; prev = &(*prev)->next) {
        lease = *prev;

        if (lease->pid != ngx_pid) {
            continue;
        }

        ln->conc--;

        if (--lease->count == 0) {
            *prev = lease->next;
            ngx_slab_free_locked(ctx->shpool, lease);
        }

        return;
    }
}


/* slots leased by worker processes that have died */

static void
ngx_http_llm_lease_reclaim(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *ln)
{
    ngx_http_llm_lease_t  *lease, **prev;

    prev = &ln->leases;

    while (*prev) {
        lease = *prev;

        if (lease->pid == ngx_pid
            || kill(lease->pid, 0) == 0 || ngx_errno != NGX_ESRCH)
        {
            prev = &lease->next;
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm_zone \"%V\": took back %uD concurrency slots "
                      "of exited process %P", &ctx->name, lease->count,
                      lease->pid);

        ln->conc -= ngx_min(ln->conc, lease->count);
        *prev = lease->next;
        ngx_slab_free_locked(ctx->shpool, lease);
    }
}


static ngx_http_llm_node_t *
ngx_http_llm_node_lookup(ngx_http_llm_zone_ctx_t *ctx, uint32_t hash,
    ngx_str_t *account)
{
    ngx_int_t             rc;
    ngx_rbtree_node_t    *node, *sentinel;
    ngx_http_llm_node_t  *ln;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        ln = ngx_http_llm_node(node);

        rc = ngx_memn2cmp(account->data, ngx_http_llm_node_name(ln),
                          account->len, (size_t) ln->len);

        if (rc == 0) {
            ngx_queue_remove(&ln->queue);
            ngx_queue_insert_head(&ctx->sh->queue, &ln->queue);
            return ln;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* the entry of "account", made for "tier"; NULL: no room */

static ngx_http_llm_node_t *
ngx_http_llm_node_get(ngx_http_llm_zone_ctx_t *ctx, uint32_t hash,
    ngx_str_t *account, ngx_http_llm_tier_t *tier, uint64_t now,
    ngx_uint_t keep)
{
    ngx_http_llm_node_t  *ln;

    ln = ngx_http_llm_node_lookup(ctx, hash, account);

    if (ln == NULL) {
        /* a new entry leaves "keep" pages free, evicting if it must */

        ngx_http_llm_expire(ctx, ctx->shpool->pfree < keep, now);

        return ngx_http_llm_node_create(ctx, hash, account, tier, now);
    }

    if (ln->nwin != tier->windows.nelts
        || ngx_memcmp(ngx_http_llm_node_tags(ln), tier->tags, ln->nwin) != 0)
    {
        /* the account changed tier, or its tier changed on reload */

        return ngx_http_llm_node_retier(ctx, ln, hash, account, tier, now);
    }

    return ln;
}


static ngx_http_llm_node_t *
ngx_http_llm_node_create(ngx_http_llm_zone_ctx_t *ctx, uint32_t hash,
    ngx_str_t *account, ngx_http_llm_tier_t *tier, uint64_t now)
{
    size_t                size;
    ngx_uint_t            nwin;
    ngx_rbtree_node_t    *node;
    ngx_http_llm_node_t  *ln;

    nwin = tier->windows.nelts;

    /* ctx->size covers every tier of this cycle */

    size = ngx_max(ctx->size, ngx_http_llm_node_size(nwin, account->len));

    node = ngx_http_llm_alloc(ctx, size, now);
    if (node == NULL) {
        return NULL;
    }

    ngx_memzero(node, size);

    node->key = hash;

    ln = ngx_http_llm_node(node);
    ln->nwin = (u_char) nwin;
    ln->len = (u_short) account->len;

    ngx_memcpy(ngx_http_llm_node_tags(ln), tier->tags, nwin);
    ngx_memcpy(ngx_http_llm_node_name(ln), account->data, account->len);

    ngx_rbtree_insert(&ctx->sh->rbtree, node);
    ngx_queue_insert_head(&ctx->sh->queue, &ln->queue);

    return ln;
}


/*
 * A node for the account's new set of windows: the counts of windows
 * of the same dimension and period, its slots and cooldown carry over.
 */

static ngx_http_llm_node_t *
ngx_http_llm_node_retier(ngx_http_llm_zone_ctx_t *ctx,
    ngx_http_llm_node_t *old, uint32_t hash, ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t now)
{
    ngx_http_llm_node_t  *ln;

    /* a busy entry is never evicted: keep "old" while making "ln" */

    old->conc++;
    ln = ngx_http_llm_node_create(ctx, hash, account, tier, now);
    old->conc--;

    if (ln == NULL) {
        return NULL;
    }

    ngx_http_llm_rings_carry(ln->rings, tier->tags, ln->nwin,
                             old->rings, ngx_http_llm_node_tags(old),
                             old->nwin);

    ln->leases = old->leases;
    ln->conc = old->conc;
    ln->blocked = old->blocked;
    ln->expire = old->expire;
    ln->reclaimed = old->reclaimed;

    ngx_http_llm_node_free(ctx, old);

    return ln;
}


/*
 * A chunk of "size" bytes, evicting the least recently used idle
 * entries until there is room: one, when every entry is of this size;
 * more while entries of another size are left (those of workers of the
 * last cycle, during a reload).  NULL: every entry is busy.
 */

static void *
ngx_http_llm_alloc(ngx_http_llm_zone_ctx_t *ctx, size_t size, uint64_t now)
{
    void  *p;

    for ( ;; ) {

        p = ngx_slab_alloc_locked(ctx->shpool, size);
        if (p != NULL) {
            return p;
        }

        if (ngx_http_llm_expire(ctx, 1, now) == 0) {
            ngx_http_llm_log_full(ctx, now);
            return NULL;
        }
    }
}


/* under the lock: said at most once a minute per worker */

static void
ngx_http_llm_log_full(ngx_http_llm_zone_ctx_t *ctx, uint64_t now)
{
    static uint64_t  logged;

    if (logged && now - logged < 60000) {
        return;
    }

    logged = now;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "llm_zone \"%V\" is full and every entry is busy",
                  &ctx->name);
}


static void
ngx_http_llm_node_free(ngx_http_llm_zone_ctx_t *ctx, ngx_http_llm_node_t *ln)
{
    ngx_queue_remove(&ln->queue);
    ngx_rbtree_delete(&ctx->sh->rbtree, ngx_http_llm_rbnode(ln));
    ngx_slab_free_locked(ctx->shpool, ngx_http_llm_rbnode(ln));
}


/*
 * force == 0 drops up to two idle entries whose windows are empty,
 * looking at eight entries at most; force == 1 also evicts the least
 * recently used idle entry, looking as far as it takes to find one, and
 * logs that the zone is full at most once a minute per worker.  Entries
 * holding concurrency slots are never dropped (they go to the head of
 * the queue, so that they do not stop the next scan).  Returns how many
 * entries were dropped: 0 with force == 1 means that every entry is
 * busy.
 */

static ngx_uint_t
ngx_http_llm_expire(ngx_http_llm_zone_ctx_t *ctx, ngx_uint_t force,
    uint64_t now)
{
    ngx_uint_t            n, scanned;
    ngx_queue_t          *q, *busy;
    ngx_http_llm_node_t  *ln;

    static uint64_t       logged;

    n = 0;
    scanned = 0;
    busy = NULL;

    while (!ngx_queue_empty(&ctx->sh->queue)) {

        q = ngx_queue_last(&ctx->sh->queue);

        if (q == busy || (!force && scanned >= 8)) {
            /* every entry seen, or enough */
            break;
        }

        scanned++;

        ln = ngx_queue_data(q, ngx_http_llm_node_t, queue);

        if (ln->conc) {

            /* in use, so not the least recent: out of the scan's way */

            ngx_queue_remove(q);
            ngx_queue_insert_head(&ctx->sh->queue, q);

            if (busy == NULL) {
                busy = q;
            }

            continue;
        }

        if (ln->expire > now) {

            if (!force) {
                break;
            }

            force = 0;

            if (now - logged >= 60000) {
                logged = now;
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "llm_zone \"%V\" is full, evicting the least "
                              "recently used entries", &ctx->name);
            }
        }

        ngx_http_llm_node_free(ctx, ln);

        if (++n == 2 && !force) {
            break;
        }
    }

    return n;
}
