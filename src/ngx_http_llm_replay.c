
/*
 * ngx_llm_gateway: usage counted locally during a Redis outage, replayed.
 *
 * Owns, in each worker, what its zone counted because Redis failed
 * (llm_redis on_error=local), and what Redis was meant to count but
 * never saw (a settle that could not be sent): batches by account,
 * tier and slot, the slot of the tier's shortest window of a minute or
 * more (see ngx_http_llm_replay_slot()) that the usage belongs to, on
 * Redis's clock.  A reservation belongs to the time it was admitted
 * at, and so does the difference its settlement makes: a refund (used
 * below reserved) is negative, and goes to the batch of its
 * reservation's slot even when that batch has gone to Redis already.
 * A worker timer (every second while there are batches)
 * sends each batch to Redis with the replay script of
 * ngx_http_llm_rstore_settle.c, off every request's path, at most
 * NGX_HTTP_LLM_REPLAY_BURST on their way at once: it adds the batch to
 * the slot of its time in each window of the tier (negative amounts are taken
 * back there, never below zero), while that slot is still in the
 * window (usage that has left a window no longer counts there; months
 * count to their month).  A batch is named by the worker and a
 * sequence number, and the script keeps a marker of the names it has
 * added for ten minutes, so a batch whose answer was lost (a timeout)
 * and is sent again is not added twice.  What is counted while a batch
 * is on its way goes into the next one of its slot; a batch that
 * failed is sent again as it was, under its name.
 *
 * Settles (ngx_http_llm_rstore_settle) of requests Redis admitted come
 * here only when Redis cannot have run them: not sent (no
 * connection), never written before their connection failed, or
 * refused with an error Redis gives before it runs a script (OOM,
 * BUSY, LOADING, NOSCRIPT...; not "ERR" or a command's own error, which
 * a script may answer half-way through).  What a settle gives back
 * goes to its reservation's slot, what it adds to the slot of the time
 * it was known.  One that was written and then lost
 * its answer (a timeout, a connection lost) may have been applied,
 * and is not replayed: Redis keeps that request's reservation instead
 * of its usage (never less than it used, more by at most the
 * reservation) until the reservation's slot leaves its windows.  Those
 * are the settles written in the last llm_redis timeout before a
 * failure.
 *
 * Bounded: at most NGX_HTTP_LLM_REPLAY_MAX batches per worker; past
 * it, usage goes to the nearest slot of its account's batches (in the
 * wrong slot, not lost), and that of an account with none is not
 * replayed (logged, once a minute).  A worker that exits (a reload)
 * while Redis answers sends what it has (a tick every 50 ms) and waits
 * for it, at most NGX_HTTP_LLM_REPLAY_DRAIN; what it could not send
 * (Redis not back yet) it leaves in the zone, and a worker of the next
 * generation, which looks there every second, takes it over: a batch
 * on its way goes on under its first worker's name.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_limits.h"
#include "ngx_http_llm_store.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_rstore_int.h"
#include "ngx_http_llm_replay.h"


/* about 200 bytes each, and an account's name */
#define NGX_HTTP_LLM_REPLAY_MAX       65536
#define NGX_HTTP_LLM_REPLAY_INTERVAL  1000

/* batches on their way at once (a tick a second; 50 ms when exiting) */
#define NGX_HTTP_LLM_REPLAY_BURST     256

/* an exiting worker (reload) sends what it has for at most this long */
#define NGX_HTTP_LLM_REPLAY_DRAIN     10000

/* batches by the slots of windows of a minute or more (6 s) */
#define NGX_HTTP_LLM_REPLAY_FINEST    60000

/* how often a worker looks for batches an exiting one left */
#define NGX_HTTP_LLM_REPLAY_ADOPT     1000

/* a burst Redis has taken in full: the next one after this, not a tick */
#define NGX_HTTP_LLM_REPLAY_NEXT      10


typedef struct {
    ngx_rbtree_node_t           node;      /* key: the account's crc32 */
    ngx_queue_t                 queue;
    ngx_http_llm_tier_t        *tier;
    uint64_t                    slot;      /* of the tier's shortest window */
    uint64_t                    at;        /* Redis ms: its first count */
    int64_t                     amount[5]; /* by NGX_HTTP_LLM_DIM_* */

    /* the batch sent, until Redis has confirmed it: sent again as is */
    uint64_t                    id;
    int64_t                     sent[5];
    unsigned                    pending:1;
    ngx_str_t                   account;
    unsigned                    sending:1;
    unsigned                    guessed:1; /* "at" on our clock */

    /* a batch on its way an exiting worker left: not in the tree */
    unsigned                    foreign:1;
    u_char                     *tag;       /* its worker's name */
} ngx_http_llm_replay_t;


