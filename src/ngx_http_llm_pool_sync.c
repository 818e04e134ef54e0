
/*
 * ngx_llm_gateway: the provider key pool's state across a fleet.
 *
 * Owns what "llm_redis" adds to a pool with keys.  The balancer cannot
 * wait for Redis, so each node keeps choosing from its own zone, and:
 *
 *   - what happens to a key is told to Redis at once, fire and forget:
 *     a 429's cooldown (its deadline on Redis's clock; the later one
 *     wins), a 401/402/403 that disabled it, an attempt counted against
 *     requests= and the tokens counted against tokens=;
 *   - every "sync" interval (llm_pool sync=, 1s by default) one worker
 *     of each node pulls the pool's state in one round trip and merges
 *     it into the zone: a cooldown keeps the later deadline, a key
 *     disabled elsewhere since this node last enabled its keys (start,
 *     reload) is disabled here too, a budget's window counts become at
 *     least Redis's.  The pull also restates this node's own cooldowns,
 *     so those set while Redis was away reach the fleet when it is back.
 *
 * So a node honours what another one saw within one interval (and a
 * round trip), and a budget is exceeded fleet-wide by at most what the
 * other nodes spend of it within that time.  While Redis fails the
 * pool goes on with the node's own state; the Redis connection logs the
 * switch once.
 *
 * One hash per pool, under llm_redis's prefix, its own Cluster hash tag:
 *
 *   PREFIX{pool:UPSTREAM}   c:KEY           cooldown deadline (Redis ms)
 *                           d:KEY           disabled since (Redis ms)
 *                           r:PERIOD:KEY    "window count previous"
 *                           t:PERIOD:KEY    the same for tokens
 *
 * KEY is the llm_pool_key NAME (never the secret); PERIOD in ms, a
 * window is Redis ms / PERIOD.  The hash expires when its longest-lived
 * field is of no use any more: a cooldown a second after its deadline,
 * a budget two periods and a second after its last count, a disabled
 * key a day after; the pull drops fields that are past.
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"
#include "ngx_http_llm_pool.h"


#define NGX_HTTP_LLM_POOL_SCRIPT_EVENT  0
#define NGX_HTTP_LLM_POOL_SCRIPT_PULL   1

/* own cooldowns restated by one pull */
#define NGX_HTTP_LLM_POOL_RESTATE_MAX   64


typedef struct {
    ngx_http_llm_redis_cmd_t       cmd;        /* first */
    ngx_http_llm_pool_srv_conf_t  *pscf;
} ngx_http_llm_pool_sync_op_t;


/* an op's command (ngx_http_llm_redis.c builds and sends it) */
#define ngx_http_llm_pool_sync_arg(o, data, len)                              \
    ngx_http_llm_redis_cmd_arg(&(o)->cmd, data, len)
#define ngx_http_llm_pool_sync_num(o, n)                                      \
    ngx_http_llm_redis_cmd_num(&(o)->cmd, (int64_t) (n))
#define ngx_http_llm_pool_sync_send(o)                                        \
    ngx_http_llm_redis_cmd_send(&(o)->cmd)
#define ngx_http_llm_pool_sync_noscript(o, reply)                             \
    ngx_http_llm_redis_cmd_noscript(&(o)->cmd, reply)


static ngx_http_llm_pool_sync_op_t *ngx_http_llm_pool_sync_op(
    ngx_http_llm_pool_srv_conf_t *pscf, ngx_uint_t script, int argc,
    size_t strings);
static void ngx_http_llm_pool_sync_sent(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static void ngx_http_llm_pool_sync_timer(ngx_event_t *ev);
static void ngx_http_llm_pool_sync_pulled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply);
static ngx_int_t ngx_http_llm_pool_sync_parse(
    ngx_http_llm_pool_srv_conf_t *pscf, ngx_str_t *text, uint64_t rnow);
static ngx_uint_t ngx_http_llm_pool_sync_find(
    ngx_http_llm_pool_srv_conf_t *pscf, u_char *name, size_t len);
static int ngx_libc_cdecl ngx_http_llm_pool_sync_cmp(const void *one,
    const void *two);


