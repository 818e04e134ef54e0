
/*
 * ngx_llm_gateway: the provider key pool's shared state and its choice.
 *
 * One shared memory zone per pool ("llm_pool_" and the upstream's name),
 * sized by the module from the number of keys, servers and pairs, so the
 * operator never configures it.  It holds what every worker must agree
 * on: each key's cooldown, whether it is disabled, its own budgets
 * (requests=, tokens=), the headroom the provider last reported, and
 * each server's in-flight count, failures and latency.  A reload with
 * the same keys and servers keeps the zone as it is; a changed pool gets
 * a new zone into which the old keys' state is carried by name.
 *
 * Every access goes through the functions below (pick, done, tokens,
 * soonest; claim and merge for ngx_http_llm_pool_sync.c, which tells
 * Redis what happens here and brings the fleet's state in), so the
 * balancer never waits for anything.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_pool.h"


#define NGX_HTTP_LLM_POOL_PROBES    8

/* ms of latency that say nothing about a server or a key */
#define NGX_HTTP_LLM_POOL_LATENCY_NOISE  20

/* server factor (1..4) times key factor (1..16) */
#define NGX_HTTP_LLM_POOL_ROOM_MAX  64


static ngx_int_t ngx_http_llm_pool_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_llm_pool_srv_conf_t *ngx_http_llm_pool_old_conf(
    ngx_str_t *name);
static ngx_uint_t ngx_http_llm_pool_same_layout(
    ngx_http_llm_pool_srv_conf_t *a, ngx_http_llm_pool_srv_conf_t *b);
static void ngx_http_llm_pool_carry(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_http_llm_pool_srv_conf_t *old);
static ngx_uint_t ngx_http_llm_pool_key_factor(
    ngx_http_llm_pool_srv_conf_t *pscf, ngx_uint_t k, ngx_msec_t now,
    ngx_msec_t *until);
static ngx_uint_t ngx_http_llm_pool_server_factor(
    ngx_http_llm_pool_srv_conf_t *pscf, ngx_uint_t s, ngx_msec_t now);
static ngx_uint_t ngx_http_llm_pool_speed(ngx_uint_t f, ngx_msec_t latency,
    ngx_msec_t avg);
static uint64_t ngx_http_llm_pool_weight(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t i, ngx_msec_t now, ngx_msec_t *until);
static ngx_uint_t ngx_http_llm_pool_scan(ngx_http_llm_pool_peer_data_t *pd,
    ngx_msec_t now);
static ngx_uint_t ngx_http_llm_pool_sample(ngx_http_llm_pool_peer_data_t *pd,
    ngx_msec_t now);
static ngx_uint_t ngx_http_llm_pool_least(ngx_http_llm_pool_peer_data_t *pd,
    ngx_msec_t now);
static uint64_t ngx_http_llm_pool_window(ngx_msec_t *start, uint64_t *cur,
    uint64_t *prev, ngx_msec_t period, ngx_msec_t now);
static void ngx_http_llm_pool_window_merge(ngx_msec_t *start, uint64_t *cur,
    uint64_t *prev, ngx_msec_t period, ngx_msec_t now, uint64_t rnow,
    ngx_http_llm_pool_remote_t *rm);
static uint64_t ngx_http_llm_pool_wall(void);


#define ngx_http_llm_pool_tried(pd, i)                                       \
    ((pd)->tried[(i) / (8 * sizeof(uintptr_t))]                              \
     & ((uintptr_t) 1 << (i) % (8 * sizeof(uintptr_t))))


ngx_int_t
ngx_http_llm_pool_state_add(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf)
{
    size_t                         size;
    ngx_str_t                      name;
    ngx_http_llm_pool_srv_conf_t  *old;

    name.len = sizeof("llm_pool_") - 1 + pscf->name.len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name.data, "llm_pool_%V", &pscf->name);

    size = sizeof(ngx_http_llm_pool_shctx_t)
           + pscf->keys.nelts * sizeof(ngx_http_llm_pool_key_sh_t)
           + pscf->nservers * sizeof(ngx_http_llm_pool_server_sh_t)
           + pscf->npairs * sizeof(int64_t) + 64;

    /* the slab allocator's own pages, and room for its bookkeeping */

    size = ngx_align(size + size / 8 + 8 * ngx_pagesize, ngx_pagesize);

    pscf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_llm_pool_module);
    if (pscf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    pscf->shm_zone->init = ngx_http_llm_pool_init_zone;
    pscf->shm_zone->data = pscf;

    /*
     * A pool whose keys or servers changed gets a zone of its own; the
     * old keys' state is carried over by name in ngx_http_llm_pool_
     * init_zone().  Workers of the old cycle keep the old zone meanwhile.
     */

    old = ngx_http_llm_pool_old_conf(&name);

    if (old && !ngx_http_llm_pool_same_layout(old, pscf)) {
        pscf->shm_zone->noreuse = 1;
    }

    pscf->old = old;

    return NGX_OK;
}


