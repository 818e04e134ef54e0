
/*
 * ngx_llm_gateway: the Redis connection of each worker ("llm_redis").
 *
 * Owns, in every worker (the directive is ngx_http_llm_redis_conf.c's),
 * a small pool of hiredis asynchronous connections driven by nginx's
 * event loop: each hiredis socket is wrapped in an ngx_connection_t
 * whose level-triggered read and write events call
 * redisAsyncHandleRead/Write (hiredis 0.14 reads at most 16 KB per
 * call).  Writes are batched: a command queued from
 * a request posts the write event, so the commands of one loop
 * iteration leave in one write.  Every command carries an nginx timer;
 * when a command has waited llm_redis timeout, the connection is closed
 * (Redis answers in order, so what waits behind it would time out too),
 * every command on it fails at once, and the connection comes back
 * after a backoff of 100 ms doubling to 1 s.  A command sent for a
 * request that has already waited for Redis (a key lookup, then the
 * admission) carries the request's deadline too: the same timer fires
 * then, the caller's "expire" lets the request go on without the
 * answer, and the command stays on its connection until it is answered
 * or times out.  AUTH, SELECT, TIME and SCRIPT LOADs are queued first
 * on every new connection: TIME's answer sets the skew of Redis's clock
 * to ours (a script deadline is on Redis's clock), and the scripts the
 * store and the pools run are in Redis before any EVALSHA (a NOSCRIPT
 * answer, sent again as EVAL, would let a later command of the same
 * account overtake it).  With db=N, what requests send waits here,
 * formatted, until SELECT has answered OK: behind a SELECT that fails
 * (a database out of range) it would run in database 0.  Nothing here
 * ever waits on the network.
 *
 * The worker keeps one health flag: a failure (no connection, timeout,
 * error reply) turns it down, the next good reply (not AUTH's or
 * SELECT's: the handshake may fail yet) turns it up; each switch is
 * logged once, per worker.  Redis's clock as read (the skew) is kept in
 * llm_zone too, for the workers of the next reload.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_store.h"

#include <ngx_sha1.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_HTTP_LLM_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_LLM_REDIS_BACKOFF_MAX  1000

/* scripts loaded on every new connection */
#define NGX_HTTP_LLM_REDIS_PRELOAD_MAX  16

/* the skew is the largest guess of this period and the last */
#define NGX_HTTP_LLM_REDIS_SKEW_PERIOD  10000

#define NGX_HTTP_LLM_CONN_DOWN          0
#define NGX_HTTP_LLM_CONN_CONNECTING    1
#define NGX_HTTP_LLM_CONN_READY         2


typedef struct {
    redisAsyncContext          *ac;         /* NULL: no commands now */
    redisAsyncContext          *live;       /* the context owning "c" */
    ngx_connection_t           *c;
    ngx_uint_t                  state;
    ngx_msec_t                  backoff;
    ngx_event_t                 retry;
    ngx_http_llm_redis_op_t     auth;
    ngx_http_llm_redis_op_t     select;
    ngx_http_llm_redis_op_t     clock;
    ngx_http_llm_redis_op_t     load[NGX_HTTP_LLM_REDIS_PRELOAD_MAX];
    const char                 *why;        /* why it was closed */
    uint64_t                    written;    /* commands up to this seq */
    ngx_queue_t                 pending;    /* commands on it, in order */
    unsigned                    in_write:1;
    unsigned                    in_read:1;  /* hiredis runs callbacks */

    /*
     * SELECT has not answered: a command sent now would run in db 0
     * if it fails (a database out of range), so what is sent waits
     * here, formatted, until it has ("held" ops on "pending")
     */
    unsigned                    selecting:1;
} ngx_http_llm_redis_conn_t;


typedef struct {
    ngx_http_llm_redis_conf_t  *conf;
    ngx_shm_zone_t             *zone;       /* the skew outlives us there */
    ngx_http_llm_redis_conn_t  *conns;
    ngx_uint_t                  next;
    ngx_log_t                  *log;
    ngx_http_llm_redis_op_t    *expiring;   /* in its "expire" */
    ngx_msec_t                  replying;   /* "sent" of the reply's */
    u_char                     *resp;       /* a command in RESP */
    size_t                      resp_size;
    unsigned                    up:1;
    unsigned                    exiting:1;
    unsigned                    timeless:1; /* TIME answered no clock */
} ngx_http_llm_redis_worker_t;


static void ngx_http_llm_redis_connect(ngx_http_llm_redis_conn_t *conn);
static ngx_http_llm_redis_conn_t *ngx_http_llm_redis_pick(
    ngx_http_llm_redis_op_t *op);
static void ngx_http_llm_redis_retry(ngx_event_t *ev);
static void ngx_http_llm_redis_close(ngx_http_llm_redis_conn_t *conn,
    const char *why);