/* a batch left in the zone, followed by account, tier name and tag */

typedef struct {
    uint64_t                    at;
    int64_t                     amount[5];
    uint64_t                    id;        /* pending: its name */
    u_short                     account;
    u_short                     tier;
    u_char                      tag;
    u_char                      pending;
    u_char                      guessed;
} ngx_http_llm_replay_parcel_t;


static uint64_t ngx_http_llm_replay_slot(ngx_http_llm_tier_t *tier,
    uint64_t at);
static ngx_http_llm_replay_t *ngx_http_llm_replay_find(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t slot, uint32_t hash,
    ngx_http_llm_replay_t **near);
static ngx_int_t ngx_http_llm_replay_cmp(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint64_t slot, ngx_http_llm_replay_t *b);
static void ngx_http_llm_replay_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_llm_replay_tick(ngx_event_t *ev);
static ngx_uint_t ngx_http_llm_replay_some(int64_t *amount);
static void ngx_http_llm_replay_free(ngx_http_llm_replay_t *b);
static void ngx_http_llm_replay_hold(void);
static void ngx_http_llm_replay_init(void);
static ngx_int_t ngx_http_llm_replay_leave(ngx_shm_zone_t *zone,
    ngx_http_llm_replay_t *b, int64_t *amount, ngx_uint_t pending);
static void ngx_http_llm_replay_adopt(ngx_event_t *ev);
static void ngx_http_llm_replay_take(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_replay_parcel_t *pc, size_t len);


static ngx_uint_t         ngx_http_llm_replay_inited;
static ngx_rbtree_t       ngx_http_llm_replay_tree;
static ngx_rbtree_node_t  ngx_http_llm_replay_sentinel;
static ngx_queue_t        ngx_http_llm_replay_queue;
static ngx_uint_t         ngx_http_llm_replay_count;
static ngx_uint_t         ngx_http_llm_replay_replayed;
static ngx_uint_t         ngx_http_llm_replay_flying;   /* on their way */
static ngx_uint_t         ngx_http_llm_replay_lost;     /* at exit */
static uint64_t           ngx_http_llm_replay_seq;
static ngx_event_t        ngx_http_llm_replay_ev;
static ngx_msec_t         ngx_http_llm_replay_exiting;  /* since then */
static ngx_event_t        ngx_http_llm_replay_adopt_ev;


/*
 * Counted in the zone for "account" under "tier", or meant for Redis
 * and not sent: amount[] by dimension (negative: a refund), belonging
 * to the time "at" (Redis ms): a reservation's admission, which is
 * also the time of the difference its settlement makes.  NGX_DECLINED:
 * not kept (the bound).
 */

ngx_int_t
ngx_http_llm_replay_add(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t at, int64_t *amount)
{
    uint32_t                hash;
    uint64_t                slot;
    ngx_uint_t              i;
    ngx_http_llm_replay_t  *b, *near;

    static uint64_t         logged;

    if (!ngx_http_llm_replay_some(amount)) {
        return NGX_OK;
    }

    ngx_http_llm_replay_init();

    hash = ngx_crc32_short(account->data, account->len);
    slot = ngx_http_llm_replay_slot(tier, at);

    b = ngx_http_llm_replay_find(account, tier, slot, hash, &near);

    if (b == NULL && ngx_http_llm_replay_count >= NGX_HTTP_LLM_REPLAY_MAX) {

        /* in another slot of the account's rather than lost */

        b = near;

        if (b == NULL) {
            if (ngx_current_msec - logged >= 60000 || logged == 0) {
                logged = ngx_current_msec;
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "llm_redis: usage of account \"%V\" counted "
                              "locally will not reach Redis: %ui batches "
                              "wait already", account,
                              ngx_http_llm_replay_count);
            }

            return NGX_DECLINED;
        }
    }

    if (b == NULL) {
        b = ngx_alloc(sizeof(ngx_http_llm_replay_t) + account->len,
                      ngx_cycle->log);
        if (b == NULL) {
            return NGX_DECLINED;
        }

        ngx_memzero(b, sizeof(ngx_http_llm_replay_t));

        b->node.key = hash;
        b->tier = tier;
        b->slot = slot;
        b->at = at;
        b->guessed = !ngx_http_llm_redis_skew_known;
        b->account.data = (u_char *) (b + 1);
        b->account.len = account->len;
        ngx_memcpy(b->account.data, account->data, account->len);

        ngx_rbtree_insert(&ngx_http_llm_replay_tree, &b->node);
        ngx_queue_insert_tail(&ngx_http_llm_replay_queue, &b->queue);
        ngx_http_llm_replay_count++;
    }

    for (i = 0; i < 5; i++) {
        b->amount[i] += amount[i];
    }

    if (!ngx_http_llm_replay_ev.timer_set) {
        ngx_add_timer(&ngx_http_llm_replay_ev, NGX_HTTP_LLM_REPLAY_INTERVAL);
    }

    ngx_http_llm_replay_hold();

    return NGX_OK;
}