#define NGX_HTTP_LLM_POOL_LUA_NOW                                             \
"if redis.replicate_commands then redis.replicate_commands() end\n"           \
"local t = redis.call('TIME')\n"                                              \
"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"     \
"local function keep(ms)\n"                                                   \
"  if redis.call('PTTL', KEYS[1]) < ms then\n"                                \
"    redis.call('PEXPIRE', KEYS[1], ms)\n"                                    \
"  end\n"                                                                     \
"end\n"                                                                       \
"local function cool(name, ms)\n"                                             \
"  local f = 'c:' .. name\n"                                                  \
"  if now + ms > (tonumber(redis.call('HGET', KEYS[1], f)) or 0) then\n"      \
"    redis.call('HSET', KEYS[1], f, string.format('%d', now + ms))\n"         \
"  end\n"                                                                     \
"  keep(ms + 1000)\n"                                                         \
"end\n"


/*
 * KEYS: the pool's hash.  ARGV: kind, key name, value, period.  "c":
 * a cooldown of value ms; "d": disabled now; "r" and "t": value spent
 * in the current window of period ms.
 */

static char  ngx_http_llm_pool_lua_event[] =
NGX_HTTP_LLM_POOL_LUA_NOW
"local kind, name, v = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
"if kind == 'c' then\n"
"  cool(name, v)\n"
"elseif kind == 'd' then\n"
"  redis.call('HSET', KEYS[1], 'd:' .. name, string.format('%d', now))\n"
"  keep(86400000)\n"
"else\n"
"  local period = tonumber(ARGV[4])\n"
"  local f = kind .. ':' .. ARGV[4] .. ':' .. name\n"
"  local idx = math.floor(now / period)\n"
"  local cur, prev = 0, 0\n"
"  local s = redis.call('HGET', KEYS[1], f)\n"
"  if s then\n"
"    local i, c, p = string.match(s, '^(%d+) (%d+) (%d+)$')\n"
"    i = tonumber(i)\n"
"    if i == idx then\n"
"      cur, prev = tonumber(c), tonumber(p)\n"
"    elseif i == idx - 1 then\n"
"      prev = tonumber(c)\n"
"    end\n"
"  end\n"
"  redis.call('HSET', KEYS[1], f,\n"
"             string.format('%d %d %d', idx, cur + v, prev))\n"
"  keep(2 * period + 1000)\n"
"end\n"
"return 1\n";


/*
 * KEYS: the pool's hash.  ARGV: pairs of key name and ms, the node's
 * own cooldowns, restated.  Returns {now, lines}: one line per key
 * state, "KIND A CUR PREV NAME": "c LEFT 0 0" (ms of cooldown left),
 * "d AGE 0 0" (ms since it was disabled), "r PERIOD CUR PREV" and
 * "t PERIOD CUR PREV" (the counts of the current and previous window).
 * Fields that are past are dropped.
 */

static char  ngx_http_llm_pool_lua_pull[] =
NGX_HTTP_LLM_POOL_LUA_NOW
"for i = 1, #ARGV - 1, 2 do\n"
"  cool(ARGV[i], tonumber(ARGV[i + 1]))\n"
"end\n"
"local flat = redis.call('HGETALL', KEYS[1])\n"
"local out = {}\n"
"for j = 1, #flat, 2 do\n"
"  local f, v = flat[j], flat[j + 1]\n"
"  local kind = string.sub(f, 1, 1)\n"
"  local line\n"
"  if kind == 'c' then\n"
"    local left = (tonumber(v) or 0) - now\n"
"    if left > 0 then\n"
"      line = string.format('c %d 0 0 %s', left, string.sub(f, 3))\n"
"    end\n"
"  elseif kind == 'd' then\n"
"    local age = math.max(now - (tonumber(v) or now), 0)\n"
"    line = string.format('d %d 0 0 %s', age, string.sub(f, 3))\n"
"  elseif kind == 'r' or kind == 't' then\n"
"    local period, name = string.match(f, '^.:(%d+):(.+)$')\n"
"    local i, c, p = string.match(v, '^(%d+) (%d+) (%d+)$')\n"
"    period, i = tonumber(period), tonumber(i)\n"
"    if period and i and period > 0 then\n"
"      local idx = math.floor(now / period)\n"
"      if i == idx then\n"
"        line = string.format('%s %d %s %s %s', kind, period, c, p, name)\n"
"      elseif i == idx - 1 then\n"
"        line = string.format('%s %d 0 %s %s', kind, period, c, name)\n"
"      end\n"
"    end\n"
"  end\n"
"  if line then\n"
"    out[#out + 1] = line\n"
"  else\n"
"    redis.call('HDEL', KEYS[1], f)\n"
"  end\n"
"end\n"
"return { now, table.concat(out, '\\n') }\n";