static void ngx_http_llm_redis_release(ngx_http_llm_redis_conn_t *conn);
static void ngx_http_llm_redis_drop_held(ngx_http_llm_redis_conn_t *conn);
static void ngx_http_llm_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_llm_redis_handshake(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_redis_clock(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_redis_loaded(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_redis_callback(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_llm_redis_op_timeout(ngx_event_t *ev);
static ngx_msec_t ngx_http_llm_redis_wait(ngx_http_llm_redis_op_t *op);
static void ngx_http_llm_redis_health(ngx_uint_t ok, const char *why,
    size_t len);
static ngx_uint_t ngx_http_llm_redis_cluster(const char *why, size_t len);
static void ngx_http_llm_redis_read_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_write_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_add_read(void *data);
static void ngx_http_llm_redis_del_read(void *data);
static void ngx_http_llm_redis_add_write(void *data);
static void ngx_http_llm_redis_del_write(void *data);
static void ngx_http_llm_redis_cleanup(void *data);
static u_char *ngx_http_llm_redis_format(int argc, const char **argv,
    const size_t *argvlen, size_t *len);


static ngx_http_llm_redis_worker_t  ngx_http_llm_redis_worker;

/* numbers the commands queued: what "written" of a connection covers */
static uint64_t                     ngx_http_llm_redis_seq;

/* called once Redis's clock is known (the first TIME of the worker's) */
void                              (*ngx_http_llm_redis_clock_known)(void);

/* how long the TIME that made it known waited: its guess's error */
ngx_msec_t                          ngx_http_llm_redis_skew_slack;

/*
 * Redis's clock less this worker's (ms): 0, clocks in step, until the
 * first TIME or script reply says otherwise.
 */
int64_t                             ngx_http_llm_redis_skew;

/* a TIME or script reply has set the skew: until then it is a guess */
ngx_uint_t                          ngx_http_llm_redis_skew_known;

/* the largest guess of the skew in this period, and when it began */
static int64_t                      ngx_http_llm_redis_skew_next;
static ngx_msec_t                   ngx_http_llm_redis_skew_since;

/* ngx_http_llm_redis_preload(): what every new connection loads */
static ngx_http_llm_redis_script_t *ngx_http_llm_redis_preloads[
                                        NGX_HTTP_LLM_REDIS_PRELOAD_MAX];
static ngx_uint_t                   ngx_http_llm_redis_npreloads;

ngx_http_llm_redis_conf_t *
ngx_http_llm_redis_conf(void)
{
    return ngx_http_llm_redis_worker.conf;
}


ngx_int_t
ngx_http_llm_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                  i;
    ngx_http_llm_redis_conf_t  *rc;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_redis_conn_t  *conn;
    ngx_http_llm_redis_worker_t *w;

    /* not in the cache manager and loader */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_gateway_module);

    if (lmcf == NULL || lmcf->redis == NULL
        || (lmcf->gateways == 0 && lmcf->handlers == 0 && lmcf->pools == 0))
    {
        return NGX_OK;
    }

    rc = lmcf->redis;
    w = &ngx_http_llm_redis_worker;

    w->conf = rc;
    w->log = cycle->log;
    w->up = 1;

    /*
     * a reload: the workers before this one have read Redis's clock,
     * so the first admissions carry a deadline on it, also while this
     * worker's connections are coming up (or Redis stalls in their
     * handshake: an admission that waited in vain would run later, and
     * count in Redis what on_error counted too)
     */

    w->zone = lmcf->shm_zone;

    if (w->zone
        && ngx_http_llm_store_skew(w->zone, &ngx_http_llm_redis_skew)
           == NGX_OK)
    {
        ngx_http_llm_redis_skew_known = 1;
        ngx_http_llm_redis_skew_next = ngx_http_llm_redis_skew;
        ngx_http_llm_redis_skew_since = ngx_current_msec;
    }

    w->conns = ngx_pcalloc(cycle->pool,
                           rc->connections
                           * sizeof(ngx_http_llm_redis_conn_t));
    if (w->conns == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rc->connections; i++) {
        ngx_queue_init(&w->conns[i].pending);
    }

    for (i = 0; i < rc->connections; i++) {
        conn = &w->conns[i];

        conn->retry.handler = ngx_http_llm_redis_retry;
        conn->retry.data = conn;
        conn->retry.log = cycle->log;
        conn->retry.cancelable = 1;

        ngx_http_llm_redis_connect(conn);
    }

    return NGX_OK;
}


void
ngx_http_llm_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    if (w->conf == NULL) {
        return;
    }

    w->exiting = 1;

    for (i = 0; i < w->conf->connections; i++) {
        if (w->conns[i].retry.timer_set) {
            ngx_del_timer(&w->conns[i].retry);
        }

        ngx_http_llm_redis_close(&w->conns[i], "worker exiting");
    }

    if (w->resp) {
        ngx_free(w->resp);
        w->resp = NULL;
        w->resp_size = 0;
    }
}


static void
ngx_http_llm_redis_connect(ngx_http_llm_redis_conn_t *conn)
{
    int                           argc;
    char                          db[NGX_INT_T_LEN + 1];
    const char                   *argv[3];
    size_t                        argvlen[3];
    ngx_uint_t                    i;
    ngx_event_t                  *rev, *wev;
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_llm_redis_conf_t    *rc;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;
    rc = w->conf;

    if (rc->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) rc->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) rc->host.data, (int) rc->port);
    }

    if (ac == NULL) {
        ngx_http_llm_redis_health(0, "out of memory", 13);
        goto retry;
    }

    if (ac->err) {
        ngx_http_llm_redis_health(0, ac->errstr, ngx_strlen(ac->errstr));
        redisAsyncFree(ac);
        goto retry;
    }

    c = ngx_get_connection(ac->c.fd, w->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        goto retry;
    }

    rev = c->read;
    wev = c->write;

    c->data = conn;
    rev->handler = ngx_http_llm_redis_read_handler;
    wev->handler = ngx_http_llm_redis_write_handler;
    rev->log = w->log;
    wev->log = w->log;

    conn->ac = ac;
    conn->live = ac;
    conn->c = c;
    conn->state = NGX_HTTP_LLM_CONN_CONNECTING;
    conn->why = NULL;
    conn->selecting = (rc->db > 0);

    ac->data = conn;
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_llm_redis_add_read;
    ac->ev.delRead = ngx_http_llm_redis_del_read;
    ac->ev.addWrite = ngx_http_llm_redis_add_write;
    ac->ev.delWrite = ngx_http_llm_redis_del_write;
    ac->ev.cleanup = ngx_http_llm_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_llm_redis_on_connect);

    /* queued before anything a request sends: Redis runs them first */

    if (rc->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) rc->password.data;
        argvlen[1] = rc->password.len;
        argc = 2;

        conn->auth.handler = ngx_http_llm_redis_handshake;
        conn->auth.data = conn;
        conn->auth.conn = conn;

        if (ngx_http_llm_redis_send(&conn->auth, argc, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_llm_redis_close(conn, "AUTH not sent");
            return;
        }
    }

    if (rc->db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = db;
        argvlen[1] = ngx_sprintf((u_char *) db, "%i", rc->db) - (u_char *) db;
        argc = 2;

        conn->select.handler = ngx_http_llm_redis_handshake;
        conn->select.data = conn;
        conn->select.conn = conn;

        if (ngx_http_llm_redis_send(&conn->select, argc, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_llm_redis_close(conn, "SELECT not sent");
            return;
        }
    }

    argv[0] = "TIME";
    argvlen[0] = 4;

    conn->clock.handler = ngx_http_llm_redis_clock;
    conn->clock.data = conn;
    conn->clock.conn = conn;

    if (ngx_http_llm_redis_send(&conn->clock, 1, argv, argvlen) != NGX_OK) {
        ngx_http_llm_redis_close(conn, "TIME not sent");
        return;
    }

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;

    for (i = 0; i < ngx_http_llm_redis_npreloads; i++) {
        argv[2] = ngx_http_llm_redis_preloads[i]->body;
        argvlen[2] = ngx_http_llm_redis_preloads[i]->len;

        conn->load[i].handler = ngx_http_llm_redis_loaded;
        conn->load[i].data = conn;
        conn->load[i].conn = conn;

        if (ngx_http_llm_redis_send(&conn->load[i], 3, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_llm_redis_close(conn, "SCRIPT LOAD not sent");
            return;
        }
    }

    return;

retry:

    conn->state = NGX_HTTP_LLM_CONN_DOWN;

    conn->backoff = conn->backoff
                    ? ngx_min(conn->backoff * 2,
                              NGX_HTTP_LLM_REDIS_BACKOFF_MAX)
                    : NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    ngx_add_timer(&conn->retry, conn->backoff);
}


static void
ngx_http_llm_redis_retry(ngx_event_t *ev)
{
    ngx_http_llm_redis_conn_t  *conn = ev->data;

    if (ngx_http_llm_redis_worker.exiting || ngx_exiting || ngx_terminate
        || conn->ac)
    {
        return;
    }

    ngx_http_llm_redis_connect(conn);
}


/*
 * Frees the hiredis context: every command still on it fails (its
 * handler runs now, with reply == NULL), and the cleanup hook gives the
 * nginx connection back and arms the reconnection.
 */

static void
ngx_http_llm_redis_close(ngx_http_llm_redis_conn_t *conn, const char *why)
{
    redisAsyncContext  *ac;

    ac = conn->ac;

    if (ac == NULL) {
        return;
    }

    conn->ac = NULL;
    conn->state = NGX_HTTP_LLM_CONN_DOWN;
    conn->why = why;

    redisAsyncFree(ac);
}


/* SELECT has answered: what waited for it goes, in its order */

static void
ngx_http_llm_redis_release(ngx_http_llm_redis_conn_t *conn)
{
    ngx_queue_t              *q;
    ngx_http_llm_redis_op_t  *op;

    conn->selecting = 0;

    for (q = ngx_queue_head(&conn->pending);
         q != ngx_queue_sentinel(&conn->pending);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_llm_redis_op_t, queue);

        if (op->held == NULL) {
            continue;
        }

        if (conn->ac == NULL
            || redisAsyncFormattedCommand(conn->ac,
                                          ngx_http_llm_redis_callback, op,
                                          op->held, op->held_len)
               != REDIS_OK)
        {
            break;
        }

        redisFreeCommand(op->held);
        op->held = NULL;

        /* leaves with the next write: not written before it */
        op->seq = ++ngx_http_llm_redis_seq;
    }

    ngx_http_llm_redis_drop_held(conn);
}