static void
ngx_http_llm_replay_init(void)
{
    if (ngx_http_llm_replay_inited) {
        return;
    }

    ngx_http_llm_replay_inited = 1;

    ngx_rbtree_init(&ngx_http_llm_replay_tree, &ngx_http_llm_replay_sentinel,
                    ngx_http_llm_replay_insert_value);
    ngx_queue_init(&ngx_http_llm_replay_queue);

    ngx_http_llm_replay_ev.handler = ngx_http_llm_replay_tick;
    ngx_http_llm_replay_ev.data = &ngx_http_llm_replay_ev;
    ngx_http_llm_replay_ev.log = ngx_cycle->log;
    ngx_http_llm_replay_ev.cancelable = 1;
}


/* a worker with llm_redis looks every second for what others left */

ngx_int_t
ngx_http_llm_replay_init_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_main_conf_t  *lmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_gateway_module);

    if (lmcf == NULL || lmcf->redis == NULL || lmcf->shm_zone == NULL
        || lmcf->gateways == 0)
    {
        return NGX_OK;
    }

    ngx_http_llm_replay_adopt_ev.handler = ngx_http_llm_replay_adopt;
    ngx_http_llm_replay_adopt_ev.data = lmcf;
    ngx_http_llm_replay_adopt_ev.log = cycle->log;
    ngx_http_llm_replay_adopt_ev.cancelable = 1;

    ngx_add_timer(&ngx_http_llm_replay_adopt_ev, NGX_HTTP_LLM_REPLAY_ADOPT);

    return NGX_OK;
}


/*
 * nginx stops (the workers are gone): batches still in the zone, which
 * no worker will replay, go with it; the operator hears of it.
 */

void
ngx_http_llm_replay_exit_master(ngx_cycle_t *cycle)
{
    ngx_uint_t                 n;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_gateway_module);

    if (lmcf == NULL || !lmcf->redis || lmcf->shm_zone == NULL) {
        return;
    }

    n = ngx_http_llm_store_parcels(lmcf->shm_zone);

    if (n) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "llm_redis: %ui batches of usage counted locally "
                      "during a Redis outage are lost: nginx stopped "
                      "before Redis came back", n);
    }
}


/*
 * The worker exits (after its Redis connections have closed, so no
 * batch is on its way): what it could not send goes to the zone.
 */

void
ngx_http_llm_replay_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_http_llm_replay_t     *b;
    ngx_http_llm_main_conf_t  *lmcf;

    if (!ngx_http_llm_replay_inited || ngx_http_llm_replay_count == 0) {
        return;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_gateway_module);

    if (lmcf == NULL || lmcf->shm_zone == NULL) {
        return;
    }

    n = 0;

    for (q = ngx_queue_head(&ngx_http_llm_replay_queue);
         q != ngx_queue_sentinel(&ngx_http_llm_replay_queue);
         q = ngx_queue_next(q))
    {
        b = ngx_queue_data(q, ngx_http_llm_replay_t, queue);

        if (b->pending) {
            n += (ngx_http_llm_replay_leave(lmcf->shm_zone, b, b->sent, 1)
                  == NGX_OK);
        }

        if (ngx_http_llm_replay_some(b->amount)) {
            n += (ngx_http_llm_replay_leave(lmcf->shm_zone, b, b->amount, 0)
                  == NGX_OK);
        }
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "llm_redis: %ui batches of usage counted locally are "
                  "left in llm_zone for the workers of a reload to replay",
                  n);

    if (ngx_http_llm_replay_lost) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "llm_redis: %ui batches of usage counted locally "
                      "will not reach Redis: llm_zone is full and "
                      "every entry is busy",
                      ngx_http_llm_replay_lost);
    }
}