static ngx_http_llm_redis_script_t  ngx_http_llm_pool_scripts[] = {
    { ngx_http_llm_pool_lua_event, sizeof(ngx_http_llm_pool_lua_event) - 1,
      "" },
    { ngx_http_llm_pool_lua_pull, sizeof(ngx_http_llm_pool_lua_pull) - 1,
      "" },
};


/*
 * At configuration, for a pool with keys where llm_redis is set: its
 * Redis key, and its keys sorted by the hash of their name, to find a
 * name that Redis sends back.
 */

ngx_int_t
ngx_http_llm_pool_sync_conf(ngx_conf_t *cf,
    ngx_http_llm_pool_srv_conf_t *pscf)
{
    u_char                     *p;
    ngx_uint_t                  i;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_redis_conf_t  *rc;

    static ngx_uint_t           inited;

    lmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_llm_gateway_module);
    rc = lmcf->redis;

    if (rc == NULL || pscf->keys.nelts == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(cf->pool, rc->prefix.len + sizeof("{pool:}") - 1
                              + pscf->name.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    pscf->rkey.data = p;
    p = ngx_sprintf(p, "%V{pool:%V}", &rc->prefix, &pscf->name);
    pscf->rkey.len = p - pscf->rkey.data;

    pscf->byname = ngx_palloc(cf->pool,
                              pscf->keys.nelts * 2 * sizeof(ngx_uint_t));
    if (pscf->byname == NULL) {
        return NGX_ERROR;
    }

    /* pairs (hash, index), sorted by hash */

    for (i = 0; i < pscf->keys.nelts; i++) {
        pscf->byname[2 * i] = (ngx_uint_t)
            ((ngx_http_llm_pool_key_t *) pscf->keys.elts)[i].hash;
        pscf->byname[2 * i + 1] = i;
    }

    ngx_qsort(pscf->byname, pscf->keys.nelts, 2 * sizeof(ngx_uint_t),
              ngx_http_llm_pool_sync_cmp);

    pscf->shared = 1;

    for (i = 0; i < 2; i++) {
        if (ngx_http_llm_redis_preload(&ngx_http_llm_pool_scripts[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!inited) {
        inited = 1;

        for (i = 0; i < 2; i++) {
            ngx_http_llm_redis_sha1(ngx_http_llm_pool_scripts[i].sha,
                               (u_char *) ngx_http_llm_pool_scripts[i].body,
                               ngx_http_llm_pool_scripts[i].len);
        }
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_llm_pool_sync_cmp(const void *one, const void *two)
{
    const ngx_uint_t  *a = one, *b = two;

    return (a[0] < b[0]) ? -1 : (a[0] > b[0]) ? 1 : 0;
}


/* in every worker: one timer per shared pool, started at a random phase */

ngx_int_t
ngx_http_llm_pool_sync_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_event_t                    *ev;
    ngx_http_upstream_srv_conf_t  **uscfp;
    ngx_http_upstream_main_conf_t  *umcf;
    ngx_http_llm_pool_srv_conf_t   *pscf;

    if ((ngx_process != NGX_PROCESS_WORKER
         && ngx_process != NGX_PROCESS_SINGLE)
        || ngx_http_llm_redis_conf() == NULL)
    {
        return NGX_OK;
    }

    umcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_module);
    if (umcf == NULL) {
        return NGX_OK;
    }

    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {

        if (uscfp[i]->srv_conf == NULL) {
            continue;
        }

        pscf = ngx_http_conf_upstream_srv_conf(uscfp[i],
                                               ngx_http_llm_pool_module);

        if (pscf == NULL || !pscf->enabled || !pscf->shared
            || pscf->sh == NULL)
        {
            continue;
        }

        ev = ngx_pcalloc(cycle->pool, sizeof(ngx_event_t));
        if (ev == NULL) {
            return NGX_ERROR;
        }

        /*
         * debug logging reads ev->data as a connection's fd: the pool's
         * configuration is readable that far
         */

        ev->data = pscf;
        ev->handler = ngx_http_llm_pool_sync_timer;
        ev->log = cycle->log;
        ev->cancelable = 1;

        ngx_add_timer(ev, 1 + ngx_random() % pscf->sync);
    }

    return NGX_OK;
}


/*
 * Tells Redis what happened to key k: kind is NGX_HTTP_LLM_POOL_SYNC_*,
 * value the cooldown (ms) or the amount spent in a window of "period".
 */

void
ngx_http_llm_pool_sync_event(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t kind, ngx_uint_t k, uint64_t value, ngx_msec_t period)
{
    u_char                        c;
    ngx_http_llm_pool_key_t      *key;
    ngx_http_llm_pool_sync_op_t  *op;

    if (!pscf->shared || ngx_http_llm_redis_conf() == NULL) {
        return;
    }

    key = &((ngx_http_llm_pool_key_t *) pscf->keys.elts)[k];

    op = ngx_http_llm_pool_sync_op(pscf, NGX_HTTP_LLM_POOL_SCRIPT_EVENT, 8,
                                   pscf->rkey.len + key->name.len
                                   + 2 * NGX_INT64_LEN + 8);
    if (op == NULL) {
        return;
    }

    c = (u_char) kind;

    ngx_http_llm_pool_sync_num(op, 1);
    ngx_http_llm_pool_sync_arg(op, pscf->rkey.data, pscf->rkey.len);
    ngx_http_llm_pool_sync_arg(op, &c, 1);
    ngx_http_llm_pool_sync_arg(op, key->name.data, key->name.len);
    ngx_http_llm_pool_sync_num(op, value);
    ngx_http_llm_pool_sync_num(op, period);

    op->cmd.op.handler = ngx_http_llm_pool_sync_sent;

    if (ngx_http_llm_pool_sync_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
    }
}


/*
 * One pool's commands go on one connection (the affinity: a hash of its
 * Redis key), so Redis runs a worker's events before its next pull.
 */

static ngx_http_llm_pool_sync_op_t *
ngx_http_llm_pool_sync_op(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_uint_t script, int argc, size_t strings)
{
    ngx_http_llm_pool_sync_op_t  *op;

    op = ngx_http_llm_redis_cmd(sizeof(ngx_http_llm_pool_sync_op_t),
                                &ngx_http_llm_pool_scripts[script], argc,
                                strings, &pscf->rkey);
    if (op == NULL) {
        return NULL;
    }

    op->pscf = pscf;

    return op;
}


/* an event's reply: nobody waits for it */

static void
ngx_http_llm_pool_sync_sent(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_pool_sync_op_t *op = (ngx_http_llm_pool_sync_op_t *) rop;

    if (ngx_http_llm_pool_sync_noscript(op, reply) == NGX_OK) {
        return;
    }

    if (reply && reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "llm_pool \"%V\": state not written to Redis: %*s",
                      &op->pscf->name, ngx_min(reply->str.len, 200),
                      reply->str.data);
    }

    ngx_free(op);
}


/*
 * Every "sync" interval, in each worker: the worker that finds the
 * node's last pull older than the interval pulls, restating the
 * node's own cooldowns.
 */

static void
ngx_http_llm_pool_sync_timer(ngx_event_t *ev)
{
    ngx_http_llm_pool_srv_conf_t *pscf = ev->data;

    size_t                        strings;
    ngx_uint_t                    i, n;
    ngx_http_llm_pool_key_t      *key;
    ngx_http_llm_pool_sync_op_t  *op;
    ngx_uint_t                    keys[NGX_HTTP_LLM_POOL_RESTATE_MAX];
    ngx_msec_t                    left[NGX_HTTP_LLM_POOL_RESTATE_MAX];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, pscf->sync);

    if (ngx_http_llm_pool_state_claim(pscf, keys, left,
                                      NGX_HTTP_LLM_POOL_RESTATE_MAX, &n)
        != NGX_OK)
    {
        return;
    }

    key = pscf->keys.elts;
    strings = pscf->rkey.len + NGX_INT64_LEN + 8;

    for (i = 0; i < n; i++) {
        strings += key[keys[i]].name.len + NGX_INT64_LEN;
    }

    op = ngx_http_llm_pool_sync_op(pscf, NGX_HTTP_LLM_POOL_SCRIPT_PULL,
                                   4 + 2 * n, strings);
    if (op == NULL) {
        return;
    }

    ngx_http_llm_pool_sync_num(op, 1);
    ngx_http_llm_pool_sync_arg(op, pscf->rkey.data, pscf->rkey.len);

    for (i = 0; i < n; i++) {
        ngx_http_llm_pool_sync_arg(op, key[keys[i]].name.data,
                                   key[keys[i]].name.len);
        ngx_http_llm_pool_sync_num(op, left[i]);
    }

    op->cmd.op.handler = ngx_http_llm_pool_sync_pulled;

    if (ngx_http_llm_pool_sync_send(op) != NGX_OK) {
        ngx_http_llm_redis_fail(op->cmd.op.error);
        ngx_free(op);
    }
}


static void
ngx_http_llm_pool_sync_pulled(ngx_http_llm_redis_op_t *rop,
    ngx_http_llm_redis_reply_t *reply)
{
    ngx_http_llm_pool_sync_op_t *op = (ngx_http_llm_pool_sync_op_t *) rop;

    ngx_http_llm_redis_reply_t  *e;

    if (ngx_http_llm_pool_sync_noscript(op, reply) == NGX_OK) {
        return;
    }

    if (reply == NULL || reply->type == NGX_HTTP_LLM_REDIS_ERROR) {
        /* the connection has logged it (once) */
        goto done;
    }

    e = reply->elts;

    if (reply->type != NGX_HTTP_LLM_REDIS_ARRAY || reply->nelts != 2
        || e[0].type != NGX_HTTP_LLM_REDIS_INTEGER || e[0].integer <= 0
        || e[1].type != NGX_HTTP_LLM_REDIS_STRING
        || ngx_http_llm_pool_sync_parse(op->pscf, &e[1].str,
                                        (uint64_t) e[0].integer)
           != NGX_OK)
    {
        ngx_http_llm_redis_fail("unexpected reply to the pool's pull");
    }

done:

    ngx_free(op);
}


/*
 * The pull's lines, "KIND A CUR PREV NAME", into the zone.  Names this
 * node does not have (another node's configuration) are skipped.
 */

static ngx_int_t
ngx_http_llm_pool_sync_parse(ngx_http_llm_pool_srv_conf_t *pscf,
    ngx_str_t *text, uint64_t rnow)
{
    u_char                      *p, *last, *eol, *name;
    uint64_t                     v[3];
    ngx_uint_t                   i, n, k;
    ngx_http_llm_pool_remote_t  *rm;

    p = text->data;
    last = p + text->len;

    if (text->len == 0) {
        return NGX_OK;
    }

    n = 1;

    for ( /* void */ ; p < last; p++) {
        if (*p == '\n') {
            n++;
        }
    }

    rm = ngx_alloc(n * sizeof(ngx_http_llm_pool_remote_t), ngx_cycle->log);
    if (rm == NULL) {
        return NGX_OK;
    }

    n = 0;

    for (p = text->data; p < last; p = eol + 1) {

        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        if (eol - p < 9 || p[1] != ' ') {
            goto invalid;
        }

        rm[n].kind = p[0];
        p += 2;

        for (i = 0; i < 3; i++) {
            v[i] = 0;

            if (p >= eol || *p < '0' || *p > '9') {
                goto invalid;
            }

            while (p < eol && *p >= '0' && *p <= '9') {
                v[i] = v[i] * 10 + (*p++ - '0');
            }

            if (p >= eol || *p++ != ' ') {
                goto invalid;
            }
        }

        name = p;

        k = ngx_http_llm_pool_sync_find(pscf, name, eol - name);

        if (k == NGX_HTTP_LLM_POOL_NONE) {
            continue;
        }

        switch (rm[n].kind) {

        case NGX_HTTP_LLM_POOL_SYNC_COOL:
        case NGX_HTTP_LLM_POOL_SYNC_OFF:
            break;

        case NGX_HTTP_LLM_POOL_SYNC_REQ:
        case NGX_HTTP_LLM_POOL_SYNC_TOK:
            if (v[0] == 0) {
                goto invalid;
            }

            break;

        default:
            goto invalid;
        }

        rm[n].key = k;
        rm[n].a = v[0];
        rm[n].cur = v[1];
        rm[n].prev = v[2];
        n++;
    }

    if (n) {
        ngx_http_llm_pool_state_merge(pscf, rm, n, rnow);
    }

    ngx_free(rm);

    return NGX_OK;

invalid:

    ngx_free(rm);

    return NGX_ERROR;
}


static ngx_uint_t
ngx_http_llm_pool_sync_find(ngx_http_llm_pool_srv_conf_t *pscf, u_char *name,
    size_t len)
{
    uint64_t                  hash;
    ngx_uint_t                lo, hi, mid, i, n;
    ngx_http_llm_pool_key_t  *key;

    hash = ngx_hash_key(name, len) ^ ((uint64_t) len << 40);
    n = pscf->keys.nelts;
    key = pscf->keys.elts;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = (lo + hi) / 2;

        if (pscf->byname[2 * mid] < (ngx_uint_t) hash) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    for (i = lo; i < n && pscf->byname[2 * i] == (ngx_uint_t) hash; i++) {
        mid = pscf->byname[2 * i + 1];

        if (key[mid].name.len == len
            && ngx_strncmp(key[mid].name.data, name, len) == 0)
        {
            return mid;
        }
    }

    return NGX_HTTP_LLM_POOL_NONE;
}