/*
 * Commands held for SELECT on a connection that is closing: hiredis
 * never had them, so they fail here, unsent.
 */

static void
ngx_http_llm_redis_drop_held(ngx_http_llm_redis_conn_t *conn)
{
    ngx_queue_t              *q, *next;
    ngx_http_llm_redis_op_t  *op;

    for (q = ngx_queue_head(&conn->pending);
         q != ngx_queue_sentinel(&conn->pending);
         q = next)
    {
        next = ngx_queue_next(q);
        op = ngx_queue_data(q, ngx_http_llm_redis_op_t, queue);

        if (op->held == NULL) {
            continue;
        }

        redisFreeCommand(op->held);
        op->held = NULL;

        ngx_queue_remove(&op->queue);
        op->conn = NULL;

        if (op->timer.timer_set) {
            ngx_del_timer(&op->timer);
        }

        if (ngx_http_llm_redis_worker.expiring == op) {
            ngx_http_llm_redis_worker.expiring = NULL;
        }

        op->unsent = 1;

        if (op->error == NULL) {
            op->error = conn->why ? conn->why : "connection closed";
        }

        op->handler(op, NULL);

        /* the handler may have sent more: held ones start again here */
        next = ngx_queue_head(&conn->pending);
    }
}


static void
ngx_http_llm_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_llm_redis_conn_t  *conn = ac->data;

    ngx_msec_t                  sent;
    ngx_uint_t                  i;
    ngx_queue_t                *q;
    ngx_http_llm_redis_op_t    *op, *hs[3 + NGX_HTTP_LLM_REDIS_PRELOAD_MAX];

    if (status != REDIS_OK) {
        /* hiredis frees the context next: the cleanup hook follows */
        ngx_http_llm_redis_health(0, ac->errstr, ngx_strlen(ac->errstr));
        return;
    }

    if (conn->ac != ac) {
        return;
    }

    conn->state = NGX_HTTP_LLM_CONN_READY;

    /* what is queued may be written from now on */
    conn->written = ngx_http_llm_redis_seq;

    /*
     * AUTH, SELECT, TIME and the SCRIPT LOADs, queued before the
     * connect, bounded it; each now gets its timeout from here, and
     * "sent" says so, for ngx_http_llm_redis_closes(), which reads the
     * first command's: with the connect's time in it, an admission
     * sent after a slow connect carried a deadline in the past.  A
     * command a request queued while connecting still closes the
     * connection at its own time: the handshake's "sent" is never
     * later than the first such command's.
     */

    sent = ngx_current_msec;

    for (q = ngx_queue_head(&conn->pending);
         q != ngx_queue_sentinel(&conn->pending);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_http_llm_redis_op_t, queue);

        if (op->data != conn) {
            if ((ngx_msec_int_t) (op->sent - sent) < 0) {
                sent = op->sent;
            }

            break;
        }
    }

    hs[0] = &conn->auth;
    hs[1] = &conn->select;
    hs[2] = &conn->clock;

    for (i = 0; i < ngx_http_llm_redis_npreloads; i++) {
        hs[3 + i] = &conn->load[i];
    }

    for (i = 0; i < 3 + ngx_http_llm_redis_npreloads; i++) {
        if (hs[i]->conn == conn && hs[i]->timer.timer_set) {
            hs[i]->sent = sent;
            ngx_del_timer(&hs[i]->timer);
            ngx_add_timer(&hs[i]->timer,
                          ngx_http_llm_redis_worker.conf->timeout);
        }
    }
}