static ngx_int_t
ngx_http_llm_replay_leave(ngx_shm_zone_t *zone, ngx_http_llm_replay_t *b,
    int64_t *amount, ngx_uint_t pending)
{
    u_char                        *p, *tag;
    ngx_http_llm_replay_parcel_t  *pc;
    uint64_t                       buf[(sizeof(ngx_http_llm_replay_parcel_t)
                                        + NGX_HTTP_LLM_ACCOUNT_MAX + 256)
                                       / 8];

    tag = b->tag ? b->tag : ngx_http_llm_lease_prefix;

    pc = (ngx_http_llm_replay_parcel_t *) buf;

    pc->at = b->at;
    ngx_memcpy(pc->amount, amount, sizeof(pc->amount));
    pc->id = b->id;
    pc->account = (u_short) ngx_min(b->account.len, NGX_HTTP_LLM_ACCOUNT_MAX);
    pc->tier = (u_short) ngx_min(b->tier->name.len, 128);
    pc->tag = (u_char) ngx_strlen(tag);
    pc->pending = (u_char) pending;
    pc->guessed = b->guessed;

    p = (u_char *) (pc + 1);
    p = ngx_cpymem(p, b->account.data, pc->account);
    p = ngx_cpymem(p, b->tier->name.data, pc->tier);
    p = ngx_cpymem(p, tag, pc->tag);

    if (ngx_http_llm_store_leave(zone, pc, p - (u_char *) pc) != NGX_OK) {

        /* the first by name, all of them in a sum at the end */

        if (ngx_http_llm_replay_lost++ == 0) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_redis: usage of account \"%V\" counted "
                          "locally will not reach Redis: llm_zone is full "
                          "and every entry is busy",
                          &b->account);
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_llm_replay_adopt(ngx_event_t *ev)
{
    ngx_http_llm_main_conf_t *lmcf = ev->data;

    void    *pc;
    size_t   len;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    while ((pc = ngx_http_llm_store_take(lmcf->shm_zone, &len)) != NULL) {
        ngx_http_llm_replay_take(lmcf, pc, len);
        ngx_free(pc);
    }

    ngx_add_timer(ev, NGX_HTTP_LLM_REPLAY_ADOPT);
}


static void
ngx_http_llm_replay_take(ngx_http_llm_main_conf_t *lmcf,
    ngx_http_llm_replay_parcel_t *pc, size_t len)
{
    u_char                 *p;
    uint64_t                at;
    ngx_str_t               account, name;
    ngx_http_llm_tier_t    *tier;
    ngx_http_llm_replay_t  *b;

    if (len < sizeof(ngx_http_llm_replay_parcel_t)
        || len != sizeof(ngx_http_llm_replay_parcel_t) + pc->account
                  + pc->tier + pc->tag)
    {
        return;
    }

    p = (u_char *) (pc + 1);

    account.data = p;
    account.len = pc->account;
    name.data = p + pc->account;
    name.len = pc->tier;

    tier = ngx_http_llm_tier_find(lmcf, &name);

    if (tier == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llm_redis: usage of account \"%V\" counted locally "
                      "will not reach Redis: its tier \"%V\" is gone",
                      &account, &name);
        return;
    }

    at = pc->at;

    if (!pc->pending) {
        if (pc->guessed && ngx_http_llm_redis_skew_known) {
            at += ngx_http_llm_redis_skew;
        }

        (void) ngx_http_llm_replay_add(&account, tier, at, pc->amount);
        return;
    }

    /* on its way already: sent again as it was, under its name */

    ngx_http_llm_replay_init();

    b = ngx_alloc(sizeof(ngx_http_llm_replay_t) + account.len + pc->tag + 1,
                  ngx_cycle->log);
    if (b == NULL) {
        return;
    }

    ngx_memzero(b, sizeof(ngx_http_llm_replay_t));

    b->tier = tier;
    b->at = at;
    b->id = pc->id;
    ngx_memcpy(b->sent, pc->amount, sizeof(b->sent));
    b->pending = 1;
    b->foreign = 1;
    b->account.data = (u_char *) (b + 1);
    b->account.len = account.len;
    ngx_memcpy(b->account.data, account.data, account.len);
    b->tag = b->account.data + account.len;
    *ngx_cpymem(b->tag, p + pc->account + pc->tier, pc->tag) = '\0';

    ngx_queue_insert_tail(&ngx_http_llm_replay_queue, &b->queue);
    ngx_http_llm_replay_count++;

    if (!ngx_http_llm_replay_ev.timer_set) {
        ngx_add_timer(&ngx_http_llm_replay_ev, NGX_HTTP_LLM_REPLAY_INTERVAL);
    }

    ngx_http_llm_replay_hold();
}


