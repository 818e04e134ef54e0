
/*
 * ngx_llm_gateway: usage counted locally during a Redis outage, replayed.
 *
 * Owns, in each worker, what its zone counted because Redis failed
 * (llm_redis on_error=local): one batch per account and tier, the sum
 * by dimension of the reservations admitted and of their settlements,
 * stamped with the time of the last one.  A worker timer (every second
 * while there are batches, cancelable) sends each batch to Redis with
 * the replay script of ngx_http_llm_rstore.c, off every request's path:
 * it adds the batch to the slot of its time in each window of the tier,
 * while that slot is still in the window (usage that has left a window
 * no longer counts there; months count to their month).  A batch is
 * named by the worker and a sequence number, and the script keeps a
 * marker of the names it has added for ten minutes, so a batch whose
 * answer was lost (a timeout) and is sent again is not added twice.
 * What is counted while a batch is on its way goes into the next one;
 * a batch that failed is sent again as it was, under its name.
 *
 * Bounded: at most NGX_HTTP_LLM_REPLAY_MAX batches per worker; usage
 * of more accounts is not replayed (logged, once a minute).  A worker
 * that exits before Redis is back takes its batches with it.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_rstore.h"
#include "ngx_http_llm_replay.h"


#define NGX_HTTP_LLM_REPLAY_MAX       4096
#define NGX_HTTP_LLM_REPLAY_INTERVAL  1000

/* batches sent per tick: Redis coming back is not flooded */
#define NGX_HTTP_LLM_REPLAY_BURST     64


typedef struct {
    ngx_rbtree_node_t           node;      /* key: the account's crc32 */
    ngx_queue_t                 queue;
    ngx_http_llm_tier_t        *tier;
    uint64_t                    wall;      /* the last count, ms */
    int64_t                     amount[5]; /* by NGX_HTTP_LLM_DIM_* */

    /* the batch sent, until Redis has confirmed it: sent again as is */
    uint64_t                    id;
    uint64_t                    sent_wall;
    int64_t                     sent[5];
    unsigned                    pending:1;
    ngx_str_t                   account;
    unsigned                    sending:1;
} ngx_http_llm_replay_t;


static ngx_http_llm_replay_t *ngx_http_llm_replay_find(ngx_str_t *account,
    ngx_http_llm_tier_t *tier, uint32_t hash);
static void ngx_http_llm_replay_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_llm_replay_tick(ngx_event_t *ev);
static void ngx_http_llm_replay_free(ngx_http_llm_replay_t *b);


static ngx_uint_t         ngx_http_llm_replay_inited;
static ngx_rbtree_t       ngx_http_llm_replay_tree;
static ngx_rbtree_node_t  ngx_http_llm_replay_sentinel;
static ngx_queue_t        ngx_http_llm_replay_queue;
static ngx_uint_t         ngx_http_llm_replay_count;
static ngx_uint_t         ngx_http_llm_replay_replayed;
static uint64_t           ngx_http_llm_replay_seq;
static ngx_event_t        ngx_http_llm_replay_ev;


/*
 * Counted in the zone for "account" under "tier": amount[] by
 * dimension, a reservation (settle 0) or the difference a settlement
 * made to one (settle 1, which keeps the batch's time).
 */

void
ngx_http_llm_replay_add(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    int64_t *amount, ngx_uint_t settle)
{
    uint32_t                hash;
    ngx_uint_t              i;
    ngx_http_llm_replay_t  *b;

    static uint64_t         logged;

    if (!ngx_http_llm_replay_inited) {
        ngx_http_llm_replay_inited = 1;

        ngx_rbtree_init(&ngx_http_llm_replay_tree,
                        &ngx_http_llm_replay_sentinel,
                        ngx_http_llm_replay_insert_value);
        ngx_queue_init(&ngx_http_llm_replay_queue);

        ngx_http_llm_replay_ev.handler = ngx_http_llm_replay_tick;
        ngx_http_llm_replay_ev.data = &ngx_http_llm_replay_ev;
        ngx_http_llm_replay_ev.log = ngx_cycle->log;
        ngx_http_llm_replay_ev.cancelable = 1;
    }

    hash = ngx_crc32_short(account->data, account->len);

    b = ngx_http_llm_replay_find(account, tier, hash);

    if (b == NULL) {

        if (ngx_http_llm_replay_count >= NGX_HTTP_LLM_REPLAY_MAX) {
            if (ngx_current_msec - logged >= 60000 || logged == 0) {
                logged = ngx_current_msec;
                ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                              "llm_redis: usage of account \"%V\" counted "
                              "locally will not reach Redis: %ui accounts "
                              "wait already", account,
                              ngx_http_llm_replay_count);
            }

            return;
        }

        b = ngx_alloc(sizeof(ngx_http_llm_replay_t) + account->len,
                      ngx_cycle->log);
        if (b == NULL) {
            return;
        }

        ngx_memzero(b, sizeof(ngx_http_llm_replay_t));

        b->node.key = hash;
        b->tier = tier;
        b->wall = ngx_http_llm_now();
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

    if (!settle) {
        b->wall = ngx_http_llm_now();
    }

    if (!ngx_http_llm_replay_ev.timer_set) {
        ngx_add_timer(&ngx_http_llm_replay_ev, NGX_HTTP_LLM_REPLAY_INTERVAL);
    }
}