static void
ngx_http_llm_redis_handshake(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_redis_conn_t  *conn = op->data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != NGX_HTTP_LLM_REDIS_ERROR) {
        if (op == &conn->select) {
            ngx_http_llm_redis_release(conn);
        }

        return;
    }

    /* the health switch has logged the reply; start again later */

    ngx_http_llm_redis_close(conn, op == &conn->auth ? "AUTH failed"
                                                     : "SELECT failed");
}


/*
 * A script every new connection loads ahead of its first EVALSHA
 * (configuration time; once each).
 */

ngx_int_t
ngx_http_llm_redis_preload(ngx_http_llm_redis_script_t *script)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_llm_redis_npreloads; i++) {
        if (ngx_http_llm_redis_preloads[i] == script) {
            return NGX_OK;
        }
    }

    if (ngx_http_llm_redis_npreloads == NGX_HTTP_LLM_REDIS_PRELOAD_MAX) {
        return NGX_ERROR;
    }

    ngx_http_llm_redis_preloads[ngx_http_llm_redis_npreloads++] = script;

    return NGX_OK;
}


/* an error was logged by the health switch: EVALSHA falls back to EVAL */

static void
ngx_http_llm_redis_loaded(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply)
{
    return;
}


/* TIME: {seconds, microseconds} */

static void
ngx_http_llm_redis_clock(ngx_http_llm_redis_op_t *op,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_int_t                    sec, usec;
    ngx_http_llm_redis_reply_t  *e;

    if (reply == NULL) {
        return;
    }

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY || reply->nelts != 2) {
        goto timeless;
    }

    e = reply->elts;

    if (e[0].type != NGX_HTTP_LLM_REDIS_STRING
        || e[1].type != NGX_HTTP_LLM_REDIS_STRING)
    {
        goto timeless;
    }

    sec = ngx_atoi(e[0].str.data, e[0].str.len);
    usec = ngx_atoi(e[1].str.data, e[1].str.len);

    if (sec == NGX_ERROR || usec == NGX_ERROR) {
        goto timeless;
    }

    ngx_http_llm_redis_clock_seen((int64_t) sec * 1000 + usec / 1000);

    return;

timeless:

    /*
     * answered, but no clock: a proxy that does not pass TIME (Redis
     * Cluster Proxy answers it with an error).  What waits for Redis's
     * clock would wait in vain, each request until its time is up, and
     * for ever: it goes now, with no deadline, and the scripts' answers
     * tell the clock.
     */

    ngx_http_llm_redis_worker.timeless = 1;

    if (!ngx_http_llm_redis_skew_known && ngx_http_llm_redis_clock_known) {
        ngx_http_llm_redis_clock_known();
    }
}


/*
 * Redis's clock was "ms" when it wrote a reply this worker reads now:
 * each such guess of the skew is short by the time the reply took to
 * be read (less than timeout: a command waits no longer), so the
 * largest is the nearest: the largest of the last period of 10 s and
 * of this one (a clock that drifts back is followed within 20 s); one
 * short by more than timeout is a clock that was set back.  Our clock
 * read now, not the cached time, which may lag (timer_resolution) and
 * make a guess too large.
 *
 * A reply read in a loop iteration that ran long (a blocking access
 * log write, a starved machine) is read after its command's timeout,
 * which is only checked after the events: its guess is short by as
 * long as the command waited (since "sent", on our clock read now),
 * and that is not a clock set back: taken for one, it set the skew
 * seconds back, and the next admission's deadline in Redis's past.
 * The first guess's slack is that time too (counted on the cached
 * clock, the admissions that waited for TIME went with deadlines in
 * Redis's past).
 */