/*
 * The slot of "at" in the tier's shortest sliding window of a minute or
 * more (a tenth of its period, as Redis counts), else in its shortest
 * (a tier of seconds alone), else its month number: the windows of a
 * minute or more count the whole batch in one of their own slots.  A
 * window of seconds gets it at the time of the batch's first count;
 * by the time Redis is back, little of an outage is still in one.
 */

static uint64_t
ngx_http_llm_replay_slot(ngx_http_llm_tier_t *tier, uint64_t at)
{
    ngx_tm_t                     tm;
    ngx_msec_t                   period, shortest;
    ngx_uint_t                   i;
    ngx_http_llm_window_conf_t  *wc;

    wc = tier->windows.elts;
    period = 0;
    shortest = 0;

    for (i = 0; i < tier->windows.nelts; i++) {
        if (wc[i].period == 0) {
            continue;
        }

        if (shortest == 0 || wc[i].period < shortest) {
            shortest = wc[i].period;
        }

        if (wc[i].period >= NGX_HTTP_LLM_REPLAY_FINEST
            && (period == 0 || wc[i].period < period))
        {
            period = wc[i].period;
        }
    }

    if (period == 0) {
        period = shortest;
    }

    if (period >= 10) {
        return at / (period / 10);
    }

    ngx_gmtime((time_t) (at / 1000), &tm);

    return (uint64_t) ((tm.ngx_tm_year - 1970) * 12 + tm.ngx_tm_mon - 1);
}


/* Redis has answered a batch (ok), or it could not be told */

void
ngx_http_llm_replay_done(void *batch, ngx_uint_t ok)
{
    ngx_http_llm_replay_t *b = batch;

    b->sending = 0;
    ngx_http_llm_replay_flying--;

    if (!ok) {
        /* sent again later, as it was, under the same name */
        return;
    }

    b->pending = 0;
    ngx_http_llm_replay_replayed++;

    /* what was counted meanwhile is the next batch */

    if (!ngx_http_llm_replay_some(b->amount)) {
        ngx_http_llm_replay_free(b);

        if (ngx_http_llm_replay_count == 0) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "llm_redis: usage counted locally during the "
                          "outage is in Redis now (%ui batches)",
                          ngx_http_llm_replay_replayed);

            ngx_http_llm_replay_replayed = 0;
            ngx_http_llm_replay_hold();
            return;
        }
    }

    /*
     * the whole burst is in: Redis keeps up, the next one goes now
     * rather than at the next tick (one burst a second drained 256
     * batches a second, fewer than many accounts make in an outage)
     */

    if (ngx_http_llm_replay_flying == 0) {
        ngx_add_timer(&ngx_http_llm_replay_ev, NGX_HTTP_LLM_REPLAY_NEXT);
    }
}


/*
 * While there are batches, the timer holds a worker that exits (a
 * reload) until its next tick, which sends all of them if Redis
 * answers and holds the worker until they are in, for at most
 * NGX_HTTP_LLM_REPLAY_DRAIN; if Redis fails, the worker goes, and the
 * batches with it.
 */

static void
ngx_http_llm_replay_hold(void)
{
    ngx_http_llm_replay_ev.cancelable =
        !(ngx_http_llm_replay_count
          && (ngx_http_llm_replay_exiting == 0
              || (ngx_http_llm_redis_up()
                  && ngx_current_msec - ngx_http_llm_replay_exiting
                     < NGX_HTTP_LLM_REPLAY_DRAIN)));
}