/* Redis has answered a batch (ok), or it could not be told */

void
ngx_http_llm_replay_done(void *batch, ngx_uint_t ok)
{
    ngx_http_llm_replay_t *b = batch;

    ngx_uint_t  i;

    b->sending = 0;

    if (!ok) {
        /* sent again later, as it was, under the same name */
        return;
    }

    b->pending = 0;
    ngx_http_llm_replay_replayed++;

    for (i = 0; i < 5; i++) {
        if (b->amount[i] > 0) {
            /* counted meanwhile: the next batch */
            return;
        }
    }

    ngx_http_llm_replay_free(b);

    if (ngx_http_llm_replay_count == 0) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "llm_redis: usage counted locally during the outage "
                      "is in Redis now (%ui batches)",
                      ngx_http_llm_replay_replayed);

        ngx_http_llm_replay_replayed = 0;
    }
}


static void
ngx_http_llm_replay_tick(ngx_event_t *ev)
{
    ngx_uint_t              i, n, some;
    ngx_queue_t            *q, *next;
    ngx_http_llm_replay_t  *b;

    n = 0;

    for (q = ngx_queue_head(&ngx_http_llm_replay_queue);
         q != ngx_queue_sentinel(&ngx_http_llm_replay_queue)
         && n < NGX_HTTP_LLM_REPLAY_BURST;
         q = next)
    {
        next = ngx_queue_next(q);
        b = ngx_queue_data(q, ngx_http_llm_replay_t, queue);

        if (b->sending) {
            continue;
        }

        if (!b->pending) {
            some = 0;

            for (i = 0; i < 5; i++) {
                if (b->amount[i] > 0) {
                    some = 1;
                }
            }

            if (!some) {
                /* refunds alone: nothing to add */
                ngx_http_llm_replay_free(b);
                continue;
            }

            /* a new batch: what was counted until now */

            ngx_memcpy(b->sent, b->amount, sizeof(b->sent));
            ngx_memzero(b->amount, sizeof(b->amount));
            b->sent_wall = b->wall;
            b->id = ++ngx_http_llm_replay_seq;
            b->pending = 1;
        }

        if (ngx_http_llm_rstore_replay(&b->account, b->tier, b->sent_wall,
                                       b->sent, b->id, b)
            != NGX_OK)
        {
            /* no connection: the next tick tries again */
            break;
        }

        b->sending = 1;
        n++;

        /* the others wait their turn behind it */

        ngx_queue_remove(&b->queue);
        ngx_queue_insert_tail(&ngx_http_llm_replay_queue, &b->queue);
    }

    if (ngx_http_llm_replay_count && !ev->timer_set) {
        ngx_add_timer(ev, NGX_HTTP_LLM_REPLAY_INTERVAL);
    }
}


static ngx_http_llm_replay_t *
ngx_http_llm_replay_find(ngx_str_t *account, ngx_http_llm_tier_t *tier,
    uint32_t hash)
{
    ngx_int_t               rc;
    ngx_rbtree_node_t      *node, *sentinel;
    ngx_http_llm_replay_t  *b;

    node = ngx_http_llm_replay_tree.root;
    sentinel = ngx_http_llm_replay_tree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        b = (ngx_http_llm_replay_t *) node;

        rc = ngx_memn2cmp(account->data, b->account.data, account->len,
                          b->account.len);

        if (rc == 0) {
            if (tier == b->tier) {
                return b;
            }

            rc = (tier < b->tier) ? -1 : 1;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_llm_replay_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_int_t               rc;
    ngx_rbtree_node_t     **p;
    ngx_http_llm_replay_t  *b, *bt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            b = (ngx_http_llm_replay_t *) node;
            bt = (ngx_http_llm_replay_t *) temp;

            rc = ngx_memn2cmp(b->account.data, bt->account.data,
                              b->account.len, bt->account.len);

            if (rc == 0) {
                rc = (b->tier < bt->tier) ? -1 : 1;
            }

            p = (rc < 0) ? &temp->left : &temp->right;
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
    ngx_rbtree_delete(&ngx_http_llm_replay_tree, &b->node);
    ngx_queue_remove(&b->queue);
    ngx_free(b);
    ngx_http_llm_replay_count--;
}