void
ngx_http_llm_redis_clock_seen(int64_t ms)
{
    int64_t                       skew, now, waited;
    struct timeval                tv;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    ngx_gettimeofday(&tv);

    now = (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
    skew = ms - now;

    waited = (ngx_msec_int_t) (ngx_current_msec - w->replying)
             + now - (int64_t) ngx_http_llm_now();

    if (waited < 0) {
        waited = 0;
    }

    if (!ngx_http_llm_redis_skew_known) {
        /* the first guess is short by at most the time its command waited */
        ngx_http_llm_redis_skew_slack = (ngx_msec_t) waited;

        ngx_http_llm_redis_skew = skew;
        ngx_http_llm_redis_skew_known = 1;
        ngx_http_llm_redis_skew_next = skew;
        ngx_http_llm_redis_skew_since = ngx_current_msec;

        /* what waited for Redis's clock goes now */

        if (ngx_http_llm_redis_clock_known) {
            ngx_http_llm_redis_clock_known();
        }

        goto done;
    }

    if (ngx_current_msec - ngx_http_llm_redis_skew_since
        >= NGX_HTTP_LLM_REDIS_SKEW_PERIOD)
    {
        ngx_http_llm_redis_skew = ngx_http_llm_redis_skew_next;
        ngx_http_llm_redis_skew_next = skew;
        ngx_http_llm_redis_skew_since = ngx_current_msec;

    } else if (skew > ngx_http_llm_redis_skew_next) {
        ngx_http_llm_redis_skew_next = skew;
    }

    if (skew > ngx_http_llm_redis_skew
        || skew < ngx_http_llm_redis_skew
                  - ngx_max(waited, (int64_t) w->conf->timeout))
    {
        ngx_http_llm_redis_skew = skew;
    }

done:

    if (w->zone) {
        ngx_http_llm_store_set_skew(w->zone, ngx_http_llm_redis_skew);
    }
}


/*
 * Queues one command on a connection that is up or coming up; the
 * handler will run exactly once.  NGX_DECLINED: no connection (the
 * handler will not run, op->error says why).
 */

ngx_int_t
ngx_http_llm_redis_send(ngx_http_llm_redis_op_t *op, int argc,
    const char **argv, const size_t *argvlen)
{
    int                           n;
    size_t                        len;
    u_char                       *resp;
    ngx_http_llm_redis_conn_t    *conn;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    op->held = NULL;

    if (op->conn == NULL) {
        conn = ngx_http_llm_redis_pick(op);

        if (conn == NULL) {
            op->error = "not connected";
            op->unsent = 1;
            return NGX_DECLINED;
        }

    } else {
        /* the handshake's, or ngx_http_llm_redis_closes()'s choice */
        conn = op->conn;
    }

    /* the handshake's own commands (their data is the connection) go */

    if (conn->ac && conn->selecting && op->data != conn) {
        op->held_len = 0;

        n = redisFormatCommandArgv(&op->held, argc, argv, argvlen);

        if (n < 0) {
            op->held = NULL;

        } else {
            op->held_len = n;
        }
    }

    resp = NULL;

    if (conn->ac && op->held == NULL) {
        resp = ngx_http_llm_redis_format(argc, argv, argvlen, &len);
    }

    if (conn->ac == NULL
        || (op->held == NULL && conn->selecting && op->data != conn)
        || (op->held == NULL
            && (resp == NULL
                || redisAsyncFormattedCommand(conn->ac,
                                              ngx_http_llm_redis_callback,
                                              op, (char *) resp, len)
                   != REDIS_OK)))
    {
        op->conn = NULL;
        op->error = "command not queued";
        op->unsent = 1;
        return NGX_DECLINED;
    }

    op->conn = conn;
    op->error = NULL;
    op->unsent = 0;
    op->seq = ++ngx_http_llm_redis_seq;

    ngx_queue_insert_tail(&conn->pending, &op->queue);

    op->timer.handler = ngx_http_llm_redis_op_timeout;
    op->timer.data = op;
    op->timer.log = w->log;
    op->sent = ngx_current_msec;

    ngx_add_timer(&op->timer, ngx_http_llm_redis_wait(op));

    return NGX_OK;
}


/*
 * The command in RESP, as hiredis's redisFormatCommandArgv() writes it,
 * in a buffer of the worker's that the next command reuses (hiredis
 * copies it into its output buffer): no allocation per command, as
 * formatting with hiredis makes one per argument.  NULL: out of memory.
 * NUL-terminated as hiredis's own are: redisAsyncFormattedCommand()
 * looks at the byte after the first argument (a next one?), which for
 * a command of one argument (TIME) is the byte after the command.
 */

static u_char *
ngx_http_llm_redis_format(int argc, const char **argv,
    const size_t *argvlen, size_t *len)
{
    int                           i;
    u_char                       *p;
    size_t                        size;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    /* "*N\r\n", then "$LEN\r\nDATA\r\n" each, then NUL */

    size = 1 + NGX_INT_T_LEN + 2 + 1;

    for (i = 0; i < argc; i++) {
        size += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    if (size > w->resp_size) {
        size = ngx_max(size, 4096);

        p = ngx_alloc(size, w->log);
        if (p == NULL) {
            return NULL;
        }

        if (w->resp) {
            ngx_free(w->resp);
        }

        w->resp = p;
        w->resp_size = size;
    }

    p = ngx_sprintf(w->resp, "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR;
        *p++ = LF;
    }

    *len = p - w->resp;
    *p = '\0';

    return w->resp;
}


/*
 * The connection a command goes on: its affinity's if that is up, else
 * round robin over the ready ones, else one coming up; NULL: none.
 */

static ngx_http_llm_redis_conn_t *
ngx_http_llm_redis_pick(ngx_http_llm_redis_op_t *op)
{
    ngx_uint_t                    i, n, k;
    ngx_http_llm_redis_conn_t    *connecting;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    n = w->conf->connections;
    connecting = NULL;

    if (op->affinity) {
        k = op->affinity % n;

        if (w->conns[k].state == NGX_HTTP_LLM_CONN_READY
            && !w->conns[k].selecting)
        {
            return &w->conns[k];
        }
    }

    for (i = 0; i < n; i++) {
        k = (w->next + i) % n;

        if (w->conns[k].state == NGX_HTTP_LLM_CONN_READY
            && !w->conns[k].selecting)
        {
            w->next = k + 1;
            return &w->conns[k];
        }

        if ((w->conns[k].state == NGX_HTTP_LLM_CONN_CONNECTING
             || w->conns[k].selecting)
            && connecting == NULL)
        {
            connecting = &w->conns[k];
        }
    }

    return connecting;
}


/*
 * Chooses the connection "op" will be sent on (the next
 * ngx_http_llm_redis_send() of it uses it), and says when this worker
 * will stop listening on it if the oldest command on it goes
 * unanswered (its timeout closes the connection, and what follows it
 * is lost with it): ngx_current_msec then; 0: nothing waits on it.
 */

ngx_msec_t
ngx_http_llm_redis_closes(ngx_http_llm_redis_op_t *op)
{
    ngx_http_llm_redis_op_t    *oldest;
    ngx_http_llm_redis_conn_t  *conn;

    if (ngx_http_llm_redis_worker.conf == NULL) {
        return 0;
    }

    conn = ngx_http_llm_redis_pick(op);

    if (conn == NULL) {
        return 0;
    }

    op->conn = conn;

    if (ngx_queue_empty(&conn->pending)) {
        return 0;
    }

    oldest = ngx_queue_data(ngx_queue_head(&conn->pending),
                            ngx_http_llm_redis_op_t, queue);

    return oldest->sent + ngx_http_llm_redis_worker.conf->timeout;
}


/*
 * "size": the caller's op (its first member a ngx_http_llm_redis_cmd_t)
 * and what it wants right after it; then room for "argc" arguments and
 * "strings" bytes of them.  The command starts as EVALSHA and the
 * script's SHA1; the affinity is a hash of "affinity".
 */

void *
ngx_http_llm_redis_cmd(size_t size, ngx_http_llm_redis_script_t *script,
    int argc, size_t strings, ngx_str_t *affinity)
{
    u_char                    *p;
    ngx_http_llm_redis_cmd_t  *cmd;

    size = ngx_align(size, sizeof(void *));

    p = ngx_alloc(size + argc * (sizeof(char *) + sizeof(size_t)) + 40
                  + strings, ngx_cycle->log);
    if (p == NULL) {
        return NULL;
    }

    ngx_memzero(p, size);

    cmd = (ngx_http_llm_redis_cmd_t *) p;

    cmd->script = script;
    cmd->op.affinity = (ngx_uint_t) ngx_crc32_short(affinity->data,
                                                    affinity->len) + 1;
    cmd->argv = (const char **) (p + size);
    cmd->argvlen = (size_t *) (cmd->argv + argc);
    cmd->last = (u_char *) (cmd->argvlen + argc);

    cmd->argv[0] = "EVALSHA";
    cmd->argvlen[0] = 7;
    cmd->argv[1] = (const char *) script->sha;
    cmd->argvlen[1] = 40;
    cmd->argc = 2;

    return p;
}


void
ngx_http_llm_redis_cmd_arg(ngx_http_llm_redis_cmd_t *cmd, u_char *data,
    size_t len)
{
    cmd->argv[cmd->argc] = (const char *) cmd->last;
    cmd->argvlen[cmd->argc] = len;
    cmd->argc++;

    cmd->last = ngx_cpymem(cmd->last, data, len);
}


void
ngx_http_llm_redis_cmd_num(ngx_http_llm_redis_cmd_t *cmd, int64_t n)
{
    u_char  *p;

    p = cmd->last;

    cmd->argv[cmd->argc] = (const char *) p;
    cmd->last = ngx_sprintf(p, "%L", n);
    cmd->argvlen[cmd->argc] = cmd->last - p;
    cmd->argc++;
}


ngx_int_t
ngx_http_llm_redis_cmd_send(ngx_http_llm_redis_cmd_t *cmd)
{
    return ngx_http_llm_redis_send(&cmd->op, cmd->argc, cmd->argv,
                                   cmd->argvlen);
}


/*
 * NOSCRIPT (Redis restarted, SCRIPT FLUSH): once more with the script
 * itself, which caches it.  NGX_OK: sent again, the handler runs later.
 */

ngx_int_t
ngx_http_llm_redis_cmd_noscript(ngx_http_llm_redis_cmd_t *cmd,
    ngx_http_llm_redis_reply_t *reply)
{
    if (reply == NULL
        || reply->type != NGX_HTTP_LLM_REDIS_ERROR
        || reply->str.len < 8
        || ngx_strncmp(reply->str.data, "NOSCRIPT", 8) != 0
        || cmd->retried
        || cmd->script == NULL)
    {
        return NGX_DECLINED;
    }

    cmd->retried = 1;

    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = 4;
    cmd->argv[1] = cmd->script->body;
    cmd->argvlen[1] = cmd->script->len;

    if (cmd->again) {
        cmd->again(cmd);
    }

    if (ngx_http_llm_redis_cmd_send(cmd) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_llm_redis_callback(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                 *reply = r;
    ngx_http_llm_redis_op_t    *op = privdata;

    size_t                      i, n;
    ngx_uint_t                  handshake;
    redisReply                 *e;
    ngx_http_llm_redis_conn_t  *conn;
    ngx_http_llm_redis_reply_t  rep, elts[NGX_HTTP_LLM_REDIS_ELTS_MAX];

    conn = op->conn;
    op->conn = NULL;

    if (conn) {
        ngx_queue_remove(&op->queue);
    }

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (ngx_http_llm_redis_worker.expiring == op) {
        /* ends inside its own "expire": the timer is not set again */
        ngx_http_llm_redis_worker.expiring = NULL;
    }

    if (reply == NULL) {

        /* a command queued after the last write began never left */
        op->unsent = (conn && op->seq > conn->written);

        if (op->error == NULL) {
            op->error = (conn && conn->why) ? conn->why
                        : (ac->err ? ac->errstr : "connection closed");
        }

        if (conn && conn->ac == ac) {
            /* hiredis is closing it: nothing more goes there */
            conn->ac = NULL;
            conn->state = NGX_HTTP_LLM_CONN_DOWN;
        }

        if (!ngx_http_llm_redis_worker.exiting) {
            ngx_http_llm_redis_health(0, op->error, ngx_strlen(op->error));
        }

        op->handler(op, NULL);
        return;
    }

    /*
     * AUTH's and SELECT's "OK" do not make a connection good: the
     * handshake may yet fail (a database out of range), and the
     * connection would come back every 100 ms, logging a switch up and
     * one down each time
     */

    handshake = (op->handler == ngx_http_llm_redis_handshake);

    if (conn && !handshake) {
        conn->backoff = 0;
    }

    ngx_memzero(&rep, sizeof(ngx_http_llm_redis_reply_t));

    rep.type = reply->type;
    rep.integer = reply->integer;
    rep.str.data = (u_char *) reply->str;
    rep.str.len = reply->str ? reply->len : 0;

    if (reply->type == REDIS_REPLY_ARRAY) {
        n = ngx_min(reply->elements, NGX_HTTP_LLM_REDIS_ELTS_MAX);

        for (i = 0; i < n; i++) {
            e = reply->element[i];

            ngx_memzero(&elts[i], sizeof(ngx_http_llm_redis_reply_t));
            elts[i].type = e->type;
            elts[i].integer = e->integer;
            elts[i].str.data = (u_char *) e->str;
            elts[i].str.len = e->str ? e->len : 0;
        }

        rep.elts = elts;
        rep.nelts = n;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* a script that is not cached yet is the caller's to handle */

        if (rep.str.len < 8 || ngx_strncmp(rep.str.data, "NOSCRIPT", 8) != 0)
        {
            ngx_http_llm_redis_health(0, (char *) rep.str.data, rep.str.len);
        }

    } else if (!handshake) {
        ngx_http_llm_redis_health(1, NULL, 0);
    }

    /* ngx_http_llm_redis_clock_seen(): how late the reply may be */
    ngx_http_llm_redis_worker.replying = op->sent;

    op->handler(op, &rep);
}


static void
ngx_http_llm_redis_op_timeout(ngx_event_t *ev)
{
    ngx_http_llm_redis_op_t  *op = ev->data;

    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    if (op->expire && ngx_current_msec - op->sent < w->conf->timeout) {

        /*
         * a request's deadline, not Redis's timeout: the request goes
         * on without the answer, the command waits on; whatever the
         * request does meanwhile may end the command (and free "op")
         */

        op->deadline = 0;

        w->expiring = op;
        op->expire(op);

        if (w->expiring != op) {
            return;
        }

        w->expiring = NULL;

        ngx_add_timer(&op->timer, ngx_http_llm_redis_wait(op));
        return;
    }

    op->error = "timed out";

    /* the handler runs from the context's freeing */

    ngx_http_llm_redis_close(op->conn, "timed out (an earlier command)");
}


/* how long the timer of a command that is on its way waits now */

static ngx_msec_t
ngx_http_llm_redis_wait(ngx_http_llm_redis_op_t *op)
{
    ngx_msec_t  timeout, left;

    /* the command's own timeout (not reached yet when this is asked) */

    timeout = op->sent + ngx_http_llm_redis_worker.conf->timeout
              - ngx_current_msec;

    if (op->deadline == 0 || op->expire == NULL) {
        return timeout;
    }

    if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) <= 0) {
        /* passed already: at once, from the timer */
        return 1;
    }

    left = op->deadline - ngx_current_msec;

    return ngx_min(left, timeout);
}


/*
 * What is left of a request's time for Redis (llm_redis timeout, for
 * all it waits on), when it has waited "waited" ms; 0: nothing.
 */

ngx_msec_t
ngx_http_llm_redis_left(ngx_msec_t waited)
{
    ngx_msec_t  timeout;

    timeout = ngx_http_llm_redis_worker.conf->timeout;

    return waited < timeout ? timeout - waited : 0;
}


ngx_uint_t
ngx_http_llm_redis_up(void)
{
    return ngx_http_llm_redis_worker.up;
}


/*
 * A connection is up or coming up: a command sent now is answered, or
 * waits on its way (no connection: it fails at once).
 */

ngx_uint_t
ngx_http_llm_redis_coming_up(void)
{
    ngx_uint_t                    i;
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    if (w->conf == NULL || w->exiting) {
        return 0;
    }

    for (i = 0; i < w->conf->connections; i++) {
        if (w->conns[i].ac) {
            return 1;
        }
    }

    return 0;
}


/*
 * A connection is coming up whose TIME may yet tell Redis's clock
 * (not one behind a proxy whose TIME has answered without it).
 */

ngx_uint_t
ngx_http_llm_redis_clock_coming(void)
{
    return !ngx_http_llm_redis_worker.timeless
           && ngx_http_llm_redis_coming_up();
}


/* a caller's own verdict: the reply made no sense */

void
ngx_http_llm_redis_fail(const char *why)
{
    ngx_http_llm_redis_health(0, why, ngx_strlen(why));
}


static void
ngx_http_llm_redis_health(ngx_uint_t ok, const char *why, size_t len)
{
    ngx_http_llm_redis_worker_t  *w;

    w = &ngx_http_llm_redis_worker;

    if (ok) {
        if (!w->up) {
            w->up = 1;
            ngx_log_error(NGX_LOG_NOTICE, w->log, 0,
                          "llm_redis \"%V\" is back: counting in Redis "
                          "again", &w->conf->name);
        }

        return;
    }

    if (w->up && !w->exiting) {
        w->up = 0;
        ngx_log_error(NGX_LOG_ERR, w->log, 0,
                      "llm_redis \"%V\" failed: %*s%s; requests follow "
                      "on_error=%s until it is back", &w->conf->name,
                      ngx_min(len, 200), why,
                      ngx_http_llm_redis_cluster(why, len)
                      ? " (a Redis Cluster node: llm_redis talks to one "
                        "Redis, which must hold every account; use a "
                        "standalone Redis or a cluster proxy)"
                      : "",
                      ngx_http_llm_on_error_names[w->conf->on_error]);
    }
}


/* a Redis Cluster's redirection or refusal */

static ngx_uint_t
ngx_http_llm_redis_cluster(const char *why, size_t len)
{
    ngx_uint_t  i;

    static ngx_str_t  errors[] = {
        ngx_string("MOVED "),
        ngx_string("ASK "),
        ngx_string("CLUSTERDOWN "),
        ngx_string("CROSSSLOT "),
        ngx_null_string
    };

    for (i = 0; why && errors[i].len; i++) {
        if (len >= errors[i].len
            && ngx_strncmp(why, errors[i].data, errors[i].len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_llm_redis_sha1(u_char *hex, u_char *data, size_t len)
{
    u_char        digest[20];
    ngx_sha1_t    sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, data, len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(hex, digest, 20);
}


/* the adapter: hiredis's event hooks on the nginx connection */

static void
ngx_http_llm_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t           *c = ev->data;
    ngx_http_llm_redis_conn_t  *conn = c->data;

    if (c->close) {
        /* worker_shutdown_timeout */
        ngx_http_llm_redis_close(conn, "worker exiting");
        return;
    }

    if (conn->ac) {
        conn->in_read = 1;
        redisAsyncHandleRead(conn->ac);
        conn->in_read = 0;
    }

    /* "c" may be gone now ("conn" lives as long as the worker) */
}


static void
ngx_http_llm_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t           *c = ev->data;
    ngx_http_llm_redis_conn_t  *conn = c->data;

    if (conn->ac == NULL) {
        return;
    }

    if (conn->ac->c.flags & REDIS_CONNECTED) {
        /* whatever is queued may leave now, part of it at least */
        conn->written = ngx_http_llm_redis_seq;
    }

    conn->in_write = 1;
    redisAsyncHandleWrite(conn->ac);
    conn->in_write = 0;
}


static void
ngx_http_llm_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_llm_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


/*
 * On a connected socket a write is posted, so that every command of
 * this loop iteration leaves in one write; only a write that could not
 * finish, or a connect in progress, waits for the socket.
 */

static void
ngx_http_llm_redis_add_write(void *data)
{
    ngx_connection_t           *c = data;
    ngx_http_llm_redis_conn_t  *conn = c->data;

    if (conn->ac && (conn->ac->c.flags & REDIS_CONNECTED) && !conn->in_write)
    {
        if (!c->write->posted && !c->write->active) {
            ngx_post_event(c->write, &ngx_posted_events);
        }

        return;
    }

    if (!c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_llm_redis_del_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is done with the socket (it closes it itself) */

static void
ngx_http_llm_redis_cleanup(void *data)
{
    ngx_connection_t           *c = data;
    ngx_http_llm_redis_conn_t  *conn = c->data;

    const char                 *why;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    why = conn->why;

    if (why == NULL) {
        why = (conn->live && conn->live->err) ? conn->live->errstr
                                              : "connection closed";
    }

    conn->c = NULL;
    conn->live = NULL;
    conn->ac = NULL;
    conn->state = NGX_HTTP_LLM_CONN_DOWN;

    /* after what hiredis had, as they were queued after it */
    conn->selecting = 0;
    ngx_http_llm_redis_drop_held(conn);

    if (ngx_http_llm_redis_worker.exiting || ngx_exiting || ngx_terminate
        || conn->retry.timer_set)
    {
        return;
    }

    ngx_http_llm_redis_health(0, why, ngx_strlen(why));

    conn->backoff = conn->backoff
                    ? ngx_min(conn->backoff * 2,
                              NGX_HTTP_LLM_REDIS_BACKOFF_MAX)
                    : NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    ngx_add_timer(&conn->retry, conn->backoff);
}