static void
ngx_http_llm_replay_tick(ngx_event_t *ev)
{
    ngx_uint_t              n;
    ngx_queue_t            *q, *next;
    ngx_http_llm_replay_t  *b;

    /*
     * at most NGX_HTTP_LLM_REPLAY_BURST on their way at once: more,
     * and the last would wait in Redis past llm_redis timeout, which
     * closes the connection with all of them
     */

    n = 0;

    if (ngx_exiting && ngx_http_llm_replay_exiting == 0) {
        /* a reload: what is left goes faster, while the worker may */
        ngx_http_llm_replay_exiting = ngx_current_msec;
    }

    for (q = ngx_queue_head(&ngx_http_llm_replay_queue);
         q != ngx_queue_sentinel(&ngx_http_llm_replay_queue)
         && n < NGX_HTTP_LLM_REPLAY_BURST;
         q = next)
    {
        next = ngx_queue_next(q);
        b = ngx_queue_data(q, ngx_http_llm_replay_t, queue);

        if (b->sending) {
            n++;
            continue;
        }

        if (b->guessed) {

            /*
             * counted before this worker read Redis's clock (it started
             * during the outage): its time goes on Redis's clock once
             * the connection's TIME has told the skew
             */

            if (!ngx_http_llm_redis_skew_known) {
                continue;
            }

            b->at += ngx_http_llm_redis_skew;
            b->guessed = 0;
        }

        if (!b->pending) {

            if (!ngx_http_llm_replay_some(b->amount)) {
                /* what was added has been taken back: nothing to send */
                ngx_http_llm_replay_free(b);
                continue;
            }

            /* a new batch: what was counted until now */

            ngx_memcpy(b->sent, b->amount, sizeof(b->sent));
            ngx_memzero(b->amount, sizeof(b->amount));
            b->id = ++ngx_http_llm_replay_seq;
            b->pending = 1;
        }

        /* counted first: its answer may come before the call returns */

        b->sending = 1;
        ngx_http_llm_replay_flying++;

        if (ngx_http_llm_rstore_replay(&b->account, b->tier, b->at, b->sent,
                                       b->tag, b->id, b)
            != NGX_OK)
        {
            /* no connection: the next tick tries again */
            b->sending = 0;
            ngx_http_llm_replay_flying--;
            break;
        }

        n++;

        /* the others wait their turn behind it */

        ngx_queue_remove(&b->queue);
        ngx_queue_insert_tail(&ngx_http_llm_replay_queue, &b->queue);
    }

    ngx_http_llm_replay_hold();

    if (ngx_http_llm_replay_count && !ev->timer_set) {
        ngx_add_timer(ev, ngx_exiting ? NGX_HTTP_LLM_REPLAY_INTERVAL / 20
                                      : NGX_HTTP_LLM_REPLAY_INTERVAL);
    }
}


static ngx_uint_t
ngx_http_llm_replay_some(int64_t *amount)
{
    ngx_uint_t  i;

    for (i = 0; i < 5; i++) {
        if (amount[i] != 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * The batch of (account, tier, slot), or NULL and in "near" the batch
 * of the same account and tier with the nearest slot, if any: both
 * neighbours of a key that is not in a search tree are on its path.
 */

static ngx_http_llm_replay_t *
ngx_http_llm_replay_find(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t slot, uint32_t hash, ngx_http_llm_replay_t **near)
{
    uint64_t                d, best;
    ngx_int_t               rc;
    ngx_rbtree_node_t      *node, *sentinel;
    ngx_http_llm_replay_t  *b;

    *near = NULL;
    best = 0;

    node = ngx_http_llm_replay_tree.root;
    sentinel = ngx_http_llm_replay_tree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        b = (ngx_http_llm_replay_t *) node;

        rc = ngx_http_llm_replay_cmp(account, tier, slot, b);

        if (rc == 0) {
            return b;
        }

        if (b->tier == tier
            && ngx_memn2cmp(account->data, b->account.data, account->len,
                            b->account.len)
               == 0)
        {
            d = (slot > b->slot) ? slot - b->slot : b->slot - slot;

            if (*near == NULL || d < best) {
                *near = b;
                best = d;
            }
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* the order of batches with one hash: account, tier, slot */

static ngx_int_t
ngx_http_llm_replay_cmp(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint64_t slot, ngx_http_llm_replay_t *b)
{
    ngx_int_t  rc;

    rc = ngx_memn2cmp(account->data, b->account.data, account->len,
                      b->account.len);

    if (rc != 0) {
        return rc;
    }

    if (tier != b->tier) {
        return (tier < b->tier) ? -1 : 1;
    }

    if (slot != b->slot) {
        return (slot < b->slot) ? -1 : 1;
    }

    return 0;
}


static void
ngx_http_llm_replay_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t     **p;
    ngx_http_llm_replay_t  *b;

    b = (ngx_http_llm_replay_t *) node;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (ngx_http_llm_replay_cmp(&b->account, b->tier, b->slot,
                                         (ngx_http_llm_replay_t *) temp)
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


static void
ngx_http_llm_replay_free(ngx_http_llm_replay_t *b)
{
    if (!b->foreign) {
        ngx_rbtree_delete(&ngx_http_llm_replay_tree, &b->node);
    }

    ngx_queue_remove(&b->queue);
    ngx_free(b);
    ngx_http_llm_replay_count--;
}