static ngx_http_llm_pool_srv_conf_t *
ngx_http_llm_pool_old_conf(ngx_str_t *name)
{
    ngx_uint_t        i;
    ngx_shm_zone_t   *zone;
    ngx_list_part_t  *part;

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag == &ngx_http_llm_pool_module
            && zone[i].shm.name.len == name->len
            && ngx_strncmp(zone[i].shm.name.data, name->data, name->len)
               == 0)
        {
            return zone[i].data;
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_llm_pool_same_layout(ngx_http_llm_pool_srv_conf_t *a,
    ngx_http_llm_pool_srv_conf_t *b)
{
    ngx_uint_t                i;
    ngx_http_llm_pool_key_t  *ka, *kb;

    if (a->keys.nelts != b->keys.nelts || a->nservers != b->nservers
        || a->npairs != b->npairs)
    {
        return 0;
    }

    ka = a->keys.elts;
    kb = b->keys.elts;

    for (i = 0; i < a->keys.nelts; i++) {
        if (ka[i].name.len != kb[i].name.len
            || ngx_strncmp(ka[i].name.data, kb[i].name.data, ka[i].name.len)
               != 0)
        {
            return 0;
        }
    }

    for (i = 0; i < a->nservers; i++) {
        if (a->servers[i].name.len != b->servers[i].name.len
            || ngx_strncmp(a->servers[i].name.data, b->servers[i].name.data,
                           a->servers[i].name.len)
               != 0)
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_llm_pool_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_pool_srv_conf_t  *opscf = data;

    u_char                        *p;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_slab_pool_t               *shpool;
    ngx_http_llm_pool_key_t       *key;
    ngx_http_llm_pool_shctx_t     *sh;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    pscf->shpool = shpool;

    if (opscf) {
        /* the same keys and servers: the state stays as it is */

        pscf->sh = opscf->sh;
        pscf->old = NULL;

        /*
         * a reload gives disabled keys another chance, and so does not
         * take them from what other nodes disabled before it
         */

        for (i = 0; i < pscf->sh->nkeys; i++) {
            pscf->sh->keys[i].disabled = 0;
        }

        pscf->sh->epoch = ngx_http_llm_pool_wall();

        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        pscf->sh = shpool->data;
        pscf->old = NULL;
        return NGX_OK;
    }

    len = sizeof(ngx_http_llm_pool_shctx_t)
          + pscf->keys.nelts * sizeof(ngx_http_llm_pool_key_sh_t)
          + pscf->nservers * sizeof(ngx_http_llm_pool_server_sh_t)
          + pscf->npairs * sizeof(int64_t);

    p = ngx_slab_calloc(shpool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sh = (ngx_http_llm_pool_shctx_t *) p;
    p += sizeof(ngx_http_llm_pool_shctx_t);

    sh->nkeys = pscf->keys.nelts;
    sh->nservers = pscf->nservers;
    sh->npairs = pscf->npairs;

    sh->keys = (ngx_http_llm_pool_key_sh_t *) p;
    p += sh->nkeys * sizeof(ngx_http_llm_pool_key_sh_t);

    sh->servers = (ngx_http_llm_pool_server_sh_t *) p;
    p += sh->nservers * sizeof(ngx_http_llm_pool_server_sh_t);

    sh->cw = (int64_t *) p;

    key = pscf->keys.elts;

    for (i = 0; i < sh->nkeys; i++) {
        sh->keys[i].hash = key[i].hash;
    }

    pscf->sh = sh;
    shpool->data = sh;

    /*
     * A node that starts takes the keys the fleet disabled (epoch 0);
     * a reload, which re-enables this node's keys, does not.
     */

    if (pscf->old) {
        ngx_http_llm_pool_carry(pscf, pscf->old);
        sh->epoch = ngx_http_llm_pool_wall();
        pscf->old = NULL;
    }

    len = sizeof(" in llm_pool \"\"") + pscf->name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in llm_pool \"%V\"%Z", &pscf->name);

    return NGX_OK;
}


/* a changed pool: keys that kept their name keep their state */

static void
ngx_http_llm_pool_carry(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_http_llm_pool_srv_conf_t *old)
{
    ngx_uint_t                   i, j, n;
    ngx_http_llm_pool_key_t     *key, *okey;
    ngx_http_llm_pool_shctx_t   *sh, *osh;

    sh = pscf->sh;
    osh = old->sh;

    if (osh == NULL) {
        return;
    }

    key = pscf->keys.elts;
    okey = old->keys.elts;
    n = 0;

    for (i = 0; i < sh->nkeys; i++) {
        for (j = 0; j < old->keys.nelts && j < osh->nkeys; j++) {

            if (okey[j].hash != key[i].hash
                || okey[j].name.len != key[i].name.len
                || ngx_strncmp(okey[j].name.data, key[i].name.data,
                               key[i].name.len)
                   != 0)
            {
                continue;
            }

            sh->keys[i] = osh->keys[j];
            sh->keys[i].disabled = 0;
            n++;
            break;
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "llm_pool \"%V\": %ui of %ui keys keep their state",
                  &pscf->name, n, sh->nkeys);
}


/*
 * 0 when key k cannot be used now (and *until lowered to when it can
 * again, if that is known), else 1..16: how much room it has left, by
 * its own budgets and by what the provider last reported, and how fast
 * it answered lately for the pool's keys' average.
 */

static ngx_uint_t
ngx_http_llm_pool_key_factor(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t k, ngx_msec_t now, ngx_msec_t *until)
{
    uint64_t                     used, left, room;
    ngx_uint_t                   f;
    ngx_http_llm_pool_key_t     *key;
    ngx_http_llm_pool_key_sh_t  *ks;

    key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[k];
    ks = &pscf->sh->keys[k];

    if (ks->disabled) {
        return 0;
    }

    if (ks->cooldown > now) {
        *until = ngx_min(*until, ks->cooldown);
        return 0;
    }

    f = 16;

    if (key->requests.limit) {
        used = ngx_http_llm_pool_window(&ks->req_start, &ks->req_cur,
                                        &ks->req_prev, key->requests.period,
                                        now);

        if (used >= key->requests.limit) {
            *until = ngx_min(*until, ks->req_start + key->requests.period);
            return 0;
        }

        left = key->requests.limit - used;
        f = ngx_min(f, 1 + 15 * left / key->requests.limit);
    }

    if (key->tokens.limit) {
        used = ngx_http_llm_pool_window(&ks->tok_start, &ks->tok_cur,
                                        &ks->tok_prev, key->tokens.period,
                                        now);

        if (used >= key->tokens.limit) {
            *until = ngx_min(*until, ks->tok_start + key->tokens.period);
            return 0;
        }

        left = key->tokens.limit - used;
        f = ngx_min(f, 1 + 15 * left / key->tokens.limit);
    }

    /* the provider's own figures, until the reset it announced */

    if (ks->req_reset > now) {
        if (ks->req_left == 0) {
            *until = ngx_min(*until, ks->req_reset);
            return 0;
        }

        room = ks->req_limit ? 1 + 15 * ks->req_left / ks->req_limit
                             : 1 + ks->req_left;
        f = ngx_min(f, room);
    }

    if (ks->tok_reset > now) {
        if (ks->tok_left == 0) {
            *until = ngx_min(*until, ks->tok_reset);
            return 0;
        }

        if (ks->tok_limit) {
            room = 1 + 15 * ks->tok_left / ks->tok_limit;
            f = ngx_min(f, room);
        }
    }

    f = ngx_min(f, ngx_http_llm_pool_speed(16, ks->latency,
                                           pscf->sh->key_latency));

    return ngx_max(f, 1);
}


/*
 * 0 when server s cannot take a request (down, failed max_fails times
 * within fail_timeout, at max_conns), else 1..4: halved after recent
 * failures, and scaled by the pool's average latency over the server's
 * own when that is slower (never below 1: a slow server still gets a
 * share, so that it is seen again when it gets faster).
 */

static ngx_uint_t
ngx_http_llm_pool_server_factor(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t s, ngx_msec_t now)
{
    ngx_uint_t                      f;
    ngx_http_llm_pool_server_t     *ps;
    ngx_http_llm_pool_server_sh_t  *ss;

    ps = &pscf->servers[s];
    ss = &pscf->sh->servers[s];

    if (ps->down) {
        return 0;
    }

    if (ps->max_fails && ss->fails >= ps->max_fails
        && now - ss->checked <= ps->fail_timeout)
    {
        return 0;
    }

    if (ps->max_conns && ss->inflight >= ps->max_conns) {
        return 0;
    }

    f = 4;

    if (ss->fails) {
        f /= 2;
    }

    return ngx_http_llm_pool_speed(f, ss->latency, pscf->sh->latency);
}


/*
 * f scaled by avg / latency when the latency is clearly above the
 * average: by a quarter, and by more than the few ms that loopback or
 * a busy host add at random (exact spreads stay exact among equals)
 */

static ngx_uint_t
ngx_http_llm_pool_speed(ngx_uint_t f, ngx_msec_t latency, ngx_msec_t avg)
{
    if (avg == 0
        || latency <= avg + avg / 4 + NGX_HTTP_LLM_POOL_LATENCY_NOISE)
    {
        return f;
    }

    f = f * avg / latency;

    return ngx_max(f, 1);
}


static uint64_t
ngx_http_llm_pool_weight(ngx_http_llm_pool_srv_conf_t *pscf, ngx_uint_t i,
    ngx_msec_t now, ngx_msec_t *until)
{
    ngx_uint_t                 sf, kf;
    ngx_http_llm_pool_pair_t  *pair;

    pair = &pscf->pairs[i];

    sf = ngx_http_llm_pool_server_factor(pscf, pair->server, now);
    if (sf == 0) {
        return 0;
    }

    kf = ngx_http_llm_pool_key_factor(pscf, pair->key, now, until);
    if (kf == 0) {
        return 0;
    }

    return (uint64_t) pair->weight * sf * kf;
}


ngx_int_t
ngx_http_llm_pool_state_pick(ngx_http_llm_pool_peer_data_t *pd,
    ngx_uint_t *pair)
{
    ngx_msec_t                     now;
    ngx_uint_t                     i, k, s;
    ngx_http_llm_pool_key_t       *key;
    ngx_http_llm_pool_key_sh_t    *ks;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = pd->conf;
    now = ngx_current_msec;

    ngx_shmtx_lock(&pscf->shpool->mutex);

    if (pscf->keys.nelts == 0) {
        i = ngx_http_llm_pool_least(pd, now);

    } else if (pscf->npairs <= NGX_HTTP_LLM_POOL_SCAN_MAX) {
        i = ngx_http_llm_pool_scan(pd, now);

    } else {
        i = ngx_http_llm_pool_sample(pd, now);
    }

    if (i == NGX_HTTP_LLM_POOL_NONE) {
        ngx_shmtx_unlock(&pscf->shpool->mutex);
        return NGX_BUSY;
    }

    s = pscf->pairs[i].server;
    k = pscf->pairs[i].key;

    pscf->sh->servers[s].inflight++;

    if (now - pscf->sh->servers[s].checked > pscf->servers[s].fail_timeout) {
        pscf->sh->servers[s].checked = now;
    }

    key = NULL;

    if (k != NGX_HTTP_LLM_POOL_NO_KEY) {
        key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[k];
        ks = &pscf->sh->keys[k];

        ks->requests++;

        if (key->requests.limit) {
            ks->req_cur++;
        }
    }

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    if (key && key->requests.limit) {
        ngx_http_llm_pool_sync_event(pscf, NGX_HTTP_LLM_POOL_SYNC_REQ, k, 1,
                                     key->requests.period);
    }

    *pair = i;

    return NGX_OK;
}


/* small pools: smooth weighted round robin over every usable pair */

static ngx_uint_t
ngx_http_llm_pool_scan(ngx_http_llm_pool_peer_data_t *pd, ngx_msec_t now)
{
    int64_t                        total, *cw;
    uint64_t                       w;
    ngx_msec_t                     until;
    ngx_uint_t                     i, best;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = pd->conf;
    cw = pscf->sh->cw;

    best = NGX_HTTP_LLM_POOL_NONE;
    total = 0;
    until = NGX_MAX_INT_T_VALUE;

    for (i = 0; i < pscf->npairs; i++) {

        if (ngx_http_llm_pool_tried(pd, i)) {
            continue;
        }

        w = ngx_http_llm_pool_weight(pscf, i, now, &until);
        if (w == 0) {
            continue;
        }

        cw[i] += w;
        total += w;

        if (best == NGX_HTTP_LLM_POOL_NONE || cw[i] > cw[best]) {
            best = i;
        }
    }

    if (best != NGX_HTTP_LLM_POOL_NONE) {
        cw[best] -= total;
    }

    return best;
}


/*
 * Large pools: draw pairs at random by their configured weight, so that a
 * pick costs the same for ten keys or ten thousand.  A draw with all its
 * room (nothing spent, server healthy) is taken at once; otherwise the
 * better of two usable draws, by room, so that keys near their limit are
 * chosen less often than their weight says.  When a few draws find
 * nothing usable, every pair is looked at.
 */

static ngx_uint_t
ngx_http_llm_pool_sample(ngx_http_llm_pool_peer_data_t *pd, ngx_msec_t now)
{
    uint64_t                       x, w, bw, total;
    ngx_msec_t                     until;
    ngx_uint_t                     i, n, lo, hi, mid, best, found, start;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    static uint64_t                seed;

    pscf = pd->conf;
    n = pscf->npairs;
    total = pscf->cumulative[n - 1];

    if (seed == 0) {
        seed = ((uint64_t) ngx_random() << 32) ^ ngx_random() ^ ngx_pid;
        seed |= 1;
    }

    best = NGX_HTTP_LLM_POOL_NONE;
    bw = 0;
    found = 0;
    until = NGX_MAX_INT_T_VALUE;

    for (i = 0; i < NGX_HTTP_LLM_POOL_PROBES && found < 2; i++) {

        /* xorshift64*: this worker's own sequence, no lock */

        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        x = (seed * 0x2545f4914f6cdd1dULL) % total;

        lo = 0;
        hi = n - 1;

        while (lo < hi) {
            mid = (lo + hi) / 2;

            if (pscf->cumulative[mid] > x) {
                hi = mid;

            } else {
                lo = mid + 1;
            }
        }

        if (ngx_http_llm_pool_tried(pd, lo)) {
            continue;
        }

        /* the draw already follows the weight: compare the room alone */

        w = ngx_http_llm_pool_weight(pscf, lo, now, &until)
            / pscf->pairs[lo].weight;

        if (w == 0) {
            continue;
        }

        if (w == NGX_HTTP_LLM_POOL_ROOM_MAX) {
            return lo;
        }

        found++;

        if (w > bw) {
            best = lo;
            bw = w;
        }
    }

    if (best != NGX_HTTP_LLM_POOL_NONE) {
        return best;
    }

    /* most pairs are out: look at them all, from a random place */

    start = seed % n;

    for (i = 0; i < n; i++) {
        lo = (start + i) % n;

        if (ngx_http_llm_pool_tried(pd, lo)) {
            continue;
        }

        w = ngx_http_llm_pool_weight(pscf, lo, now, &until);

        if (w > bw) {
            best = lo;
            bw = w;
        }
    }

    return best;
}


/*
 * Servers alone (the self-hosted case): the fewest requests in flight
 * across all workers for the weight, among servers that are up; ties
 * go round robin by weight.
 */

static ngx_uint_t
ngx_http_llm_pool_least(ngx_http_llm_pool_peer_data_t *pd, ngx_msec_t now)
{
    int64_t                        total, *cw;
    uint64_t                       w, bw, bn, n;
    ngx_uint_t                     i, best;
    ngx_http_llm_pool_srv_conf_t  *pscf;

    pscf = pd->conf;
    cw = pscf->sh->cw;

    best = NGX_HTTP_LLM_POOL_NONE;
    bw = 1;
    bn = 0;

    for (i = 0; i < pscf->npairs; i++) {

        if (ngx_http_llm_pool_tried(pd, i)) {
            continue;
        }

        w = pscf->pairs[i].weight
            * ngx_http_llm_pool_server_factor(pscf, i, now);
        if (w == 0) {
            continue;
        }

        n = pscf->sh->servers[i].inflight;

        if (best == NGX_HTTP_LLM_POOL_NONE || n * bw < bn * w) {
            best = i;
            bw = w;
            bn = n;
        }
    }

    if (best == NGX_HTTP_LLM_POOL_NONE) {
        return best;
    }

    /* round robin among the equally loaded */

    total = 0;

    for (i = best; i < pscf->npairs; i++) {

        if (ngx_http_llm_pool_tried(pd, i)) {
            continue;
        }

        w = pscf->pairs[i].weight
            * ngx_http_llm_pool_server_factor(pscf, i, now);
        n = pscf->sh->servers[i].inflight;

        if (w == 0 || n * bw != bn * w) {
            continue;
        }

        cw[i] += w;
        total += w;

        if (cw[i] > cw[best]) {
            best = i;
        }
    }

    cw[best] -= total;

    return best;
}


/*
 * The outcome of an attempt on pair "current": 429 cools the key down
 * (the later deadline wins), 401/402/403 disable it, 5xx and errors count
 * against the server as max_fails/fail_timeout do; the provider's
 * x-ratelimit-* figures are kept as the key's headroom.  With "release",
 * the attempt is over and leaves the server's in-flight count.
 */

void
ngx_http_llm_pool_state_done(ngx_http_llm_pool_peer_data_t *pd,
    ngx_http_llm_pool_outcome_t *o, ngx_uint_t release)
{
    ngx_msec_t                      now, until, was;
    ngx_uint_t                      k, s, status, disabled, failed;
    ngx_http_llm_pool_key_t        *key;
    ngx_http_llm_pool_key_sh_t     *ks;
    ngx_http_llm_pool_server_t     *ps;
    ngx_http_llm_pool_server_sh_t  *ss;
    ngx_http_llm_pool_srv_conf_t   *pscf;

    pscf = pd->conf;
    now = ngx_current_msec;

    s = pscf->pairs[pd->current].server;
    k = pscf->pairs[pd->current].key;
    ps = &pscf->servers[s];
    ss = &pscf->sh->servers[s];
    ks = (k == NGX_HTTP_LLM_POOL_NO_KEY) ? NULL : &pscf->sh->keys[k];

    until = 0;
    was = 0;
    disabled = 0;
    failed = 0;
    status = o ? o->status : 0;

    ngx_shmtx_lock(&pscf->shpool->mutex);

    if (release && ss->inflight) {
        ss->inflight--;
    }

    if (o == NULL) {
        goto done;
    }

    if (status >= 500 || (status == 0 && o->failed)) {
        ss->fails++;
        ss->accessed = now;
        ss->checked = now;
        failed = ss->fails;

        if (ks) {
            ks->failures++;
        }

    } else if (status && ss->accessed < ss->checked) {
        ss->fails = 0;
    }

    if (o->latency) {
        ss->latency = ss->latency ? (3 * ss->latency + o->latency) / 4
                                  : o->latency;
        pscf->sh->latency = pscf->sh->latency
                            ? (7 * pscf->sh->latency + o->latency) / 8
                            : o->latency;
    }

    if (ks == NULL) {
        goto done;
    }

    /* a key's latency: of answers that did the work, not of refusals */

    if (o->latency && status >= 200 && status < 400) {
        ks->latency = ks->latency ? (3 * ks->latency + o->latency) / 4
                                  : o->latency;
        pscf->sh->key_latency = pscf->sh->key_latency
                                ? (7 * pscf->sh->key_latency + o->latency)
                                  / 8
                                : o->latency;
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        ks->failures++;
        until = now + (o->retry ? o->retry : pscf->cooldown);
        was = ks->cooldown;

        if (until > ks->cooldown) {
            ks->cooldown = until;
        }

        if (until > ks->own) {
            ks->own = until;
        }

    } else if (status == NGX_HTTP_UNAUTHORIZED || status == 402
               || status == NGX_HTTP_FORBIDDEN)
    {
        ks->failures++;

        if (!ks->disabled) {
            ks->disabled = now;
            disabled = 1;
        }
    }

    if (o->req_known) {
        ks->req_left = o->req_left;
        ks->req_limit = o->req_limit;
        ks->req_reset = now + ngx_max(o->req_reset, 1);
    }

    if (o->tok_known) {
        ks->tok_left = o->tok_left;
        ks->tok_limit = o->tok_limit;
        ks->tok_reset = now + ngx_max(o->tok_reset, 1);
    }

done:

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    if (ks == NULL) {
        key = NULL;

    } else {
        key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[k];
    }

    if (until > was) {
        ngx_http_llm_pool_sync_event(pscf, NGX_HTTP_LLM_POOL_SYNC_COOL, k,
                                     until - now, 0);
    }

    if (disabled) {
        ngx_http_llm_pool_sync_event(pscf, NGX_HTTP_LLM_POOL_SYNC_OFF, k, 0,
                                     0);
    }

    /* once per event, by the worker that saw it */

    if (until && was <= now) {
        ngx_log_error(NGX_LOG_WARN, pd->request->connection->log, 0,
                      "llm_pool \"%V\": key \"%V\" cools down for %Mms "
                      "after a 429", &pscf->name, &key->name, until - now);
    }

    if (disabled) {
        ngx_log_error(NGX_LOG_WARN, pd->request->connection->log, 0,
                      "llm_pool \"%V\": key \"%V\" disabled until reload: "
                      "the provider answered %ui", &pscf->name, &key->name,
                      status);
    }

    if (ps->max_fails && failed == ps->max_fails) {
        ngx_log_error(NGX_LOG_WARN, pd->request->connection->log, 0,
                      "llm_pool \"%V\": server %V failed %ui times, "
                      "left out for %Mms", &pscf->name, &ps->name, failed,
                      ps->fail_timeout);
    }
}


void
ngx_http_llm_pool_state_tokens(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t k, uint64_t tokens)
{
    ngx_http_llm_pool_key_t     *key;
    ngx_http_llm_pool_key_sh_t  *ks;

    key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[k];
    ks = &pscf->sh->keys[k];

    if (key->tokens.limit == 0) {
        return;
    }

    ngx_shmtx_lock(&pscf->shpool->mutex);

    (void) ngx_http_llm_pool_window(&ks->tok_start, &ks->tok_cur,
                                    &ks->tok_prev, key->tokens.period,
                                    ngx_current_msec);
    ks->tok_cur += tokens;

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    ngx_http_llm_pool_sync_event(pscf, NGX_HTTP_LLM_POOL_SYNC_TOK, k, tokens,
                                 key->tokens.period);
}


/*
 * When no key can be used: the soonest moment one can again (for
 * Retry-After); 0 when one can be used now, or none ever will (all
 * disabled), or the pool has no keys.
 */

ngx_msec_t
ngx_http_llm_pool_state_soonest(ngx_http_llm_pool_srv_conf_t *pscf)
{
    ngx_msec_t  now, until;
    ngx_uint_t  k;

    if (pscf->keys.nelts == 0) {
        return 0;
    }

    now = ngx_current_msec;
    until = NGX_MAX_INT_T_VALUE;

    ngx_shmtx_lock(&pscf->shpool->mutex);

    for (k = 0; k < pscf->keys.nelts; k++) {
        if (ngx_http_llm_pool_key_factor(pscf, k, now, &until)) {
            until = 0;
            break;
        }
    }

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    return (until == (ngx_msec_t) NGX_MAX_INT_T_VALUE) ? 0 : until;
}


/*
 * Two fixed windows make a sliding estimate: the current window's count
 * plus the share of the previous one that the sliding period still
 * covers.  A merge may move the windows' start (to Redis's), so times
 * are compared as differences.
 */

static uint64_t
ngx_http_llm_pool_window(ngx_msec_t *start, uint64_t *cur, uint64_t *prev,
    ngx_msec_t period, ngx_msec_t now)
{
    ngx_msec_t  n, elapsed;

    if (*start == 0) {
        *start = now - now % period;
    }

    elapsed = now - *start;

    if (elapsed >= period) {
        n = elapsed / period;

        *prev = (n == 1) ? *cur : 0;
        *cur = 0;
        *start += n * period;
        elapsed -= n * period;
    }

    return *cur + *prev * (period - elapsed) / period;
}


/*
 * Claims the next pull from Redis for this worker, unless another
 * worker of the node pulled less than half an interval ago (every
 * worker's timer runs once an interval, so the node pulls at least once
 * an interval, whatever the timers' phases); gives the keys
 * of this node's own cooldowns that still run, and the ms they have
 * left.
 */

ngx_int_t
ngx_http_llm_pool_state_claim(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t *keys, ngx_msec_t *left, ngx_uint_t max, ngx_uint_t *n)
{
    ngx_msec_t                   now;
    ngx_uint_t                   k, m;
    ngx_http_llm_pool_shctx_t   *sh;

    sh = pscf->sh;
    now = ngx_current_msec;
    m = 0;

    ngx_shmtx_lock(&pscf->shpool->mutex);

    if (sh->synced && now - sh->synced < pscf->sync / 2) {
        ngx_shmtx_unlock(&pscf->shpool->mutex);
        return NGX_DECLINED;
    }

    sh->synced = now;

    for (k = 0; k < sh->nkeys && m < max; k++) {
        if (sh->keys[k].own > now && sh->keys[k].cooldown > now) {
            keys[m] = k;
            left[m] = sh->keys[k].own - now;
            m++;
        }
    }

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    *n = m;

    return NGX_OK;
}


/*
 * What Redis holds about the fleet's use of the keys, as of Redis's
 * clock "rnow": a cooldown keeps the later deadline; a key disabled
 * elsewhere after this node last enabled its keys is disabled here; a
 * budget's windows take Redis's boundaries and at least its counts
 * (this node's own attempts are in them, but may still be on their way).
 */

void
ngx_http_llm_pool_state_merge(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_http_llm_pool_remote_t *rm, ngx_uint_t n, uint64_t rnow)
{
    uint64_t                     wall;
    ngx_msec_t                   now, until;
    ngx_uint_t                   i;
    ngx_http_llm_pool_key_t     *key;
    ngx_http_llm_pool_key_sh_t  *ks;

    now = ngx_current_msec;
    wall = ngx_http_llm_pool_wall();

    ngx_shmtx_lock(&pscf->shpool->mutex);

    for (i = 0; i < n; i++) {
        key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[rm[i].key];
        ks = &pscf->sh->keys[rm[i].key];

        switch (rm[i].kind) {

        case NGX_HTTP_LLM_POOL_SYNC_COOL:
            until = now + rm[i].a;
            rm[i].cur = 0;

            /* a few ms either way is the round trip, not news */

            if (until > ks->cooldown + 100) {
                rm[i].cur = (ks->cooldown <= now);
                ks->cooldown = until;
            }

            break;

        case NGX_HTTP_LLM_POOL_SYNC_OFF:
            rm[i].cur = 0;

            if (!ks->disabled && wall >= rm[i].a
                && wall - rm[i].a >= pscf->sh->epoch)
            {
                ks->disabled = now ? now : 1;
                rm[i].cur = 1;
            }

            break;

        case NGX_HTTP_LLM_POOL_SYNC_REQ:
            if (key->requests.limit && key->requests.period == rm[i].a) {
                ngx_http_llm_pool_window_merge(&ks->req_start, &ks->req_cur,
                                               &ks->req_prev,
                                               key->requests.period, now,
                                               rnow, &rm[i]);
            }

            rm[i].cur = 0;
            break;

        default: /* NGX_HTTP_LLM_POOL_SYNC_TOK */
            if (key->tokens.limit && key->tokens.period == rm[i].a) {
                ngx_http_llm_pool_window_merge(&ks->tok_start, &ks->tok_cur,
                                               &ks->tok_prev,
                                               key->tokens.period, now,
                                               rnow, &rm[i]);
            }

            rm[i].cur = 0;
            break;
        }
    }

    ngx_shmtx_unlock(&pscf->shpool->mutex);

    /* what this node did not know yet, once, by name */

    for (i = 0; i < n; i++) {
        if (!rm[i].cur) {
            continue;
        }

        key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[rm[i].key];

        if (rm[i].kind == NGX_HTTP_LLM_POOL_SYNC_COOL) {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "llm_pool \"%V\": key \"%V\" cools down for %Mms "
                          "(seen by another node)", &pscf->name, &key->name,
                          (ngx_msec_t) rm[i].a);

        } else {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_pool \"%V\": key \"%V\" disabled until "
                          "reload: the provider refused it on another node",
                          &pscf->name, &key->name);
        }
    }
}


static void
ngx_http_llm_pool_window_merge(ngx_msec_t *start, uint64_t *cur,
    uint64_t *prev, ngx_msec_t period, ngx_msec_t now, uint64_t rnow,
    ngx_http_llm_pool_remote_t *rm)
{
    (void) ngx_http_llm_pool_window(start, cur, prev, period, now);

    *cur = ngx_max(*cur, rm->cur);
    *prev = ngx_max(*prev, rm->prev);
    *start = now - (ngx_msec_t) (rnow % period);
}


static uint64_t
ngx_http_llm_pool_wall(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
